//! Running products and log-sum-exps on vars. The first-order backwards are the fused
//! kernels of strata-tensor; the differentiable ones recompute the scan with ops that have
//! differentiable backwards (products of slices; `log cumsum exp` shifted by a constant).

use strata_tensor::{Element, Tensor};

use crate::ops::{decomposed, resolve};
use crate::{Result, Var};

impl<T: Element> Var<T> {
    /// The running product along `dim`, like `torch.cumprod`; its gradient is exact also
    /// where the input has zeros.
    ///
    /// # Errors
    /// As [`Tensor::cumprod`].
    pub fn cumprod(&self, dim: isize) -> Result<Var<T>> {
        let x = self.value();
        let value = x.cumprod(dim)?;
        let saved = x.clone();
        Ok(Var::from_op("cumprod", value, &[self], move |g, _| {
            Ok(vec![Some(Tensor::cumprod_backward(g, &saved, dim)?)])
        })
        .double_backward(move |g, inputs, _| {
            decomposed(g, inputs, &[Some(x.clone())], |xs| {
                let x = xs[0].as_ref().expect("given");
                if x.ndim() == 0 {
                    return Ok(x.clone());
                }
                let d = resolve(dim, x.ndim());
                let n = x.shape()[d];
                let mut parts = Vec::with_capacity(n);
                for k in 0..n {
                    let slice = x.narrow(d as isize, k, 1)?;
                    let running = match parts.last() {
                        Some(prev) => slice.mul(prev)?,
                        None => slice,
                    };
                    parts.push(running);
                }
                if parts.is_empty() {
                    return Ok(x.clone());
                }
                Var::cat(&parts, d as isize)
            })
        }))
    }

    /// `log Σ_{j≤k} e^{x_j}` along `dim`, like `torch.logcumsumexp`, stable for large
    /// values in both directions.
    ///
    /// # Errors
    /// As [`Tensor::logcumsumexp`].
    pub fn logcumsumexp(&self, dim: isize) -> Result<Var<T>> {
        let x = self.value();
        let value = x.logcumsumexp(dim)?;
        let (saved_x, saved_y) = (x.clone(), value.clone());
        Ok(Var::from_op("logcumsumexp", value, &[self], move |g, _| {
            Ok(vec![Some(Tensor::logcumsumexp_backward(
                g, &saved_x, &saved_y, dim,
            )?)])
        })
        .double_backward(move |g, inputs, _| {
            decomposed(g, inputs, &[Some(x.clone())], |xs| {
                let x = xs[0].as_ref().expect("given");
                if x.numel() == 0 {
                    return Ok(x.clone());
                }
                // log(cumsum(e^{x - m})) + m with m the lane maximum, a constant.
                let m = x.value().amax(&[dim], true)?;
                let m = m.map(|v| if v.is_finite() { v } else { T::zero() });
                let m = Var::new(m);
                x.sub(&m)?.exp().cumsum(dim)?.log().add(&m)
            })
        }))
    }
}
