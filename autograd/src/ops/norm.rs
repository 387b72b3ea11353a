//! Vector and matrix norms on vars. The general `ord` norm has its own backward (0 at a
//! zero norm, as in PyTorch, where the composition would give NaN) written once for
//! tensors and once, with the same formula, for vars; the others compose differentiable
//! ops (`abs`, `sum`, `amax`/`amin`, whose ties split the gradient evenly as in PyTorch;
//! the singular values' differentiable `svdvals` for the nuclear and spectral norms).

use strata_tensor::plans::SingularReduce;
use strata_tensor::{Element, MatrixNorm, Tensor};

use crate::{Result, Var};

impl<T: Element> Var<T> {
    /// The `ord`-norm over `dims` (all when empty), like `torch.linalg.vector_norm`
    /// (see [`Tensor::vector_norm`]).
    ///
    /// # Errors
    /// As [`Tensor::vector_norm`].
    pub fn vector_norm(&self, ord: f64, dims: &[isize], keepdim: bool) -> Result<Var<T>> {
        let value = self.value().vector_norm(ord, dims, keepdim)?;
        if ord == f64::INFINITY {
            return self.abs().amax(dims, keepdim);
        }
        if ord == f64::NEG_INFINITY {
            return self.abs().amin(dims, keepdim);
        }
        if ord == 0.0 {
            return Ok(Var::new(value));
        }
        if ord == 1.0 {
            return self.abs().sum(dims, keepdim);
        }
        let x = self.value();
        let kept = self.value().vector_norm(ord, dims, true)?;
        let (x2, kept2) = (x.clone(), kept.clone());
        let dims = dims.to_vec();
        Ok(self
            .unary_op("vector_norm", value, move |g| {
                let g = g.reshape(kept.shape())?;
                Ok(Tensor::vector_norm_backward(&g, &x, &kept, ord)?)
            })
            .double_backward(move |g, inputs, _| {
                let x = crate::ops::input_or(inputs, 0, &x2);
                let n = x.vector_norm(ord, &dims, true)?;
                let g = g.reshape(kept2.shape())?;
                // sign(x)·(|x| / n)^(ord-1)·g, 0 where x or the norm is 0.
                let zero = Var::new(Tensor::scalar(T::zero()));
                let one = Var::new(Tensor::scalar(T::one()));
                let dead = x
                    .value()
                    .eq_scalar(T::zero())
                    .maximum(&kept2.eq_scalar(T::zero()))?;
                let safe_n = Var::where_(&kept2.eq_scalar(T::zero()), &one, &n)?;
                let safe_x = Var::where_(&dead, &one, &x.abs())?;
                let sign = Var::new(x.value().sign());
                let ratio = safe_x.div(&safe_n)?.pow_scalar(T::from_f64(ord - 1.0));
                let grad = sign.mul(&ratio)?.mul(&g)?;
                Ok(vec![Some(Var::where_(&dead, &zero, &grad)?)])
            }))
    }

    /// A norm of each matrix in the last two dimensions, like
    /// `torch.linalg.matrix_norm` (see [`Tensor::matrix_norm`]).
    ///
    /// # Errors
    /// As [`Tensor::matrix_norm`].
    pub fn matrix_norm(&self, ord: MatrixNorm, keepdim: bool) -> Result<Var<T>> {
        strata_tensor::plans::check_matrix(self.shape())?;
        if let Some(reduce) = strata_tensor::plans::singular_reduction(ord) {
            strata_tensor::plans::check_singular(self.shape(), ord)?;
            let s = self.svdvals()?;
            let r = match reduce {
                SingularReduce::Sum => s.sum(&[-1], false)?,
                SingularReduce::Max => s.amax(&[-1], false)?,
                SingularReduce::Min => s.amin(&[-1], false)?,
            };
            return if keepdim {
                r.unsqueeze(-1)?.unsqueeze(-1)
            } else {
                Ok(r)
            };
        }
        match ord.induced() {
            None => self.vector_norm(2.0, &[-2, -1], keepdim),
            Some((sum_over, extreme_over, largest)) => {
                let sums = self.abs().sum(&[sum_over], true)?;
                let e = if largest {
                    sums.amax(&[extreme_over], true)?
                } else {
                    sums.amin(&[extreme_over], true)?
                };
                if keepdim {
                    Ok(e)
                } else {
                    e.squeeze(-1)?.squeeze(-1)
                }
            }
        }
    }
}
