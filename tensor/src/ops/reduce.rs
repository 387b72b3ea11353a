//! The reduction ops on [`Tensor`]: sum, mean, prod, var/std, amax/amin, max/min with
//! indices, argmax/argmin, logsumexp, sum_to_shape; all run on the engine in
//! [`crate::engine::reduce`].

use crate::engine::iter::Coalesced;
use crate::engine::reduce::{Extreme, Prod, Reducer, Sum, Variance, reduce};
use crate::handle::layout::{numel, resolve_dim, resolve_dims};
use crate::{Dims, Element, IndexTensor, Result, Tensor, TensorError};

/// Drops the reduced (size-1) dimensions when `keepdim` is false.
fn finish_shape(kept_shape: &[usize], mask: &[bool], keepdim: bool) -> Dims {
    if keepdim {
        return Dims::from_slice(kept_shape);
    }
    kept_shape
        .iter()
        .zip(mask)
        .filter(|(_, m)| !**m)
        .map(|(&d, _)| d)
        .collect()
}

impl<T: Element> Tensor<T> {
    fn reduce_with<R: Reducer<T>>(
        &self,
        op: &'static str,
        dims: &[isize],
        keepdim: bool,
        r: &R,
        finish: impl Fn(R::Acc, usize) -> T,
    ) -> Result<Tensor<T>> {
        let mask = resolve_dims(op, dims, self.shape())?;
        let count: usize = self
            .shape()
            .iter()
            .zip(&mask)
            .filter(|(_, m)| **m)
            .map(|(&d, _)| d)
            .product();
        let (acc, kept) = reduce(self, &mask, r);
        let data: Vec<T> = acc.into_iter().map(|a| finish(a, count)).collect();
        Ok(Tensor::from_contiguous(
            data,
            &finish_shape(&kept, &mask, keepdim),
        ))
    }

    fn require_nonempty(&self, op: &'static str, dims: &[isize]) -> Result<()> {
        let mask = resolve_dims(op, dims, self.shape())?;
        for (d, (&size, &m)) in self.shape().iter().zip(&mask).enumerate() {
            if m && size == 0 {
                return Err(TensorError::invalid(
                    op,
                    format!(
                        "cannot reduce over dimension {d} of size 0 (shape {:?})",
                        self.shape()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Sum over `dims` (all dimensions when `dims` is empty), like
    /// `torch.sum(x, dims, keepdim)`.
    ///
    /// ```
    /// use strata_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    /// assert_eq!(x.sum(&[0], false)?.to_vec(), vec![5.0, 7.0, 9.0]);
    /// assert_eq!(x.sum(&[-1], true)?.shape(), &[2, 1]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Dim`] for an out-of-range dimension, [`TensorError::Invalid`] for a
    /// repeated one.
    pub fn sum(&self, dims: &[isize], keepdim: bool) -> Result<Tensor<T>> {
        self.reduce_with("sum", dims, keepdim, &Sum, |a, _| a)
    }

    /// Sum of all elements as a 0-d tensor, like `x.sum()`.
    pub fn sum_all(&self) -> Tensor<T> {
        self.sum(&[], false)
            .expect("reducing every dimension cannot fail")
    }

    /// Mean over `dims` (all when empty), like `torch.mean` (NaN over an empty set).
    ///
    /// # Errors
    /// As [`sum`](Tensor::sum).
    pub fn mean(&self, dims: &[isize], keepdim: bool) -> Result<Tensor<T>> {
        self.reduce_with("mean", dims, keepdim, &Sum, |a, n| a / T::from_usize(n))
    }

    /// Mean of all elements as a 0-d tensor, like `x.mean()`.
    pub fn mean_all(&self) -> Tensor<T> {
        self.mean(&[], false)
            .expect("reducing every dimension cannot fail")
    }

    /// Product over `dims` (all when empty), like `torch.prod`.
    ///
    /// # Errors
    /// As [`sum`](Tensor::sum).
    pub fn prod(&self, dims: &[isize], keepdim: bool) -> Result<Tensor<T>> {
        self.reduce_with("prod", dims, keepdim, &Prod, |a, _| a)
    }

    /// Variance over `dims` (all when empty), like `torch.var(x, dims, unbiased, keepdim)`:
    /// divided by `n - 1` when `unbiased`, by `n` otherwise (NaN where that is 0).
    /// Accumulated in f64 by Welford's method.
    ///
    /// # Errors
    /// As [`sum`](Tensor::sum).
    pub fn var(&self, dims: &[isize], unbiased: bool, keepdim: bool) -> Result<Tensor<T>> {
        let correction = if unbiased { 1.0 } else { 0.0 };
        self.reduce_with("var", dims, keepdim, &Variance, |m, _| {
            T::from_f64(m.m2 / (m.n - correction).max(0.0))
        })
    }

    /// Standard deviation over `dims`, like `torch.std` (see [`var`](Tensor::var)).
    ///
    /// # Errors
    /// As [`sum`](Tensor::sum).
    pub fn std(&self, dims: &[isize], unbiased: bool, keepdim: bool) -> Result<Tensor<T>> {
        let correction = if unbiased { 1.0 } else { 0.0 };
        self.reduce_with("std", dims, keepdim, &Variance, |m, _| {
            T::from_f64((m.m2 / (m.n - correction).max(0.0)).sqrt())
        })
    }

    /// Maximum over `dims` (all when empty), like `torch.amax`; NaN if any value is NaN.
    ///
    /// # Errors
    /// As [`sum`](Tensor::sum), and [`TensorError::Invalid`] when a reduced dimension is
    /// empty.
    pub fn amax(&self, dims: &[isize], keepdim: bool) -> Result<Tensor<T>> {
        self.require_nonempty("amax", dims)?;
        self.reduce_with("amax", dims, keepdim, &Extreme::<true>, |a, _| a)
    }

    /// Minimum over `dims` (all when empty), like `torch.amin`; NaN if any value is NaN.
    ///
    /// # Errors
    /// As [`amax`](Tensor::amax).
    pub fn amin(&self, dims: &[isize], keepdim: bool) -> Result<Tensor<T>> {
        self.require_nonempty("amin", dims)?;
        self.reduce_with("amin", dims, keepdim, &Extreme::<false>, |a, _| a)
    }

    /// The cumulative sum along `dim`, like `torch.cumsum(x, dim)`: element `i` of the
    /// output along `dim` is the sum of elements `0..=i` of the input (accumulated in f64,
    /// as PyTorch's CPU kernel accumulates floats in double).
    ///
    /// ```
    /// use strata_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2])?;
    /// assert_eq!(x.cumsum(1)?.to_vec(), vec![1.0, 3.0, 3.0, 7.0]);
    /// assert_eq!(x.cumsum(-2)?.to_vec(), vec![1.0, 2.0, 4.0, 6.0]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Dim`] for a dim out of range.
    pub fn cumsum(&self, dim: isize) -> Result<Tensor<T>> {
        self.scan_sum("cumsum", dim, false)
    }

    /// The gradient of [`cumsum`](Tensor::cumsum): the cumulative sum of `grad` from the
    /// end of `dim`.
    ///
    /// # Errors
    /// As [`cumsum`](Tensor::cumsum).
    #[doc(hidden)]
    pub fn cumsum_backward(grad: &Tensor<T>, dim: isize) -> Result<Tensor<T>> {
        grad.scan_sum("cumsum_backward", dim, true)
    }

    /// Running sums along `dim`, from its start or (`reverse`) from its end.
    fn scan_sum(&self, op: &'static str, dim: isize, reverse: bool) -> Result<Tensor<T>> {
        let d = resolve_dim(op, dim, self.shape())?;
        let x = self.contiguous();
        let xs = x.as_slice().expect("contiguous");
        if self.ndim() == 0 {
            return Ok(x);
        }
        let shape = self.shape();
        let (n, inner) = (shape[d], shape[d + 1..].iter().product::<usize>());
        let mut out = vec![T::zero(); xs.len()];
        let mut acc = vec![0.0f64; inner];
        for (src, dst) in xs.chunks(n * inner).zip(out.chunks_mut(n * inner)) {
            acc.fill(0.0);
            for k in 0..n {
                let i = if reverse { n - 1 - k } else { k };
                let row = i * inner..(i + 1) * inner;
                for ((a, &v), o) in acc.iter_mut().zip(&src[row.clone()]).zip(&mut dst[row]) {
                    *a += v.to_f64();
                    *o = T::from_f64(*a);
                }
            }
        }
        Ok(Tensor::from_contiguous(out, shape))
    }

    /// `log(sum(exp(x)))` over `dims`, computed stably (shifted by the maximum), like
    /// `torch.logsumexp`. All `-inf` gives `-inf`; an empty set gives `-inf`.
    ///
    /// # Errors
    /// As [`sum`](Tensor::sum).
    pub fn logsumexp(&self, dims: &[isize], keepdim: bool) -> Result<Tensor<T>> {
        let mask = resolve_dims("logsumexp", dims, self.shape())?;
        if self.shape().iter().zip(&mask).any(|(&d, &m)| m && d == 0) {
            let kept: Vec<usize> = self
                .shape()
                .iter()
                .zip(&mask)
                .map(|(&d, &m)| if m { 1 } else { d })
                .collect();
            return Ok(Tensor::full(
                &finish_shape(&kept, &mask, keepdim),
                T::neg_infinity(),
            ));
        }
        let m = self.amax(dims, true)?;
        // An infinite maximum would give inf - inf = NaN; shift by 0 there instead.
        let shift = m.map_cost(crate::engine::par::Cost::Cheap, |v| {
            if v.is_infinite() { T::zero() } else { v }
        });
        let s = self
            .zip_map(
                &shift,
                "logsumexp",
                crate::engine::par::Cost::Transcendental,
                |x, m| (x - m).exp_v(),
            )?
            .sum(dims, true)?;
        let out = s.zip_map(
            &shift,
            "logsumexp",
            crate::engine::par::Cost::Cheap,
            |s, m| s.ln() + m,
        )?;
        out.reshape(finish_shape(out.shape(), &mask, keepdim))
    }

    /// Sums broadcast dimensions away so the result has `shape`: the reverse of
    /// broadcasting, used to reduce a gradient to its input's shape.
    ///
    /// # Errors
    /// [`TensorError::Broadcast`] when `shape` does not broadcast to `self`'s shape.
    pub fn sum_to_shape(&self, shape: &[usize]) -> Result<Tensor<T>> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let err = || TensorError::Broadcast {
            op: "sum_to_shape",
            lhs: shape.to_vec(),
            rhs: self.shape().to_vec(),
        };
        if shape.len() > self.ndim() {
            return Err(err());
        }
        let lead = self.ndim() - shape.len();
        // Inline for the usual ranks: this runs for every broadcast gradient.
        let (mut inline, mut heap) = ([false; 8], Vec::new());
        let mask: &mut [bool] = if self.ndim() <= inline.len() {
            &mut inline[..self.ndim()]
        } else {
            heap.resize(self.ndim(), false);
            &mut heap
        };
        for (i, &d) in self.shape().iter().enumerate() {
            if i < lead {
                mask[i] = true;
            } else {
                let target = shape[i - lead];
                if target == 1 && d != 1 {
                    mask[i] = true;
                } else if target != d {
                    return Err(err());
                }
            }
        }
        if !mask.contains(&true) {
            return self.reshape(shape);
        }
        // The kept dimensions in order are `shape` with its size-1 entries: the row-major
        // accumulators are already laid out as a contiguous tensor of `shape`.
        let (acc, _) = reduce(self, mask, &Sum);
        Ok(Tensor::from_contiguous(acc, shape))
    }

    /// Maximum along `dim` with the index where it occurs, like `torch.max(x, dim, keepdim)`.
    /// NaN propagates (with the index of the first NaN); ties give the first index.
    ///
    /// # Errors
    /// [`TensorError::Dim`] for an out-of-range dimension, [`TensorError::Invalid`] for an
    /// empty one.
    pub fn max_dim(&self, dim: isize, keepdim: bool) -> Result<(Tensor<T>, IndexTensor)> {
        self.extreme_dim::<true>("max", dim, keepdim)
    }

    /// Minimum along `dim` with its index, like `torch.min(x, dim, keepdim)`.
    ///
    /// # Errors
    /// As [`max_dim`](Tensor::max_dim).
    pub fn min_dim(&self, dim: isize, keepdim: bool) -> Result<(Tensor<T>, IndexTensor)> {
        self.extreme_dim::<false>("min", dim, keepdim)
    }

    /// Index of the maximum along `dim`, or of the flattened tensor when `dim` is `None`,
    /// like `torch.argmax` (first index on ties, the first NaN wins).
    ///
    /// # Errors
    /// As [`max_dim`](Tensor::max_dim).
    pub fn argmax(&self, dim: Option<isize>, keepdim: bool) -> Result<IndexTensor> {
        self.arg_extreme::<true>("argmax", dim, keepdim)
    }

    /// Index of the minimum along `dim` (or overall), like `torch.argmin`.
    ///
    /// # Errors
    /// As [`max_dim`](Tensor::max_dim).
    pub fn argmin(&self, dim: Option<isize>, keepdim: bool) -> Result<IndexTensor> {
        self.arg_extreme::<false>("argmin", dim, keepdim)
    }

    fn arg_extreme<const MAX: bool>(
        &self,
        op: &'static str,
        dim: Option<isize>,
        keepdim: bool,
    ) -> Result<IndexTensor> {
        match dim {
            Some(d) => Ok(self.extreme_dim::<MAX>(op, d, keepdim)?.1),
            None => {
                let flat = self.reshape([-1])?;
                let (_, idx) = flat.extreme_dim::<MAX>(op, 0, false)?;
                let shape = if keepdim {
                    vec![1; self.ndim()]
                } else {
                    vec![]
                };
                idx.reshape(&shape)
            }
        }
    }

    fn extreme_dim<const MAX: bool>(
        &self,
        op: &'static str,
        dim: isize,
        keepdim: bool,
    ) -> Result<(Tensor<T>, IndexTensor)> {
        let d = resolve_dim(op, dim, self.shape())?;
        if self.ndim() == 0 {
            return Ok((self.clone(), IndexTensor::from_vec(vec![0], &[])?));
        }
        let n = self.shape()[d];
        if n == 0 {
            return Err(TensorError::invalid(
                op,
                format!(
                    "cannot reduce over dimension {dim} of size 0 (shape {:?})",
                    self.shape()
                ),
            ));
        }
        let stride = self.strides()[d];
        // Walk every output position over the layout with `dim` removed.
        let mut rest_shape = self.shape().to_vec();
        let mut rest_strides = self.strides().to_vec();
        rest_shape.remove(d);
        rest_strides.remove(d);
        let out_n = numel(&rest_shape);
        let mut values = vec![T::zero(); out_n];
        let mut indices = vec![0i64; out_n];
        let data = self.storage();
        let walk = Coalesced::new(&rest_shape, [&rest_strides]);
        let [s_out] = walk.inner_strides();
        walk.for_each_run([self.layout().offset()], 0, out_n, |pos, [off], len| {
            for j in 0..len {
                let start = off + j * s_out;
                let mut best = data[start];
                let mut best_i = 0usize;
                if !best.is_nan() {
                    for i in 1..n {
                        let v = data[start + i * stride];
                        let better = if MAX { v > best } else { v < best };
                        if better || v.is_nan() {
                            best = v;
                            best_i = i;
                            if v.is_nan() {
                                break;
                            }
                        }
                    }
                }
                values[pos + j] = best;
                indices[pos + j] = best_i as i64;
            }
        });
        let mut shape = rest_shape;
        if keepdim {
            shape.insert(d, 1);
        }
        Ok((
            Tensor::from_contiguous(values, &shape),
            IndexTensor::from_vec(indices, &shape)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::{Tensor, TensorError};

    fn t(data: &[f64], shape: &[usize]) -> Tensor<f64> {
        Tensor::from_slice(data, shape).unwrap()
    }

    #[test]
    fn sums_and_means_by_hand() {
        let x = t(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
        assert_eq!(x.sum(&[0], false).unwrap().to_vec(), vec![5., 7., 9.]);
        assert_eq!(x.sum(&[1], false).unwrap().to_vec(), vec![6., 15.]);
        assert_eq!(x.sum(&[0, 1], false).unwrap().shape(), &[] as &[usize]);
        assert_eq!(x.sum_all().item().unwrap(), 21.0);
        assert_eq!(x.mean(&[1], true).unwrap().to_vec(), vec![2., 5.]);
        assert_eq!(x.mean(&[1], true).unwrap().shape(), &[2, 1]);
        assert_eq!(x.prod(&[0], false).unwrap().to_vec(), vec![4., 10., 18.]);
        // transposed input
        let xt = x.transpose(0, 1).unwrap();
        assert_eq!(xt.sum(&[0], false).unwrap().to_vec(), vec![6., 15.]);
        assert!(
            Tensor::<f64>::zeros(&[0])
                .mean_all()
                .item()
                .unwrap()
                .is_nan()
        );
        assert_eq!(
            Tensor::<f64>::zeros(&[0, 2])
                .sum(&[0], false)
                .unwrap()
                .to_vec(),
            vec![0., 0.]
        );
    }

    #[test]
    fn variance_matches_torch() {
        // torch.var(torch.tensor([[1., 2., 4.], [3., 5., 9.]]), dim=1) -> [2.3333, 9.3333]
        let x = t(&[1., 2., 4., 3., 5., 9.], &[2, 3]);
        let v = x.var(&[1], true, false).unwrap().to_vec();
        assert!((v[0] - 7.0 / 3.0).abs() < 1e-12 && (v[1] - 28.0 / 3.0).abs() < 1e-12);
        let v = x.var(&[0], false, false).unwrap().to_vec();
        assert_eq!(v, vec![1.0, 2.25, 6.25]);
        let s = x.std(&[], true, false).unwrap().item().unwrap();
        assert!((s - 8f64.sqrt()).abs() < 1e-12);
        assert!(
            t(&[1.0], &[1])
                .var(&[0], true, false)
                .unwrap()
                .item()
                .unwrap()
                .is_nan()
        );
    }

    #[test]
    fn max_with_indices_and_nan() {
        let x = t(&[1., 3., 3., 0., f64::NAN, 2.], &[2, 3]);
        let (v, i) = x.max_dim(1, false).unwrap();
        assert_eq!(v.to_vec()[0], 3.0);
        assert!(v.to_vec()[1].is_nan());
        assert_eq!(i.to_vec(), vec![1, 1]);
        let (v, i) = x.min_dim(0, true).unwrap();
        assert_eq!(v.shape(), &[1, 3]);
        assert_eq!(i.to_vec(), vec![1, 1, 1]);
        assert!(x.amax(&[1], false).unwrap().to_vec()[1].is_nan());
        assert_eq!(x.argmax(None, false).unwrap().to_vec(), vec![4]);
        assert_eq!(
            t(&[1., 5., 5.], &[3]).argmax(None, false).unwrap().to_vec(),
            vec![1]
        );
        assert!(matches!(
            Tensor::<f64>::zeros(&[2, 0]).max_dim(1, false),
            Err(TensorError::Invalid { .. })
        ));
        assert!(matches!(x.sum(&[2], false), Err(TensorError::Dim { .. })));
        assert!(matches!(
            x.sum(&[1, -1], false),
            Err(TensorError::Invalid { .. })
        ));
    }

    #[test]
    fn logsumexp_is_stable() {
        let x = t(
            &[1000., 1000., f64::NEG_INFINITY, f64::NEG_INFINITY],
            &[2, 2],
        );
        let l = x.logsumexp(&[1], false).unwrap().to_vec();
        assert!((l[0] - (1000.0 + 2f64.ln())).abs() < 1e-9);
        assert_eq!(l[1], f64::NEG_INFINITY);
    }

    #[test]
    fn sum_to_shape_reverses_broadcasting() {
        let g = Tensor::<f64>::ones(&[2, 3, 4]);
        assert_eq!(g.sum_to_shape(&[3, 1]).unwrap().to_vec(), vec![8., 8., 8.]);
        assert_eq!(g.sum_to_shape(&[]).unwrap().item().unwrap(), 24.0);
        assert!(g.sum_to_shape(&[2, 4]).is_err());
    }

    #[test]
    fn large_reductions_split_deterministically() {
        let n = 300_000;
        let x = Tensor::<f32>::rand(&[n], &mut crate::seeded_rng(9));
        let want: f64 = x.to_vec().iter().map(|&v| v as f64).sum();
        let got = x.sum_all().item().unwrap() as f64;
        assert!((got - want).abs() / want < 1e-5);
        let m = x.reshape([600, 500]).unwrap();
        let cols = m.sum(&[0], false).unwrap().to_vec();
        let rows = m.sum(&[1], false).unwrap().to_vec();
        let v = m.to_vec();
        for j in [0, 17, 499] {
            let w: f64 = (0..600).map(|i| v[i * 500 + j] as f64).sum();
            assert!((cols[j] as f64 - w).abs() < 1e-3);
        }
        for i in [0, 333, 599] {
            let w: f64 = (0..500).map(|j| v[i * 500 + j] as f64).sum();
            assert!((rows[i] as f64 - w).abs() < 1e-3);
        }
    }
}
