//! `EmbeddingBag` on fixed-size bags `[B, L]`: the rows gathered, then reduced along the
//! bag (padding indices left out, an empty bag giving zeros, as strata and PyTorch do).

use strata_nn::{BagMode, EmbeddingBag};

use super::{Export, run};
use crate::error::{OnnxError, Result, unsupported};
use crate::graph::{Attr, Example, Graph, Value};

impl Export for EmbeddingBag<f32> {
    /// Indices `[B, L]` (int64, one bag per row) → `[B, embedding_dim]`: `Gather`, then
    /// `ReduceSum`, `ReduceMean` or `ReduceMax` along the bag; with a `padding_idx`, the
    /// padding rows are masked out and a mean divides by the number of the others. The
    /// 1-D input with offsets (bags of varying lengths) and `per_sample_weights` are not
    /// an [`Export`] input: pad the bags to one length with `padding_idx` instead.
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        const LAYER: &str = "EmbeddingBag";
        let Example::Index(ids) = x.example() else {
            return Err(OnnxError::Input {
                shape: x.shape().to_vec(),
                why: "EmbeddingBag takes indices (int64), not floats".into(),
            });
        };
        if ids.ndim() != 2 || x.batch_axis() != Some(0) {
            return Err(unsupported(
                LAYER,
                format!(
                    "input {:?}: only fixed-size bags [B, L] (batch first) are exported; the \
                     1-D input with offsets has bags of varying lengths, which ONNX cannot \
                     index without loops (pad the bags to one length with padding_idx)",
                    ids.shape()
                ),
            ));
        }
        let y = run(|| Ok(self.forward(ids, None, None)?))?;
        let w = g.param("weight", &self.weight);
        let rows = g.op("Gather", &[&w, x.name()], vec![("axis", Attr::Int(0))]);
        let axis1 = || vec![("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(0))];
        let sum_axes = g.ints("axes", &[1]);
        let out = match self.padding_idx() {
            None => match self.mode() {
                BagMode::Sum => g.op(
                    "ReduceSum",
                    &[&rows, &sum_axes],
                    vec![("keepdims", Attr::Int(0))],
                ),
                BagMode::Mean => g.op("ReduceMean", &[&rows], axis1()),
                BagMode::Max => g.op("ReduceMax", &[&rows], axis1()),
            },
            Some(p) => {
                let pad = g.ints("padding_idx", &[p as i64]);
                let is_pad = g.op("Equal", &[x.name(), &pad], vec![]);
                let keep = g.op("Not", &[&is_pad], vec![]);
                let keep = g.unsqueeze(&keep, &[2]); // [B, L, 1]
                let keep_f = g.op("Cast", &[&keep], vec![("to", Attr::Int(1))]);
                let count = g.op(
                    "ReduceSum",
                    &[&keep_f, &sum_axes],
                    vec![("keepdims", Attr::Int(0))],
                ); // [B, 1]
                match self.mode() {
                    BagMode::Sum | BagMode::Mean => {
                        let kept = g.op("Mul", &[&rows, &keep_f], vec![]);
                        let sum = g.op(
                            "ReduceSum",
                            &[&kept, &sum_axes],
                            vec![("keepdims", Attr::Int(0))],
                        );
                        if self.mode() == BagMode::Sum {
                            sum
                        } else {
                            let one = g.scalar("one", 1.0);
                            let count = g.op("Max", &[&count, &one], vec![]);
                            g.op("Div", &[&sum, &count], vec![])
                        }
                    }
                    BagMode::Max => {
                        let low = g.scalar("neg_inf", f32::NEG_INFINITY);
                        let kept = g.op("Where", &[&keep, &rows, &low], vec![]);
                        let max = g.op("ReduceMax", &[&kept], axis1());
                        let zero = g.scalar("zero", 0.0);
                        let some = g.op("Greater", &[&count, &zero], vec![]);
                        g.op("Where", &[&some, &max, &zero], vec![])
                    }
                }
            }
        };
        Ok(x.without_axis(out, y, 1))
    }
}
