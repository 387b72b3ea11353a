//! Small contiguous-slice kernels shared by several ops, written so that they vectorise
//! when inlined into a [`dispatch`](crate::engine::simd::dispatch)ed loop.
//!
//! Floating-point addition is not associative, so the compiler will not split a running sum
//! across vector lanes on its own; these kernels keep 64 independent partial results (four
//! vectors of 16 lanes) and combine them at the end (which is also more accurate than one
//! running sum).

use crate::Element;

const LANES: usize = 16;
/// Elements per step of [`fold`]'s main loop: four independent groups of [`LANES`]
/// partial results, so that the adds (or maxima) of consecutive vectors do not wait on
/// one another.
const WIDE: usize = 4 * LANES;

/// Combines the lanes in order: `f(…f(f(l0, l1), l2)…, l15)`. (A pairwise tree over the
/// array made LLVM vectorise the whole kernel, main loop included, as 2-wide pieces.)
#[inline(always)]
fn combine<T: Element>(lanes: [T; LANES], f: impl Fn(T, T) -> T) -> T {
    lanes[1..].iter().fold(lanes[0], |a, &b| f(a, b))
}

/// Folds `step(acc, x, y)` over the pairs of `xs` and `ys` (of equal length; single-input
/// kernels pass the same slice twice) into [`WIDE`] partial results, then merges them:
/// lane by lane down to [`LANES`], a pass of whole [`LANES`] chunks of what is left, the
/// lanes in order ([`combine`]), and the scalar tail.
#[inline(always)]
fn fold<T: Element>(
    xs: &[T],
    ys: &[T],
    init: T,
    step: impl Fn(T, T, T) -> T,
    merge: impl Fn(T, T) -> T,
) -> T {
    debug_assert_eq!(xs.len(), ys.len());
    // Four named accumulators rather than one array of 64: with an array (or an array
    // of four), LLVM kept the partial results in memory, or did not vectorise at all.
    let (mut a0, mut a1, mut a2, mut a3) =
        ([init; LANES], [init; LANES], [init; LANES], [init; LANES]);
    let (cx, cy) = (xs.chunks_exact(WIDE), ys.chunks_exact(WIDE));
    let (rx, ry) = (cx.remainder(), cy.remainder());
    for (a, b) in cx.zip(cy) {
        lane_step(&mut a0, &a[..LANES], &b[..LANES], &step);
        lane_step(&mut a1, &a[LANES..2 * LANES], &b[LANES..2 * LANES], &step);
        lane_step(
            &mut a2,
            &a[2 * LANES..3 * LANES],
            &b[2 * LANES..3 * LANES],
            &step,
        );
        lane_step(&mut a3, &a[3 * LANES..], &b[3 * LANES..], &step);
    }
    let mut lanes = a0;
    for (((l, a), b), c) in lanes.iter_mut().zip(a1).zip(a2).zip(a3) {
        *l = merge(merge(merge(*l, a), b), c);
    }
    let (cx, cy) = (rx.chunks_exact(LANES), ry.chunks_exact(LANES));
    let (tx, ty) = (cx.remainder(), cy.remainder());
    for (a, b) in cx.zip(cy) {
        lane_step(&mut lanes, a, b, &step);
    }
    let mut acc = combine(lanes, merge);
    for (&x, &y) in tx.iter().zip(ty) {
        acc = step(acc, x, y);
    }
    acc
}

/// One step of [`fold`] on one group of lanes.
#[inline(always)]
fn lane_step<T: Element>(lanes: &mut [T; LANES], xs: &[T], ys: &[T], step: &impl Fn(T, T, T) -> T) {
    for ((l, &x), &y) in lanes.iter_mut().zip(xs).zip(ys) {
        *l = step(*l, x, y);
    }
}

/// The sum of `xs`.
#[inline(always)]
pub(crate) fn sum_contiguous<T: Element>(xs: &[T]) -> T {
    fold(xs, xs, T::zero(), |s, x, _| s + x, |a, b| a + b)
}

/// `Σ (x − mu)²` over `xs`, without writing the centred values.
#[inline(always)]
pub(crate) fn centred_square_sum<T: Element>(xs: &[T], mu: T) -> T {
    let square = |x: T| (x - mu) * (x - mu);
    fold(xs, xs, T::zero(), |s, x, _| s + square(x), |a, b| a + b)
}

/// Writes `exp(x - shift)` of every `x` into `out` and returns their sum; `shift` must
/// be at least every `x` (their maximum, as in softmax), or NaN.
///
/// Two passes, the second over `out` while it is still in cache: a running sum inside
/// the exponential's loop made LLVM keep the partial sums in memory, one store-to-load
/// round trip per vector.
#[inline(always)]
pub(crate) fn exp_shifted_sum<T: Element, const FMA: bool>(xs: &[T], shift: T, out: &mut [T]) -> T {
    debug_assert_eq!(xs.len(), out.len());
    for (o, &v) in out.iter_mut().zip(xs) {
        *o = (v - shift).exp_nonpositive_with::<FMA>();
    }
    sum_contiguous(out)
}

/// The dot product of `xs` and `ys` (of equal length).
#[inline(always)]
pub(crate) fn dot_contiguous<T: Element>(xs: &[T], ys: &[T]) -> T {
    fold(xs, ys, T::zero(), |s, x, y| s + x * y, |a, b| a + b)
}

/// NaN-propagating maximum of two values (`b` wins when it is NaN or larger).
#[inline(always)]
pub(crate) fn max_nan<T: Element>(a: T, b: T) -> T {
    if b > a || b.is_nan() { b } else { a }
}

/// The maximum of the non-NaN elements of `xs` (`-inf` when there are none). For
/// callers whose result turns NaN anyway when an element is NaN (softmax: `exp(NaN − m)`
/// poisons the sum), one select per element.
#[inline(always)]
pub(crate) fn max_ignoring_nan<T: Element>(xs: &[T]) -> T {
    let larger = |a: T, b: T| if b > a { b } else { a };
    fold(xs, xs, T::neg_infinity(), |m, x, _| larger(m, x), larger)
}

/// The maximum of `xs` (`-inf` when empty), NaN if any element is NaN.
///
/// The lanes keep a plain maximum and, separately, whether they saw a NaN: two selects
/// that vectorise, where folding the NaN test into the maximum did not.
#[inline(always)]
pub(crate) fn max_contiguous<T: Element>(xs: &[T]) -> T {
    let mut lanes = [T::neg_infinity(); LANES];
    let mut nan = [false; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for ((l, n), &v) in lanes.iter_mut().zip(nan.iter_mut()).zip(c) {
            *l = if v > *l { v } else { *l };
            *n |= v.is_nan();
        }
    }
    if nan.iter().any(|&n| n) {
        return T::nan();
    }
    let mut m = combine(lanes, |a, b| if b > a { b } else { a });
    for &v in rest {
        m = max_nan(m, v);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length around the 16- and 64-element steps: integer values, so that the
    /// sums are exact whatever the order.
    #[test]
    fn folds_cover_every_element_at_every_length() {
        for n in [0, 1, 15, 16, 17, 63, 64, 65, 79, 80, 127, 128, 200, 1000] {
            let xs: Vec<f32> = (0..n).map(|i| ((i * 37) % 23) as f32 - 11.0).collect();
            let ys: Vec<f32> = (0..n).map(|i| (i % 5) as f32).collect();
            assert_eq!(sum_contiguous(&xs), xs.iter().sum::<f32>(), "n = {n}");
            let dot: f32 = xs.iter().zip(&ys).map(|(a, b)| a * b).sum();
            assert_eq!(dot_contiguous(&xs, &ys), dot, "n = {n}");
            let mu = 0.5;
            let sq: f32 = xs.iter().map(|x| (x - mu) * (x - mu)).sum();
            assert_eq!(centred_square_sum(&xs, mu), sq, "n = {n}");
            let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max_ignoring_nan(&xs), max, "n = {n}");
            if n > 0 {
                // The largest element in each position in turn: in a wide group, in the
                // 16-lane pass, in the scalar tail.
                for at in [0, n / 2, n - 1] {
                    let mut peak = xs.clone();
                    peak[at] = 99.0;
                    assert_eq!(max_ignoring_nan(&peak), 99.0, "n = {n}, at {at}");
                    peak[at] = f32::NAN;
                    let rest = (0..n).filter(|&i| i != at).map(|i| xs[i]);
                    let want = rest.fold(f32::NEG_INFINITY, f32::max);
                    assert_eq!(max_ignoring_nan(&peak), want, "n = {n}, NaN at {at}");
                }
            }
        }
    }

    #[test]
    fn lane_kernels_match_scalar_loops() {
        let xs: Vec<f64> = (0..37).map(|i| ((i * 7919) % 101) as f64 - 50.0).collect();
        assert_eq!(sum_contiguous(&xs), xs.iter().sum::<f64>());
        let ys: Vec<f64> = (0..37).map(|i| i as f64 * 0.5).collect();
        let want: f64 = xs.iter().zip(&ys).map(|(a, b)| a * b).sum();
        assert_eq!(dot_contiguous(&xs, &ys), want);
        assert_eq!(max_contiguous(&xs), 50.0);
        assert_eq!(max_contiguous::<f64>(&[]), f64::NEG_INFINITY);
        let mut with_nan = xs.clone();
        with_nan[20] = f64::NAN;
        assert!(max_contiguous(&with_nan).is_nan());
        with_nan[20] = 0.0;
        with_nan[36] = f64::NAN; // in the scalar tail
        assert!(max_contiguous(&with_nan).is_nan());
        let mut with_inf = xs.clone();
        with_inf[3] = f64::INFINITY;
        assert_eq!(max_contiguous(&with_inf), f64::INFINITY);
        assert_eq!(max_contiguous(&[f64::NEG_INFINITY; 40]), f64::NEG_INFINITY);
    }
}

/// Calls `f(r, u, mask)` for every row `r < rows` and block of 16 units from `u`, `mask`
/// holding the block's lanes below `un` (all but the last block are full): the walk of
/// the hand-written 16-lane (AVX-512 f32) kernels, whose masked loads and stores then
/// never touch an element past `un`.
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn lane_blocks(rows: usize, un: usize, mut f: impl FnMut(usize, usize, u16)) {
    for r in 0..rows {
        for u in (0..un).step_by(16) {
            let mask = if un - u >= 16 {
                0xffff
            } else {
                ((1u32 << (un - u)) - 1) as u16
            };
            f(r, u, mask);
        }
    }
}

#[cfg(test)]
mod lane_block_tests {
    use super::lane_blocks;

    /// Every lane below `un` of every row is visited exactly once, none above it.
    #[test]
    fn blocks_cover_each_row_exactly() {
        for un in [1, 15, 16, 17, 33, 64] {
            let mut seen = vec![0u8; 3 * un];
            lane_blocks(3, un, |r, u, mask| {
                for lane in 0..16 {
                    if mask >> lane & 1 == 1 {
                        assert!(u + lane < un);
                        seen[r * un + u + lane] += 1;
                    }
                }
            });
            assert!(seen.iter().all(|&c| c == 1), "un = {un}");
        }
    }
}
