//! Layers that only move values: `Unflatten`, `PixelShuffle`, `PixelUnshuffle`.

use strata_autograd::Var;
use strata_tensor::Element;

use crate::error::{config_error, input_error};
use crate::{Forward, Module, Result, StateKind};

/// Splits dimension `dim` into `sizes`, like `nn.Unflatten(dim, sizes)`; one size may be
/// -1 (inferred).
#[derive(Clone, Debug)]
pub struct Unflatten {
    dim: isize,
    sizes: Vec<isize>,
}

impl Unflatten {
    /// The layer.
    ///
    /// # Errors
    /// [`NnError::Config`](crate::NnError::Config) when `sizes` is empty, has more than one
    /// -1, or a size below -1.
    pub fn new(dim: isize, sizes: &[isize]) -> Result<Self> {
        let inferred = sizes.iter().filter(|&&s| s == -1).count();
        if sizes.is_empty() || inferred > 1 || sizes.iter().any(|&s| s < -1) {
            return Err(config_error(
                "Unflatten",
                format!("sizes must be non-negative with at most one -1, got {sizes:?}"),
            ));
        }
        Ok(Unflatten {
            dim,
            sizes: sizes.to_vec(),
        })
    }

    /// The dimension split (maybe negative).
    pub fn dim(&self) -> isize {
        self.dim
    }

    /// The sizes it is split into (one may be -1).
    pub fn sizes(&self) -> &[isize] {
        &self.sizes
    }
}

impl<T: Element> Module<T> for Unflatten {
    fn visit_state(&self, _: &mut dyn FnMut(&str, &Var<T>, StateKind)) {}
}

impl<T: Element> Forward<T> for Unflatten {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let nd = x.ndim() as isize;
        let d = if self.dim < 0 {
            self.dim + nd
        } else {
            self.dim
        };
        if d < 0 || d >= nd {
            return Err(input_error(
                "Unflatten",
                format!("dim {} is out of range for input {:?}", self.dim, x.shape()),
            ));
        }
        let d = d as usize;
        let mut shape: Vec<isize> = x.shape()[..d].iter().map(|&s| s as isize).collect();
        shape.extend(&self.sizes);
        shape.extend(x.shape()[d + 1..].iter().map(|&s| s as isize));
        let size = x.shape()[d];
        // A product that overflows splits no dimension.
        let known = self
            .sizes
            .iter()
            .filter(|&&s| s >= 0)
            .try_fold(1usize, |n, &s| n.checked_mul(s as usize));
        let fits = match known {
            Some(known) if self.sizes.contains(&-1) => known != 0 && size.is_multiple_of(known),
            Some(known) => known == size,
            None => false,
        };
        if !fits {
            return Err(input_error(
                "Unflatten",
                format!(
                    "sizes {:?} do not split dimension {d} of size {size}",
                    self.sizes
                ),
            ));
        }
        Ok(x.reshape(shape.as_slice())?)
    }
}

/// `[*, C·r², H, W]` → `[*, C, H·r, W·r]`, like `nn.PixelShuffle(upscale_factor)`
/// (sub-pixel convolution's rearrangement).
#[derive(Clone, Copy, Debug)]
pub struct PixelShuffle {
    r: usize,
}

/// `[*, C, H·r, W·r]` → `[*, C·r², H, W]`, like `nn.PixelUnshuffle(downscale_factor)`.
#[derive(Clone, Copy, Debug)]
pub struct PixelUnshuffle {
    r: usize,
}

fn check_factor(layer: &'static str, r: usize) -> Result<usize> {
    if r == 0 {
        return Err(config_error(layer, "the factor must be positive"));
    }
    Ok(r)
}

impl PixelShuffle {
    /// The layer.
    ///
    /// # Errors
    /// [`NnError::Config`](crate::NnError::Config) for a factor of 0.
    pub fn new(upscale_factor: usize) -> Result<Self> {
        Ok(PixelShuffle {
            r: check_factor("PixelShuffle", upscale_factor)?,
        })
    }

    /// The upscale factor.
    pub fn upscale_factor(&self) -> usize {
        self.r
    }
}

impl PixelUnshuffle {
    /// The layer.
    ///
    /// # Errors
    /// [`NnError::Config`](crate::NnError::Config) for a factor of 0.
    pub fn new(downscale_factor: usize) -> Result<Self> {
        Ok(PixelUnshuffle {
            r: check_factor("PixelUnshuffle", downscale_factor)?,
        })
    }

    /// The downscale factor.
    pub fn downscale_factor(&self) -> usize {
        self.r
    }
}

/// The leading dims of `x` (at least 3-D) and its `[C, H, W]`.
fn split_chw<T: Element>(layer: &'static str, x: &Var<T>) -> Result<(Vec<usize>, [usize; 3])> {
    let s = x.shape();
    if s.len() < 3 {
        return Err(input_error(
            layer,
            format!("expected an input of at least 3 dimensions [*, C, H, W], got {s:?}"),
        ));
    }
    let k = s.len() - 3;
    Ok((s[..k].to_vec(), [s[k], s[k + 1], s[k + 2]]))
}

impl<T: Element> Module<T> for PixelShuffle {
    fn visit_state(&self, _: &mut dyn FnMut(&str, &Var<T>, StateKind)) {}
}

impl<T: Element> Forward<T> for PixelShuffle {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let (lead, [c, h, w]) = split_chw("PixelShuffle", x)?;
        let r = self.r;
        // A factor whose square overflows divides no channel count.
        let Some(r2) = r.checked_mul(r).filter(|&r2| c.is_multiple_of(r2)) else {
            return Err(input_error(
                "PixelShuffle",
                format!("the channels ({c}) must be divisible by the square of the factor ({r})"),
            ));
        };
        let k = lead.len() as isize;
        let expanded: Vec<usize> = [&lead[..], &[c / r2, r, r, h, w]].concat();
        // [*, C, r1, r2, H, W] → [*, C, H, r1, W, r2]
        let mut perm: Vec<isize> = (0..k).collect();
        perm.extend([k, k + 3, k + 1, k + 4, k + 2]);
        let out: Vec<usize> = [&lead[..], &[c / r2, h * r, w * r]].concat();
        Ok(x.reshape(expanded.as_slice())?
            .permute(&perm)?
            .reshape(out.as_slice())?)
    }
}

impl<T: Element> Module<T> for PixelUnshuffle {
    fn visit_state(&self, _: &mut dyn FnMut(&str, &Var<T>, StateKind)) {}
}

impl<T: Element> Forward<T> for PixelUnshuffle {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let (lead, [c, h, w]) = split_chw("PixelUnshuffle", x)?;
        let r = self.r;
        if !h.is_multiple_of(r) || !w.is_multiple_of(r) {
            return Err(input_error(
                "PixelUnshuffle",
                format!("height {h} and width {w} must be divisible by the factor {r}"),
            ));
        }
        let k = lead.len() as isize;
        let expanded: Vec<usize> = [&lead[..], &[c, h / r, r, w / r, r]].concat();
        // [*, C, H, r1, W, r2] → [*, C, r1, r2, H, W]
        let mut perm: Vec<isize> = (0..k).collect();
        perm.extend([k, k + 2, k + 4, k + 1, k + 3]);
        let out: Vec<usize> = [&lead[..], &[c * r * r, h / r, w / r]].concat();
        Ok(x.reshape(expanded.as_slice())?
            .permute(&perm)?
            .reshape(out.as_slice())?)
    }
}
