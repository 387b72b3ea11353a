//! softmax and log_softmax along a dimension, numerically stable, with their backward
//! kernels.
//!
//! The tensor is seen as `[outer, n, inner]` around the softmax dimension. With `inner = 1`
//! (the last dimension) each row is processed on its own in three vectorised passes (max,
//! exp and sum, scale); otherwise rows of `inner` columns are processed side by side, which
//! keeps memory access contiguous for any dimension.

use crate::engine::lanes::{
    dot_contiguous, exp_shifted_sum, max_ignoring_nan, max_nan, sum_contiguous,
};
use crate::engine::par::{self, Cost};
use crate::engine::simd::{PREFETCH_ROW_MAX_BYTES, dispatch, prefetch};
use crate::handle::layout::{numel, resolve_dim};
use crate::handle::storage::alloc;
use crate::{Element, Result, Tensor, TensorError};

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Softmax,
    LogSoftmax,
}

/// Softmax (or log-softmax) of one contiguous row: a max pass, an exp-and-sum pass into
/// `out`, and a scale (or shift) pass, each of which vectorises.
#[inline(always)]
fn row<T: Element, const FMA: bool>(x: &[T], out: &mut [T], kind: Kind) {
    // A NaN anywhere makes the sum, and so every output, NaN (as in PyTorch).
    let max = max_ignoring_nan(x);
    let sum = exp_shifted_sum::<T, FMA>(x, max, out);
    match kind {
        Kind::Softmax => {
            let inv = sum.recip();
            for o in out.iter_mut() {
                *o *= inv;
            }
        }
        Kind::LogSoftmax => {
            let shift = max + sum.ln();
            for (o, &v) in out.iter_mut().zip(x) {
                *o = v - shift;
            }
        }
    }
}

/// Softmax over the middle dimension of an `[n, inner]` block, columns side by side.
#[inline(always)]
fn columns<T: Element>(x: &[T], out: &mut [T], n: usize, inner: usize, kind: Kind) {
    let mut max = vec![T::neg_infinity(); inner];
    let mut sum = vec![T::zero(); inner];
    for i in 0..n {
        for (m, &v) in max.iter_mut().zip(&x[i * inner..(i + 1) * inner]) {
            *m = max_nan(*m, v);
        }
    }
    for i in 0..n {
        let (xs, os) = (
            &x[i * inner..(i + 1) * inner],
            &mut out[i * inner..(i + 1) * inner],
        );
        for ((o, &v), (s, &m)) in os.iter_mut().zip(xs).zip(sum.iter_mut().zip(&max)) {
            let e = (v - m).exp_nonpositive_with::<false>(); // m is the column's maximum
            *s += e;
            if kind == Kind::Softmax {
                *o = e;
            }
        }
    }
    for i in 0..n {
        let (xs, os) = (
            &x[i * inner..(i + 1) * inner],
            &mut out[i * inner..(i + 1) * inner],
        );
        for (((o, &v), &s), &m) in os.iter_mut().zip(xs).zip(&sum).zip(&max) {
            *o = match kind {
                Kind::Softmax => *o / s,
                Kind::LogSoftmax => v - (m + s.ln()),
            };
        }
    }
}

/// The backward of one contiguous row: softmax `y * (g - <g, y>)`, log-softmax
/// `g - exp(y) * sum(g)`.
#[inline(always)]
fn row_grad<T: Element>(y: &[T], g: &[T], out: &mut [T], kind: Kind) {
    match kind {
        Kind::Softmax => {
            let dot = dot_contiguous(g, y);
            for ((o, &yv), &gv) in out.iter_mut().zip(y).zip(g) {
                *o = yv * (gv - dot);
            }
        }
        Kind::LogSoftmax => {
            let total = sum_contiguous(g);
            for ((o, &yv), &gv) in out.iter_mut().zip(y).zip(g) {
                *o = gv - yv.exp_v() * total;
            }
        }
    }
}

/// The backward over the middle dimension of an `[n, inner]` block, columns side by side.
fn columns_grad<T: Element>(y: &[T], g: &[T], out: &mut [T], n: usize, inner: usize, kind: Kind) {
    let mut acc = vec![T::zero(); inner];
    for i in 0..n {
        let r = i * inner..(i + 1) * inner;
        for ((a, &yv), &gv) in acc.iter_mut().zip(&y[r.clone()]).zip(&g[r]) {
            *a += match kind {
                Kind::Softmax => gv * yv,
                Kind::LogSoftmax => gv,
            };
        }
    }
    for i in 0..n {
        let r = i * inner..(i + 1) * inner;
        let it = out[r.clone()]
            .iter_mut()
            .zip(&y[r.clone()])
            .zip(&g[r])
            .zip(&acc);
        for (((o, &yv), &gv), &a) in it {
            *o = match kind {
                Kind::Softmax => yv * (gv - a),
                Kind::LogSoftmax => gv - yv.exp_v() * a,
            };
        }
    }
}

/// `(n, inner)`: the softmax dimension's size and the element count after it.
fn block_shape(shape: &[usize], d: usize) -> (usize, usize) {
    match shape.get(d) {
        Some(&n) => (n, numel(&shape[d + 1..])),
        None => (1, 1), // a 0-d tensor is one row of one element
    }
}

/// Calls `f(start, out_block)` for each `block`-sized piece of `out` (one softmax problem
/// `[n, inner]` each), several blocks per task and tasks in parallel when large.
fn for_each_block<T: Element>(
    out: &mut [T],
    block: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    if block == 0 {
        return;
    }
    let per_chunk = par::chunk_len(out.len(), Cost::Transcendental)
        .map_or(out.len(), |len| len.div_ceil(block) * block);
    par::for_each_chunk_mut_by(out, per_chunk, |start, chunk| {
        dispatch(
            #[inline(always)]
            || {
                for (i, o) in chunk.chunks_mut(block).enumerate() {
                    f(start + i * block, o);
                }
            },
        )
    });
}

impl<T: Element> Tensor<T> {
    /// `exp(x) / sum(exp(x))` along `dim`, like `torch.softmax(x, dim)`; shifted by the
    /// maximum, so large inputs do not overflow. A row of all `-inf` gives NaN, as in
    /// PyTorch.
    ///
    /// ```
    /// use strata_tensor::Tensor;
    /// let p = Tensor::from_vec(vec![1000.0f32, 1000.0], &[2])?.softmax(0)?;
    /// assert_eq!(p.to_vec(), vec![0.5, 0.5]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Dim`] for an out-of-range dimension.
    pub fn softmax(&self, dim: isize) -> Result<Tensor<T>> {
        self.softmax_kind("softmax", dim, Kind::Softmax)
    }

    /// `x - log(sum(exp(x)))` along `dim`, like `torch.log_softmax(x, dim)`, computed
    /// without forming the softmax (no `log(0)` for very negative inputs).
    ///
    /// # Errors
    /// [`TensorError::Dim`] for an out-of-range dimension.
    pub fn log_softmax(&self, dim: isize) -> Result<Tensor<T>> {
        self.softmax_kind("log_softmax", dim, Kind::LogSoftmax)
    }

    fn softmax_kind(&self, op: &'static str, dim: isize, kind: Kind) -> Result<Tensor<T>> {
        let d = resolve_dim(op, dim, self.shape())?;
        let x = self.contiguous();
        let xs = x.as_slice().expect("contiguous");
        let mut out = alloc::<T>(xs.len());
        let (n, inner) = block_shape(self.shape(), d);
        let fma = crate::engine::simd::has_fma();
        // Each row starts the next one's loads: the hardware prefetchers do not follow a
        // stream into the next 4 KiB page, and a row of 1024 floats is one page (4096 ×
        // 1024 on two Sapphire Rapids cores: 0.79–0.82 ms without, 0.70–0.75 ms with).
        let prefetch_rows = inner == 1 && n * size_of::<T>() <= PREFETCH_ROW_MAX_BYTES;
        for_each_block(
            &mut out,
            n * inner,
            #[inline(always)]
            |start, o| {
                let x = &xs[start..start + o.len()];
                let end = start + o.len();
                if prefetch_rows && let Some(next) = xs.get(end..(end + o.len()).min(xs.len())) {
                    prefetch(next);
                }
                match (inner == 1, fma) {
                    (true, true) => row::<T, true>(x, o, kind),
                    (true, false) => row::<T, false>(x, o, kind),
                    _ => columns(x, o, n, inner, kind),
                }
            },
        );
        Ok(Tensor::from_contiguous(out, self.shape()))
    }

    /// The gradient of [`softmax`](Tensor::softmax) with respect to its input, given its
    /// output `self` (`y`) and the gradient of the output: `y * (grad - sum(grad * y, dim))`,
    /// in one fused pass per row.
    ///
    /// # Errors
    /// [`TensorError::Shape`] when the shapes differ, [`TensorError::Dim`].
    #[doc(hidden)]
    pub fn softmax_backward(&self, grad: &Tensor<T>, dim: isize) -> Result<Tensor<T>> {
        self.softmax_grad("softmax_backward", grad, dim, Kind::Softmax)
    }

    /// The gradient of [`log_softmax`](Tensor::log_softmax) with respect to its input, given
    /// its output `self` and the gradient of the output: `grad - exp(y) * sum(grad, dim)`,
    /// in one fused pass per row.
    ///
    /// # Errors
    /// [`TensorError::Shape`] when the shapes differ, [`TensorError::Dim`].
    #[doc(hidden)]
    pub fn log_softmax_backward(&self, grad: &Tensor<T>, dim: isize) -> Result<Tensor<T>> {
        self.softmax_grad("log_softmax_backward", grad, dim, Kind::LogSoftmax)
    }

    fn softmax_grad(
        &self,
        op: &'static str,
        grad: &Tensor<T>,
        dim: isize,
        kind: Kind,
    ) -> Result<Tensor<T>> {
        self.check_same_shape(op, grad)?;
        let d = resolve_dim(op, dim, self.shape())?;
        let (y, g) = (self.contiguous(), grad.contiguous());
        let (ys, gs) = (
            y.as_slice().expect("contiguous"),
            g.as_slice().expect("contiguous"),
        );
        let mut out = alloc::<T>(ys.len());
        let (n, inner) = block_shape(self.shape(), d);
        for_each_block(&mut out, n * inner, |start, o| {
            let (y, g) = (&ys[start..start + o.len()], &gs[start..start + o.len()]);
            if inner == 1 {
                row_grad(y, g, o, kind);
            } else {
                columns_grad(y, g, o, n, inner, kind);
            }
        });
        Ok(Tensor::from_contiguous(out, self.shape()))
    }

    pub(crate) fn check_same_shape(&self, op: &'static str, other: &Tensor<T>) -> Result<()> {
        if self.shape() != other.shape() {
            return Err(TensorError::shape(
                op,
                format!(
                    "expects equal shapes, got {:?} and {:?}",
                    self.shape(),
                    other.shape()
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Tensor;

    #[test]
    fn softmax_by_hand() {
        // torch.softmax(torch.tensor([[1., 2., 3.], [1., 1., 1.]], dtype=torch.float64), 1)
        let x = Tensor::<f64>::from_vec(vec![1., 2., 3., 1., 1., 1.], &[2, 3]).unwrap();
        let y = x.softmax(1).unwrap().to_vec();
        let want = [0.09003057317038046, 0.24472847105479767, 0.6652409557748219];
        for (a, b) in y[..3].iter().zip(want) {
            assert!((a - b).abs() < 1e-15);
        }
        assert!(y[3..].iter().all(|v| (v - 1.0 / 3.0).abs() < 1e-15));
        // along dim 0 the columns are processed side by side
        let y0 = x.softmax(0).unwrap().to_vec();
        let e = (1f64).exp() / ((1f64).exp() + (1f64).exp());
        assert!((y0[0] - e).abs() < 1e-15);
        assert!((y0[2] - 3f64.exp() / (3f64.exp() + 1f64.exp())).abs() < 1e-15);
        let l = x.log_softmax(1).unwrap().to_vec();
        assert!((l[0] - want[0].ln()).abs() < 1e-14);
    }

    #[test]
    fn all_neg_inf_row_is_nan_and_log_softmax_is_finite_for_huge_gaps() {
        let x = Tensor::<f32>::from_vec(vec![f32::NEG_INFINITY; 2], &[2]).unwrap();
        assert!(x.softmax(0).unwrap().to_vec().iter().all(|v| v.is_nan()));
        let x = Tensor::<f32>::from_vec(vec![0.0, -1000.0], &[2]).unwrap();
        assert_eq!(x.log_softmax(0).unwrap().to_vec(), vec![0.0, -1000.0]);
    }

    #[test]
    fn a_nan_makes_its_whole_row_nan_and_leaves_other_rows_alone() {
        // Rows of 37 (16-lane chunks and a remainder), the NaN in a chunk or the remainder,
        // beside +inf; as in PyTorch, every output of the row is NaN.
        for at in [3, 20, 36] {
            let mut v: Vec<f32> = (0..74).map(|i| (i % 37) as f32 * 0.25).collect();
            v[at] = f32::NAN;
            v[at / 2] = f32::INFINITY;
            let x = Tensor::from_vec(v, &[2, 37]).unwrap();
            for y in [x.softmax(1).unwrap(), x.log_softmax(1).unwrap()] {
                let y = y.to_vec();
                assert!(y[..37].iter().all(|v| v.is_nan()), "NaN at {at}");
                assert!(y[37..].iter().all(|v| v.is_finite()));
            }
        }
    }

    #[test]
    fn fused_backward_matches_composite() {
        let mut rng = crate::seeded_rng(5);
        let x = Tensor::<f64>::randn(&[3, 4, 5], &mut rng);
        let g = Tensor::<f64>::randn(&[3, 4, 5], &mut rng);
        for dim in [0isize, 1, 2] {
            let y = x.softmax(dim).unwrap();
            let dot = y.mul(&g).unwrap().sum(&[dim], true).unwrap();
            let want = y.mul(&g.sub(&dot).unwrap()).unwrap().to_vec();
            let got = y.softmax_backward(&g, dim).unwrap().to_vec();
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-14, "softmax dim {dim}: {a} vs {b}");
            }
            let l = x.log_softmax(dim).unwrap();
            let total = g.sum(&[dim], true).unwrap();
            let want = g.sub(&l.exp().mul(&total).unwrap()).unwrap().to_vec();
            let got = l.log_softmax_backward(&g, dim).unwrap().to_vec();
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-14, "log_softmax dim {dim}: {a} vs {b}");
            }
        }
        assert!(x.softmax_backward(&Tensor::zeros(&[3]), 0).is_err());
    }
}
