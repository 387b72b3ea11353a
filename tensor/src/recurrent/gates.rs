//! The gate nonlinearities of the forward pass: σ and tanh.
//!
//! For f32 on CPUs with FMA (every dispatch level but the baseline) they are evaluated
//! with fused multiply-adds: the same range reduction and polynomials as the crate's
//! `exp`/`tanh` (`math.rs`), in about two thirds of the instructions. The LSTM forward
//! spends most of its non-GEMM time here (five per unit and step). f64, and f32 without
//! FMA, use the crate's own functions.
// Cephes' coefficients as published; comparisons rather than `clamp` as in `math.rs`.
#![allow(clippy::excessive_precision, clippy::manual_clamp)]

use crate::{DType, Element};

/// `a·b + c`, fused when `FMA`.
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// e^x for f32: Cephes' `expf` reduction and polynomial, as `math::exp_f32`.
#[inline(always)]
fn exp_f32<const FMA: bool>(x: f32) -> f32 {
    const HI: f32 = 88.722_84;
    const LO: f32 = -87.336_55;
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    const SHIFTER: f32 = 12_582_912.0;
    let xc = if x > HI {
        HI
    } else if x < LO {
        LO
    } else {
        x
    };
    let t = madd::<FMA>(xc, LOG2E, SHIFTER);
    let n = t - SHIFTER;
    let r = madd::<FMA>(-n, C2, madd::<FMA>(-n, C1, xc));
    let mut p = madd::<FMA>(1.987_569_1e-4, r, 1.398_199_9e-3);
    p = madd::<FMA>(p, r, 8.333_452e-3);
    p = madd::<FMA>(p, r, 4.166_579_6e-2);
    p = madd::<FMA>(p, r, 1.666_666_5e-1);
    p = madd::<FMA>(p, r, 5.000_000_1e-1);
    let p = madd::<FMA>(p, r * r, r) + 1.0;
    let ni = (t.to_bits() as i32).wrapping_sub(SHIFTER.to_bits() as i32);
    let top = (ni > 127) as i32;
    let scale = f32::from_bits(((ni - top + 127) as u32) << 23);
    let y = p * scale * (1 + top) as f32;
    if x < LO { 0.0 } else { y }
}

/// tanh(x) for f32: Cephes' odd polynomial near 0, `1 − 2/(e^2|x| + 1)` beyond.
#[inline(always)]
fn tanh_f32<const FMA: bool>(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let mut p = madd::<FMA>(-5.704_988_7e-3, z, 2.063_908_9e-2);
    p = madd::<FMA>(p, z, -5.373_971_6e-2);
    p = madd::<FMA>(p, z, 1.333_144_2e-1);
    p = madd::<FMA>(p, z, -3.333_328_2e-1);
    let small = madd::<FMA>(p * z, x, x);
    let e = exp_f32::<FMA>(2.0 * a);
    let large = (1.0 - 2.0 / (e + 1.0)).copysign(x);
    if a < 0.625 { small } else { large }
}

/// σ(x) = 1 / (1 + e^−x).
#[inline(always)]
pub(super) fn sigmoid<T: Element, const FMA: bool>(x: T) -> T {
    if T::DTYPE == DType::F32 {
        // For T = f32 both conversions are the identity and compile away.
        let y = 1.0 / (1.0 + exp_f32::<FMA>(-(x.to_f64() as f32)));
        T::from_f64(f64::from(y))
    } else {
        (T::one() + (-x).exp_v()).recip()
    }
}

/// tanh(x).
#[inline(always)]
pub(super) fn tanh<T: Element, const FMA: bool>(x: T) -> T {
    if T::DTYPE == DType::F32 {
        T::from_f64(f64::from(tanh_f32::<FMA>(x.to_f64() as f32)))
    } else {
        x.tanh_v()
    }
}

/// Whether the dispatched kernels may use fused multiply-adds (every level but the
/// baseline has FMA; there `mul_add` would be a library call).
pub(super) fn has_fma() -> bool {
    crate::simd_level() != "baseline"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fused_forms_agree_with_the_plain_ones() {
        // Both evaluate the same polynomials; fusing changes the last bit or two.
        for i in -2000..=2000 {
            let x = i as f32 * 0.01;
            for (a, b) in [
                (sigmoid::<f32, true>(x), sigmoid::<f32, false>(x)),
                (tanh::<f32, true>(x), tanh::<f32, false>(x)),
            ] {
                assert!(
                    (a - b).abs() <= 4.0 * f32::EPSILON * b.abs().max(1e-30),
                    "{x}: {a} vs {b}"
                );
            }
            let s = sigmoid::<f32, true>(x) as f64;
            assert!(
                (s - 1.0 / (1.0 + (-(x as f64)).exp())).abs() < 3e-7,
                "σ({x})"
            );
            let t = tanh::<f32, true>(x) as f64;
            assert!(
                (t - (x as f64).tanh()).abs() < 3e-7 * (1.0 + t.abs()),
                "tanh({x})"
            );
        }
        assert_eq!(sigmoid::<f32, true>(-200.0), 0.0);
        assert_eq!(sigmoid::<f32, true>(200.0), 1.0);
        assert_eq!(tanh::<f32, true>(50.0), 1.0);
        assert!(tanh::<f32, true>(f32::NAN).is_nan());
        assert_eq!(sigmoid::<f64, true>(0.5), 1.0 / (1.0 + (-0.5f64).exp()));
    }
}
