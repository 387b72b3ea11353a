//! Small contiguous-slice kernels shared by several ops, written so that they vectorise
//! when inlined into a [`dispatch`](crate::engine::simd::dispatch)ed loop.
//!
//! Floating-point addition is not associative, so the compiler will not split a running sum
//! across vector lanes on its own; these kernels keep 16 independent partial results and
//! combine them at the end (which is also more accurate than one running sum).

use crate::Element;

const LANES: usize = 16;

/// Combines the lanes in order: `f(…f(f(l0, l1), l2)…, l15)`. (A pairwise tree over the
/// array made LLVM vectorise the whole kernel, main loop included, as 2-wide pieces.)
#[inline(always)]
fn combine<T: Element>(lanes: [T; LANES], f: impl Fn(T, T) -> T) -> T {
    lanes[1..].iter().fold(lanes[0], |a, &b| f(a, b))
}

/// The sum of `xs`.
#[inline(always)]
pub(crate) fn sum_contiguous<T: Element>(xs: &[T]) -> T {
    let mut lanes = [T::zero(); LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    let mut s = combine(lanes, |a, b| a + b);
    for &v in rest {
        s += v;
    }
    s
}

/// Writes `exp(x - shift)` of every `x` into `out` and returns their sum (one pass).
#[inline(always)]
pub(crate) fn exp_shifted_sum<T: Element, const FMA: bool>(xs: &[T], shift: T, out: &mut [T]) -> T {
    debug_assert_eq!(xs.len(), out.len());
    let mut lanes = [T::zero(); LANES];
    let (cx, mut co) = (xs.chunks_exact(LANES), out.chunks_exact_mut(LANES));
    let rx = cx.remainder();
    for (c, o) in cx.zip(&mut co) {
        for ((l, o), &v) in lanes.iter_mut().zip(o.iter_mut()).zip(c) {
            let e = (v - shift).exp_with::<FMA>();
            *o = e;
            *l += e;
        }
    }
    let mut s = combine(lanes, |a, b| a + b);
    for (o, &v) in co.into_remainder().iter_mut().zip(rx) {
        let e = (v - shift).exp_with::<FMA>();
        *o = e;
        s += e;
    }
    s
}

/// The dot product of `xs` and `ys` (of equal length).
#[inline(always)]
pub(crate) fn dot_contiguous<T: Element>(xs: &[T], ys: &[T]) -> T {
    debug_assert_eq!(xs.len(), ys.len());
    let mut lanes = [T::zero(); LANES];
    let (cx, cy) = (xs.chunks_exact(LANES), ys.chunks_exact(LANES));
    let (rx, ry) = (cx.remainder(), cy.remainder());
    for (a, b) in cx.zip(cy) {
        for ((l, &x), &y) in lanes.iter_mut().zip(a).zip(b) {
            *l += x * y;
        }
    }
    let mut s = combine(lanes, |a, b| a + b);
    for (&x, &y) in rx.iter().zip(ry) {
        s += x * y;
    }
    s
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
    let mut lanes = [T::neg_infinity(); LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = if v > *l { v } else { *l };
        }
    }
    let mut m = combine(lanes, |a, b| if b > a { b } else { a });
    for &v in rest {
        m = if v > m { v } else { m };
    }
    m
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
