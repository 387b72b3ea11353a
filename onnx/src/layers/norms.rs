//! `RMSNorm` (composed: opset 17 has no `RMSNormalization`) and the instance norms
//! (`InstanceNormalization`, or `BatchNormalization` with the running statistics in eval
//! mode).

use strata_nn::{Forward, InstanceNorm1d, InstanceNorm2d, RMSNorm};
use strata_tensor::Tensor;

use super::{Export, run};
use crate::error::{OnnxError, Result, unsupported};
use crate::graph::{Attr, Graph, Value};

impl Export for RMSNorm<f32> {
    /// `x / √(mean(x²) + eps) · weight` over the trailing `normalized_shape` dimensions,
    /// with strata's eps (the given one, or `f32::EPSILON` as PyTorch's `eps=None`).
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| Ok(self.forward(&x.float("RMSNorm")?)?))?;
        let k = self.normalized_shape().len() as i64;
        let eps = self.eps().unwrap_or(f64::from(f32::EPSILON)) as f32;
        let square = g.op("Mul", &[x.name(), x.name()], vec![]);
        let axes: Vec<i64> = (-k..0).collect();
        let ms = g.op(
            "ReduceMean",
            &[&square],
            vec![("axes", Attr::Ints(axes)), ("keepdims", Attr::Int(1))],
        );
        let eps = g.scalar("eps", eps);
        let ms = g.op("Add", &[&ms, &eps], vec![]);
        let rms = g.op("Sqrt", &[&ms], vec![]);
        let mut out = g.op("Div", &[x.name(), &rms], vec![]);
        if let Some(w) = &self.weight {
            let w = g.param("weight", w);
            out = g.op("Mul", &[&out, &w], vec![]);
        }
        Ok(x.with(out, y))
    }
}

/// `(x − mean) / √(var + eps) · scale + bias` with each sample's channel's mean and biased
/// variance over its positions, by hand: tract's `InstanceNormalization` also averages
/// over the batch.
fn instance_stats(
    g: &mut Graph,
    x: &str,
    rank: usize,
    eps: f32,
    scale: &str,
    bias: &str,
) -> String {
    let axes = Attr::Ints((2..rank as i64).collect());
    let keep = || vec![("axes", axes.clone()), ("keepdims", Attr::Int(1))];
    let mean = g.op("ReduceMean", &[x], keep());
    let centred = g.op("Sub", &[x, &mean], vec![]);
    let square = g.op("Mul", &[&centred, &centred], vec![]);
    let var = g.op("ReduceMean", &[&square], keep());
    let eps = g.scalar("eps", eps);
    let var = g.op("Add", &[&var, &eps], vec![]);
    let std = g.op("Sqrt", &[&var], vec![]);
    let normed = g.op("Div", &[&centred, &std], vec![]);
    let per_channel: Vec<i64> = std::iter::once(-1)
        .chain(std::iter::repeat_n(1, rank - 2))
        .collect();
    let scale = g.reshape(scale, &per_channel);
    let bias = g.reshape(bias, &per_channel);
    let y = g.op("Mul", &[&normed, &scale], vec![]);
    g.op("Add", &[&y, &bias], vec![])
}

macro_rules! instance_norm {
    ($($ty:ty => $name:literal, $rank:literal;)*) => {$(
        impl Export for $ty {
            /// Instance statistics (composed, as `GroupNorm`'s), or in eval mode with running
            /// statistics, those (`BatchNormalization`); then the affine map.
            fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
                let config = self.config();
                if self.is_training() && config.track_running_stats {
                    return Err(unsupported(
                        $name,
                        "it is in train mode with track_running_stats (the forward updates the \
                         running statistics, and eval mode normalises with them); call eval() \
                         before exporting",
                    ));
                }
                if x.ndim() != $rank || x.batch_axis() != Some(0) {
                    return Err(OnnxError::Input {
                        shape: x.shape().to_vec(),
                        why: format!("{} exports batched inputs of rank {}", $name, $rank),
                    });
                }
                let y = run(|| Ok(self.forward(&x.float($name)?)?))?;
                let c = x.shape()[1];
                let scale = match self.weight() {
                    Some(w) => g.param("weight", w),
                    None => g.constant("weight", &Tensor::ones(&[c])),
                };
                let bias = match self.bias() {
                    Some(b) => g.param("bias", b),
                    None => g.constant("bias", &Tensor::zeros(&[c])),
                };
                let eps = ("epsilon", Attr::Float(config.eps as f32));
                let out = match (self.running_mean(), self.running_var()) {
                    (Some(mean), Some(var)) if !self.is_training() => {
                        let mean = g.constant("running_mean", &mean);
                        let var = g.constant("running_var", &var);
                        g.op(
                            "BatchNormalization",
                            &[x.name(), &scale, &bias, &mean, &var],
                            vec![eps],
                        )
                    }
                    _ => instance_stats(g, x.name(), $rank, config.eps as f32, &scale, &bias),
                };
                Ok(x.with(out, y))
            }
        }
    )*};
}

instance_norm! {
    InstanceNorm1d<f32> => "InstanceNorm1d", 3;
    InstanceNorm2d<f32> => "InstanceNorm2d", 4;
}
