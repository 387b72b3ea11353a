//! Integer index tensors and the ops that take them: index_select, index_add, gather,
//! scatter_add, one_hot.

use std::fmt;

use crate::engine::iter::Coalesced;
use crate::engine::par::Cost;
use crate::handle::layout::{check_shape, numel, resolve_dim};
use crate::handle::storage::try_alloc;
use crate::{Element, Result, Tensor, TensorError};

/// A contiguous n-dimensional array of `i64` indices, PyTorch's `torch.long` tensors: class
/// targets, the result of [`argmax`](Tensor::argmax), the argmax positions of
/// [`max_pool2d`](Tensor::max_pool2d), and the index argument of [`gather`](Tensor::gather)
/// and friends.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IndexTensor {
    data: Vec<i64>,
    shape: Vec<usize>,
}

impl IndexTensor {
    /// Wraps `data` (row-major) as indices of `shape`.
    ///
    /// # Errors
    /// [`TensorError::DataLength`] when `data.len()` is not the product of `shape`, and
    /// [`TensorError::TooLarge`] when that product overflows.
    pub fn from_vec(data: Vec<i64>, shape: &[usize]) -> Result<Self> {
        let n = check_shape::<i64>("IndexTensor::from_vec", shape)?;
        if data.len() != n {
            return Err(TensorError::DataLength {
                op: "IndexTensor::from_vec",
                len: data.len(),
                shape: shape.to_vec(),
                numel: n,
            });
        }
        Ok(IndexTensor {
            data,
            shape: shape.to_vec(),
        })
    }

    /// A 1-d index tensor from `usize` indices.
    pub fn from_indices(indices: &[usize]) -> Self {
        IndexTensor {
            data: indices.iter().map(|&i| i as i64).collect(),
            shape: vec![indices.len()],
        }
    }

    /// The size of each dimension.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// Number of indices.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// The indices in row-major order.
    pub fn as_slice(&self) -> &[i64] {
        &self.data
    }

    /// The indices, copied.
    pub fn to_vec(&self) -> Vec<i64> {
        self.data.clone()
    }

    /// The same indices in a new shape.
    ///
    /// # Errors
    /// [`TensorError::Reshape`] when the element counts differ (or overflow).
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        if crate::checked_numel(shape) != Some(self.numel()) {
            return Err(TensorError::Reshape {
                op: "IndexTensor::reshape",
                from: self.shape.clone(),
                to: shape.iter().map(|&d| d as isize).collect(),
            });
        }
        Ok(IndexTensor {
            data: self.data.clone(),
            shape: shape.to_vec(),
        })
    }

    /// The indices as a float tensor of the same shape.
    pub fn to_tensor<T: Element>(&self) -> Tensor<T> {
        Tensor::from_contiguous(
            self.data
                .iter()
                .map(|&i| T::from_f64(i as f64))
                .collect::<Vec<T>>(),
            &self.shape,
        )
    }

    /// Integer-valued floats as indices (labels read from a float file, say).
    ///
    /// # Errors
    /// [`TensorError::Invalid`] for a value that is not a finite integer.
    pub fn from_tensor<T: Element>(t: &Tensor<T>) -> Result<Self> {
        let data = t
            .to_vec()
            .into_iter()
            .map(|v| {
                let f = v.to_f64();
                if f.is_finite() && f.fract() == 0.0 {
                    Ok(f as i64)
                } else {
                    Err(TensorError::invalid(
                        "IndexTensor::from_tensor",
                        format!("{f} is not an integer index"),
                    ))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        IndexTensor::from_vec(data, t.shape())
    }

    /// Checks every index against `size`, naming the op and dimension on failure.
    fn check(&self, op: &'static str, dim: usize, size: usize) -> Result<()> {
        match self.data.iter().find(|&&i| i < 0 || i as usize >= size) {
            Some(&index) => Err(TensorError::Index {
                op,
                index,
                dim,
                size,
            }),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for IndexTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IndexTensor({:?}, shape={:?})", self.data, self.shape)
    }
}

impl fmt::Display for IndexTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::ops::display::write_tensor(&self.to_tensor::<f64>(), f, vec![], true)
    }
}

/// (outer, size, inner) of a contiguous shape split around `dim`.
fn split_at_dim(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    (numel(&shape[..dim]), shape[dim], numel(&shape[dim + 1..]))
}

impl<T: Element> Tensor<T> {
    /// The slices at `index` along `dim`, like `torch.index_select` (`index` is 1-d or 0-d).
    ///
    /// ```
    /// use strata_tensor::{IndexTensor, Tensor};
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2])?;
    /// let rows = x.index_select(0, &IndexTensor::from_indices(&[2, 0, 2]))?;
    /// assert_eq!(rows.to_vec(), vec![5.0, 6.0, 1.0, 2.0, 5.0, 6.0]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Dim`], [`TensorError::Shape`] for an index of more than 1 dimension,
    /// [`TensorError::Index`] for an index out of range.
    pub fn index_select(&self, dim: isize, index: &IndexTensor) -> Result<Tensor<T>> {
        const OP: &str = "index_select";
        if index.ndim() > 1 {
            return Err(TensorError::shape(
                OP,
                format!("index must be 0-d or 1-d, got shape {:?}", index.shape()),
            ));
        }
        let d = resolve_dim(OP, dim, self.shape())?;
        if self.ndim() == 0 {
            index.check(OP, 0, 1)?;
            return Ok(self.contiguous());
        }
        let (outer, size, inner) = split_at_dim(self.shape(), d);
        index.check(OP, d, size)?;
        let k = index.numel();
        let mut shape = self.shape().to_vec();
        shape[d] = k;
        let mut out = try_alloc::<T>(OP, &shape)?;
        let src = self.try_contiguous(OP)?;
        let x = src.as_slice().expect("contiguous");
        for o in 0..outer {
            for (j, &i) in index.as_slice().iter().enumerate() {
                let from = (o * size + i as usize) * inner;
                let to = (o * k + j) * inner;
                out[to..to + inner].copy_from_slice(&x[from..from + inner]);
            }
        }
        Ok(Tensor::from_contiguous(out, &shape))
    }

    /// `self` with `source`'s slices added at `index` along `dim`, like
    /// `Tensor.index_add(dim, index, source)`: the backward of
    /// [`index_select`](Tensor::index_select). Repeated indices accumulate.
    ///
    /// # Errors
    /// [`TensorError::Shape`] when `source`'s shape is not `self`'s with `dim` resized to
    /// the index length; [`TensorError::Index`] for an index out of range.
    pub fn index_add(
        &self,
        dim: isize,
        index: &IndexTensor,
        source: &Tensor<T>,
    ) -> Result<Tensor<T>> {
        let mut out = self.clone();
        out.index_add_(dim, index, source)?;
        Ok(out)
    }

    /// In-place [`index_add`](Tensor::index_add), like `Tensor.index_add_`: no copy when this
    /// tensor's storage is its own (`Tensor::zeros(..).index_add_(..)` adds into the zeros).
    ///
    /// ```
    /// use strata_tensor::{IndexTensor, Tensor};
    /// let mut acc = Tensor::<f32>::zeros(&[3, 2]);
    /// let rows = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2])?;
    /// acc.index_add_(0, &IndexTensor::from_indices(&[2, 2]), &rows)?;
    /// assert_eq!(acc.to_vec(), vec![0.0, 0.0, 0.0, 0.0, 4.0, 6.0]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// As [`index_add`](Tensor::index_add); on error `self` is unchanged.
    pub fn index_add_(
        &mut self,
        dim: isize,
        index: &IndexTensor,
        source: &Tensor<T>,
    ) -> Result<()> {
        const OP: &str = "index_add";
        let d = resolve_dim(OP, dim, self.shape())?;
        if self.ndim() == 0 {
            index.check(OP, 0, 1)?;
            let s = source.sum_all().item()?;
            *self = self.add_scalar(s);
            return Ok(());
        }
        let mut expected = self.shape().to_vec();
        expected[d] = index.numel();
        if index.ndim() > 1 || source.shape() != expected.as_slice() {
            return Err(TensorError::shape(
                OP,
                format!(
                    "source of shape {:?} and index of shape {:?} do not fit a tensor of shape \
                     {:?} along dimension {d} (expected source shape {expected:?})",
                    source.shape(),
                    index.shape(),
                    self.shape()
                ),
            ));
        }
        let (outer, size, inner) = split_at_dim(self.shape(), d);
        index.check(OP, d, size)?;
        let src = source.contiguous();
        let s = src.as_slice().expect("contiguous");
        let k = index.numel();
        let idx = index.as_slice();
        let out = self.as_mut_slice();
        let add_row = |to: &mut [T], from: usize| {
            for (a, &b) in to.iter_mut().zip(&s[from..from + inner]) {
                *a += b;
            }
        };
        let rows_per_chunk = match crate::engine::par::chunk_len(outer * k * inner, Cost::Cheap) {
            Some(len) if inner > 0 && size > 0 => len.div_ceil(inner),
            _ => {
                for o in 0..outer {
                    for (j, &i) in idx.iter().enumerate() {
                        let to = (o * size + i as usize) * inner;
                        add_row(&mut out[to..to + inner], (o * k + j) * inner);
                    }
                }
                return Ok(());
            }
        };
        // In parallel over output rows: each row takes its sources (the positions `j` with
        // `index[j]` = that row, kept in increasing order, so every element sums in the
        // same order as the sequential loop and the result does not depend on threads).
        let mut starts = vec![0usize; size + 1];
        for &i in idx {
            starts[i as usize + 1] += 1;
        }
        for r in 0..size {
            starts[r + 1] += starts[r];
        }
        let mut sources = vec![0usize; k];
        let mut next = starts.clone();
        for (j, &i) in idx.iter().enumerate() {
            sources[next[i as usize]] = j;
            next[i as usize] += 1;
        }
        crate::engine::par::for_each_chunk_mut_by(out, rows_per_chunk * inner, |start, chunk| {
            for (r, row) in (start / inner..).zip(chunk.chunks_mut(inner)) {
                let (o, i) = (r / size, r % size);
                for &j in &sources[starts[i]..starts[i + 1]] {
                    add_row(row, (o * k + j) * inner);
                }
            }
        });
        Ok(())
    }

    /// Values picked along `dim` by `index`, like `torch.gather`: `out[i][j][k] =
    /// self[index[i][j][k]][j][k]` for `dim = 0`. The result has `index`'s shape.
    ///
    /// # Errors
    /// [`TensorError::Shape`] when `index` has a different number of dimensions or is larger
    /// than `self` along a dimension other than `dim`; [`TensorError::Index`] for an index
    /// out of range.
    pub fn gather(&self, dim: isize, index: &IndexTensor) -> Result<Tensor<T>> {
        const OP: &str = "gather";
        let d = resolve_dim(OP, dim, self.shape())?;
        self.check_index_shape(OP, d, index, None)?;
        let size = self.shape().get(d).copied().unwrap_or(1);
        index.check(OP, d, size)?;
        let n = index.numel();
        let mut out = try_alloc::<T>(OP, index.shape())?;
        let mut strides = self.strides().to_vec();
        let dim_stride = strides.get(d).copied().unwrap_or(0);
        if let Some(s) = strides.get_mut(d) {
            *s = 0;
        }
        let walk = Coalesced::new(index.shape(), [&strides]);
        let [s_in] = walk.inner_strides();
        let data = self.storage();
        let idx = index.as_slice();
        walk.for_each_run([self.layout().offset()], 0, n, |pos, [off], len| {
            for j in 0..len {
                out[pos + j] = data[off + j * s_in + idx[pos + j] as usize * dim_stride];
            }
        });
        Ok(Tensor::from_contiguous(out, index.shape()))
    }

    /// `self` with `src`'s values added at the positions `index` names along `dim`, like
    /// `Tensor.scatter_add(dim, index, src)`: the backward of [`gather`](Tensor::gather).
    /// Repeated positions accumulate, in row-major order of `index`.
    ///
    /// # Errors
    /// As [`gather`](Tensor::gather), and [`TensorError::Shape`] when `index` is larger than
    /// `src` along any dimension.
    pub fn scatter_add(
        &self,
        dim: isize,
        index: &IndexTensor,
        src: &Tensor<T>,
    ) -> Result<Tensor<T>> {
        let mut out = self.clone();
        out.scatter_add_(dim, index, src)?;
        Ok(out)
    }

    /// In-place [`scatter_add`](Tensor::scatter_add), like `Tensor.scatter_add_`: no copy
    /// when this tensor's storage is its own.
    ///
    /// # Errors
    /// As [`scatter_add`](Tensor::scatter_add); on error `self` is unchanged.
    pub fn scatter_add_(&mut self, dim: isize, index: &IndexTensor, src: &Tensor<T>) -> Result<()> {
        const OP: &str = "scatter_add";
        let d = resolve_dim(OP, dim, self.shape())?;
        self.check_index_shape(OP, d, index, Some(src))?;
        let size = self.shape().get(d).copied().unwrap_or(1);
        index.check(OP, d, size)?;
        let out_strides = crate::handle::layout::contiguous_dims(self.shape());
        let n = index.numel();
        let mut strides = out_strides.clone();
        let dim_stride = strides.get(d).copied().unwrap_or(0);
        if let Some(s) = strides.get_mut(d) {
            *s = 0;
        }
        let walk = Coalesced::new(index.shape(), [&strides, src.strides()]);
        let [s_out, s_src] = walk.inner_strides();
        let data = src.storage();
        let idx = index.as_slice();
        let out = self.as_mut_slice();
        walk.for_each_run([0, src.layout().offset()], 0, n, |pos, [oo, os], len| {
            for j in 0..len {
                out[oo + j * s_out + idx[pos + j] as usize * dim_stride] += data[os + j * s_src];
            }
        });
        Ok(())
    }

    fn check_index_shape(
        &self,
        op: &'static str,
        d: usize,
        index: &IndexTensor,
        src: Option<&Tensor<T>>,
    ) -> Result<()> {
        let ndim = self.ndim().max(1);
        let idx_ndim = index.ndim().max(1);
        let bad = idx_ndim != ndim
            || src.is_some_and(|s| s.ndim().max(1) != ndim)
            || index.shape().iter().enumerate().any(|(k, &n)| {
                (k != d && n > self.shape()[k]) || src.is_some_and(|s| n > s.shape()[k])
            });
        if bad {
            return Err(TensorError::shape(
                op,
                match src {
                    Some(s) => format!(
                        "index of shape {:?} and src of shape {:?} do not fit a tensor of shape \
                         {:?} along dimension {d}",
                        index.shape(),
                        s.shape(),
                        self.shape()
                    ),
                    None => format!(
                        "index of shape {:?} does not fit a tensor of shape {:?} along \
                         dimension {d}",
                        index.shape(),
                        self.shape()
                    ),
                },
            ));
        }
        Ok(())
    }

    /// One-hot rows: shape `indices.shape() + [num_classes]`, a 1 at each index, like
    /// `F.one_hot` (as floats). `num_classes = None` uses the largest index plus one.
    ///
    /// # Errors
    /// [`TensorError::Index`] for a negative index or one `>= num_classes`;
    /// [`TensorError::TooLarge`] or [`TensorError::OutOfMemory`] when the rows cannot be
    /// allocated (a huge `num_classes`).
    pub fn one_hot(indices: &IndexTensor, num_classes: Option<usize>) -> Result<Tensor<T>> {
        let c = match num_classes {
            Some(c) => c,
            None => indices
                .as_slice()
                .iter()
                .max()
                .map_or(0, |&m| m.max(-1) as usize + 1),
        };
        indices.check("one_hot", indices.ndim(), c)?;
        let mut shape = indices.shape().to_vec();
        shape.push(c);
        let mut out = crate::handle::storage::try_alloc_zeroed::<T>("one_hot", &shape)?;
        for (row, &i) in indices.as_slice().iter().enumerate() {
            out[row * c + i as usize] = T::one();
        }
        Ok(Tensor::from_contiguous(out, &shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(data: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_slice(data, shape).unwrap()
    }

    fn idx(data: &[i64], shape: &[usize]) -> IndexTensor {
        IndexTensor::from_vec(data.to_vec(), shape).unwrap()
    }

    /// Large enough to run on several threads (by output rows): the result equals the
    /// sequential loop bit for bit, repeated and missing indices included.
    #[test]
    fn threaded_index_add_matches_the_loop() {
        let mut rng = crate::seeded_rng(3);
        for (shape, dim, k) in [([3, 50, 300], 1usize, 70usize), ([200, 2, 150], 0, 180)] {
            let x = Tensor::<f64>::randn(&shape, &mut rng);
            let mut src_shape = shape;
            src_shape[dim] = k;
            let src = Tensor::<f64>::randn(&src_shape, &mut rng);
            let size = shape[dim] as i64;
            let index: Vec<i64> = (0..k as i64)
                .map(|j| (j * 37 + j / 3) % (size - 1))
                .collect();
            let got = x
                .index_add(dim as isize, &idx(&index, &[k]), &src)
                .unwrap()
                .to_vec();
            let mut want = x.to_vec();
            let (outer, inner) = (numel(&shape[..dim]), numel(&shape[dim + 1..]));
            let s = src.to_vec();
            for o in 0..outer {
                for (j, &i) in index.iter().enumerate() {
                    for e in 0..inner {
                        want[(o * size as usize + i as usize) * inner + e] +=
                            s[(o * k + j) * inner + e];
                    }
                }
            }
            assert_eq!(got, want, "shape {shape:?} dim {dim}");
        }
    }

    #[test]
    fn index_select_and_add_by_hand() {
        let x = t(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
        let cols = x.index_select(1, &idx(&[2, 0], &[2])).unwrap();
        assert_eq!(cols.to_vec(), vec![3., 1., 6., 4.]);
        let back = Tensor::zeros(&[2, 3])
            .index_add(1, &idx(&[2, 2], &[2]), &t(&[1., 2., 3., 4.], &[2, 2]))
            .unwrap();
        assert_eq!(back.to_vec(), vec![0., 0., 3., 0., 0., 7.]);
        assert!(matches!(
            x.index_select(1, &idx(&[3], &[1])),
            Err(TensorError::Index {
                index: 3,
                dim: 1,
                size: 3,
                ..
            })
        ));
        assert!(x.index_select(0, &idx(&[-1], &[1])).is_err());
    }

    #[test]
    fn gather_and_scatter_add_by_hand() {
        // torch.gather(torch.tensor([[1., 2.], [3., 4.]]), 1, torch.tensor([[0, 0], [1, 0]]))
        // -> [[1., 1.], [4., 3.]]
        let x = t(&[1., 2., 3., 4.], &[2, 2]);
        let i = idx(&[0, 0, 1, 0], &[2, 2]);
        assert_eq!(x.gather(1, &i).unwrap().to_vec(), vec![1., 1., 4., 3.]);
        // torch.zeros(2, 2).scatter_add(1, i, torch.ones(2, 2)) -> [[2., 0.], [1., 1.]]
        let s = Tensor::<f32>::zeros(&[2, 2])
            .scatter_add(1, &i, &Tensor::ones(&[2, 2]))
            .unwrap();
        assert_eq!(s.to_vec(), vec![2., 0., 1., 1.]);
        // gather along dim 0 on a transposed view
        let xt = x.transpose(0, 1).unwrap(); // [[1, 3], [2, 4]]
        assert_eq!(
            xt.gather(0, &idx(&[1, 0], &[1, 2])).unwrap().to_vec(),
            vec![2., 3.]
        );
        assert!(matches!(
            x.gather(1, &idx(&[0, 2], &[1, 2])),
            Err(TensorError::Index { .. })
        ));
        assert!(matches!(
            x.gather(1, &idx(&[0], &[1])),
            Err(TensorError::Shape { .. })
        ));
    }

    #[test]
    fn one_hot_rows() {
        let o = Tensor::<f32>::one_hot(&idx(&[2, 0], &[2]), Some(3)).unwrap();
        assert_eq!(o.to_vec(), vec![0., 0., 1., 1., 0., 0.]);
        assert_eq!(
            Tensor::<f32>::one_hot(&idx(&[1], &[1]), None)
                .unwrap()
                .shape(),
            &[1, 2]
        );
        assert!(Tensor::<f32>::one_hot(&idx(&[3], &[1]), Some(3)).is_err());
        assert_eq!(idx(&[3, 10], &[2]).to_string(), "tensor([ 3, 10])");
        assert_eq!(idx(&[1, 5000], &[2]).to_string(), "tensor([   1, 5000])");
    }
}
