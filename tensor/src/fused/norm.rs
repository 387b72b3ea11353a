//! Fused layer normalisation over the last dimension, forward and backward.

use crate::engine::lanes::{centred_square_sum, dot_contiguous, sum_contiguous};
use crate::engine::par::{self, Disjoint, PAR_MIN_WORK};
use crate::engine::simd::{PREFETCH_ROW_MAX_BYTES, dispatch, prefetch};
use crate::handle::storage::alloc;
use crate::{Element, Result, Tensor, TensorError};

/// Parallel tasks a large layer norm is cut into.
const TASKS: usize = 32;

/// Rows per parallel task of a layer norm of `rows` rows of `d`: a function of the shape
/// alone, so results do not depend on the thread count. Few large tasks rather than many
/// small ones: with 16-row (64 KiB) tasks, the two threads working on neighbouring blocks
/// (before the team gave each thread its own span of tasks), a 4096 × 1024 forward took
/// 0.92–1.47 ms, with 128-row tasks 0.79–0.97 ms (one process, interleaved).
fn rows_per_task(rows: usize, d: usize) -> usize {
    (rows / TASKS).max(PAR_MIN_WORK.div_ceil(d.max(1)))
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
        // Each row starts the next one's loads, as softmax does (4096 × 1024 on two
        // Sapphire Rapids cores: 0.60–0.61 ms without, 0.58–0.59 ms with).
        let prefetch_rows = d * size_of::<T>() <= PREFETCH_ROW_MAX_BYTES;
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
                        let next = (start + k + 1) * d..(start + k + 2) * d;
                        if prefetch_rows && let Some(next) = xs.get(next) {
                            prefetch(next);
                        }
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
        let per_task = rows_per_task(rows, d);
        par::run(rows.div_ceil(per_task), true, |i| {
            let r0 = i * per_task;
            let nr = per_task.min(rows - r0);
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
            mean: Tensor::from_buffer(mean, &[rows])?,
            rstd: Tensor::from_buffer(rstd, &[rows])?,
        };
        Ok((Tensor::from_buffer(out, self.shape())?, stats))
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
        if n == 0 && grad.numel() == 0 {
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
        let per_task = rows_per_task(rows, d);
        let tasks = rows.div_ceil(per_task);
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
                        let r = t * per_task + k;
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
                (&mut gx, per_task * d),
                (&mut partial, 2 * d),
                true,
                |t, gx, part| job((t, (gx, part))),
            );
        } else {
            par::chunks_mut(&mut gx, per_task * d, true, |t, gx| job((t, (gx, &mut []))));
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
            Some((
                Tensor::from_buffer(gw, &[d])?,
                Tensor::from_buffer(gb, &[d])?,
            ))
        } else {
            None
        };
        Ok((Tensor::from_buffer(gx, self.shape())?, param_grads))
    }
}

#[cfg(test)]
mod tests {
    use super::rows_per_task;
    use crate::{Tensor, seeded_rng};

    /// Row-by-row f64 layer norm of `x` (`[rows, d]`) and its gradients for output
    /// gradient `g`: `(y, ∂x, ∂w, ∂b)`.
    #[allow(clippy::type_complexity)]
    fn reference(
        x: &[f64],
        g: &[f64],
        w: &[f64],
        b: &[f64],
        d: usize,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let (mut y, mut gx) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        let (mut gw, mut gb) = (vec![0.0; d], vec![0.0; d]);
        for (r, row) in x.chunks(d).enumerate() {
            let mu = row.iter().sum::<f64>() / d as f64;
            let var = row.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / d as f64;
            let rs = 1.0 / (var + 1e-5).sqrt();
            let xh: Vec<f64> = row.iter().map(|v| (v - mu) * rs).collect();
            let gr = &g[r * d..(r + 1) * d];
            let gh: Vec<f64> = gr.iter().zip(w).map(|(g, w)| g * w).collect();
            let mg = gh.iter().sum::<f64>() / d as f64;
            let mgx = gh.iter().zip(&xh).map(|(a, b)| a * b).sum::<f64>() / d as f64;
            for j in 0..d {
                y[r * d + j] = xh[j] * w[j] + b[j];
                gx[r * d + j] = rs * (gh[j] - mg - xh[j] * mgx);
                gw[j] += gr[j] * xh[j];
                gb[j] += gr[j];
            }
        }
        (y, gx, gw, gb)
    }

    fn close(got: &[f32], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
            assert!(
                (f64::from(a) - b).abs() <= tol * (1.0 + b.abs()),
                "{what}[{i}]: {a} vs {b}"
            );
        }
    }

    /// Forward and backward over several parallel tasks (ragged last one) against the
    /// f64 reference, and bitwise the same on one thread as on the default pool.
    #[test]
    fn many_rows_match_the_reference_on_any_thread_count() {
        let (rows, d) = (1000usize, 96);
        assert!(rows.div_ceil(rows_per_task(rows, d)) > 2);
        assert!(!rows.is_multiple_of(rows_per_task(rows, d)));
        let mut rng = seeded_rng(4);
        let x = Tensor::<f32>::randn(&[rows, d], &mut rng)
            .mul_scalar(3.0)
            .add_scalar(2.0);
        let g = Tensor::<f32>::randn(&[rows, d], &mut rng);
        let w = Tensor::<f32>::randn(&[d], &mut rng);
        let b = Tensor::<f32>::randn(&[d], &mut rng);
        let run = || {
            let (y, stats) = x.layer_norm(d, Some(&w), Some(&b), 1e-5).unwrap();
            let (gx, p) = x.layer_norm_backward(&g, &stats, Some(&w), true).unwrap();
            let (gw, gb) = p.unwrap();
            [y, gx, gw, gb].map(|t| t.to_vec())
        };
        let got = run();
        let f64s = |t: &Tensor<f32>| t.to_vec().into_iter().map(f64::from).collect::<Vec<_>>();
        let (y, gx, gw, gb) = reference(&f64s(&x), &f64s(&g), &f64s(&w), &f64s(&b), d);
        close(&got[0], &y, 1e-5, "y");
        close(&got[1], &gx, 1e-4, "grad x");
        close(&got[2], &gw, 1e-4, "grad weight");
        close(&got[3], &gb, 1e-4, "grad bias");
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(run);
        assert_eq!(one, got);
    }

    /// Statistics of rows whose input is empty (rows of zero values) give empty gradients,
    /// not a division by zero.
    #[test]
    fn backward_of_empty_rows_is_empty() {
        let x = Tensor::<f32>::zeros(&[2, 0]);
        let (_, stats) = Tensor::<f32>::zeros(&[2, 3])
            .layer_norm(3, None, None, 1e-5)
            .unwrap();
        let (gx, p) = x.layer_norm_backward(&x, &stats, None, true).unwrap();
        assert_eq!(gx.shape(), &[2, 0]);
        let (gw, gb) = p.unwrap();
        assert_eq!((gw.numel(), gb.numel()), (0, 0));
    }
}
