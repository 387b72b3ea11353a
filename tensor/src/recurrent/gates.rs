//! The gate nonlinearities of the forward pass: σ and tanh.
//!
//! For f32 on CPUs with FMA (every dispatch level but the baseline) they are evaluated
//! with fused multiply-adds (`math.rs`'s `exp`/`tanh` polynomials, fused), in about two
//! thirds of the instructions. The LSTM forward
//! spends most of its non-GEMM time here (five per unit and step). f64, and f32 without
//! FMA, use the crate's own functions.

use crate::math::{exp_f32_with as exp_f32, tanh_f32_with as tanh_f32};
use crate::{DType, Element};

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

pub(super) use crate::simd::has_fma;

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
