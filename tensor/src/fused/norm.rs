//! Fused layer normalisation over the last dimension, forward and backward.

use crate::engine::lanes::{dot_contiguous, sum_contiguous};
use crate::engine::par::{self, Disjoint};
use crate::engine::simd::dispatch;
use crate::handle::storage::alloc;
use crate::{Element, Result, Tensor, TensorError};

/// Rows per parallel task in the layer-norm kernels (a fixed number, so results do not
/// depend on the thread count).
const ROWS_PER_TASK: usize = 16;

/// `Σ (x − mu)²` in 16 independent lanes, without writing the centred values.
#[inline(always)]
fn centred_square_sum<T: Element>(xs: &[T], mu: T) -> T {
    let mut lanes = [T::zero(); 16];
    let chunks = xs.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            let d = v - mu;
            *l += d * d;
        }
    }
    let mut s = lanes.iter().fold(T::zero(), |a, &b| a + b);
    for &v in rest {
        s += (v - mu) * (v - mu);
    }
    s
}

/// What [`Tensor::layer_norm`] saves for its backward.
#[derive(Clone, Debug)]
pub struct LayerNormStats<T: Element> {
    /// Each row's mean `[rows]`.
    pub mean: Tensor<T>,
    /// Each row's `1 / √(var + eps)` `[rows]`.
    pub rstd: Tensor<T>,
}

impl<T: Element> Tensor<T> {
    /// Layer normalisation of each row of the last `d` elements (`d = weight.len()` or the
    /// last dimension), `(x − mean) / √(var + eps) · weight + bias` with the biased
    /// variance, like `F.layer_norm` over the trailing dimensions flattened to `d`; one
    /// pass to gather the statistics, one to write. Returns the output and the statistics
    /// its backward needs.
    ///
    /// # Errors
    /// [`TensorError::Shape`] when the size is not a multiple of `d` or `weight`/`bias`
    /// have another length.
    pub fn layer_norm(
        &self,
        d: usize,
        weight: Option<&Tensor<T>>,
        bias: Option<&Tensor<T>>,
        eps: f64,
    ) -> Result<(Tensor<T>, LayerNormStats<T>)> {
        const OP: &str = "layer_norm";
        let n = self.numel();
        if d == 0 || !n.is_multiple_of(d) {
            return Err(TensorError::shape(
                OP,
                format!("{n} elements are not rows of {d}"),
            ));
        }
        for p in [weight, bias].into_iter().flatten() {
            if p.numel() != d {
                return Err(TensorError::shape(
                    OP,
                    format!(
                        "weight and bias must have {d} elements, got shape {:?}",
                        p.shape()
                    ),
                ));
            }
        }
        let rows = n / d;
        let x = self.contiguous();
        let xs = x.as_slice().expect("contiguous");
        let w = weight.map(Tensor::contiguous);
        let b = bias.map(Tensor::contiguous);
        let (ws, bs) = (
            w.as_ref().and_then(|t| t.as_slice()),
            b.as_ref().and_then(|t| t.as_slice()),
        );
        let mut out = alloc::<T>(n);
        let mut mean = alloc::<T>(rows);
        let mut rstd = alloc::<T>(rows);
        let inv_d = T::from_f64(1.0 / d as f64);
        let eps = T::from_f64(eps);
        #[allow(clippy::type_complexity)]
        let job = |(start, (o, (m, r))): (usize, (&mut [T], (&mut [T], &mut [T])))| {
            dispatch(
                #[inline(always)]
                || {
                    for (k, ((o, m), r)) in o
                        .chunks_mut(d)
                        .zip(m.iter_mut())
                        .zip(r.iter_mut())
                        .enumerate()
                    {
                        let row = &xs[(start + k) * d..(start + k + 1) * d];
                        let mu = sum_contiguous(row) * inv_d;
                        let sq = centred_square_sum(row, mu);
                        let rs = (sq * inv_d + eps).sqrt().recip();
                        let pairs = o.iter_mut().zip(row);
                        match (ws, bs) {
                            (Some(w), Some(b)) => pairs
                                .zip(w.iter().zip(b))
                                .for_each(|((o, &v), (&w, &b))| *o = (v - mu) * rs * w + b),
                            (Some(w), None) => pairs
                                .zip(w)
                                .for_each(|((o, &v), &w)| *o = (v - mu) * rs * w),
                            (None, Some(b)) => pairs
                                .zip(b)
                                .for_each(|((o, &v), &b)| *o = (v - mu) * rs + b),
                            (None, None) => pairs.for_each(|(o, &v)| *o = (v - mu) * rs),
                        }
                        *m = mu;
                        *r = rs;
                    }
                },
            )
        };
        let (so, sm, sr) = (
            Disjoint::new(&mut out),
            Disjoint::new(&mut mean),
            Disjoint::new(&mut rstd),
        );
        par::run(rows.div_ceil(ROWS_PER_TASK), true, |i| {
            let r0 = i * ROWS_PER_TASK;
            let nr = ROWS_PER_TASK.min(rows - r0);
            // SAFETY: task i alone takes rows r0..r0 + nr of the three buffers.
            let parts = unsafe {
                (
                    so.slice_mut(r0 * d, nr * d),
                    (sm.slice_mut(r0, nr), sr.slice_mut(r0, nr)),
                )
            };
            job((r0, parts));
        });
        let stats = LayerNormStats {
            mean: Tensor::from_vec(mean, &[rows])?,
            rstd: Tensor::from_vec(rstd, &[rows])?,
        };
        Ok((Tensor::from_vec(out, self.shape())?, stats))
    }

    /// The gradients of [`layer_norm`](Tensor::layer_norm) given the output gradient
    /// `grad`, the input `self`, the saved statistics and the weight: `(∂x, ∂weight,
    /// ∂bias)`, the last two summed over rows (`[d]`), computed when `weight_grads`.
    ///
    /// # Errors
    /// [`TensorError::Shape`] when the shapes do not describe one layer norm.
    #[allow(clippy::type_complexity)]
    #[doc(hidden)]
    pub fn layer_norm_backward(
        &self,
        grad: &Tensor<T>,
        stats: &LayerNormStats<T>,
        weight: Option<&Tensor<T>>,
        weight_grads: bool,
    ) -> Result<(Tensor<T>, Option<(Tensor<T>, Tensor<T>)>)> {
        const OP: &str = "layer_norm_backward";
        let n = self.numel();
        let rows = stats.mean.numel();
        if rows == 0 && n == 0 && grad.numel() == 0 {
            let d = weight.map_or(0, Tensor::numel);
            let zeros = weight_grads.then(|| (Tensor::zeros(&[d]), Tensor::zeros(&[d])));
            return Ok((Tensor::zeros(self.shape()), zeros));
        }
        if grad.shape() != self.shape()
            || rows == 0
            || !n.is_multiple_of(rows)
            || stats.rstd.numel() != rows
        {
            return Err(TensorError::shape(
                OP,
                format!(
                    "gradient {:?} and {rows} statistics do not fit input {:?}",
                    grad.shape(),
                    self.shape()
                ),
            ));
        }
        let d = n / rows;
        let x = self.contiguous();
        let g = grad.contiguous();
        let (xs, gs) = (
            x.as_slice().expect("contiguous"),
            g.as_slice().expect("contiguous"),
        );
        let (mean, rstd) = (stats.mean.contiguous(), stats.rstd.contiguous());
        let (ms, rs) = (
            mean.as_slice().expect("contiguous"),
            rstd.as_slice().expect("contiguous"),
        );
        let w = weight.map(Tensor::contiguous);
        let ws = w.as_ref().and_then(|t| t.as_slice());
        if ws.is_some_and(|w| w.len() != d) {
            return Err(TensorError::shape(
                OP,
                format!("the weight must have {d} elements"),
            ));
        }
        let inv_d = T::from_f64(1.0 / d as f64);
        let mut gx = alloc::<T>(n);
        let tasks = rows.div_ceil(ROWS_PER_TASK);
        // Per-task partial sums of g·x̂ and g for the weight and bias gradients.
        let mut partial = if weight_grads {
            vec![T::zero(); tasks * 2 * d]
        } else {
            Vec::new()
        };
        let job = |(t, (gx, part)): (usize, (&mut [T], &mut [T]))| {
            dispatch(
                #[inline(always)]
                || {
                    let mut xhat = vec![T::zero(); d];
                    let mut gxhat = vec![T::zero(); d];
                    for (k, gxr) in gx.chunks_mut(d).enumerate() {
                        let r = t * ROWS_PER_TASK + k;
                        let (x, g) = (&xs[r * d..(r + 1) * d], &gs[r * d..(r + 1) * d]);
                        let (mu, rsd) = (ms[r], rs[r]);
                        for (h, &v) in xhat.iter_mut().zip(x) {
                            *h = (v - mu) * rsd;
                        }
                        match ws {
                            Some(w) => gxhat
                                .iter_mut()
                                .zip(g)
                                .zip(w)
                                .for_each(|((o, &g), &w)| *o = g * w),
                            None => gxhat.copy_from_slice(g),
                        }
                        let mean_g = sum_contiguous(&gxhat) * inv_d;
                        let mean_gx = dot_contiguous(&gxhat, &xhat) * inv_d;
                        for ((o, &gh), &h) in gxr.iter_mut().zip(&gxhat).zip(&xhat) {
                            *o = rsd * (gh - mean_g - h * mean_gx);
                        }
                        if !part.is_empty() {
                            let (pw, pb) = part.split_at_mut(d);
                            for (((pw, pb), &g), &h) in
                                pw.iter_mut().zip(pb.iter_mut()).zip(g).zip(&xhat)
                            {
                                *pw += g * h;
                                *pb += g;
                            }
                        }
                    }
                },
            )
        };
        if weight_grads {
            par::chunk_pairs_mut(
                (&mut gx, ROWS_PER_TASK * d),
                (&mut partial, 2 * d),
                true,
                |t, gx, part| job((t, (gx, part))),
            );
        } else {
            par::chunks_mut(&mut gx, ROWS_PER_TASK * d, true, |t, gx| {
                job((t, (gx, &mut [])))
            });
        }
        let param_grads = if weight_grads {
            let mut gw = vec![T::zero(); d];
            let mut gb = vec![T::zero(); d];
            for part in partial.chunks(2 * d) {
                for (a, &p) in gw.iter_mut().zip(&part[..d]) {
                    *a += p;
                }
                for (a, &p) in gb.iter_mut().zip(&part[d..]) {
                    *a += p;
                }
            }
            Some((Tensor::from_vec(gw, &[d])?, Tensor::from_vec(gb, &[d])?))
        } else {
            None
        };
        Ok((Tensor::from_vec(gx, self.shape())?, param_grads))
    }
}
