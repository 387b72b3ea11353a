//! Resampling of the spatial dimensions, like `F.interpolate`: nearest neighbour (any of
//! 1, 2 or 3 spatial dimensions) and (bi)linear with or without `align_corners`. Each
//! dimension is resampled on its own with `index_select` and weights, so gradients of
//! every order follow.

use strata_autograd::Var;
use strata_tensor::{Element, IndexTensor, Tensor, TensorError};

use crate::Result;
use crate::error::input_error;

/// How `interpolate` computes a new sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InterpolateMode {
    /// The nearest input sample (PyTorch's `'nearest'`, the default).
    #[default]
    Nearest,
    /// Linear in each spatial dimension (`'linear'` for 1, `'bilinear'` for 2).
    Linear {
        /// Map the corner samples of input and output onto each other.
        align_corners: bool,
    },
}

/// The target: an output size, or scale factors (one for all or one per dimension).
#[derive(Clone, Debug, PartialEq)]
pub enum Resize {
    /// The output size of each spatial dimension.
    Size(Vec<usize>),
    /// A factor per spatial dimension (one entry applies to all); the output size is
    /// `floor(input · factor)`.
    Scale(Vec<f64>),
}

/// Resamples the spatial dimensions of `x` (`[N, C, *spatial]`, 1 to 3 of them), like
/// `F.interpolate(x, size | scale_factor, mode, align_corners)`. With a scale factor the
/// sample positions use `1 / factor`, as PyTorch does without `recompute_scale_factor`.
///
/// ```
/// use strata_autograd::Var;
/// use strata_nn::functional::{InterpolateMode, Resize, interpolate};
/// use strata_tensor::Tensor;
///
/// let x = Var::new(Tensor::from_vec(vec![1.0f32, 2.0], &[1, 1, 2])?);
/// let up = interpolate(&x, &Resize::Scale(vec![2.0]), InterpolateMode::Nearest)?;
/// assert_eq!(up.to_vec(), vec![1.0, 1.0, 2.0, 2.0]);
/// let lin = interpolate(&x, &Resize::Size(vec![4]), InterpolateMode::Linear { align_corners: false })?;
/// assert_eq!(lin.to_vec(), vec![1.0, 1.25, 1.75, 2.0]);
/// # Ok::<(), strata_nn::NnError>(())
/// ```
///
/// # Errors
/// [`NnError::Input`](crate::NnError::Input) for an input without 1 to 3 spatial
/// dimensions, a size or factor list of another length, a non-positive or non-finite
/// factor, or an empty output.
pub fn interpolate<T: Element>(
    x: &Var<T>,
    resize: &Resize,
    mode: InterpolateMode,
) -> Result<Var<T>> {
    const OP: &str = "interpolate";
    let spatial = x.ndim().saturating_sub(2);
    if !(1..=3).contains(&spatial) {
        return Err(input_error(
            OP,
            format!(
                "expected [N, C, *] with 1 to 3 spatial dimensions, got {:?}",
                x.shape()
            ),
        ));
    }
    let inputs = &x.shape()[2..];
    // (output size, the scale of positions: in/out or 1/factor) per dimension.
    let plan: Vec<(usize, f64)> = match resize {
        Resize::Size(sizes) => {
            if sizes.len() != spatial {
                return Err(input_error(
                    OP,
                    format!("{} sizes for {spatial} spatial dimension(s)", sizes.len()),
                ));
            }
            sizes
                .iter()
                .zip(inputs)
                .map(|(&out, &n)| (out, n as f64 / out.max(1) as f64))
                .collect()
        }
        Resize::Scale(factors) => {
            if factors.len() != spatial && factors.len() != 1 {
                return Err(input_error(
                    OP,
                    format!(
                        "{} scale factors for {spatial} spatial dimension(s)",
                        factors.len()
                    ),
                ));
            }
            let mut plan = Vec::with_capacity(spatial);
            for (k, &n) in inputs.iter().enumerate() {
                let f = if factors.len() == 1 {
                    factors[0]
                } else {
                    factors[k]
                };
                if !(f.is_finite() && f > 0.0) {
                    return Err(input_error(
                        OP,
                        format!("scale factors must be positive, got {f}"),
                    ));
                }
                let out = (n as f64 * f).floor();
                if out > (1u64 << 40) as f64 {
                    return Err(input_error(
                        OP,
                        format!("an output size of {out} is too large"),
                    ));
                }
                plan.push((out as usize, 1.0 / f));
            }
            plan
        }
    };
    if let Some((d, _)) = plan.iter().enumerate().find(|(_, (out, _))| *out == 0) {
        return Err(input_error(
            OP,
            format!(
                "the output size of spatial dimension {d} is 0 (input {:?})",
                x.shape()
            ),
        ));
    }
    // The result's size is checked before any index table is built: a size that no
    // tensor can have is an error, and an empty result needs no tables (its sizes may
    // still be huge beside a zero batch).
    let out_shape: Vec<usize> = x.shape()[..2]
        .iter()
        .copied()
        .chain(plan.iter().map(|&(out, _)| out))
        .collect();
    match strata_tensor::checked_numel(&out_shape) {
        None => {
            return Err(TensorError::TooLarge {
                op: OP,
                shape: out_shape,
            }
            .into());
        }
        Some(0) => return Ok(x.reshape(out_shape.as_slice())?),
        Some(_) => {}
    }
    let mut y = x.clone();
    for (k, (&(out, scale), &n)) in plan.iter().zip(inputs).enumerate() {
        let dim = (2 + k) as isize;
        y = match mode {
            InterpolateMode::Nearest => {
                let mut src = table(out, &out_shape)?;
                src.extend((0..out).map(|i| ((i as f64 * scale).floor() as usize).min(n - 1)));
                y.index_select(dim, &IndexTensor::from_indices(&src))?
            }
            InterpolateMode::Linear { align_corners } => {
                let mut lo = table(out, &out_shape)?;
                let mut hi = table(out, &out_shape)?;
                let mut w = table(out, &out_shape)?;
                for i in 0..out {
                    let src = if align_corners {
                        if out > 1 {
                            i as f64 * (n - 1) as f64 / (out - 1) as f64
                        } else {
                            0.0
                        }
                    } else {
                        ((i as f64 + 0.5) * scale - 0.5).max(0.0)
                    };
                    let i0 = (src.floor() as usize).min(n - 1);
                    let i1 = (i0 + 1).min(n - 1);
                    lo.push(i0);
                    hi.push(i1);
                    w.push(T::from_f64(src - i0 as f64));
                }
                let mut wshape = vec![1; y.ndim()];
                wshape[2 + k] = out;
                let w = Tensor::from_vec(w, &wshape)?;
                let one_minus = Var::new(w.rsub_scalar(T::one()));
                let w = Var::new(w);
                let a = y.index_select(dim, &IndexTensor::from_indices(&lo))?;
                let b = y.index_select(dim, &IndexTensor::from_indices(&hi))?;
                a.mul(&one_minus)?.add(&b.mul(&w)?)?
            }
        };
    }
    Ok(y)
}

/// An empty table for `n` entries of one resampled dimension of a result of `shape`, its
/// memory reserved fallibly: a dimension beyond what memory holds is an error, not an
/// abort.
fn table<U>(n: usize, shape: &[usize]) -> Result<Vec<U>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| TensorError::OutOfMemory {
            op: "interpolate",
            shape: shape.to_vec(),
            bytes: n.saturating_mul(std::mem::size_of::<U>()),
        })?;
    Ok(v)
}

/// `nn.Upsample(size | scale_factor, mode, align_corners)`: [`interpolate`] as a layer.
#[derive(Clone, Debug)]
pub struct Upsample {
    /// The target size or factors.
    pub resize: Resize,
    /// The sampling mode.
    pub mode: InterpolateMode,
}

impl<T: Element> crate::Module<T> for Upsample {
    fn visit_state(&self, _: &mut dyn FnMut(&str, &Var<T>, crate::StateKind)) {}
}

impl<T: Element> crate::Forward<T> for Upsample {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        interpolate(x, &self.resize, self.mode)
    }
}
