//! Ordering ops: `sort`, `argsort`, `topk`, `kthvalue`, `searchsorted`, `bucketize`,
//! `unique` and `nonzero`, with PyTorch's conventions: sorts are stable, NaN orders above
//! every number (last ascending, first descending), and -0 equals 0.

use std::cmp::Ordering;

use crate::handle::layout::resolve_dim;
use crate::{Element, IndexTensor, Result, Tensor, TensorError};

/// The total order of sorting: NaN above everything, NaNs equal to each other.
fn nan_last<T: Element>(a: T, b: T) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// `(outer, size, inner)` of `shape` around dimension `d` (a 0-d tensor is one element).
fn split(shape: &[usize], d: usize) -> (usize, usize, usize) {
    if shape.is_empty() {
        return (1, 1, 1);
    }
    (
        shape[..d].iter().product(),
        shape[d],
        shape[d + 1..].iter().product(),
    )
}

impl<T: Element> Tensor<T> {
    /// Sorts every lane along `dim` stably (first the first of equal values), like
    /// `torch.sort(x, dim, descending, stable=True)`: the sorted values and, for each, its
    /// index in the lane.
    ///
    /// ```
    /// use strata_tensor::Tensor;
    ///
    /// let x = Tensor::from_vec(vec![3.0f32, 1.0, 2.0, 1.0], &[4])?;
    /// let (values, indices) = x.sort(0, false)?;
    /// assert_eq!(values.to_vec(), vec![1.0, 1.0, 2.0, 3.0]);
    /// assert_eq!(indices.to_vec(), vec![1, 3, 2, 0]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Dim`] for a dimension out of range.
    pub fn sort(&self, dim: isize, descending: bool) -> Result<(Tensor<T>, IndexTensor)> {
        self.sorted_prefix("sort", dim, descending, None)
    }

    /// The indices that sort each lane along `dim` (see [`sort`](Tensor::sort)), like
    /// `torch.argsort(x, dim, descending, stable=True)`.
    ///
    /// # Errors
    /// [`TensorError::Dim`] for a dimension out of range.
    pub fn argsort(&self, dim: isize, descending: bool) -> Result<IndexTensor> {
        Ok(self.sorted_prefix("argsort", dim, descending, None)?.1)
    }

    /// The `k` largest (or with `largest = false` smallest) elements of each lane along
    /// `dim` and their indices, like `torch.topk`, in sorted order (ties: the earlier
    /// index first).
    ///
    /// # Errors
    /// [`TensorError::Dim`] for a dimension out of range, [`TensorError::Invalid`] when `k`
    /// exceeds the lane length.
    pub fn topk(&self, k: usize, dim: isize, largest: bool) -> Result<(Tensor<T>, IndexTensor)> {
        self.sorted_prefix("topk", dim, largest, Some(k))
    }

    /// The `k`-th smallest element (1-based) of each lane along `dim` and its index, like
    /// `torch.kthvalue`; `keepdim` keeps `dim` as size 1. Among equal values the index is
    /// that of the `k`-th in a stable sort.
    ///
    /// # Errors
    /// [`TensorError::Dim`] for a dimension out of range, [`TensorError::Invalid`] when `k`
    /// is 0 or exceeds the lane length.
    pub fn kthvalue(
        &self,
        k: usize,
        dim: isize,
        keepdim: bool,
    ) -> Result<(Tensor<T>, IndexTensor)> {
        const OP: &str = "kthvalue";
        if k == 0 {
            return Err(TensorError::invalid(OP, "k must be at least 1"));
        }
        let (values, indices) = self.sorted_prefix(OP, dim, false, Some(k))?;
        let d = resolve_dim(OP, dim, self.shape())?;
        let mut shape = values.shape().to_vec();
        if !shape.is_empty() {
            shape[d] = 1;
        }
        let last = IndexTensor::from_indices(&[k - 1]);
        let v = values.index_select(d as isize, &last)?;
        let i = select_indices(&indices, d, k - 1)?;
        if keepdim || shape.is_empty() {
            return Ok((v.reshape(shape.as_slice())?, i.reshape(&shape)?));
        }
        shape.remove(d);
        Ok((v.reshape(shape.as_slice())?, i.reshape(&shape)?))
    }

    /// The lanes along `dim` sorted (descending or not), the first `take` of each.
    fn sorted_prefix(
        &self,
        op: &'static str,
        dim: isize,
        descending: bool,
        take: Option<usize>,
    ) -> Result<(Tensor<T>, IndexTensor)> {
        let d = resolve_dim(op, dim, self.shape())?;
        let (outer, size, inner) = split(self.shape(), d);
        let k = take.unwrap_or(size);
        if k > size {
            return Err(TensorError::invalid(
                op,
                format!("k = {k} is out of range for a dimension of size {size}"),
            ));
        }
        let x = self.contiguous();
        let xs = x.as_slice().expect("contiguous");
        let mut values = Vec::with_capacity(outer * k * inner);
        let mut indices = vec![0i64; outer * k * inner];
        values.resize(outer * k * inner, T::zero());
        let mut lane: Vec<usize> = Vec::with_capacity(size);
        for o in 0..outer {
            for i in 0..inner {
                let at = |j: usize| xs[(o * size + j) * inner + i];
                lane.clear();
                lane.extend(0..size);
                if descending {
                    lane.sort_by(|&a, &b| nan_last(at(b), at(a)));
                } else {
                    lane.sort_by(|&a, &b| nan_last(at(a), at(b)));
                }
                for (j, &src) in lane.iter().take(k).enumerate() {
                    let to = (o * k + j) * inner + i;
                    values[to] = at(src);
                    indices[to] = src as i64;
                }
            }
        }
        let mut shape = self.shape().to_vec();
        if !shape.is_empty() {
            shape[d] = k;
        }
        Ok((
            Tensor::from_vec(values, &shape)?,
            IndexTensor::from_vec(indices, &shape)?,
        ))
    }

    /// For each of `values`, the index where it would be inserted into the sorted
    /// `self` to keep it sorted, like `torch.searchsorted(self, values, right=right)`:
    /// the first position whose element is `>= v` (`> v` with `right`). `self` is 1-D, or
    /// has `values`' leading dimensions with one sorted sequence per lane.
    ///
    /// ```
    /// use strata_tensor::Tensor;
    ///
    /// let edges = Tensor::from_vec(vec![1.0f32, 2.0, 2.0, 3.0], &[4])?;
    /// let v = Tensor::from_vec(vec![2.0f32, 0.0, 5.0], &[3])?;
    /// assert_eq!(edges.searchsorted(&v, false)?.to_vec(), vec![1, 0, 4]);
    /// assert_eq!(edges.searchsorted(&v, true)?.to_vec(), vec![3, 0, 4]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Shape`] when `self` is 0-d, or N-d with leading dimensions other
    /// than `values`'.
    pub fn searchsorted(&self, values: &Tensor<T>, right: bool) -> Result<IndexTensor> {
        const OP: &str = "searchsorted";
        let seq_shape = self.shape();
        let Some((&len, lead)) = seq_shape.split_last() else {
            return Err(TensorError::shape(
                OP,
                "the sorted sequence must not be 0-d",
            ));
        };
        let vshape = values.shape();
        let per_lane = if lead.is_empty() {
            values.numel()
        } else {
            if vshape.len() != seq_shape.len() || &vshape[..vshape.len() - 1] != lead {
                return Err(TensorError::shape(
                    OP,
                    format!(
                        "the sorted sequence {seq_shape:?} and the values {vshape:?} must agree in all but the last dimension"
                    ),
                ));
            }
            vshape[vshape.len() - 1]
        };
        let seq = self.contiguous();
        let seq = seq.as_slice().expect("contiguous");
        let v = values.contiguous().to_vec();
        let out: Vec<i64> = v
            .iter()
            .enumerate()
            .map(|(n, &x)| {
                let lane = if lead.is_empty() {
                    0
                } else {
                    n / per_lane.max(1)
                };
                let row = &seq[lane * len..(lane + 1) * len];
                let pos = if right {
                    row.partition_point(|&s| nan_last(s, x) != Ordering::Greater)
                } else {
                    row.partition_point(|&s| nan_last(s, x) == Ordering::Less)
                };
                pos as i64
            })
            .collect();
        IndexTensor::from_vec(out, vshape)
    }

    /// The bucket of each element among the sorted 1-D `boundaries`, like
    /// `torch.bucketize(self, boundaries, right=right)`: `i` with
    /// `boundaries[i-1] < x <= boundaries[i]` (`<=` and `<` with `right`).
    ///
    /// # Errors
    /// [`TensorError::Shape`] when `boundaries` is not 1-D.
    pub fn bucketize(&self, boundaries: &Tensor<T>, right: bool) -> Result<IndexTensor> {
        if boundaries.ndim() != 1 {
            return Err(TensorError::shape(
                "bucketize",
                format!("boundaries must be 1-D, got shape {:?}", boundaries.shape()),
            ));
        }
        boundaries.searchsorted(self, right)
    }

    /// The distinct values in ascending order, like `torch.unique(x, sorted=True,
    /// return_inverse=True, return_counts=True)`: the values (1-D), for each input element
    /// the index of its value (input-shaped), and how often each value occurs. As in
    /// PyTorch, -0 and 0 are one value and every NaN is a value of its own.
    ///
    /// ```
    /// use strata_tensor::Tensor;
    ///
    /// let x = Tensor::from_vec(vec![2.0f32, 1.0, 2.0, 5.0], &[2, 2])?;
    /// let (values, inverse, counts) = x.unique();
    /// assert_eq!(values.to_vec(), vec![1.0, 2.0, 5.0]);
    /// assert_eq!(inverse.to_vec(), vec![1, 0, 1, 2]);
    /// assert_eq!(counts.to_vec(), vec![1, 2, 1]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    pub fn unique(&self) -> (Tensor<T>, IndexTensor, IndexTensor) {
        let v = self.contiguous().to_vec();
        let mut order: Vec<usize> = (0..v.len()).collect();
        order.sort_by(|&a, &b| nan_last(v[a], v[b]));
        let mut values: Vec<T> = Vec::new();
        let mut counts: Vec<i64> = Vec::new();
        let mut inverse = vec![0i64; v.len()];
        for &i in &order {
            let x = v[i];
            let same = values.last().is_some_and(|&last| !x.is_nan() && last == x);
            if !same {
                values.push(x);
                counts.push(0);
            }
            *counts.last_mut().expect("pushed") += 1;
            inverse[i] = values.len() as i64 - 1;
        }
        let n = values.len();
        (
            Tensor::from_contiguous(values, &[n]),
            IndexTensor::from_vec(inverse, self.shape()).expect("one index per element"),
            IndexTensor::from_vec(counts, &[n]).expect("one count per value"),
        )
    }

    /// The coordinates of the non-zero elements (NaN counts as non-zero), one row each
    /// in row-major order, like `torch.nonzero`: `[n, ndim]`.
    pub fn nonzero(&self) -> IndexTensor {
        let shape = self.shape();
        let nd = shape.len();
        let v = self.contiguous().to_vec();
        let mut out = Vec::new();
        let mut count = 0;
        for (flat, &x) in v.iter().enumerate() {
            if x != T::zero() {
                count += 1;
                let mut rest = flat;
                let start = out.len();
                out.resize(start + nd, 0);
                for d in (0..nd).rev() {
                    out[start + d] = (rest % shape[d]) as i64;
                    rest /= shape[d];
                }
            }
        }
        IndexTensor::from_vec(out, &[count, nd]).expect("one row per non-zero")
    }
}

/// The `j`-th index along dimension `d` of an index tensor, keeping `d` as size 1.
fn select_indices(indices: &IndexTensor, d: usize, j: usize) -> Result<IndexTensor> {
    let shape = indices.shape();
    if shape.is_empty() {
        return Ok(indices.clone());
    }
    let (outer, size, inner) = split(shape, d);
    let v = indices.as_slice();
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        out.extend_from_slice(&v[(o * size + j) * inner..(o * size + j + 1) * inner]);
    }
    let mut s = shape.to_vec();
    s[d] = 1;
    IndexTensor::from_vec(out, &s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f64], shape: &[usize]) -> Tensor<f64> {
        Tensor::from_vec(v.to_vec(), shape).unwrap()
    }

    /// The PyTorch 2.15 results of the same calls (see the module docs for the rules).
    #[test]
    fn sorting_follows_pytorch() {
        let n = f64::NAN;
        let x = t(&[3., n, 1., 3., -0., 0., n, 2.], &[8]);
        let (v, i) = x.sort(0, false).unwrap();
        assert_eq!(i.to_vec(), [4, 5, 2, 7, 0, 3, 1, 6]);
        assert_eq!(&v.to_vec()[..6], [-0., 0., 1., 2., 3., 3.]);
        let (_, i) = x.sort(0, true).unwrap();
        assert_eq!(i.to_vec(), [1, 6, 0, 3, 7, 2, 4, 5]);
        let (values, inverse, counts) = x.unique();
        assert_eq!(values.numel(), 6);
        assert!(values.to_vec()[4].is_nan() && values.to_vec()[5].is_nan());
        assert_eq!(inverse.to_vec(), [3, 4, 1, 3, 0, 0, 5, 2]);
        assert_eq!(counts.to_vec(), [2, 1, 1, 2, 1, 1]);
        let y = t(&[1., 3., 3., 2.], &[4]);
        assert_eq!(y.topk(2, 0, true).unwrap().1.to_vec(), [1, 2]);
        assert_eq!(y.topk(2, 0, false).unwrap().1.to_vec(), [0, 3]);
        assert!(y.topk(5, 0, true).is_err());
        let z = t(&[1., n, 3.], &[3]);
        assert_eq!(z.topk(2, 0, true).unwrap().1.to_vec(), [1, 2]);
        let (kv, ki) = z.kthvalue(3, 0, false).unwrap();
        assert!(kv.to_vec()[0].is_nan() && ki.to_vec() == [1] && kv.shape().is_empty());
        assert!(z.kthvalue(0, 0, false).is_err() && z.kthvalue(4, 0, false).is_err());
        let s = t(&[1., 2., 2., 3.], &[4]);
        let q = t(&[2., 0., 5., n], &[4]);
        assert_eq!(s.searchsorted(&q, false).unwrap().to_vec(), [1, 0, 4, 4]);
        assert_eq!(s.searchsorted(&q, true).unwrap().to_vec(), [3, 0, 4, 4]);
        let b = t(&[1., 2., 3.], &[3]);
        let q = t(&[2., 0., 5.], &[3]);
        assert_eq!(q.bucketize(&b, false).unwrap().to_vec(), [1, 0, 3]);
        assert_eq!(q.bucketize(&b, true).unwrap().to_vec(), [2, 0, 3]);
        let nz = t(&[0., 1., n, 0.], &[2, 2]).nonzero();
        assert_eq!(
            (nz.shape(), nz.to_vec()),
            (&[2usize, 2][..], vec![0, 1, 1, 0])
        );
        assert_eq!(Tensor::scalar(2.0).nonzero().shape(), [1, 0]);
    }

    #[test]
    fn lanes_along_any_dimension() {
        // [2, 3]: sort the columns (dim 0) and the rows (dim 1).
        let x = t(&[3., 1., 2., 0., 5., 1.], &[2, 3]);
        let (v, i) = x.sort(0, false).unwrap();
        assert_eq!(v.to_vec(), [0., 1., 1., 3., 5., 2.]);
        assert_eq!(i.to_vec(), [1, 0, 1, 0, 1, 0]);
        let (v, i) = x.topk(2, 1, true).unwrap();
        assert_eq!(
            (v.to_vec(), i.to_vec()),
            (vec![3., 2., 5., 1.], vec![0, 2, 1, 2])
        );
        let (v, i) = x.kthvalue(2, -1, true).unwrap();
        assert_eq!(
            (v.shape(), v.to_vec(), i.to_vec()),
            (&[2usize, 1][..], vec![2., 1.], vec![2, 2])
        );
        // Batched searchsorted: one sorted row per lane.
        let seq = t(&[1., 3., 5., 2., 4., 6.], &[2, 3]);
        let v = t(&[4., 4.], &[2, 1]);
        assert_eq!(seq.searchsorted(&v, false).unwrap().to_vec(), [2, 1]);
        assert!(seq.searchsorted(&t(&[1., 2., 3.], &[3, 1]), false).is_err());
        assert!(Tensor::scalar(1.0).searchsorted(&v, false).is_err());
    }
}
