//! The `Tensor` handle: shared storage plus a layout.

use std::sync::Arc;

use crate::handle::layout::{Layout, check_shape, numel};
use crate::handle::storage::{Buffer, Storage, alloc, try_alloc};
use crate::{DType, Element, Result, TensorError};

/// An n-dimensional array of `f32` (the default) or `f64`.
///
/// A `Tensor` is a cheap-to-clone handle: an `Arc` to its storage plus a [`Layout`] (shape,
/// strides, offset). Views — [`reshape`](Tensor::reshape) of contiguous data,
/// [`transpose`](Tensor::transpose), [`permute`](Tensor::permute),
/// [`narrow`](Tensor::narrow), [`expand`](Tensor::expand) and the rest — build a new layout
/// over the same storage and copy nothing. Operations return new tensors, always contiguous.
///
/// ```
/// use strata_tensor::Tensor;
/// let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
/// let b = a.transpose(0, 1)?; // a [3, 2] view: no copy
/// assert_eq!(b.to_vec(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
/// let c = a.add(&a.sum(&[0], true)?)?; // broadcasting [2, 3] + [1, 3]
/// assert_eq!(c.to_vec(), vec![6.0, 9.0, 12.0, 9.0, 12.0, 15.0]);
/// # Ok::<(), strata_tensor::TensorError>(())
/// ```
///
/// # Invariants
///
/// 1. Every element the layout can address lies inside the storage:
///    `layout.storage_extent() <= storage.len()`.
/// 2. `shape` and `strides` have the same length; strides are never negative.
/// 3. A tensor is a value: no operation changes what another handle sees. Storage is written
///    only through `&mut Tensor` while its `Arc` is unique; in-place methods (`add_`,
///    `axpy_`, [`as_mut_slice`](Tensor::as_mut_slice), ...) copy first when the storage is
///    shared (copy-on-write) and are the only methods that touch storage after creation.
/// 4. A layout whose elements overlap (a stride of 0 on a dimension longer than 1, from
///    `expand`) is never written through: in-place methods first make the tensor contiguous.
/// 5. The product of the non-zero sizes of `shape` fits in `usize`
///    ([`checked_numel`](crate::checked_numel)), so the element count of the shape and of
///    every part of it can be computed without overflow; storage that the tensor owns
///    holds at most `isize::MAX` bytes. Every constructor and view checks this with checked
///    arithmetic and refuses other shapes ([`TensorError::TooLarge`]); invariant 1 is then
///    asserted, in release builds too, wherever a layout meets its storage
///    (`from_contiguous`, `with_layout`), so a wrong size can only ever panic, never read
///    outside the storage.
#[derive(Clone)]
pub struct Tensor<T: Element = f32> {
    storage: Arc<Storage<T>>,
    layout: Layout,
}

impl<T: Element> Tensor<T> {
    /// Wraps `data` (row-major) as a tensor of `shape`.
    ///
    /// # Errors
    /// [`TensorError::DataLength`] when `data.len()` is not the product of `shape`, and
    /// [`TensorError::TooLarge`] when that product overflows.
    pub fn from_vec(data: Vec<T>, shape: &[usize]) -> Result<Self> {
        Self::from_buffer(Buffer::from(data), shape)
    }

    /// [`from_vec`](Tensor::from_vec) for a buffer from the crate's allocator.
    pub(crate) fn from_buffer(data: impl Into<Buffer<T>>, shape: &[usize]) -> Result<Self> {
        let data = data.into();
        let n = check_shape::<T>("from_vec", shape)?;
        if data.len() != n {
            return Err(TensorError::DataLength {
                op: "from_vec",
                len: data.len(),
                shape: shape.to_vec(),
                numel: n,
            });
        }
        Ok(Self::from_contiguous(data, shape))
    }

    /// Copies `data` (row-major) into a tensor of `shape`.
    ///
    /// # Errors
    /// [`TensorError::DataLength`] when `data.len()` is not the product of `shape`,
    /// [`TensorError::TooLarge`] when that product overflows, and
    /// [`TensorError::OutOfMemory`] when the copy cannot be allocated.
    pub fn from_slice(data: &[T], shape: &[usize]) -> Result<Self> {
        let n = check_shape::<T>("from_slice", shape)?;
        if data.len() != n {
            return Err(TensorError::DataLength {
                op: "from_slice",
                len: data.len(),
                shape: shape.to_vec(),
                numel: n,
            });
        }
        let mut buf = try_alloc("from_slice", shape)?;
        buf.copy_from_slice(data);
        Ok(Self::from_contiguous(buf, shape))
    }

    /// A 0-d tensor (shape `[]`) holding `value`, like `torch.tensor(value)`.
    pub fn scalar(value: T) -> Self {
        Self::from_contiguous(vec![value], &[])
    }

    /// Builds a tensor from a buffer that already holds `numel(shape)` row-major elements.
    ///
    /// # Panics
    /// When it does not (or `shape` cannot be counted): invariants 1 and 5, checked in
    /// release builds too, since the kernels index the storage through the layout.
    #[inline]
    #[track_caller]
    pub(crate) fn from_contiguous(data: impl Into<Buffer<T>>, shape: &[usize]) -> Self {
        let data = data.into();
        assert_eq!(
            data.len(),
            numel(shape),
            "a buffer of {} elements cannot hold shape {shape:?}",
            data.len()
        );
        Tensor {
            storage: Arc::new(Storage::new(data)),
            layout: Layout::contiguous(shape),
        }
    }

    /// A new view of this tensor's storage.
    ///
    /// # Panics
    /// When `layout` reaches past the storage (invariant 1, checked in release builds too,
    /// with checked arithmetic: a view that could read out of bounds is never made).
    #[inline]
    #[track_caller]
    pub(crate) fn with_layout(&self, layout: Layout) -> Self {
        let len = self.storage.as_slice().len();
        assert!(
            layout.storage_extent().is_some_and(|end| end <= len),
            "a view of shape {:?}, strides {:?} and offset {} reaches past a storage of {len} \
             elements",
            layout.shape(),
            layout.strides(),
            layout.offset()
        );
        Tensor {
            storage: Arc::clone(&self.storage),
            layout,
        }
    }

    /// The whole storage buffer (index it with the layout).
    #[inline]
    pub(crate) fn storage(&self) -> &[T] {
        self.storage.as_slice()
    }

    /// The size of each dimension.
    #[inline]
    pub fn shape(&self) -> &[usize] {
        self.layout.shape()
    }

    /// The storage step of each dimension, in elements.
    #[inline]
    pub fn strides(&self) -> &[usize] {
        self.layout.strides()
    }

    /// The layout (shape, strides and offset) of this view.
    #[inline]
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Number of dimensions (0 for a scalar tensor).
    #[inline]
    pub fn ndim(&self) -> usize {
        self.layout.ndim()
    }

    /// Number of elements.
    #[inline]
    pub fn numel(&self) -> usize {
        self.layout.numel()
    }

    /// The size of dimension `dim` (negative counts from the end).
    ///
    /// # Errors
    /// [`TensorError::Dim`] when `dim` is out of range.
    pub fn size(&self, dim: isize) -> Result<usize> {
        let d = crate::handle::layout::resolve_dim("size", dim, self.shape())?;
        Ok(self.shape().get(d).copied().unwrap_or(1))
    }

    /// The element type.
    #[inline]
    pub fn dtype(&self) -> DType {
        T::DTYPE
    }

    /// Whether the elements are laid out row-major without gaps.
    #[inline]
    pub fn is_contiguous(&self) -> bool {
        self.layout.is_contiguous()
    }

    /// Whether two tensors are views of the same storage.
    pub fn shares_storage(&self, other: &Tensor<T>) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    /// The elements as a slice, when they are contiguous (`None` for other views).
    #[inline]
    pub fn as_slice(&self) -> Option<&[T]> {
        self.layout
            .contiguous_range()
            .map(|r| &self.storage.as_slice()[r])
    }

    /// The elements in row-major order, copied into a new `Vec`.
    pub fn to_vec(&self) -> Vec<T> {
        match self.as_slice() {
            Some(s) => s.to_vec(),
            None => self.contiguous().into_vec(),
        }
    }

    /// The elements in row-major order, reusing the buffer when this handle owns it whole.
    pub fn into_vec(self) -> Vec<T> {
        let whole = self.layout.offset() == 0
            && self.layout.is_contiguous()
            && self.numel() == self.storage.as_slice().len();
        if whole {
            match Arc::try_unwrap(self.storage) {
                Ok(storage) => return storage.into_vec(),
                Err(storage) => return storage.as_slice().to_vec(),
            }
        }
        self.to_vec()
    }

    /// The single value of a one-element tensor, like `tensor.item()`.
    ///
    /// # Errors
    /// [`TensorError::NotScalar`] when the tensor does not hold exactly one element.
    pub fn item(&self) -> Result<T> {
        if self.numel() != 1 {
            return Err(TensorError::NotScalar {
                op: "item",
                shape: self.shape().to_vec(),
            });
        }
        Ok(self.storage()[self.layout.offset()])
    }

    /// The element at `index` (one index per dimension).
    ///
    /// # Errors
    /// [`TensorError::Shape`] when the number of indices differs from `ndim`, and
    /// [`TensorError::Index`] when an index is out of bounds.
    pub fn get(&self, index: &[usize]) -> Result<T> {
        if index.len() != self.ndim() {
            return Err(TensorError::shape(
                "get",
                format!(
                    "{} indices given for a tensor of shape {:?}",
                    index.len(),
                    self.shape()
                ),
            ));
        }
        for (dim, (&i, &size)) in index.iter().zip(self.shape()).enumerate() {
            if i >= size {
                return Err(TensorError::Index {
                    op: "get",
                    index: i as i64,
                    dim,
                    size,
                });
            }
        }
        Ok(self.storage()[self.layout.index_of(index)])
    }

    /// A contiguous tensor with the same elements: this handle itself when already
    /// contiguous, otherwise a copy.
    pub fn contiguous(&self) -> Tensor<T> {
        if self.is_contiguous() {
            return self.clone();
        }
        self.copy_contiguous()
    }

    /// Like [`contiguous`](Tensor::contiguous), for ops that return a `Result`: the copy of
    /// a view that no memory holds (a broadcast of 2^58 elements) is an error naming `op`
    /// instead of a panic.
    pub(crate) fn try_contiguous(&self, op: &'static str) -> Result<Tensor<T>> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        let mut out = try_alloc::<T>(op, self.shape())?;
        crate::engine::map::for_each_in_order(self, &mut out, |x| x);
        Ok(Tensor::from_contiguous(out, self.shape()))
    }

    /// A fresh contiguous copy: tiled when the view is a transpose, element by element
    /// otherwise.
    fn copy_contiguous(&self) -> Tensor<T> {
        let l = &self.layout;
        match crate::engine::transpose::contiguous_copy(
            self.storage(),
            l.shape(),
            l.strides(),
            l.offset(),
        ) {
            Some(v) => Tensor::from_contiguous(v, self.shape()),
            None => self.map_cost(crate::engine::par::Cost::Cheap, |x| x),
        }
    }

    /// The elements converted to another element type (`f32` ↔ `f64`), rounding to nearest.
    ///
    /// # Panics
    /// When the result cannot be allocated (as every method that returns a new tensor
    /// without a `Result`: see the crate docs).
    pub fn cast<U: Element>(&self) -> Tensor<U> {
        let n = self.numel();
        let mut out = alloc::<U>(n);
        crate::engine::map::for_each_in_order(self, &mut out, |x| U::from_f64(x.to_f64()));
        Tensor::from_contiguous(out, self.shape())
    }

    /// Mutable access to the elements as one row-major slice.
    ///
    /// Copies first when the storage is shared with another tensor or when this view is not
    /// contiguous (see the invariants above), so writing never changes another handle.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        let whole_unique = Arc::get_mut(&mut self.storage).is_some() && self.is_contiguous();
        if !whole_unique {
            let copy = self.copy_contiguous();
            *self = copy;
        }
        let range = self
            .layout
            .contiguous_range()
            .expect("made contiguous above");
        let storage = Arc::get_mut(&mut self.storage).expect("made unique above");
        &mut storage.as_mut_slice()[range]
    }
}
