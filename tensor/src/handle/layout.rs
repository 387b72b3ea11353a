//! Shape, strides and offset: how a tensor's elements sit in its storage.

use crate::{Dims, Result, TensorError};

/// The position of a tensor's elements in its storage.
///
/// Element `[i0, i1, ..]` lives at `offset + i0 * strides[0] + i1 * strides[1] + ..`.
/// Strides count elements, not bytes, and are never negative (as in PyTorch); a stride of 0
/// repeats one element along that dimension (a broadcast view).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    shape: Dims,
    strides: Dims,
    offset: usize,
}

/// Row-major (C order) strides of a contiguous tensor of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    contiguous_dims(shape).into()
}

/// [`contiguous_strides`] without a heap allocation for up to four dimensions.
pub(crate) fn contiguous_dims(shape: &[usize]) -> Dims {
    let mut strides = Dims::zeros(shape.len());
    let mut acc = 1usize;
    for (s, &d) in strides.iter_mut().zip(shape).rev() {
        *s = acc;
        acc = acc.saturating_mul(d.max(1));
    }
    strides
}

/// Number of elements of a tensor of `shape` (1 for the 0-d shape `[]`).
///
/// # Panics
/// When `shape` is not one a tensor can have (see [`checked_numel`]). Every tensor's shape,
/// and every part of it, passes that check when the tensor is made (invariant 5 of
/// [`Tensor`](crate::Tensor)), so this panics only on a shape that no tensor holds yet:
/// callers with such a shape check it with [`check_shape`] first.
#[track_caller]
pub(crate) fn numel(shape: &[usize]) -> usize {
    match checked_numel(shape) {
        Some(n) => n,
        None => panic!("a tensor of shape {shape:?} has more elements than usize can count"),
    }
}

/// The number of elements of a tensor of `shape`, or `None` when `shape` is not one a
/// tensor can have: when the product of its non-zero sizes overflows `usize`.
///
/// A zero size makes the count 0, but the other sizes must still multiply without
/// overflow, so that every part of a shape (the rows of `[n, m]`, the batch of
/// `[b, n, m]`) can be counted too. (PyTorch lets `torch.zeros(0, 2**62, 2**62)` through;
/// strata refuses it.)
///
/// ```
/// use strata_tensor::checked_numel;
/// assert_eq!(checked_numel(&[2, 3]), Some(6));
/// assert_eq!(checked_numel(&[]), Some(1));
/// assert_eq!(checked_numel(&[0, 1 << 40]), Some(0));
/// assert_eq!(checked_numel(&[3, usize::MAX / 2]), None); // 3·K wraps
/// ```
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    let nonzero = shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1usize, |n, &d| n.checked_mul(d))?;
    Some(if shape.contains(&0) { 0 } else { nonzero })
}

/// The element count of a tensor of `T` of `shape` that `op` is about to allocate, or
/// [`TensorError::TooLarge`] when the count overflows (see [`checked_numel`]) or its bytes
/// exceed `isize::MAX`, the most any allocation may hold.
pub(crate) fn check_shape<T>(op: &'static str, shape: &[usize]) -> Result<usize> {
    checked_numel(shape)
        .filter(|n| {
            n.checked_mul(size_of::<T>().max(1))
                .is_some_and(|bytes| bytes <= isize::MAX as usize)
        })
        .ok_or_else(|| TensorError::TooLarge {
            op,
            shape: shape.to_vec(),
        })
}

/// Like [`check_shape`] for a view, which allocates nothing: only the element count must be
/// countable.
pub(crate) fn check_view_shape(op: &'static str, shape: &[usize]) -> Result<usize> {
    checked_numel(shape).ok_or_else(|| TensorError::TooLarge {
        op,
        shape: shape.to_vec(),
    })
}

impl Layout {
    /// The contiguous row-major layout of `shape` at offset 0.
    pub fn contiguous(shape: &[usize]) -> Self {
        Layout {
            shape: Dims::from_slice(shape),
            strides: contiguous_dims(shape),
            offset: 0,
        }
    }

    pub(crate) fn from_parts(
        shape: impl Into<Dims>,
        strides: impl Into<Dims>,
        offset: usize,
    ) -> Self {
        let (shape, strides) = (shape.into(), strides.into());
        debug_assert_eq!(shape.len(), strides.len());
        Layout {
            shape,
            strides,
            offset,
        }
    }

    /// The size of each dimension.
    #[inline]
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The storage step of each dimension, in elements.
    #[inline]
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// Storage index of the first element.
    #[inline]
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Number of dimensions.
    #[inline]
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    #[inline]
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// Whether the elements are laid out row-major without gaps (size-1 dimensions may have
    /// any stride, as in PyTorch).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for (&d, &s) in self.shape.iter().zip(&self.strides).rev() {
            if d == 0 {
                return true;
            }
            if d != 1 {
                if s != expected {
                    return false;
                }
                expected *= d;
            }
        }
        true
    }

    /// The storage range holding the elements, when they are contiguous.
    #[inline]
    pub(crate) fn contiguous_range(&self) -> Option<std::ops::Range<usize>> {
        self.is_contiguous()
            .then(|| self.offset..self.offset + self.numel())
    }

    /// Storage index of the element at `index` (which must be in bounds).
    #[inline]
    pub(crate) fn index_of(&self, index: &[usize]) -> usize {
        self.offset
            + index
                .iter()
                .zip(&self.strides)
                .map(|(i, s)| i * s)
                .sum::<usize>()
    }

    /// One past the largest storage index this layout can reach (`offset` when empty), or
    /// `None` when that index overflows `usize` (no storage can hold such a layout).
    pub(crate) fn storage_extent(&self) -> Option<usize> {
        if self.shape.contains(&0) {
            return Some(self.offset);
        }
        self.shape
            .iter()
            .zip(&self.strides)
            .try_fold(self.offset, |end, (&d, &s)| {
                (d - 1)
                    .checked_mul(s)
                    .and_then(|step| end.checked_add(step))
            })?
            .checked_add(1)
    }

    /// This layout seen through `shape`, as NumPy/PyTorch broadcasting does: dimensions are
    /// aligned from the right and size-1 (or missing) dimensions get stride 0.
    pub(crate) fn broadcast_to(&self, op: &'static str, shape: &[usize]) -> Result<Layout> {
        if shape.len() < self.ndim() {
            return Err(TensorError::Broadcast {
                op,
                lhs: self.shape.to_vec(),
                rhs: shape.to_vec(),
            });
        }
        check_view_shape(op, shape)?;
        let lead = shape.len() - self.ndim();
        let mut strides = Dims::zeros(shape.len());
        for (i, &target) in shape.iter().enumerate().skip(lead) {
            let d = self.shape[i - lead];
            if d == target {
                strides[i] = if d == 1 { 0 } else { self.strides[i - lead] };
            } else if d == 1 {
                strides[i] = 0;
            } else {
                return Err(TensorError::Broadcast {
                    op,
                    lhs: self.shape.to_vec(),
                    rhs: shape.to_vec(),
                });
            }
        }
        Ok(Layout::from_parts(shape, strides, self.offset))
    }

    /// Strides that let this layout's elements be viewed as `new_shape` without moving them,
    /// if any exist (PyTorch's `computeStride`: dimensions may be split or merged only
    /// within runs of dimensions that are contiguous with each other).
    pub(crate) fn view_strides(&self, new_shape: &[usize]) -> Option<Dims> {
        let numel = self.numel();
        if numel == 0 || self.ndim() == 0 {
            return Some(contiguous_dims(new_shape));
        }
        let mut new_strides = Dims::zeros(new_shape.len());
        let mut view_d = new_shape.len() as isize - 1;
        // Stride of the last dimension of the current chunk of old dimensions.
        let mut chunk_base_stride = *self.strides.last()?;
        let mut tensor_numel = 1usize;
        let mut view_numel = 1usize;
        for tensor_d in (0..self.ndim()).rev() {
            tensor_numel *= self.shape[tensor_d];
            // A chunk ends where the next-outer dimension is not contiguous with this one.
            let chunk_ends = tensor_d == 0
                || (self.shape[tensor_d - 1] != 1
                    && self.strides[tensor_d - 1] != tensor_numel * chunk_base_stride);
            if chunk_ends {
                while view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d as usize] == 1)
                {
                    new_strides[view_d as usize] = view_numel * chunk_base_stride;
                    view_numel *= new_shape[view_d as usize];
                    view_d -= 1;
                }
                if view_numel != tensor_numel {
                    return None;
                }
                if tensor_d > 0 {
                    chunk_base_stride = self.strides[tensor_d - 1];
                    tensor_numel = 1;
                    view_numel = 1;
                }
            }
        }
        if view_d != -1 {
            return None;
        }
        Some(new_strides)
    }
}

/// The broadcast shape of two shapes (NumPy/PyTorch rules), or an error naming both.
pub fn broadcast_shapes(op: &'static str, lhs: &[usize], rhs: &[usize]) -> Result<Vec<usize>> {
    broadcast_dims(op, lhs, rhs).map(Vec::from)
}

/// [`broadcast_shapes`] without a heap allocation for up to four dimensions.
pub(crate) fn broadcast_dims(op: &'static str, lhs: &[usize], rhs: &[usize]) -> Result<Dims> {
    let n = lhs.len().max(rhs.len());
    let mut out = Dims::zeros(n);
    for i in 0..n {
        let a = if i + lhs.len() >= n {
            lhs[i + lhs.len() - n]
        } else {
            1
        };
        let b = if i + rhs.len() >= n {
            rhs[i + rhs.len() - n]
        } else {
            1
        };
        out[i] = if a == b || b == 1 {
            a
        } else if a == 1 {
            b
        } else {
            return Err(TensorError::Broadcast {
                op,
                lhs: lhs.to_vec(),
                rhs: rhs.to_vec(),
            });
        };
    }
    check_view_shape(op, &out)?;
    Ok(out)
}

/// Resolves a possibly negative dimension index against `ndim` dimensions.
///
/// As in PyTorch, a 0-d tensor accepts dimensions `0` and `-1`.
pub(crate) fn resolve_dim(op: &'static str, dim: isize, shape: &[usize]) -> Result<usize> {
    let n = shape.len().max(1) as isize;
    let d = if dim < 0 { dim + n } else { dim };
    if d < 0 || d >= n {
        return Err(TensorError::Dim {
            op,
            dim,
            shape: shape.to_vec(),
        });
    }
    Ok(d as usize)
}

/// Like [`resolve_dim`] for a dimension to insert (valid range `-ndim-1..=ndim`).
pub(crate) fn resolve_insert_dim(op: &'static str, dim: isize, shape: &[usize]) -> Result<usize> {
    let n = shape.len() as isize + 1;
    let d = if dim < 0 { dim + n } else { dim };
    if d < 0 || d >= n {
        return Err(TensorError::Dim {
            op,
            dim,
            shape: shape.to_vec(),
        });
    }
    Ok(d as usize)
}

/// Resolves a list of dimensions into a sorted mask, rejecting repeats.
pub(crate) fn resolve_dims(op: &'static str, dims: &[isize], shape: &[usize]) -> Result<Vec<bool>> {
    let mut mask = vec![false; shape.len()];
    if dims.is_empty() {
        // PyTorch: an empty dimension list reduces over every dimension.
        mask.iter_mut().for_each(|m| *m = true);
        return Ok(mask);
    }
    for &dim in dims {
        let d = resolve_dim(op, dim, shape)?;
        if shape.is_empty() {
            continue;
        }
        if mask[d] {
            return Err(TensorError::invalid(
                op,
                format!("dimension {dim} appears more than once in {dims:?}"),
            ));
        }
        mask[d] = true;
    }
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_whose_count_overflows_are_refused() {
        // 3 · K wraps to 2: the shape that once let `matmul` read out of bounds.
        let k = usize::MAX / 3 + 1;
        assert!(3usize.wrapping_mul(k) < k, "the unchecked product wraps");
        assert_eq!(checked_numel(&[3, k]), None);
        assert_eq!(
            checked_numel(&[0, k, 3]),
            None,
            "a zero does not hide the overflow"
        );
        assert_eq!(checked_numel(&[0, k]), Some(0));
        assert_eq!(checked_numel(&[1 << 20, 1 << 20]), Some(1 << 40));
        assert!(matches!(
            check_shape::<f32>("zeros", &[1 << 62]),
            Err(TensorError::TooLarge { op: "zeros", .. })
        ));
        assert!(check_view_shape("expand", &[1 << 62]).is_ok());
        assert!(matches!(
            broadcast_shapes("add", &[1 << 40, 1], &[1 << 40]),
            Err(TensorError::TooLarge { op: "add", .. })
        ));
    }

    #[test]
    fn extents_are_checked() {
        let l = Layout::from_parts(vec![2, 3], vec![3, 1], 4);
        assert_eq!(l.storage_extent(), Some(10));
        let empty = Layout::from_parts(vec![0, 3], vec![3, 1], 7);
        assert_eq!(empty.storage_extent(), Some(7));
        let wraps = Layout::from_parts(vec![4], vec![usize::MAX / 2], 0);
        assert_eq!(wraps.storage_extent(), None);
    }

    #[test]
    fn contiguous_strides_are_row_major() {
        assert_eq!(contiguous_strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(contiguous_strides(&[]), Vec::<usize>::new());
        assert!(Layout::contiguous(&[2, 1, 3]).is_contiguous());
    }

    #[test]
    fn broadcast_shape_rules() {
        assert_eq!(broadcast_shapes("add", &[3, 1], &[4]).unwrap(), vec![3, 4]);
        assert_eq!(broadcast_shapes("add", &[], &[2, 2]).unwrap(), vec![2, 2]);
        assert_eq!(broadcast_shapes("add", &[0], &[1]).unwrap(), vec![0]);
        assert!(matches!(
            broadcast_shapes("add", &[2, 3], &[4]),
            Err(TensorError::Broadcast { .. })
        ));
    }

    #[test]
    fn view_strides_split_and_merge() {
        let l = Layout::contiguous(&[2, 3, 4]);
        assert_eq!(l.view_strides(&[6, 4]), Some(Dims::from([4, 1])));
        assert_eq!(l.view_strides(&[2, 12]), Some(Dims::from([12, 1])));
        // transposed [3, 2] from a contiguous [2, 3]: cannot be flattened without a copy
        let t = Layout::from_parts(vec![3, 2], vec![1, 3], 0);
        assert_eq!(t.view_strides(&[6]), None);
        // but its dims can be split
        assert_eq!(t.view_strides(&[3, 2, 1]), Some(Dims::from([1, 3, 3])));
        assert_eq!(t.view_strides(&[3, 1, 2]), Some(Dims::from([1, 6, 3])));
    }
}
