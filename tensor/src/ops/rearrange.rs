//! Ops that move elements without arithmetic: `flip`, `roll`, `diagonal`, `diag`,
//! `repeat_interleave`, `meshgrid`, and `outer` and `clamp_tensor`, which combine
//! existing ops. Each is an index plan (in [`plans`], shared with strata-autograd, whose
//! versions run the same plan through differentiable ops) applied with `index_select`.

use crate::handle::layout::{resolve_dim, resolve_dims};
use crate::{Element, IndexTensor, Result, Tensor, TensorError};

/// Index plans and argument checks shared with strata-autograd; not a stable API.
#[doc(hidden)]
pub mod plans {
    use super::*;
    pub use crate::ops::einsum::{EinsumOperand, einsum};
    pub use crate::ops::norm::{SingularReduce, check_matrix, check_singular, singular_reduction};

    /// `n - 1, …, 0`.
    pub fn reversed(n: usize) -> IndexTensor {
        IndexTensor::from_indices(&(0..n).rev().collect::<Vec<_>>())
    }

    /// The sources of a roll by `shift` over `n` positions: `out[i] = x[(i - shift) mod n]`.
    pub fn rotated(n: usize, shift: isize) -> IndexTensor {
        if n == 0 {
            return IndexTensor::from_indices(&[]);
        }
        let s = shift.rem_euclid(n as isize) as usize;
        IndexTensor::from_indices(&(0..n).map(|i| (i + n - s) % n).collect::<Vec<_>>())
    }

    /// How to take a diagonal: permute `dims` to the end, flatten the two into
    /// `rows × cols`, and select `positions` there; the result has `shape`.
    pub struct DiagonalPlan {
        /// The permutation moving `dim1`, `dim2` last.
        pub permutation: Vec<isize>,
        /// The shape after flattening the two dimensions into one.
        pub flat_shape: Vec<usize>,
        /// Flat positions of the diagonal's elements.
        pub positions: IndexTensor,
        /// The output shape: the other dimensions, then the diagonal.
        pub shape: Vec<usize>,
    }

    /// The plan of `diagonal(offset, dim1, dim2)` on a tensor of `shape`.
    ///
    /// # Errors
    /// [`TensorError::Dim`] for a dimension out of range, [`TensorError::Invalid`] when the
    /// two are the same or the tensor has fewer than two dimensions.
    pub fn diagonal(
        shape: &[usize],
        offset: isize,
        dim1: isize,
        dim2: isize,
    ) -> Result<DiagonalPlan> {
        const OP: &str = "diagonal";
        if shape.len() < 2 {
            return Err(TensorError::invalid(
                OP,
                format!("needs at least 2 dimensions, got shape {shape:?}"),
            ));
        }
        let (d1, d2) = (resolve_dim(OP, dim1, shape)?, resolve_dim(OP, dim2, shape)?);
        if d1 == d2 {
            return Err(TensorError::invalid(
                OP,
                format!("dim1 and dim2 are both dimension {d1}"),
            ));
        }
        let (rows, cols) = (shape[d1], shape[d2]);
        // Every position below is under rows · cols, so this one check bounds them all.
        let flat = rows
            .checked_mul(cols)
            .ok_or_else(|| TensorError::TooLarge {
                op: OP,
                shape: shape.to_vec(),
            })?;
        // Diagonal i is (i, i + offset) for offset ≥ 0, (i - offset, i) below.
        let (r0, c0) = if offset >= 0 {
            (0, offset.unsigned_abs())
        } else {
            (offset.unsigned_abs(), 0)
        };
        let len = rows.saturating_sub(r0).min(cols.saturating_sub(c0));
        let positions: Vec<usize> = (0..len).map(|i| (r0 + i) * cols + c0 + i).collect();
        let others: Vec<usize> = (0..shape.len()).filter(|&d| d != d1 && d != d2).collect();
        let mut permutation: Vec<isize> = others.iter().map(|&d| d as isize).collect();
        permutation.extend([d1 as isize, d2 as isize]);
        let mut flat_shape: Vec<usize> = others.iter().map(|&d| shape[d]).collect();
        let mut out: Vec<usize> = flat_shape.clone();
        flat_shape.push(flat);
        out.push(len);
        Ok(DiagonalPlan {
            permutation,
            flat_shape,
            positions: IndexTensor::from_indices(&positions),
            shape: out,
        })
    }

    /// The source index of each output element of `repeat_interleave` along a dimension
    /// of `size`: element `i` repeated `repeats[i]` times (or `repeats[0]` times each).
    ///
    /// # Errors
    /// [`TensorError::Shape`] when `repeats` has neither 1 nor `size` entries,
    /// [`TensorError::Invalid`] when the output length
    /// overflows.
    pub fn interleaved(size: usize, repeats: &[usize]) -> Result<IndexTensor> {
        const OP: &str = "repeat_interleave";
        let each = |i: usize| {
            if repeats.len() == 1 {
                repeats[0]
            } else {
                repeats[i]
            }
        };
        if repeats.len() != 1 && repeats.len() != size {
            return Err(TensorError::shape(
                OP,
                format!(
                    "repeats must have 1 or {size} entries (the size of the dimension), got {}",
                    repeats.len()
                ),
            ));
        }
        let total = (0..size)
            .try_fold(0usize, |acc, i| acc.checked_add(each(i)))
            .filter(|&t| t <= isize::MAX as usize / 8)
            .ok_or_else(|| TensorError::invalid(OP, "the repeated length overflows"))?;
        let mut index = Vec::new();
        index.try_reserve_exact(total).map_err(|_| {
            TensorError::invalid(OP, format!("{total} indices do not fit in memory"))
        })?;
        for i in 0..size {
            index.extend(std::iter::repeat_n(i, each(i)));
        }
        Ok(IndexTensor::from_indices(&index))
    }

    /// The shape of each grid of `meshgrid` and, per input, the shape it is viewed as before
    /// the broadcast.
    ///
    /// # Errors
    /// [`TensorError::Shape`] when an input has more than one dimension.
    pub fn meshgrid_shapes(
        shapes: &[&[usize]],
        indexing: Indexing,
    ) -> Result<(Vec<usize>, Vec<Vec<usize>>)> {
        let mut sizes = Vec::with_capacity(shapes.len());
        for (i, s) in shapes.iter().enumerate() {
            match s {
                [] => sizes.push(1),
                [n] => sizes.push(*n),
                _ => {
                    return Err(TensorError::shape(
                        "meshgrid",
                        format!("expects 0-D or 1-D tensors, input {i} has shape {s:?}"),
                    ));
                }
            }
        }
        let k = sizes.len();
        // With "xy", the first two inputs index dimensions 1 and 0.
        let dim_of = |i: usize| match (indexing, i) {
            (Indexing::Xy, 0) if k > 1 => 1,
            (Indexing::Xy, 1) => 0,
            _ => i,
        };
        let mut grid = vec![0; k];
        for (i, &n) in sizes.iter().enumerate() {
            grid[dim_of(i)] = n;
        }
        let views = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let mut v = vec![1; k];
                v[dim_of(i)] = n;
                v
            })
            .collect();
        Ok((grid, views))
    }

    /// `outer` takes two 1-D tensors.
    pub fn check_outer(a: &[usize], b: &[usize]) -> Result<()> {
        if a.len() != 1 || b.len() != 1 {
            return Err(TensorError::shape(
                "outer",
                format!("expects two 1-D tensors, got shapes {a:?} and {b:?}"),
            ));
        }
        Ok(())
    }

    /// `clamp_tensor` needs a bound.
    pub fn check_clamp_bounds(min: bool, max: bool) -> Result<()> {
        if !min && !max {
            return Err(TensorError::invalid(
                "clamp",
                "at least one of min and max must be given",
            ));
        }
        Ok(())
    }
}

/// How `meshgrid` lays out its grids, like PyTorch's `indexing` argument.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Indexing {
    /// Matrix indexing: grid `i` varies along dimension `i` (PyTorch's default).
    #[default]
    Ij,
    /// Cartesian indexing: the first two inputs swap dimensions (x along columns), as in
    /// NumPy's default.
    Xy,
}

impl<T: Element> Tensor<T> {
    /// The elements in reverse order along each of `dims`, like `torch.flip` (a copy).
    ///
    /// ```
    /// use strata_tensor::Tensor;
    ///
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    /// assert_eq!(x.flip(&[1])?.to_vec(), vec![3.0, 2.0, 1.0, 6.0, 5.0, 4.0]);
    /// assert_eq!(x.flip(&[0, 1])?.to_vec(), vec![6.0, 5.0, 4.0, 3.0, 2.0, 1.0]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Dim`] for a dimension out of range, [`TensorError::Invalid`] for a
    /// repeated one.
    pub fn flip(&self, dims: &[isize]) -> Result<Tensor<T>> {
        if dims.is_empty() {
            return Ok(self.contiguous());
        }
        let mask = resolve_dims("flip", dims, self.shape())?;
        let mut out = self.clone();
        for (d, _) in mask.iter().enumerate().filter(|(_, m)| **m) {
            out = out.index_select(d as isize, &plans::reversed(self.shape()[d]))?;
        }
        Ok(if self.ndim() == 0 {
            out.contiguous()
        } else {
            out
        })
    }

    /// The elements shifted by `shifts[i]` positions along `dims[i]`, wrapping around,
    /// like `torch.roll`; with no `dims`, the flattened tensor is rolled by `shifts[0]` and
    /// reshaped back.
    ///
    /// ```
    /// use strata_tensor::Tensor;
    ///
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[4])?;
    /// assert_eq!(x.roll(&[1], &[0])?.to_vec(), vec![4.0, 1.0, 2.0, 3.0]);
    /// assert_eq!(x.roll(&[-1], &[])?.to_vec(), vec![2.0, 3.0, 4.0, 1.0]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Invalid`] when `shifts` and `dims` differ in length (or `dims` is
    /// empty and `shifts` does not have one entry), [`TensorError::Dim`] for a dimension
    /// out of range.
    pub fn roll(&self, shifts: &[isize], dims: &[isize]) -> Result<Tensor<T>> {
        const OP: &str = "roll";
        if dims.is_empty() {
            let [shift] = shifts else {
                return Err(TensorError::invalid(
                    OP,
                    format!("without dims, shifts must have one entry, got {shifts:?}"),
                ));
            };
            let flat = self.reshape(&[self.numel()][..])?;
            return flat
                .index_select(0, &plans::rotated(self.numel(), *shift))?
                .reshape(self.shape());
        }
        if shifts.len() != dims.len() {
            return Err(TensorError::invalid(
                OP,
                format!("shifts {shifts:?} and dims {dims:?} must have the same length"),
            ));
        }
        let mut out = self.clone();
        for (&shift, &dim) in shifts.iter().zip(dims) {
            let d = resolve_dim(OP, dim, self.shape())?;
            let n = self.shape().get(d).copied().unwrap_or(1);
            out = out.index_select(d as isize, &plans::rotated(n, shift))?;
        }
        Ok(out)
    }

    /// The diagonal of `dim1` × `dim2` (`offset` above it for positive values, below for
    /// negative), like `torch.diagonal`: the other dimensions first, the diagonal last. A
    /// copy, not a view.
    ///
    /// ```
    /// use strata_tensor::Tensor;
    ///
    /// let x = Tensor::from_vec((0..6).map(|i| i as f32).collect(), &[2, 3])?;
    /// assert_eq!(x.diagonal(0, 0, 1)?.to_vec(), vec![0.0, 4.0]);
    /// assert_eq!(x.diagonal(1, 0, 1)?.to_vec(), vec![1.0, 5.0]);
    /// assert_eq!(x.diagonal(-1, 0, 1)?.to_vec(), vec![3.0]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// As [`plans::diagonal`].
    pub fn diagonal(&self, offset: isize, dim1: isize, dim2: isize) -> Result<Tensor<T>> {
        let plan = plans::diagonal(self.shape(), offset, dim1, dim2)?;
        self.permute(&plan.permutation)?
            .reshape(plan.flat_shape.as_slice())?
            .index_select(-1, &plan.positions)?
            .reshape(plan.shape.as_slice())
    }

    /// Like `torch.diag`: a 1-D tensor becomes the square matrix with it on diagonal
    /// `offset` (zeros elsewhere); a 2-D tensor gives its diagonal `offset`.
    ///
    /// # Errors
    /// [`TensorError::Shape`] for other ranks.
    pub fn diag(&self, offset: isize) -> Result<Tensor<T>> {
        match self.ndim() {
            1 => {
                let too_large = || TensorError::TooLarge {
                    op: "diag",
                    shape: vec![usize::MAX, usize::MAX],
                };
                let n = self
                    .numel()
                    .checked_add(offset.unsigned_abs())
                    .ok_or_else(too_large)?;
                let plan = plans::diagonal(&[n, n], offset, 0, 1)?;
                Tensor::try_zeros(&[n.checked_mul(n).ok_or_else(too_large)?])?
                    .index_add(0, &plan.positions, self)?
                    .reshape(&[n, n][..])
            }
            2 => self.diagonal(offset, 0, 1),
            _ => Err(TensorError::shape(
                "diag",
                format!("expects a 1-D or 2-D tensor, got shape {:?}", self.shape()),
            )),
        }
    }

    /// Each element repeated along `dim` (`repeats[i]` times for element `i`, or
    /// `repeats[0]` times each), like `torch.repeat_interleave`; with `dim = None` the
    /// flattened tensor.
    ///
    /// ```
    /// use strata_tensor::Tensor;
    ///
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3])?;
    /// assert_eq!(x.repeat_interleave(&[2], None)?.to_vec(), vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
    /// assert_eq!(x.repeat_interleave(&[1, 0, 2], Some(0))?.to_vec(), vec![1.0, 3.0, 3.0]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// As [`plans::interleaved`], and [`TensorError::Dim`] for a dimension out of range.
    pub fn repeat_interleave(&self, repeats: &[usize], dim: Option<isize>) -> Result<Tensor<T>> {
        let (x, d) = match dim {
            Some(d) => (
                self.clone(),
                resolve_dim("repeat_interleave", d, self.shape())?,
            ),
            None => (self.reshape(&[self.numel()][..])?, 0),
        };
        let size = x.shape().get(d).copied().unwrap_or(1);
        x.index_select(d as isize, &plans::interleaved(size, repeats)?)
    }

    /// Coordinate grids, like `torch.meshgrid`: for 0-D or 1-D inputs of sizes
    /// `n0, n1, …`, one tensor per input of shape `[n0, n1, …]` (with `Xy` indexing the
    /// first two sizes swap) holding that input's values along its own dimension.
    ///
    /// # Errors
    /// [`TensorError::Shape`] for an input of more than one dimension.
    pub fn meshgrid(tensors: &[&Tensor<T>], indexing: Indexing) -> Result<Vec<Tensor<T>>> {
        let shapes: Vec<&[usize]> = tensors.iter().map(|t| t.shape()).collect();
        let (grid, views) = plans::meshgrid_shapes(&shapes, indexing)?;
        tensors
            .iter()
            .zip(views)
            .map(|(t, v)| t.reshape(v.as_slice())?.broadcast_to(&grid))
            .collect()
    }

    /// The outer product `a_i · b_j` of two 1-D tensors, like `torch.outer`.
    ///
    /// # Errors
    /// [`TensorError::Shape`] when either is not 1-D.
    pub fn outer(&self, other: &Tensor<T>) -> Result<Tensor<T>> {
        plans::check_outer(self.shape(), other.shape())?;
        self.reshape(&[self.numel(), 1][..])?
            .mul(&other.reshape(&[1, other.numel()][..])?)
    }

    /// Values limited by tensor bounds (broadcast), like `torch.clamp(x, min, max)` with
    /// tensors: `minimum(maximum(x, min), max)`, so `max` wins where `min > max`.
    ///
    /// # Errors
    /// [`TensorError::Invalid`] when both bounds are `None`; broadcast errors.
    pub fn clamp_tensor(
        &self,
        min: Option<&Tensor<T>>,
        max: Option<&Tensor<T>>,
    ) -> Result<Tensor<T>> {
        plans::check_clamp_bounds(min.is_some(), max.is_some())?;
        let lower = match min {
            Some(m) => self.maximum(m)?,
            None => self.clone(),
        };
        match max {
            Some(m) => lower.minimum(m),
            None => Ok(lower),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f64], shape: &[usize]) -> Tensor<f64> {
        Tensor::from_vec(v.to_vec(), shape).unwrap()
    }

    #[test]
    fn flip_roll_and_their_errors() {
        let x = t(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
        assert_eq!(x.flip(&[0]).unwrap().to_vec(), [4., 5., 6., 1., 2., 3.]);
        assert_eq!(x.flip(&[-1, 0]).unwrap().to_vec(), [6., 5., 4., 3., 2., 1.]);
        assert!(
            x.flip(&[0, -2])
                .unwrap_err()
                .to_string()
                .contains("more than once")
        );
        assert_eq!(
            x.roll(&[1, -1], &[0, 1]).unwrap().to_vec(),
            [5., 6., 4., 2., 3., 1.]
        );
        assert_eq!(
            x.roll(&[7], &[]).unwrap().to_vec(),
            [6., 1., 2., 3., 4., 5.]
        );
        assert!(x.roll(&[1, 2], &[0]).is_err() && x.roll(&[1, 2], &[]).is_err());
        let empty = Tensor::<f64>::zeros(&[0, 3]);
        assert_eq!(empty.roll(&[2], &[0]).unwrap().shape(), [0, 3]);
        let s = Tensor::scalar(5.0);
        assert_eq!(s.flip(&[0]).unwrap().to_vec(), [5.0]);
        assert_eq!(s.roll(&[3], &[0]).unwrap().to_vec(), [5.0]);
    }

    #[test]
    fn diagonals() {
        let x = t(&(0..24).map(f64::from).collect::<Vec<_>>(), &[2, 3, 4]);
        // dims 1 and 2 of each of the 2 planes: [0, 5, 10], [12, 17, 22].
        assert_eq!(
            x.diagonal(0, 1, 2).unwrap().to_vec(),
            [0., 5., 10., 12., 17., 22.]
        );
        // dims 0 and 2, offset 2: (0, 2), (1, 3) for each of the 3 rows of dim 1.
        let d = x.diagonal(2, 0, -1).unwrap();
        assert_eq!(d.shape(), [3, 2]);
        assert_eq!(d.to_vec(), [2., 15., 6., 19., 10., 23.]);
        assert_eq!(x.diagonal(5, 1, 2).unwrap().shape(), [2, 0]);
        assert_eq!(x.diagonal(-7, 1, 2).unwrap().shape(), [2, 0]);
        assert!(x.diagonal(0, 1, -2).is_err());
        let v = t(&[1., 2.], &[2]);
        assert_eq!(
            v.diag(1).unwrap().to_vec(),
            [0., 1., 0., 0., 0., 2., 0., 0., 0.]
        );
        assert_eq!(v.diag(-1).unwrap().diag(-1).unwrap().to_vec(), [1., 2.]);
        assert!(x.diag(0).is_err());
    }

    #[test]
    fn repeat_interleave_meshgrid_outer_clamp() {
        let x = t(&[1., 2., 3., 4.], &[2, 2]);
        assert_eq!(
            x.repeat_interleave(&[2, 1], Some(0)).unwrap().to_vec(),
            [1., 2., 1., 2., 3., 4.]
        );
        assert_eq!(x.repeat_interleave(&[2], Some(1)).unwrap().shape(), [2, 4]);
        assert!(x.repeat_interleave(&[1, 2, 3], Some(0)).is_err());
        assert!(x.repeat_interleave(&[usize::MAX], None).is_err());
        let (a, b) = (t(&[1., 2.], &[2]), t(&[3., 4., 5.], &[3]));
        let ij = Tensor::meshgrid(&[&a, &b], Indexing::Ij).unwrap();
        assert_eq!(ij[0].shape(), [2, 3]);
        assert_eq!(ij[0].to_vec(), [1., 1., 1., 2., 2., 2.]);
        assert_eq!(ij[1].to_vec(), [3., 4., 5., 3., 4., 5.]);
        let xy = Tensor::meshgrid(&[&a, &b], Indexing::Xy).unwrap();
        assert_eq!(xy[0].shape(), [3, 2]);
        assert_eq!(xy[0].to_vec(), [1., 2., 1., 2., 1., 2.]);
        assert!(Tensor::meshgrid(&[&x], Indexing::Ij).is_err());
        assert_eq!(a.outer(&b).unwrap().to_vec(), [3., 4., 5., 6., 8., 10.]);
        assert!(a.outer(&x).is_err());
        let lo = t(&[0., 3.], &[2]);
        let hi = t(&[1.5, 2.], &[2]);
        let y = t(&[1., 2., -1., 9.], &[2, 2])
            .clamp_tensor(Some(&lo), Some(&hi))
            .unwrap();
        // Column 0 is clamped to [0, 1.5], column 1 to [3, 2], where max wins: 2.
        assert_eq!(y.to_vec(), [1., 2., 0., 2.]);
        assert!(x.clamp_tensor(None, None).is_err());
    }
}
