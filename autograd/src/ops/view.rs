//! Views: reshape, transpose, permute, squeeze/unsqueeze, narrow/slice/select, expand.
//! Their forward shares storage; their backward maps the gradient back to the input's
//! layout.

use strata_tensor::{Dims, Element, IndexTensor, ShapeArg, Tensor};

use super::{linear_unary, pads_along, resolve};
use crate::{Result, Var};

impl<T: Element> Var<T> {
    /// A view (or copy when the strides demand it) with another shape of the same size,
    /// like `Tensor.reshape`; one dimension may be -1.
    ///
    /// # Errors
    /// [`TensorError::Reshape`](strata_tensor::TensorError::Reshape) when the sizes differ.
    pub fn reshape(&self, shape: impl ShapeArg) -> Result<Var<T>> {
        let value = self.value().reshape(shape)?;
        Ok(self.reshaped("reshape", value))
    }

    /// Like [`reshape`](Var::reshape) but never copies, like `Tensor.view`.
    ///
    /// # Errors
    /// [`TensorError::View`](strata_tensor::TensorError::View) when the strides do not
    /// allow a view, and as `reshape`.
    pub fn view(&self, shape: impl ShapeArg) -> Result<Var<T>> {
        let value = self.value().view(shape)?;
        Ok(self.reshaped("view", value))
    }

    /// Dimensions `start_dim..=end_dim` merged into one, like `torch.flatten`.
    ///
    /// # Errors
    /// [`TensorError::Dim`](strata_tensor::TensorError::Dim) for bad dims.
    pub fn flatten(&self, start_dim: isize, end_dim: isize) -> Result<Var<T>> {
        let value = self.value().flatten(start_dim, end_dim)?;
        Ok(self.reshaped("flatten", value))
    }

    /// A size-1 dimension inserted at `dim`, like `Tensor.unsqueeze`.
    ///
    /// # Errors
    /// [`TensorError::Dim`](strata_tensor::TensorError::Dim) for a bad dim.
    pub fn unsqueeze(&self, dim: isize) -> Result<Var<T>> {
        let value = self.value().unsqueeze(dim)?;
        Ok(self.reshaped("unsqueeze", value))
    }

    /// Dimension `dim` removed if its size is 1 (unchanged otherwise), like
    /// `Tensor.squeeze(dim)`.
    ///
    /// # Errors
    /// [`TensorError::Dim`](strata_tensor::TensorError::Dim) for a bad dim.
    pub fn squeeze(&self, dim: isize) -> Result<Var<T>> {
        let value = self.value().squeeze(dim)?;
        Ok(self.reshaped("squeeze", value))
    }

    /// Every size-1 dimension removed, like `Tensor.squeeze()`.
    pub fn squeeze_all(&self) -> Var<T> {
        let value = self.value().squeeze_all();
        self.reshaped("squeeze", value)
    }

    /// A shape-only op: the gradient is reshaped back to the input's shape.
    fn reshaped(&self, op: &'static str, value: Tensor<T>) -> Var<T> {
        let shape = Dims::from_slice(self.shape());
        let y = linear_unary!(self, op, value, [shape], |g| g.reshape(shape.as_slice())?);
        crate::taps::record(|| crate::taps::TapOp::Reshape, &[Some(self)], &y);
        y
    }

    /// Dimensions `dim0` and `dim1` swapped, like `Tensor.transpose`.
    ///
    /// # Errors
    /// [`TensorError::Dim`](strata_tensor::TensorError::Dim) for bad dims.
    pub fn transpose(&self, dim0: isize, dim1: isize) -> Result<Var<T>> {
        let value = self.value().transpose(dim0, dim1)?;
        Ok(linear_unary!(self, "transpose", value, [], |g| g.transpose(dim0, dim1)?))
    }

    /// The transpose of a matrix (a 0-d or 1-d var is returned as is), like `Tensor.t`.
    ///
    /// # Errors
    /// [`TensorError::Shape`](strata_tensor::TensorError::Shape) for more than 2 dims.
    pub fn t(&self) -> Result<Var<T>> {
        let value = self.value().t()?;
        Ok(linear_unary!(self, "t", value, [], |g| g.t()?))
    }

    /// Dimensions reordered, like `Tensor.permute`.
    ///
    /// # Errors
    /// [`TensorError::Dim`](strata_tensor::TensorError::Dim) when `dims` is not a
    /// permutation.
    pub fn permute(&self, dims: &[isize]) -> Result<Var<T>> {
        let value = self.value().permute(dims)?;
        let nd = self.ndim();
        let mut inverse = vec![0isize; nd];
        for (k, &d) in dims.iter().enumerate() {
            inverse[resolve(d, nd)] = k as isize;
        }
        Ok(linear_unary!(self, "permute", value, [inverse], |g| g
            .permute(&inverse)?))
    }

    /// `length` elements of `dim` from `start`, like `Tensor.narrow`.
    ///
    /// # Errors
    /// [`TensorError::Dim`](strata_tensor::TensorError::Dim) or
    /// [`TensorError::Index`](strata_tensor::TensorError::Index) when out of range.
    pub fn narrow(&self, dim: isize, start: usize, length: usize) -> Result<Var<T>> {
        let value = self.value().narrow(dim, start, length)?;
        let shape = Dims::from_slice(self.shape());
        let d = resolve(dim, shape.len());
        let after = shape[d] - start - length;
        let pads = pads_along(shape.len(), d, start, after);
        let y = linear_unary!(self, "narrow", value, [pads], |g| g
            .pad(&pads, T::zero())?);
        let op = || crate::taps::TapOp::Narrow {
            dim: d,
            start,
            length,
        };
        crate::taps::record(op, &[Some(self)], &y);
        Ok(y)
    }

    /// Every `step`-th element of `dim` in `start..end` (negative bounds count from the
    /// end, out-of-range bounds are clamped), like `x[.., start:end:step]`.
    ///
    /// # Errors
    /// [`TensorError::Dim`](strata_tensor::TensorError::Dim) for a bad dim,
    /// [`TensorError::Invalid`](strata_tensor::TensorError::Invalid) for a zero step.
    pub fn slice(&self, dim: isize, start: isize, end: isize, step: usize) -> Result<Var<T>> {
        let value = self.value().slice(dim, start, end, step)?;
        let shape = Dims::from_slice(self.shape());
        let d = resolve(dim, shape.len());
        // The positions kept, found by slicing their own indices the same way.
        let n = shape[d];
        let positions: Tensor<f64> =
            Tensor::arange(0.0, n as f64, 1.0)?.slice(0, start, end, step)?;
        let index = IndexTensor::from_tensor(&positions)?;
        let zeros = Tensor::zeros(&shape);
        Ok(self
            .unary_op("slice", value, {
                let (index, zeros) = (index.clone(), zeros.clone());
                move |g| Ok(zeros.index_add(d as isize, &index, g)?)
            })
            .double_backward(move |g, _, _| {
                let grad = Var::new(zeros.clone()).index_add(d as isize, &index, g)?;
                Ok(vec![Some(grad)])
            }))
    }

    /// The slice at `index` of `dim`, with that dimension removed, like `x.select(dim, i)`.
    ///
    /// # Errors
    /// [`TensorError::Dim`](strata_tensor::TensorError::Dim) or
    /// [`TensorError::Index`](strata_tensor::TensorError::Index) when out of range.
    pub fn select(&self, dim: isize, index: isize) -> Result<Var<T>> {
        let value = self.value().select(dim, index)?;
        let shape = Dims::from_slice(self.shape());
        let d = resolve(dim, shape.len());
        let i = if index < 0 {
            index + shape[d] as isize
        } else {
            index
        } as usize;
        let pads = pads_along(shape.len(), d, i, shape[d] - i - 1);
        Ok(linear_unary!(self, "select", value, [pads], |g| g
            .unsqueeze(d as isize)?
            .pad(&pads, T::zero())?))
    }

    /// Broadcast to `shape` without copying, like `torch.broadcast_to`.
    ///
    /// # Errors
    /// [`TensorError::Broadcast`](strata_tensor::TensorError::Broadcast) when the shape
    /// is not reachable by broadcasting.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Var<T>> {
        let value = self.value().broadcast_to(shape)?;
        Ok(self.summed_back("broadcast_to", value))
    }

    /// Expanded to `sizes` (-1 keeps a dimension), like `Tensor.expand`.
    ///
    /// # Errors
    /// As [`broadcast_to`](Var::broadcast_to).
    pub fn expand(&self, sizes: &[isize]) -> Result<Var<T>> {
        let value = self.value().expand(sizes)?;
        Ok(self.summed_back("expand", value))
    }

    fn summed_back(&self, op: &'static str, value: Tensor<T>) -> Var<T> {
        let shape = Dims::from_slice(self.shape());
        linear_unary!(self, op, value, [shape], |g| g.sum_to_shape(&shape)?)
    }

    /// The sum of this var down to `shape` (dimensions it broadcasts along are summed,
    /// like the gradient of a broadcast), the adjoint of
    /// [`broadcast_to`](Var::broadcast_to).
    ///
    /// # Errors
    /// As [`Tensor::sum_to_shape`].
    pub fn sum_to_shape(&self, shape: &[usize]) -> Result<Var<T>> {
        let value = self.value().sum_to_shape(shape)?;
        let from = Dims::from_slice(self.shape());
        Ok(linear_unary!(self, "sum_to_shape", value, [from], |g| g
            .broadcast_to(&from)?))
    }

    /// The value laid out contiguously (a copy only when needed), like
    /// `Tensor.contiguous`; the gradient passes unchanged.
    pub fn contiguous(&self) -> Var<T> {
        linear_unary!(self, "contiguous", self.value().contiguous(), [], |g| g
            .clone())
    }
}
