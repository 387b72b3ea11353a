//! Views: new layouts over the same storage (reshape, transpose, permute, narrow, expand...).

use crate::handle::layout::{Layout, numel, resolve_dim, resolve_insert_dim};
use crate::{Dims, Element, Result, Tensor, TensorError};

/// A shape argument for [`Tensor::reshape`] and [`Tensor::view`]: sizes, one of which may be
/// `-1` to be inferred. Implemented for arrays, slices and `Vec`s of `usize`, `isize`, `i32`
/// and `i64`, so `x.reshape([2, -1])` and `x.reshape(other.shape())` both work.
pub trait ShapeArg {
    /// The sizes, with `-1` for the inferred dimension.
    fn to_spec(&self) -> Vec<isize>;
}

macro_rules! impl_shape_arg {
    ($($t:ty),*) => {$(
        impl ShapeArg for [$t] {
            fn to_spec(&self) -> Vec<isize> { self.iter().map(|&d| d as isize).collect() }
        }
        impl ShapeArg for &[$t] {
            fn to_spec(&self) -> Vec<isize> { (**self).to_spec() }
        }
        impl<const N: usize> ShapeArg for [$t; N] {
            fn to_spec(&self) -> Vec<isize> { self.as_slice().to_spec() }
        }
        impl<const N: usize> ShapeArg for &[$t; N] {
            fn to_spec(&self) -> Vec<isize> { self.as_slice().to_spec() }
        }
        impl ShapeArg for Vec<$t> {
            fn to_spec(&self) -> Vec<isize> { self.as_slice().to_spec() }
        }
        impl ShapeArg for &Vec<$t> {
            fn to_spec(&self) -> Vec<isize> { self.as_slice().to_spec() }
        }
    )*};
}
impl_shape_arg!(usize, isize, i32, i64);

impl ShapeArg for Dims {
    fn to_spec(&self) -> Vec<isize> {
        self.as_slice().to_spec()
    }
}

impl ShapeArg for &Dims {
    fn to_spec(&self) -> Vec<isize> {
        self.as_slice().to_spec()
    }
}

/// Resolves a shape spec with at most one `-1` against `numel` elements.
fn infer_shape(op: &'static str, from: &[usize], spec: &[isize]) -> Result<Dims> {
    let err = || TensorError::Reshape {
        op,
        from: from.to_vec(),
        to: spec.to_vec(),
    };
    let mut inferred = None;
    let mut known = 1usize;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 if inferred.is_none() => inferred = Some(i),
            d if d >= 0 => known = known.checked_mul(d as usize).ok_or_else(err)?,
            _ => return Err(err()),
        }
    }
    let total = numel(from);
    let mut shape: Dims = spec.iter().map(|&d| d.max(0) as usize).collect();
    match inferred {
        Some(i) => {
            if known == 0 || !total.is_multiple_of(known) {
                return Err(err());
            }
            shape[i] = total / known;
        }
        None if known != total => return Err(err()),
        None => {}
    }
    Ok(shape)
}

impl<T: Element> Tensor<T> {
    /// The same elements in a new shape, like `torch.reshape`: a view when the strides allow
    /// it, a copy otherwise. One size may be `-1`, inferred from the others.
    ///
    /// ```
    /// use strata_tensor::Tensor;
    /// let t = Tensor::<f32>::arange(0.0, 6.0, 1.0)?.reshape([2, -1])?;
    /// assert_eq!(t.shape(), &[2, 3]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Reshape`] when the element counts differ or the spec is malformed.
    pub fn reshape(&self, shape: impl ShapeArg) -> Result<Tensor<T>> {
        let shape = infer_shape("reshape", self.shape(), &shape.to_spec())?;
        match self.layout().view_strides(&shape) {
            Some(strides) => {
                Ok(self.with_layout(Layout::from_parts(shape, strides, self.layout().offset())))
            }
            None => {
                let c = self.contiguous();
                let strides = crate::handle::layout::contiguous_dims(&shape);
                Ok(c.with_layout(Layout::from_parts(shape, strides, c.layout().offset())))
            }
        }
    }

    /// The same elements in a new shape without copying, like `Tensor.view`.
    ///
    /// # Errors
    /// [`TensorError::Reshape`] when the element counts differ, [`TensorError::View`] when
    /// the strides cannot express the new shape (use [`reshape`](Tensor::reshape)).
    pub fn view(&self, shape: impl ShapeArg) -> Result<Tensor<T>> {
        let shape = infer_shape("view", self.shape(), &shape.to_spec())?;
        let strides = self
            .layout()
            .view_strides(&shape)
            .ok_or_else(|| TensorError::View {
                op: "view",
                shape: self.shape().to_vec(),
                strides: self.strides().to_vec(),
                to: shape.to_vec(),
            })?;
        Ok(self.with_layout(Layout::from_parts(shape, strides, self.layout().offset())))
    }

    /// Dimensions `start_dim..=end_dim` merged into one, like `torch.flatten`.
    ///
    /// # Errors
    /// [`TensorError::Dim`] for an out-of-range dimension, [`TensorError::Invalid`] when
    /// `start_dim` comes after `end_dim`.
    pub fn flatten(&self, start_dim: isize, end_dim: isize) -> Result<Tensor<T>> {
        let s = resolve_dim("flatten", start_dim, self.shape())?;
        let e = resolve_dim("flatten", end_dim, self.shape())?;
        if self.ndim() == 0 {
            return self.reshape([1]);
        }
        if s > e {
            return Err(TensorError::invalid(
                "flatten",
                format!("start_dim {start_dim} comes after end_dim {end_dim}"),
            ));
        }
        let mut shape: Vec<usize> = self.shape()[..s].to_vec();
        shape.push(numel(&self.shape()[s..=e]));
        shape.extend_from_slice(&self.shape()[e + 1..]);
        self.reshape(&shape)
    }

    /// Dimensions `dim0` and `dim1` swapped, like `torch.transpose` (a view).
    ///
    /// # Errors
    /// [`TensorError::Dim`] for an out-of-range dimension.
    pub fn transpose(&self, dim0: isize, dim1: isize) -> Result<Tensor<T>> {
        let a = resolve_dim("transpose", dim0, self.shape())?;
        let b = resolve_dim("transpose", dim1, self.shape())?;
        if self.ndim() == 0 {
            return Ok(self.clone());
        }
        let mut shape = Dims::from_slice(self.shape());
        let mut strides = Dims::from_slice(self.strides());
        shape.swap(a, b);
        strides.swap(a, b);
        Ok(self.with_layout(Layout::from_parts(shape, strides, self.layout().offset())))
    }

    /// The transpose of a matrix, like `Tensor.t()`: 0-d and 1-d tensors come back unchanged.
    ///
    /// # Errors
    /// [`TensorError::Shape`] for tensors of more than 2 dimensions.
    pub fn t(&self) -> Result<Tensor<T>> {
        match self.ndim() {
            0 | 1 => Ok(self.clone()),
            2 => self.transpose(0, 1),
            _ => Err(TensorError::shape(
                "t",
                format!(
                    "expects a tensor of at most 2 dimensions, got shape {:?}",
                    self.shape()
                ),
            )),
        }
    }

    /// The dimensions reordered, like `torch.permute` (a view): output dimension `i` is input
    /// dimension `dims[i]`.
    ///
    /// # Errors
    /// [`TensorError::Invalid`] when `dims` is not a permutation of the dimensions.
    pub fn permute(&self, dims: &[isize]) -> Result<Tensor<T>> {
        if dims.len() != self.ndim() {
            return Err(TensorError::invalid(
                "permute",
                format!(
                    "{} dimensions given for a tensor of shape {:?}",
                    dims.len(),
                    self.shape()
                ),
            ));
        }
        let mut order = Dims::new();
        let mut shape = Dims::new();
        let mut strides = Dims::new();
        for &d in dims {
            let d = resolve_dim("permute", d, self.shape())?;
            if order.contains(&d) {
                return Err(TensorError::invalid(
                    "permute",
                    format!("{dims:?} repeats a dimension"),
                ));
            }
            order.push(d);
            shape.push(self.shape()[d]);
            strides.push(self.strides()[d]);
        }
        Ok(self.with_layout(Layout::from_parts(shape, strides, self.layout().offset())))
    }

    /// A size-1 dimension inserted at `dim`, like `torch.unsqueeze` (a view).
    ///
    /// # Errors
    /// [`TensorError::Dim`] when `dim` is outside `-ndim-1..=ndim`.
    pub fn unsqueeze(&self, dim: isize) -> Result<Tensor<T>> {
        let d = resolve_insert_dim("unsqueeze", dim, self.shape())?;
        let mut shape = Dims::from_slice(self.shape());
        let mut strides = Dims::from_slice(self.strides());
        let stride = if d < shape.len() {
            shape[d] * strides[d]
        } else {
            1
        };
        shape.insert(d, 1);
        strides.insert(d, stride);
        Ok(self.with_layout(Layout::from_parts(shape, strides, self.layout().offset())))
    }

    /// Dimension `dim` removed if its size is 1 (unchanged otherwise), like
    /// `torch.squeeze(x, dim)`.
    ///
    /// # Errors
    /// [`TensorError::Dim`] for an out-of-range dimension.
    pub fn squeeze(&self, dim: isize) -> Result<Tensor<T>> {
        let d = resolve_dim("squeeze", dim, self.shape())?;
        if self.ndim() == 0 || self.shape()[d] != 1 {
            return Ok(self.clone());
        }
        let mut shape = Dims::from_slice(self.shape());
        let mut strides = Dims::from_slice(self.strides());
        shape.remove(d);
        strides.remove(d);
        Ok(self.with_layout(Layout::from_parts(shape, strides, self.layout().offset())))
    }

    /// Every size-1 dimension removed, like `torch.squeeze(x)`.
    pub fn squeeze_all(&self) -> Tensor<T> {
        let (mut shape, mut strides) = (Dims::new(), Dims::new());
        for (&d, &s) in self.shape().iter().zip(self.strides()) {
            if d != 1 {
                shape.push(d);
                strides.push(s);
            }
        }
        self.with_layout(Layout::from_parts(shape, strides, self.layout().offset()))
    }

    /// `length` elements of dimension `dim` starting at `start`, like `torch.narrow` (a view).
    ///
    /// # Errors
    /// [`TensorError::Dim`] for an out-of-range dimension, [`TensorError::Invalid`] when the
    /// range does not fit in the dimension.
    pub fn narrow(&self, dim: isize, start: usize, length: usize) -> Result<Tensor<T>> {
        if self.ndim() == 0 {
            return Err(TensorError::invalid("narrow", "cannot narrow a 0-d tensor"));
        }
        let d = resolve_dim("narrow", dim, self.shape())?;
        let size = self.shape()[d];
        if start.checked_add(length).is_none_or(|end| end > size) {
            return Err(TensorError::invalid(
                "narrow",
                format!(
                    "start {start} + length {length} exceeds size {size} of dimension {dim} \
                     (shape {:?})",
                    self.shape()
                ),
            ));
        }
        self.slice(dim, start as isize, (start + length) as isize, 1)
    }

    /// Elements `start, start + step, ...` before `end` along `dim`, like Python's
    /// `x[..., start:end:step]` (a view). Negative `start`/`end` count from the end; both are
    /// clamped to the dimension, so `isize::MAX` means "to the end".
    ///
    /// # Errors
    /// [`TensorError::Dim`] for an out-of-range dimension, [`TensorError::Invalid`] for a
    /// zero step or a 0-d tensor.
    pub fn slice(&self, dim: isize, start: isize, end: isize, step: usize) -> Result<Tensor<T>> {
        if self.ndim() == 0 {
            return Err(TensorError::invalid("slice", "cannot slice a 0-d tensor"));
        }
        let d = resolve_dim("slice", dim, self.shape())?;
        if step == 0 {
            return Err(TensorError::invalid("slice", "step must be positive"));
        }
        let size = self.shape()[d] as isize;
        let clamp = |i: isize| {
            let i = if i < 0 { i + size } else { i };
            i.clamp(0, size) as usize
        };
        let (s, e) = (clamp(start), clamp(end));
        let len = if e > s { (e - s).div_ceil(step) } else { 0 };
        let mut shape = Dims::from_slice(self.shape());
        let mut strides = Dims::from_slice(self.strides());
        // An empty view keeps the offset: moving it could point past the storage of an
        // empty tensor (invariant 1 of `Tensor`).
        let offset = if len > 0 && self.numel() > 0 {
            self.layout().offset() + s * strides[d]
        } else {
            self.layout().offset()
        };
        shape[d] = len;
        // With two or more elements, `step` < the dimension's size, so the new stride stays
        // below the layout's extent; with fewer it is never multiplied by an index.
        if len > 1 {
            strides[d] *= step;
        }
        Ok(self.with_layout(Layout::from_parts(shape, strides, offset)))
    }

    /// The slice at `index` along `dim`, with that dimension removed, like `x[:, index]`
    /// (a view). A negative index counts from the end.
    ///
    /// # Errors
    /// [`TensorError::Dim`] or [`TensorError::Index`] when out of range.
    pub fn select(&self, dim: isize, index: isize) -> Result<Tensor<T>> {
        if self.ndim() == 0 {
            return Err(TensorError::invalid("select", "cannot index a 0-d tensor"));
        }
        let d = resolve_dim("select", dim, self.shape())?;
        let size = self.shape()[d];
        let i = if index < 0 {
            index + size as isize
        } else {
            index
        };
        if i < 0 || i as usize >= size {
            return Err(TensorError::Index {
                op: "select",
                index: index as i64,
                dim: d,
                size,
            });
        }
        let mut shape = Dims::from_slice(self.shape());
        let mut strides = Dims::from_slice(self.strides());
        let offset = if self.numel() > 0 {
            self.layout().offset() + i as usize * strides[d]
        } else {
            self.layout().offset() // as in `slice`: an empty view keeps the offset
        };
        shape.remove(d);
        strides.remove(d);
        Ok(self.with_layout(Layout::from_parts(shape, strides, offset)))
    }

    /// A broadcast view of `shape`, like `torch.broadcast_to` (no copy: repeated elements
    /// share storage).
    ///
    /// # Errors
    /// [`TensorError::Broadcast`] when `self`'s shape does not broadcast to `shape`.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor<T>> {
        let layout = self.layout().broadcast_to("broadcast_to", shape)?;
        Ok(self.with_layout(layout))
    }

    /// Like [`broadcast_to`](Tensor::broadcast_to), with PyTorch's `expand` sizes: `-1` keeps
    /// a dimension's size, and new leading dimensions may be added.
    ///
    /// # Errors
    /// [`TensorError::Broadcast`] when a non-1 dimension would change size.
    pub fn expand(&self, sizes: &[isize]) -> Result<Tensor<T>> {
        let err = || TensorError::Broadcast {
            op: "expand",
            lhs: self.shape().to_vec(),
            rhs: sizes.iter().map(|&s| s.max(0) as usize).collect(),
        };
        if sizes.len() < self.ndim() {
            return Err(err());
        }
        let lead = sizes.len() - self.ndim();
        let mut shape = Dims::new();
        for (i, &s) in sizes.iter().enumerate() {
            shape.push(match s {
                -1 if i >= lead => self.shape()[i - lead],
                s if s >= 0 => s as usize,
                _ => return Err(err()),
            });
        }
        let layout = self
            .layout()
            .broadcast_to("expand", &shape)
            .map_err(|_| err())?;
        Ok(self.with_layout(layout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(data: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_slice(data, shape).unwrap()
    }

    #[test]
    fn views_share_storage() {
        let a = t(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
        let b = a.transpose(0, 1).unwrap();
        assert!(b.shares_storage(&a));
        assert_eq!(b.shape(), &[3, 2]);
        assert_eq!(b.to_vec(), vec![1., 4., 2., 5., 3., 6.]);
        // reshape of a transposed tensor must copy
        let c = b.reshape([6]).unwrap();
        assert!(!c.shares_storage(&a));
        assert_eq!(c.to_vec(), vec![1., 4., 2., 5., 3., 6.]);
        assert!(matches!(b.view([6]), Err(TensorError::View { .. })));
        assert!(a.view([3, -1]).unwrap().shares_storage(&a));
    }

    #[test]
    fn reshape_errors() {
        let a = t(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
        assert!(matches!(
            a.reshape([4, -1]),
            Err(TensorError::Reshape { .. })
        ));
        assert!(matches!(
            a.reshape([-1, -1]),
            Err(TensorError::Reshape { .. })
        ));
        assert!(matches!(a.reshape([7]), Err(TensorError::Reshape { .. })));
        assert_eq!(
            a.reshape([4, -1]).unwrap_err().to_string(),
            "reshape: cannot reshape [2, 3] into [4, -1]"
        );
        assert_eq!(t(&[], &[0, 3]).reshape([-1, 3]).unwrap().shape(), &[0, 3]);
    }

    #[test]
    fn slicing() {
        let a = Tensor::<f32>::arange(0.0, 10.0, 1.0).unwrap();
        assert_eq!(a.slice(0, 1, 8, 3).unwrap().to_vec(), vec![1., 4., 7.]);
        assert_eq!(
            a.slice(0, -3, isize::MAX, 1).unwrap().to_vec(),
            vec![7., 8., 9.]
        );
        assert_eq!(a.slice(0, 5, 2, 1).unwrap().numel(), 0);
        assert_eq!(a.narrow(0, 2, 3).unwrap().to_vec(), vec![2., 3., 4.]);
        assert!(a.narrow(0, 8, 3).is_err());
        assert_eq!(a.select(0, -1).unwrap().item().unwrap(), 9.0);
        assert!(matches!(a.select(0, 10), Err(TensorError::Index { .. })));
    }

    #[test]
    fn squeeze_unsqueeze_permute_expand() {
        let a = t(&[1., 2., 3.], &[3]);
        let b = a.unsqueeze(0).unwrap().unsqueeze(-1).unwrap();
        assert_eq!(b.shape(), &[1, 3, 1]);
        assert_eq!(b.squeeze(0).unwrap().shape(), &[3, 1]);
        assert_eq!(b.squeeze(1).unwrap().shape(), &[1, 3, 1]);
        assert_eq!(b.squeeze_all().shape(), &[3]);
        let e = b.expand(&[2, -1, 4]).unwrap();
        assert_eq!(e.shape(), &[2, 3, 4]);
        assert_eq!(e.get(&[1, 2, 3]).unwrap(), 3.0);
        assert!(matches!(a.expand(&[4]), Err(TensorError::Broadcast { .. })));
        let p = Tensor::<f32>::zeros(&[2, 3, 4])
            .permute(&[2, 0, 1])
            .unwrap();
        assert_eq!(p.shape(), &[4, 2, 3]);
        assert!(Tensor::<f32>::zeros(&[2, 3]).permute(&[0, 0]).is_err());
        assert_eq!(
            Tensor::<f32>::zeros(&[2, 3, 4])
                .flatten(1, -1)
                .unwrap()
                .shape(),
            &[2, 12]
        );
    }
}
