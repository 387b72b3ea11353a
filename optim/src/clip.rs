//! Gradient clipping, like `torch.nn.utils.clip_grad_norm_` and `clip_grad_value_`.

use strata_autograd::Var;
use strata_tensor::Element;

use crate::{OptimError, Result};

/// Scales every gradient by `max_norm / (total + 1e-6)` when that is below one, where
/// `total` is the norm of order `norm_type` (`f64::INFINITY` for the max norm) of all the
/// gradients together; returns `total`, like `clip_grad_norm_`. Parameters without a
/// gradient are skipped.
///
/// ```
/// use strata_optim::clip_grad_norm;
/// use strata_autograd::Var;
/// use strata_tensor::Tensor;
///
/// let p = Var::parameter(Tensor::from_vec(vec![3.0f64, 4.0], &[2])?);
/// p.set_grad(Some(Tensor::from_vec(vec![3.0, 4.0], &[2])?))?;
/// let total = clip_grad_norm(&[p.clone()], 1.0, 2.0, false)?;
/// assert_eq!(total, 5.0);
/// let g = p.grad().unwrap().to_vec();
/// assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
/// # Ok::<(), strata_optim::OptimError>(())
/// ```
///
/// # Errors
/// [`OptimError::NonFiniteNorm`] when `error_if_nonfinite` and the norm is NaN or
/// infinite (the gradients are then left alone), [`OptimError::Config`] for a
/// non-positive `norm_type` or a `max_norm` that is NaN or negative. (PyTorch multiplies
/// the gradients by NaN for a NaN `max_norm`; strata's `min` would instead have left
/// them unclipped without a word.)
pub fn clip_grad_norm<T: Element>(
    params: &[Var<T>],
    max_norm: f64,
    norm_type: f64,
    error_if_nonfinite: bool,
) -> Result<f64> {
    if norm_type.is_nan() || norm_type <= 0.0 {
        return Err(crate::error::config(
            "clip_grad_norm",
            format!("norm_type must be positive, got {norm_type}"),
        ));
    }
    if max_norm.is_nan() || max_norm < 0.0 {
        return Err(crate::error::config(
            "clip_grad_norm",
            format!("max_norm must be a number >= 0, got {max_norm}"),
        ));
    }
    let grads: Vec<_> = params.iter().filter_map(Var::grad).collect();
    if grads.is_empty() {
        return Ok(0.0);
    }
    let total = if norm_type.is_infinite() {
        grads
            .iter()
            .flat_map(|g| g.to_vec())
            .map(|v| Element::to_f64(v).abs())
            .fold(0.0, |a: f64, b| {
                if b.is_nan() || a.is_nan() {
                    f64::NAN
                } else {
                    a.max(b)
                }
            })
    } else {
        let per: Vec<f64> = grads
            .iter()
            .map(|g| {
                g.to_vec()
                    .iter()
                    .map(|v| Element::to_f64(*v).abs().powf(norm_type))
                    .sum::<f64>()
                    .powf(1.0 / norm_type)
            })
            .collect();
        per.iter()
            .map(|n| n.powf(norm_type))
            .sum::<f64>()
            .powf(1.0 / norm_type)
    };
    if error_if_nonfinite && !total.is_finite() {
        return Err(OptimError::NonFiniteNorm { norm_type, total });
    }
    let coef = (max_norm / (total + 1e-6)).min(1.0);
    let coef_t = T::from_f64(coef);
    for p in params {
        if let Some(mut g) = p.take_grad() {
            g.scale_(coef_t);
            p.set_grad(Some(g))?;
        }
    }
    Ok(total)
}

/// Clamps every gradient element into `[-clip_value, clip_value]`, like
/// `clip_grad_value_`.
///
/// # Errors
/// [`OptimError::Config`] for a negative or NaN `clip_value`.
pub fn clip_grad_value<T: Element>(params: &[Var<T>], clip_value: f64) -> Result<()> {
    if clip_value.is_nan() || clip_value < 0.0 {
        return Err(crate::error::config(
            "clip_grad_value",
            format!("clip_value must be non-negative, got {clip_value}"),
        ));
    }
    let c = T::from_f64(clip_value);
    for p in params {
        if let Some(g) = p.take_grad() {
            p.set_grad(Some(g.clamp(Some(-c), Some(c))))?;
        }
    }
    Ok(())
}
