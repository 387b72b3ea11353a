//! The reduction engine behind sum, mean, prod, var/std, amax/amin, max/min with indices,
//! argmax/argmin and logsumexp (the ops themselves are in `crate::ops::reduce`).
//!
//! One engine serves them all. It walks the input once in memory order, beside a buffer of
//! one accumulator per output element whose strides are 0 along reduced dimensions, so a
//! run along a reduced innermost dimension folds into one accumulator (a row reduction) and
//! a run along a kept one updates a row of accumulators (a column reduction) — both
//! vectorise and neither needs a transposed copy. Work splits over the outermost dimension
//! in chunks fixed by the shape alone: kept outer dimensions give each chunk its own block
//! of outputs; a reduced one gives each chunk its own partial accumulators, merged in order.

use crate::engine::iter::Coalesced;
use crate::engine::lanes::sum_contiguous;
use crate::engine::par::{self, PAR_MIN_WORK};
use crate::engine::simd::dispatch;
use crate::handle::layout::{contiguous_dims, numel};
use crate::{Dims, Element, Tensor};

/// A reduction: how to start, fold a run of inputs into one accumulator, fold one input
/// into each of a row of accumulators, and merge two partial accumulators.
pub(crate) trait Reducer<T: Element>: Sync {
    type Acc: Copy + Send + Sync;
    fn init(&self) -> Self::Acc;
    /// Folds `data[off + i * stride]` for `i < len` into `acc`.
    fn fold(&self, acc: Self::Acc, data: &[T], off: usize, len: usize, stride: usize) -> Self::Acc;
    /// Folds `data[off + i * stride]` into `accs[i]` for every `i`.
    fn fold_each(&self, accs: &mut [Self::Acc], data: &[T], off: usize, stride: usize);
    fn merge(&self, a: Self::Acc, b: Self::Acc) -> Self::Acc;
}

/// Reduces `x` over the dimensions in `mask`; returns the accumulators (one per output
/// element, row-major) and the output shape with reduced dimensions kept as size 1.
pub(crate) fn reduce<T: Element, R: Reducer<T>>(
    x: &Tensor<T>,
    mask: &[bool],
    r: &R,
) -> (Vec<R::Acc>, Dims) {
    let shape = x.shape();
    let out_shape: Dims = shape
        .iter()
        .zip(mask)
        .map(|(&d, &m)| if m { 1 } else { d })
        .collect();
    let out_n = numel(&out_shape);
    // A small contiguous tensor reduced whole: one fold over its elements, which is what
    // the walk below would do, without building the walk (the common case of a loss).
    if out_n == 1
        && x.numel() <= PAR_MIN_WORK
        && let Some(range) = x.layout().contiguous_range()
    {
        let acc = r.fold(r.init(), x.storage(), range.start, range.len(), 1);
        return (vec![acc], out_shape);
    }
    let mut acc_strides = contiguous_dims(&out_shape);
    for (s, &m) in acc_strides.iter_mut().zip(mask) {
        if m {
            *s = 0;
        }
    }
    let mut acc = vec![r.init(); out_n];
    if x.numel() == 0 {
        return (acc, out_shape);
    }
    let walk = Coalesced::new(shape, [x.strides(), &acc_strides]);
    let data = x.storage();
    let base = x.layout().offset();
    let [sx, sa] = walk.inner_strides();
    // Walks the linear input range start..end into `acc`, whose first element is the
    // accumulator at index `acc_base`.
    let run_range = |acc: &mut [R::Acc], acc_base: usize, start: usize, end: usize| {
        walk.for_each_run([base, 0], start, end, |_, [ox, oa], len| {
            let oa = oa - acc_base;
            if sa == 0 {
                acc[oa] = r.fold(acc[oa], data, ox, len, sx);
            } else {
                r.fold_each(&mut acc[oa..oa + len], data, ox, sx);
            }
        });
    };
    let total = x.numel();
    let (n0, inner) = match walk.shape.first() {
        Some(&n0) => (n0, total / n0),
        None => (1, total),
    };
    let rows_per_chunk = PAR_MIN_WORK.div_ceil(inner).max(n0 / 64).max(1);
    let chunks = n0.div_ceil(rows_per_chunk);
    if chunks < 2 || par::threads() < 2 {
        run_range(&mut acc, 0, 0, total);
        return (acc, out_shape);
    }
    let outer_kept = walk.strides[1].first().is_some_and(|&s| s != 0);
    if outer_kept {
        let block = walk.strides[1][0] * rows_per_chunk;
        par::chunks_mut(&mut acc, block, true, |c, acc_chunk| {
            let start = c * rows_per_chunk * inner;
            let end = ((c + 1) * rows_per_chunk).min(n0) * inner;
            run_range(acc_chunk, c * block, start, end);
        });
    } else {
        let partials: Vec<Vec<R::Acc>> = par::map(chunks, true, |c| {
            let mut part = vec![r.init(); out_n];
            let start = c * rows_per_chunk * inner;
            let end = ((c + 1) * rows_per_chunk).min(n0) * inner;
            run_range(&mut part, 0, start, end);
            part
        });
        for part in partials {
            for (a, p) in acc.iter_mut().zip(part) {
                *a = r.merge(*a, p);
            }
        }
    }
    (acc, out_shape)
}

/// Sum; contiguous runs use [`sum_contiguous`]'s independent lanes, so they vectorise.
pub(crate) struct Sum;

impl<T: Element> Reducer<T> for Sum {
    type Acc = T;
    fn init(&self) -> T {
        T::zero()
    }
    fn fold(&self, acc: T, data: &[T], off: usize, len: usize, stride: usize) -> T {
        if stride == 1 {
            let xs = &data[off..off + len];
            acc + dispatch(
                #[inline(always)]
                || sum_contiguous(xs),
            )
        } else {
            (0..len).fold(acc, |a, i| a + data[off + i * stride])
        }
    }
    fn fold_each(&self, accs: &mut [T], data: &[T], off: usize, stride: usize) {
        if stride == 1 {
            let xs = &data[off..off + accs.len()];
            dispatch(
                #[inline(always)]
                || {
                    for (a, &v) in accs.iter_mut().zip(xs) {
                        *a += v;
                    }
                },
            )
        } else {
            for (i, a) in accs.iter_mut().enumerate() {
                *a += data[off + i * stride];
            }
        }
    }
    fn merge(&self, a: T, b: T) -> T {
        a + b
    }
}

pub(crate) struct Prod;

impl<T: Element> Reducer<T> for Prod {
    type Acc = T;
    fn init(&self) -> T {
        T::one()
    }
    fn fold(&self, acc: T, data: &[T], off: usize, len: usize, stride: usize) -> T {
        (0..len).fold(acc, |a, i| a * data[off + i * stride])
    }
    fn fold_each(&self, accs: &mut [T], data: &[T], off: usize, stride: usize) {
        for (i, a) in accs.iter_mut().enumerate() {
            *a *= data[off + i * stride];
        }
    }
    fn merge(&self, a: T, b: T) -> T {
        a * b
    }
}

/// Maximum (or minimum, with `MAX = false`) that propagates NaN.
pub(crate) struct Extreme<const MAX: bool>;

impl<const MAX: bool> Extreme<MAX> {
    #[inline(always)]
    fn pick<T: Element>(a: T, b: T) -> T {
        let better = if MAX { b > a } else { b < a };
        if better || b.is_nan() { b } else { a }
    }
}

impl<T: Element, const MAX: bool> Reducer<T> for Extreme<MAX> {
    type Acc = T;
    fn init(&self) -> T {
        if MAX {
            T::neg_infinity()
        } else {
            T::infinity()
        }
    }
    fn fold(&self, acc: T, data: &[T], off: usize, len: usize, stride: usize) -> T {
        (0..len).fold(acc, |a, i| Self::pick(a, data[off + i * stride]))
    }
    fn fold_each(&self, accs: &mut [T], data: &[T], off: usize, stride: usize) {
        for (i, a) in accs.iter_mut().enumerate() {
            *a = Self::pick(*a, data[off + i * stride]);
        }
    }
    fn merge(&self, a: T, b: T) -> T {
        if a.is_nan() { a } else { Self::pick(a, b) }
    }
}

/// Count, mean and sum of squared deviations, in f64 (Welford; Chan et al. to merge).
#[derive(Clone, Copy)]
pub(crate) struct Moments {
    pub(crate) n: f64,
    mean: f64,
    pub(crate) m2: f64,
}

pub(crate) struct Variance;

impl Moments {
    fn merge(self, o: Moments) -> Moments {
        if o.n == 0.0 {
            return self;
        }
        if self.n == 0.0 {
            return o;
        }
        let n = self.n + o.n;
        let delta = o.mean - self.mean;
        Moments {
            n,
            mean: self.mean + delta * o.n / n,
            m2: self.m2 + o.m2 + delta * delta * self.n * o.n / n,
        }
    }
}

impl<T: Element> Reducer<T> for Variance {
    type Acc = Moments;
    fn init(&self) -> Moments {
        Moments {
            n: 0.0,
            mean: 0.0,
            m2: 0.0,
        }
    }
    fn fold(&self, acc: Moments, data: &[T], off: usize, len: usize, stride: usize) -> Moments {
        // Two passes over the run (exact mean first), then merge into the accumulator.
        let get = |i: usize| data[off + i * stride].to_f64();
        let mean = (0..len).map(get).sum::<f64>() / len as f64;
        let m2 = (0..len).map(|i| (get(i) - mean).powi(2)).sum::<f64>();
        acc.merge(Moments {
            n: len as f64,
            mean,
            m2,
        })
    }
    fn fold_each(&self, accs: &mut [Moments], data: &[T], off: usize, stride: usize) {
        for (i, a) in accs.iter_mut().enumerate() {
            let v = data[off + i * stride].to_f64();
            a.n += 1.0;
            let delta = v - a.mean;
            a.mean += delta / a.n;
            a.m2 += delta * (v - a.mean);
        }
    }
    fn merge(&self, a: Moments, b: Moments) -> Moments {
        a.merge(b)
    }
}
