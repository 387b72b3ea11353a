//! Joining, splitting and reshaping by copy: cat, stack, split, chunk, pad, repeat,
//! tril/triu.

use std::borrow::Borrow;

use crate::engine::iter::Coalesced;
use crate::engine::par::Cost;
use crate::handle::layout::{
    Layout, check_shape, contiguous_dims, resolve_dim, resolve_insert_dim,
};
use crate::handle::storage::try_alloc;
use crate::{Element, Result, Tensor, TensorError};

/// Copies `src` into the region of `dst` that `region` (a layout over `dst`, of `src`'s
/// shape) describes.
fn copy_into<T: Element>(dst: &mut [T], region: &Layout, src: &Tensor<T>) {
    debug_assert_eq!(region.shape(), src.shape());
    let walk = Coalesced::new(src.shape(), [region.strides(), src.strides()]);
    let [sd, ss] = walk.inner_strides();
    let data = src.storage();
    walk.for_each_run(
        [region.offset(), src.layout().offset()],
        0,
        src.numel(),
        |_, [od, os], len| {
            if sd == 1 && ss == 1 {
                dst[od..od + len].copy_from_slice(&data[os..os + len]);
            } else {
                for i in 0..len {
                    dst[od + i * sd] = data[os + i * ss];
                }
            }
        },
    );
}

impl<T: Element> Tensor<T> {
    /// The tensors joined along `dim`, like `torch.cat`. All must have the same shape except
    /// along `dim`; as in PyTorch, 1-d empty tensors are skipped.
    ///
    /// ```
    /// use strata_tensor::Tensor;
    /// let a = Tensor::<f32>::ones(&[1, 2]);
    /// let b = Tensor::<f32>::zeros(&[2, 2]);
    /// assert_eq!(Tensor::cat(&[&a, &b], 0)?.shape(), &[3, 2]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Invalid`] for an empty list, [`TensorError::Dim`],
    /// [`TensorError::Shape`] when the other dimensions differ, and
    /// [`TensorError::TooLarge`] or [`TensorError::OutOfMemory`] when the result cannot be
    /// allocated.
    pub fn cat<B: Borrow<Tensor<T>>>(tensors: &[B], dim: isize) -> Result<Tensor<T>> {
        const OP: &str = "cat";
        let parts: Vec<&Tensor<T>> = tensors
            .iter()
            .map(|t| t.borrow())
            .filter(|t| !(t.ndim() == 1 && t.numel() == 0))
            .collect();
        let Some(first) = parts.first() else {
            return match tensors.first() {
                Some(t) => Ok(t.borrow().clone()),
                None => Err(TensorError::invalid(
                    OP,
                    "expected a non-empty list of tensors",
                )),
            };
        };
        if first.ndim() == 0 {
            return Err(TensorError::invalid(
                OP,
                "zero-dimensional tensors cannot be concatenated",
            ));
        }
        let d = resolve_dim(OP, dim, first.shape())?;
        let mut shape = first.shape().to_vec();
        shape[d] = 0;
        for t in &parts {
            let same = t.ndim() == first.ndim()
                && t.shape()
                    .iter()
                    .zip(first.shape())
                    .enumerate()
                    .all(|(k, (a, b))| k == d || a == b);
            if !same {
                let shapes: Vec<&[usize]> = parts.iter().map(|t| t.shape()).collect();
                return Err(TensorError::shape(
                    OP,
                    format!("shapes {shapes:?} differ outside dimension {dim}"),
                ));
            }
            shape[d] = shape[d]
                .checked_add(t.shape()[d])
                .ok_or_else(|| TensorError::TooLarge {
                    op: OP,
                    shape: first.shape().to_vec(),
                })?;
        }
        let mut out = try_alloc::<T>(OP, &shape)?;
        let strides = contiguous_dims(&shape);
        let mut offset = 0;
        for t in &parts {
            let region = Layout::from_parts(t.shape().to_vec(), strides.clone(), offset);
            copy_into(&mut out, &region, t);
            offset += t.shape()[d] * strides[d];
        }
        Ok(Tensor::from_contiguous(out, &shape))
    }

    /// The tensors joined along a new dimension `dim`, like `torch.stack`. All must have the
    /// same shape.
    ///
    /// # Errors
    /// [`TensorError::Invalid`] for an empty list, [`TensorError::Shape`] when shapes differ.
    pub fn stack<B: Borrow<Tensor<T>>>(tensors: &[B], dim: isize) -> Result<Tensor<T>> {
        let Some(first) = tensors.first() else {
            return Err(TensorError::invalid(
                "stack",
                "expected a non-empty list of tensors",
            ));
        };
        let first = first.borrow();
        let d = resolve_insert_dim("stack", dim, first.shape())?;
        let mut views = Vec::with_capacity(tensors.len());
        for t in tensors {
            let t = t.borrow();
            if t.shape() != first.shape() {
                let shapes: Vec<&[usize]> = tensors.iter().map(|t| t.borrow().shape()).collect();
                return Err(TensorError::shape(
                    "stack",
                    format!("expects tensors of equal shape, got {shapes:?}"),
                ));
            }
            views.push(t.unsqueeze(d as isize)?);
        }
        Tensor::cat(&views, d as isize)
    }

    /// Views of consecutive pieces of `split_size` along `dim` (the last may be shorter),
    /// like `torch.split(x, split_size, dim)`.
    ///
    /// # Errors
    /// [`TensorError::Dim`], or [`TensorError::Invalid`] for a zero `split_size` on a
    /// non-empty dimension.
    pub fn split(&self, split_size: usize, dim: isize) -> Result<Vec<Tensor<T>>> {
        let d = resolve_dim("split", dim, self.shape())?;
        let size = self.shape().get(d).copied().unwrap_or(1);
        if split_size == 0 {
            if size == 0 {
                return Ok(vec![self.clone()]);
            }
            return Err(TensorError::invalid("split", "split_size must be positive"));
        }
        let n = size.div_ceil(split_size).max(1);
        (0..n)
            .map(|i| {
                let start = i * split_size;
                self.narrow(d as isize, start, split_size.min(size - start))
            })
            .collect()
    }

    /// Views of pieces of the given sizes along `dim`, like
    /// `torch.split(x, [s0, s1, ...], dim)`.
    ///
    /// # Errors
    /// [`TensorError::Invalid`] when the sizes do not add up to the dimension's size.
    pub fn split_with_sizes(&self, sizes: &[usize], dim: isize) -> Result<Vec<Tensor<T>>> {
        let d = resolve_dim("split_with_sizes", dim, self.shape())?;
        let size = self.shape().get(d).copied().unwrap_or(1);
        if sizes.iter().sum::<usize>() != size {
            return Err(TensorError::invalid(
                "split_with_sizes",
                format!("sizes {sizes:?} do not add up to {size}, the size of dimension {dim}"),
            ));
        }
        let mut start = 0;
        sizes
            .iter()
            .map(|&s| {
                let piece = self.narrow(d as isize, start, s);
                start += s;
                piece
            })
            .collect()
    }

    /// `chunks` views of (nearly) equal size along `dim`, like `torch.chunk`: each of size
    /// `ceil(size / chunks)`, so fewer than `chunks` may come back; an empty dimension gives
    /// `chunks` empty views.
    ///
    /// # Errors
    /// [`TensorError::Invalid`] when `chunks` is 0.
    pub fn chunk(&self, chunks: usize, dim: isize) -> Result<Vec<Tensor<T>>> {
        if chunks == 0 {
            return Err(TensorError::invalid(
                "chunk",
                "the number of chunks must be positive",
            ));
        }
        let d = resolve_dim("chunk", dim, self.shape())?;
        let size = self.shape().get(d).copied().unwrap_or(1);
        if size == 0 {
            // `split` would return one empty piece; PyTorch keeps the count.
            return self.split_with_sizes(&vec![0; chunks], dim);
        }
        self.split(size.div_ceil(chunks), dim)
    }

    /// Padded with `value`, like `F.pad(x, pads, value=value)`: `pads` lists (before, after)
    /// pairs starting from the last dimension; negative amounts crop.
    ///
    /// ```
    /// use strata_tensor::Tensor;
    /// let x = Tensor::<f32>::ones(&[1, 2]);
    /// let y = x.pad(&[1, 0, 0, 1], 0.0)?; // one column on the left, one row below
    /// assert_eq!(y.to_vec(), vec![0.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Invalid`] for an odd-length or too long `pads`, or a dimension cropped
    /// below zero; [`TensorError::TooLarge`] or [`TensorError::OutOfMemory`] when the
    /// padded tensor cannot be allocated.
    pub fn pad(&self, pads: &[isize], value: T) -> Result<Tensor<T>> {
        const OP: &str = "pad";
        if !pads.len().is_multiple_of(2) || pads.len() / 2 > self.ndim() {
            return Err(TensorError::invalid(
                OP,
                format!(
                    "pads {pads:?} must hold (before, after) pairs for at most {} dimensions",
                    self.ndim()
                ),
            ));
        }
        let mut out_shape = self.shape().to_vec();
        let mut src = self.clone();
        let mut dst_start = vec![0usize; self.ndim()];
        for (k, pair) in pads.chunks(2).enumerate() {
            let d = self.ndim() - 1 - k;
            let (before, after) = (pair[0], pair[1]);
            let too_large = || TensorError::TooLarge {
                op: OP,
                shape: self.shape().to_vec(),
            };
            let size = isize::try_from(self.shape()[d]).map_err(|_| too_large())?;
            let new = size
                .checked_add(before)
                .and_then(|n| n.checked_add(after))
                .ok_or_else(too_large)?;
            // As PyTorch: each negative amount crops what is there, so the two crops together
            // may remove at most the whole dimension (padding on the other side does not
            // make up for it). (`size + min(0) + min(0)` cannot overflow: both are ≤ 0 and
            // `size` ≥ 0, and the sum of two `isize::MIN`s is caught by `checked_add`.)
            let kept = size
                .checked_add(before.min(0))
                .and_then(|n| n.checked_add(after.min(0)));
            if kept.is_none_or(|k| k < 0) {
                return Err(TensorError::invalid(
                    OP,
                    format!(
                        "padding ({before}, {after}) crops more than the {size} elements of \
                         dimension {d} of shape {:?}",
                        self.shape()
                    ),
                ));
            }
            out_shape[d] = new as usize;
            // `before`, `after` ≥ -size here, so the negations cannot overflow.
            let crop_start = before.saturating_neg().max(0);
            let crop_end = (size - after.saturating_neg().max(0)).max(crop_start);
            src = src.slice(d as isize, crop_start, crop_end, 1)?;
            dst_start[d] = before.max(0) as usize;
        }
        let mut out = try_alloc::<T>(OP, &out_shape)?;
        crate::engine::par::fill(&mut out, value);
        let strides = contiguous_dims(&out_shape);
        if src.numel() > 0 {
            let offset = dst_start.iter().zip(&strides).map(|(a, b)| a * b).sum();
            let region = Layout::from_parts(src.shape().to_vec(), strides, offset);
            copy_into(&mut out, &region, &src);
        }
        Ok(Tensor::from_contiguous(out, &out_shape))
    }

    /// Tiled `repeats[i]` times along each dimension, like `Tensor.repeat`; `repeats` may be
    /// longer than `ndim` (new leading dimensions).
    ///
    /// # Errors
    /// [`TensorError::Invalid`] when `repeats` has fewer entries than `ndim`,
    /// [`TensorError::TooLarge`] when the tiled tensor cannot be allocated.
    pub fn repeat(&self, repeats: &[usize]) -> Result<Tensor<T>> {
        if repeats.len() < self.ndim() {
            return Err(TensorError::invalid(
                "repeat",
                format!(
                    "{} repeats given for a tensor of shape {:?}",
                    repeats.len(),
                    self.shape()
                ),
            ));
        }
        let lead = repeats.len() - self.ndim();
        let padded: Vec<usize> = std::iter::repeat_n(1, lead)
            .chain(self.shape().iter().copied())
            .collect();
        // View as [1, s0, 1, s1, ...], expand to [r0, s0, r1, s1, ...], copy, merge pairs.
        let interleaved: Vec<usize> = padded.iter().flat_map(|&s| [1, s]).collect();
        let expanded: Vec<isize> = repeats
            .iter()
            .zip(&padded)
            .flat_map(|(&r, &s)| [r as isize, s as isize])
            .collect();
        let too_large = || TensorError::TooLarge {
            op: "repeat",
            shape: self.shape().to_vec(),
        };
        let out_shape = repeats
            .iter()
            .zip(&padded)
            .map(|(r, s)| r.checked_mul(*s))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(too_large)?;
        if check_shape::<T>("repeat", &out_shape)? == 0 {
            // Nothing to tile; the interleaved view below could not even be counted when
            // a huge repeat sits beside the zero.
            return Tensor::try_zeros(&out_shape);
        }
        self.reshape(&interleaved)?
            .expand(&expanded)?
            .try_contiguous("repeat")?
            .reshape(&out_shape)
    }

    /// The lower triangle of the last two dimensions (elements with `col - row <= diagonal`),
    /// the rest zero, like `torch.tril`.
    ///
    /// # Errors
    /// [`TensorError::Shape`] for tensors of fewer than 2 dimensions.
    pub fn tril(&self, diagonal: isize) -> Result<Tensor<T>> {
        self.triangle("tril", diagonal, true)
    }

    /// The upper triangle of the last two dimensions (elements with `col - row >= diagonal`),
    /// the rest zero, like `torch.triu`.
    ///
    /// # Errors
    /// [`TensorError::Shape`] for tensors of fewer than 2 dimensions.
    pub fn triu(&self, diagonal: isize) -> Result<Tensor<T>> {
        self.triangle("triu", diagonal, false)
    }

    fn triangle(&self, op: &'static str, diagonal: isize, lower: bool) -> Result<Tensor<T>> {
        if self.ndim() < 2 {
            return Err(TensorError::shape(
                op,
                format!(
                    "expects at least 2 dimensions, got shape {:?}",
                    self.shape()
                ),
            ));
        }
        let (n, m) = (self.shape()[self.ndim() - 2], self.shape()[self.ndim() - 1]);
        let mut keep = try_alloc::<T>(op, &[n, m])?;
        for (k, x) in keep.iter_mut().enumerate() {
            // Column minus row, in i128: both are below 2^64, so the difference is exact.
            let d = (k % m) as i128 - (k / m) as i128;
            let inside = if lower {
                d <= diagonal as i128
            } else {
                d >= diagonal as i128
            };
            *x = if inside { T::one() } else { T::zero() };
        }
        let mask = Tensor::from_contiguous(keep, &[n, m]);
        self.zip_map(&mask, op, Cost::Cheap, |x, k| {
            if k != T::zero() { x } else { T::zero() }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(data: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_slice(data, shape).unwrap()
    }

    #[test]
    fn cat_and_stack() {
        let a = t(&[1., 2., 3., 4.], &[2, 2]);
        let b = t(&[5., 6.], &[2, 1]);
        let c = Tensor::cat(&[&a, &b], 1).unwrap();
        assert_eq!(c.to_vec(), vec![1., 2., 5., 3., 4., 6.]);
        // non-contiguous input
        let c = Tensor::cat(&[a.transpose(0, 1).unwrap(), a.clone()], 0).unwrap();
        assert_eq!(c.to_vec(), vec![1., 3., 2., 4., 1., 2., 3., 4.]);
        let s = Tensor::stack(&[&b, &b], 0).unwrap();
        assert_eq!(s.shape(), &[2, 2, 1]);
        let s = Tensor::stack(&[&b, &b], -1).unwrap();
        assert_eq!(s.shape(), &[2, 1, 2]);
        assert!(matches!(
            Tensor::cat(&[&a, &b], 0),
            Err(TensorError::Shape { .. })
        ));
        assert!(Tensor::<f32>::cat::<Tensor>(&[], 0).is_err());
        // legacy: 1-d empty tensors are skipped
        let e = Tensor::<f32>::zeros(&[0]);
        assert_eq!(Tensor::cat(&[&e, &a], 0).unwrap().shape(), &[2, 2]);
    }

    #[test]
    fn split_and_chunk() {
        let x = Tensor::<f32>::arange(0.0, 10.0, 1.0).unwrap();
        let parts = x.split(4, 0).unwrap();
        assert_eq!(
            parts.iter().map(|p| p.numel()).collect::<Vec<_>>(),
            vec![4, 4, 2]
        );
        assert_eq!(parts[2].to_vec(), vec![8., 9.]);
        // torch.chunk(torch.arange(10), 4) -> sizes [3, 3, 3, 1]
        let parts = x.chunk(4, 0).unwrap();
        assert_eq!(
            parts.iter().map(|p| p.numel()).collect::<Vec<_>>(),
            vec![3, 3, 3, 1]
        );
        // torch.chunk(torch.arange(6), 4) -> sizes [2, 2, 2]: fewer chunks than asked
        let six = Tensor::<f32>::arange(0.0, 6.0, 1.0).unwrap();
        assert_eq!(six.chunk(4, 0).unwrap().len(), 3);
        let parts = x.split_with_sizes(&[1, 9], 0).unwrap();
        assert_eq!(parts[1].numel(), 9);
        assert!(x.split_with_sizes(&[1, 2], 0).is_err());
    }

    #[test]
    fn pad_and_crop() {
        let x = t(&[1., 2., 3., 4.], &[2, 2]);
        let p = x.pad(&[1, 1], -1.0).unwrap();
        assert_eq!(p.to_vec(), vec![-1., 1., 2., -1., -1., 3., 4., -1.]);
        let p = x.pad(&[0, 0, -1, 1], 0.0).unwrap();
        assert_eq!(p.shape(), &[2, 2]);
        assert_eq!(p.to_vec(), vec![3., 4., 0., 0.]);
        assert!(x.pad(&[1], 0.0).is_err());
        assert!(x.pad(&[-3, 0], 0.0).is_err());
    }

    #[test]
    fn repeat_like_torch() {
        // torch.tensor([1., 2.]).repeat(2, 2) -> [[1, 2, 1, 2], [1, 2, 1, 2]]
        let x = t(&[1., 2.], &[2]);
        let r = x.repeat(&[2, 2]).unwrap();
        assert_eq!(r.shape(), &[2, 4]);
        assert_eq!(r.to_vec(), vec![1., 2., 1., 2., 1., 2., 1., 2.]);
        assert!(t(&[1., 2., 3., 4.], &[2, 2]).repeat(&[2]).is_err());
    }

    #[test]
    fn triangles() {
        let x = Tensor::<f32>::ones(&[3, 3]);
        assert_eq!(
            x.tril(0).unwrap().to_vec(),
            vec![1., 0., 0., 1., 1., 0., 1., 1., 1.]
        );
        assert_eq!(
            x.triu(1).unwrap().to_vec(),
            vec![0., 1., 1., 0., 0., 1., 0., 0., 0.]
        );
        assert_eq!(
            x.tril(-1).unwrap().to_vec(),
            vec![0., 0., 0., 1., 0., 0., 1., 1., 0.]
        );
        assert!(Tensor::<f32>::ones(&[3]).tril(0).is_err());
        let n = t(&[f32::NAN, f32::NAN, 1., 1.], &[2, 2])
            .triu(0)
            .unwrap()
            .to_vec();
        assert_eq!(n[2], 0.0); // masked, not multiplied: NaN does not leak
    }
}
