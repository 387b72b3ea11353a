//! Vector and matrix norms, like `torch.linalg.vector_norm` and `torch.linalg.matrix_norm`.

use crate::{Element, Result, Tensor, TensorError};

/// The matrix norms of [`Tensor::matrix_norm`], PyTorch's `ord` values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MatrixNorm {
    /// Frobenius: the square root of the sum of squares (`'fro'`, the default).
    #[default]
    Fro,
    /// The largest column sum of magnitudes (`ord=1`).
    One,
    /// The smallest column sum of magnitudes (`ord=-1`).
    NegOne,
    /// The largest row sum of magnitudes (`ord=inf`).
    Inf,
    /// The smallest row sum of magnitudes (`ord=-inf`).
    NegInf,
    /// The sum of the singular values (`'nuc'`).
    Nuc,
    /// The largest singular value (`ord=2`, the spectral norm).
    Two,
    /// The smallest singular value (`ord=-2`).
    NegTwo,
}

impl MatrixNorm {
    /// `(reduce first over, then the extreme over, largest)` for the induced norms: the
    /// sums run over rows (-2) for the column norms, over columns (-1) for the row norms.
    #[doc(hidden)]
    pub fn induced(self) -> Option<(isize, isize, bool)> {
        match self {
            MatrixNorm::Fro | MatrixNorm::Nuc | MatrixNorm::Two | MatrixNorm::NegTwo => None,
            MatrixNorm::One => Some((-2, -1, true)),
            MatrixNorm::NegOne => Some((-2, -1, false)),
            MatrixNorm::Inf => Some((-1, -2, true)),
            MatrixNorm::NegInf => Some((-1, -2, false)),
        }
    }
}

/// How a norm of singular values reduces them.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SingularReduce {
    /// Their sum (`'nuc'`).
    Sum,
    /// The largest (`2`).
    Max,
    /// The smallest (`-2`).
    Min,
}

/// The reduction of the singular values that `ord` is, if it is one.
#[doc(hidden)]
pub fn singular_reduction(ord: MatrixNorm) -> Option<SingularReduce> {
    match ord {
        MatrixNorm::Nuc => Some(SingularReduce::Sum),
        MatrixNorm::Two => Some(SingularReduce::Max),
        MatrixNorm::NegTwo => Some(SingularReduce::Min),
        _ => None,
    }
}

/// The largest or smallest singular value of an empty matrix does not exist.
#[doc(hidden)]
pub fn check_singular(shape: &[usize], ord: MatrixNorm) -> Result<()> {
    let nd = shape.len();
    if matches!(ord, MatrixNorm::Two | MatrixNorm::NegTwo) && shape[nd - 2].min(shape[nd - 1]) == 0
    {
        return Err(TensorError::shape(
            "matrix_norm",
            format!("ord={ord:?} of an empty matrix {shape:?} does not exist"),
        ));
    }
    Ok(())
}

/// `matrix_norm` needs two dimensions.
#[doc(hidden)]
pub fn check_matrix(shape: &[usize]) -> Result<()> {
    if shape.len() < 2 {
        return Err(TensorError::shape(
            "matrix_norm",
            format!("expects a matrix or a batch of matrices, got shape {shape:?}"),
        ));
    }
    Ok(())
}

impl<T: Element> Tensor<T> {
    /// The `ord`-norm over `dims` (all when empty), like
    /// `torch.linalg.vector_norm(x, ord, dims, keepdim)`: `(Σ|x|^ord)^(1/ord)`, with
    /// `ord = ∞` the largest magnitude, `-∞` the smallest, `0` the count of non-zeros.
    ///
    /// ```
    /// use strata_tensor::Tensor;
    ///
    /// let x = Tensor::from_vec(vec![3.0f32, -4.0], &[2])?;
    /// assert_eq!(x.vector_norm(2.0, &[], false)?.to_vec(), vec![5.0]);
    /// assert_eq!(x.vector_norm(1.0, &[], false)?.to_vec(), vec![7.0]);
    /// assert_eq!(x.vector_norm(f64::INFINITY, &[], false)?.to_vec(), vec![4.0]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Dim`] for a dimension out of range or repeated,
    /// [`TensorError::Invalid`] for a NaN `ord`.
    pub fn vector_norm(&self, ord: f64, dims: &[isize], keepdim: bool) -> Result<Tensor<T>> {
        if ord.is_nan() {
            return Err(TensorError::invalid("vector_norm", "ord is NaN"));
        }
        let a = self.abs();
        if ord == f64::INFINITY {
            a.amax(dims, keepdim)
        } else if ord == f64::NEG_INFINITY {
            a.amin(dims, keepdim)
        } else if ord == 0.0 {
            a.ne_scalar(T::zero()).sum(dims, keepdim)
        } else if ord == 1.0 {
            a.sum(dims, keepdim)
        } else if ord == 2.0 {
            Ok(a.square().sum(dims, keepdim)?.sqrt())
        } else {
            Ok(a.pow_scalar(T::from_f64(ord))
                .sum(dims, keepdim)?
                .pow_scalar(T::from_f64(1.0 / ord)))
        }
    }

    /// The gradient of a finite, non-zero `ord` [`vector_norm`](Tensor::vector_norm):
    /// `grad · sign(x)·|x|^(ord-1) / norm^(ord-1)`, 0 where the norm or `x` is 0 (as
    /// PyTorch gives at a zero norm). `norm` and `grad` have the keepdim shape.
    ///
    /// # Errors
    /// Broadcast errors when the shapes do not fit.
    #[doc(hidden)]
    pub fn vector_norm_backward(
        grad: &Tensor<T>,
        x: &Tensor<T>,
        norm: &Tensor<T>,
        ord: f64,
    ) -> Result<Tensor<T>> {
        let p1 = T::from_f64(ord - 1.0);
        let n = norm.broadcast_to(x.shape())?;
        let g = grad.broadcast_to(x.shape())?;
        let scale = x.zip_with(&n, |x, n| {
            if n == T::zero() || x == T::zero() {
                T::zero()
            } else {
                x.signum() * (x.abs() / n).powf(p1)
            }
        })?;
        scale.mul(&g)
    }

    /// A norm of each matrix in the last two dimensions, like
    /// `torch.linalg.matrix_norm(x, ord, dim=(-2, -1), keepdim)`.
    ///
    /// ```
    /// use strata_tensor::{MatrixNorm, Tensor};
    ///
    /// let x = Tensor::from_vec(vec![1.0f32, -2.0, 3.0, 4.0], &[2, 2])?;
    /// assert_eq!(x.matrix_norm(MatrixNorm::One, false)?.to_vec(), vec![6.0]); // |-2| + 4
    /// assert_eq!(x.matrix_norm(MatrixNorm::Inf, false)?.to_vec(), vec![7.0]); // 3 + 4
    /// let d = Tensor::from_vec(vec![3.0f64, 0.0, 0.0, -2.0], &[2, 2])?;
    /// assert_eq!(d.matrix_norm(MatrixNorm::Nuc, false)?.to_vec(), vec![5.0]);
    /// assert_eq!(d.matrix_norm(MatrixNorm::Two, false)?.to_vec(), vec![3.0]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Shape`] for fewer than two dimensions; for the norms of singular
    /// values, as [`svdvals`](Tensor::svdvals), and an empty matrix for `Two`/`NegTwo`
    /// (PyTorch's error too).
    pub fn matrix_norm(&self, ord: MatrixNorm, keepdim: bool) -> Result<Tensor<T>> {
        check_matrix(self.shape())?;
        if let Some(reduce) = singular_reduction(ord) {
            check_singular(self.shape(), ord)?;
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
