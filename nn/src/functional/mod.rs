//! The layers as functions, like `torch.nn.functional`: the parameters are arguments.
//! Activations are also methods on [`Var`] (`x.relu()`); they are repeated here so that
//! code ported from PyTorch reads the same.

use strata_autograd::{Var, no_grad};
use strata_tensor::rand::Rng;
use strata_tensor::{Element, IndexTensor, Tensor};

use crate::Result;
use crate::error::{config_error, input_error};

mod attention;
mod interpolate;

pub use crate::layers::volume::conv3d;
pub(crate) use attention::dropout_multiplier;
pub use attention::{AttnMask, SdpaOptions, scaled_dot_product_attention};
pub use interpolate::{InterpolateMode, Resize, Upsample, interpolate};

/// `x·Wᵀ + b` (`F.linear`), for `x` `[*, in]`, `weight` `[out, in]`, `bias` `[out]`.
///
/// One fused op ([`Var::linear`]): the forward is one GEMM plus the bias, the backward
/// computes `∂x = g·W`, `∂W = gᵀ·x` and `∂b = Σ g` directly.
///
/// # Errors
/// [`NnError::Input`](crate::NnError::Input) when `x` does not end in `in`.
pub fn linear<T: Element>(x: &Var<T>, weight: &Var<T>, bias: Option<&Var<T>>) -> Result<Var<T>> {
    let (out_f, in_f) = match weight.shape() {
        &[o, i] => (o, i),
        s => {
            return Err(input_error(
                "Linear",
                format!("the weight must be [out, in], got {s:?}"),
            ));
        }
    };
    check_linear_input(x, in_f)?;
    if let Some(b) = bias
        && b.shape() != [out_f]
    {
        return Err(input_error(
            "Linear",
            format!("the bias must be [{out_f}], got {:?}", b.shape()),
        ));
    }
    Ok(x.linear(weight, bias)?)
}

/// Checks that `x` ends in `in_features`.
pub(crate) fn check_linear_input<T: Element>(x: &Var<T>, in_features: usize) -> Result<()> {
    if x.shape().last() != Some(&in_features) {
        return Err(input_error(
            "Linear",
            format!(
                "expected input [*, {in_features}] (in_features = {in_features}), got {:?}",
                x.shape()
            ),
        ));
    }
    Ok(())
}

/// Dropout with probability `p` when `training` (`F.dropout`), the kept elements scaled by
/// `1/(1-p)`; the identity otherwise.
///
/// # Errors
/// [`NnError::Config`](crate::NnError::Config) unless `0 <= p <= 1`.
pub fn dropout<T: Element, R: Rng + ?Sized>(
    x: &Var<T>,
    p: f64,
    training: bool,
    rng: &mut R,
) -> Result<Var<T>> {
    if !(0.0..=1.0).contains(&p) {
        return Err(config_error(
            "dropout",
            format!("dropout probability has to be between 0 and 1, but got {p}"),
        ));
    }
    if !training || p == 0.0 {
        return Ok(x.clone());
    }
    if p == 1.0 {
        return Ok(x.mul(&Var::new(Tensor::zeros(x.shape())))?);
    }
    // Replayable, so a checkpointed dropout recomputes the same mask.
    let keep = strata_autograd::replayable(|| Tensor::<T>::bernoulli(x.shape(), 1.0 - p, rng))?;
    let mask = keep.mul_scalar(T::from_f64(1.0 / (1.0 - p)));
    Ok(x.mul(&Var::new(mask))?)
}

/// The rows of `weight` at `indices` (`F.embedding`): shape `indices.shape() + [dim]`; the
/// `padding_idx` row gets no gradient.
///
/// # Errors
/// [`NnError::Input`](crate::NnError::Input) for an index out of range.
pub fn embedding<T: Element>(
    indices: &IndexTensor,
    weight: &Var<T>,
    padding_idx: Option<usize>,
) -> Result<Var<T>> {
    let num = match weight.shape() {
        [n, _] => *n,
        s => {
            return Err(input_error(
                "Embedding",
                format!("the weight must be 2-d, got {s:?}"),
            ));
        }
    };
    if let Some(&bad) = indices
        .as_slice()
        .iter()
        .find(|&&i| i < 0 || i as usize >= num)
    {
        return Err(input_error(
            "Embedding",
            format!("index {bad} is out of range for {num} embeddings"),
        ));
    }
    Ok(Var::embedding(indices, weight, padding_idx)?)
}

/// Checks that `x` ends in `normalized_shape` and returns the dims to normalise over.
fn trailing_dims<T: Element>(
    layer: &'static str,
    x: &Var<T>,
    normalized_shape: &[usize],
) -> Result<Vec<isize>> {
    let k = normalized_shape.len();
    if k == 0 || x.ndim() < k || &x.shape()[x.ndim() - k..] != normalized_shape {
        return Err(input_error(
            layer,
            format!(
                "expected input with trailing dimensions {normalized_shape:?}, got {:?}",
                x.shape()
            ),
        ));
    }
    Ok((1..=k).map(|d| -(d as isize)).collect())
}

/// Layer normalisation over the trailing `normalized_shape` dimensions (`F.layer_norm`):
/// `(x - mean) / √(var + eps) · weight + bias`, with the biased variance.
///
/// # Errors
/// [`NnError::Input`](crate::NnError::Input) when `x` does not end in `normalized_shape`.
pub fn layer_norm<T: Element>(
    x: &Var<T>,
    normalized_shape: &[usize],
    weight: Option<&Var<T>>,
    bias: Option<&Var<T>>,
    eps: f64,
) -> Result<Var<T>> {
    trailing_dims("LayerNorm", x, normalized_shape)?;
    for p in [weight, bias].into_iter().flatten() {
        if p.shape() != normalized_shape {
            return Err(input_error(
                "LayerNorm",
                format!(
                    "weight and bias must have shape {normalized_shape:?}, got {:?}",
                    p.shape()
                ),
            ));
        }
    }
    let d: usize = normalized_shape.iter().product();
    Ok(x.layer_norm(d, weight, bias, eps)?)
}

/// RMS normalisation (`F.rms_norm`): `x / √(mean(x²) + eps) · weight`; `eps = None` is the
/// machine epsilon of `T`.
///
/// # Errors
/// As [`layer_norm`].
pub fn rms_norm<T: Element>(
    x: &Var<T>,
    normalized_shape: &[usize],
    weight: Option<&Var<T>>,
    eps: Option<f64>,
) -> Result<Var<T>> {
    let dims = trailing_dims("RMSNorm", x, normalized_shape)?;
    let eps = eps.unwrap_or(Element::to_f64(T::epsilon()));
    let ms = x.square().mean(&dims, true)?;
    let y = x.mul(&ms.add_scalar(T::from_f64(eps)).rsqrt())?;
    affine(y, weight, None)
}

fn affine<T: Element>(y: Var<T>, weight: Option<&Var<T>>, bias: Option<&Var<T>>) -> Result<Var<T>> {
    let y = match weight {
        Some(w) => y.mul(w)?,
        None => y,
    };
    Ok(match bias {
        Some(b) => y.add(b)?,
        None => y,
    })
}

/// Batch normalisation over every dimension but 1 (`F.batch_norm`). With `training`,
/// normalises by the batch statistics (biased variance) and, when given, updates the
/// running mean and the running unbiased variance with weight `momentum`; otherwise
/// normalises by the running statistics.
///
/// # Errors
/// [`NnError::Input`](crate::NnError::Input) for fewer than 2 dimensions, one value per
/// channel in training, or statistics of the wrong size.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm<T: Element>(
    x: &Var<T>,
    running_mean: Option<&Var<T>>,
    running_var: Option<&Var<T>>,
    weight: Option<&Var<T>>,
    bias: Option<&Var<T>>,
    training: bool,
    momentum: f64,
    eps: f64,
) -> Result<Var<T>> {
    let nd = x.ndim();
    if nd < 2 {
        return Err(input_error(
            "BatchNorm",
            format!("expected at least 2-d input [N, C, *], got {:?}", x.shape()),
        ));
    }
    let c = x.shape()[1];
    let mut stat_shape = vec![1; nd];
    stat_shape[1] = c;
    let dims: Vec<isize> = (0..nd as isize).filter(|&d| d != 1).collect();
    let per_channel = x.numel() / c.max(1);
    let eps_t = T::from_f64(eps);
    let y = if training {
        // Batch statistics mix the samples: a per-sample gradient engine (strata-privacy)
        // must refuse the model, whatever state the layer keeps.
        strata_autograd::note_sample_mixing("batch_norm", &[weight, bias], x.shape());
        if per_channel <= 1 {
            return Err(input_error(
                "BatchNorm",
                format!(
                    "expected more than 1 value per channel when training, got input size {:?}",
                    x.shape()
                ),
            ));
        }
        let mean = x.mean(&dims, true)?;
        let centred = x.sub(&mean)?;
        let var = centred.square().mean(&dims, true)?;
        if let (Some(rm), Some(rv)) = (running_mean, running_var) {
            no_grad(|| -> Result<()> {
                let m = T::from_f64(momentum);
                let keep = T::one() - m;
                let unbiased = T::from_f64(per_channel as f64 / (per_channel - 1) as f64);
                let new_mean = rm
                    .value()
                    .mul_scalar(keep)
                    .add(&mean.value().reshape([c])?.mul_scalar(m))?;
                let new_var = rv
                    .value()
                    .mul_scalar(keep)
                    .add(&var.value().reshape([c])?.mul_scalar(m * unbiased))?;
                rm.set_value(new_mean)?;
                rv.set_value(new_var)?;
                Ok(())
            })?;
        }
        centred.mul(&var.add_scalar(eps_t).rsqrt())?
    } else {
        let (Some(rm), Some(rv)) = (running_mean, running_var) else {
            return Err(input_error(
                "BatchNorm",
                "running statistics are required in eval mode",
            ));
        };
        if rm.shape() != [c] || rv.shape() != [c] {
            return Err(input_error(
                "BatchNorm",
                format!(
                    "running statistics must have shape [{c}], got {:?} and {:?}",
                    rm.shape(),
                    rv.shape()
                ),
            ));
        }
        let mean = rm.reshape(stat_shape.as_slice())?;
        let inv_std = rv.reshape(stat_shape.as_slice())?.add_scalar(eps_t).rsqrt();
        x.sub(&mean)?.mul(&inv_std)?
    };
    let w = weight
        .map(|w| w.reshape(stat_shape.as_slice()))
        .transpose()?;
    let b = bias.map(|b| b.reshape(stat_shape.as_slice())).transpose()?;
    affine(y, w.as_ref(), b.as_ref())
}

macro_rules! activation_fns {
    ($( $(#[$doc:meta])* $name:ident; )*) => {$(
        $(#[$doc])*
        pub fn $name<T: Element>(x: &Var<T>) -> Var<T> {
            x.$name()
        }
    )*};
}

activation_fns! {
    /// `F.relu`.
    relu;
    /// `torch.sigmoid`.
    sigmoid;
    /// `torch.tanh`.
    tanh;
    /// `F.silu`.
    silu;
    /// `F.gelu` (exact form).
    gelu;
    /// `F.gelu(x, approximate="tanh")`.
    gelu_tanh;
}

/// `F.leaky_relu(x, negative_slope)`.
pub fn leaky_relu<T: Element>(x: &Var<T>, negative_slope: f64) -> Var<T> {
    x.leaky_relu(T::from_f64(negative_slope))
}

/// `F.softmax(x, dim)`.
///
/// # Errors
/// For a bad dim.
pub fn softmax<T: Element>(x: &Var<T>, dim: isize) -> Result<Var<T>> {
    Ok(x.softmax(dim)?)
}

/// `F.log_softmax(x, dim)`.
///
/// # Errors
/// For a bad dim.
pub fn log_softmax<T: Element>(x: &Var<T>, dim: isize) -> Result<Var<T>> {
    Ok(x.log_softmax(dim)?)
}
