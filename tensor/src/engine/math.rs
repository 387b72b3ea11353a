//! Branch-free f32 approximations of `exp`, `tanh` and `erfc` that vectorise.
//!
//! `f32::exp` and friends call into libm one element at a time; these are plain arithmetic
//! and selects, so a loop over them vectorises (see [`crate::engine::simd`]). Accuracy, checked in
//! the tests below against libm: `exp` within 2 ulp, `tanh` within 3 ulp, `erfc` within a
//! relative `3e-7 · (1 + x²)` (the f32 rounding of the argument `-x²` of its exponential). f64 kernels use the correctly rounded libm functions instead: f64 is the
//! type of gradient checks, where accuracy matters more than speed.

// The polynomial coefficients are the published ones, digit for digit; the range clamp
// uses comparisons so that NaN passes through.
#![allow(clippy::excessive_precision, clippy::manual_clamp)]

/// Cody–Waite split of ln 2 for `exp`'s range reduction (high part exact in 10 bits).
pub(crate) const EXP_LN2: (f32, f32) = (0.693_359_4, -2.121_944_4e-4);
/// `exp`'s polynomial on the reduced argument, highest degree first.
pub(crate) const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    5.000_000_1e-1,
];
/// `tanh`'s odd polynomial in `x²` below [`TANH_SMALL`], highest degree first.
pub(crate) const TANH_POLY: [f32; 5] = [
    -5.704_988_7e-3,
    2.063_908_9e-2,
    -5.373_971_6e-2,
    1.333_144_2e-1,
    -3.333_328_2e-1,
];
/// Below this `|x|`, `tanh` uses its polynomial; above, `1 − 2/(e^{2|x|} + 1)`.
pub(crate) const TANH_SMALL: f32 = 0.625;
/// The coefficients of [`erfc_f32`]'s polynomial in `t`, from degree 0 to 9.
const ERFC_POLY: [f32; 10] = [
    -1.265_512_2,
    1.000_023_7,
    0.374_091_96,
    0.096_784_18,
    -0.186_288_06,
    0.278_868_07,
    -1.135_203_98,
    1.488_515_87,
    -0.822_152_23,
    0.170_872_77,
];

/// `a·b + c`, fused when `FMA`. Only code compiled for an instruction set with FMA (every
/// [`dispatch`](crate::engine::simd::dispatch) level but the baseline) should pass `true`: elsewhere
/// `mul_add` is a library call.
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// e^x for f32 (Cephes' `expf` polynomial, Cody–Waite range reduction).
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    exp_f32_with::<false>(x)
}

/// Above this, `exp` overflows to +inf: just above ln(f32::MAX).
const EXP_HI: f32 = 88.722_84;
/// Below this, `exp` flushes to 0: ln(f32::MIN_POSITIVE).
const EXP_LO: f32 = -87.336_55;

/// `exp`'s range reduction and polynomial for `xc` in `[EXP_LO, EXP_HI]` (or NaN):
/// `(p, n)` with `e^xc = p · 2^n`, `p` in about `[0.7, 1.4]`.
#[inline(always)]
fn exp_reduced<const FMA: bool>(xc: f32) -> (f32, i32) {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    let (c1, c2) = EXP_LN2;
    let [p0, p1, p2, p3, p4, p5] = EXP_POLY;
    const SHIFTER: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let t = madd::<FMA>(xc, LOG2E, SHIFTER);
    let n = t - SHIFTER;
    let r = madd::<FMA>(-n, c2, madd::<FMA>(-n, c1, xc));
    let mut p = madd::<FMA>(p0, r, p1);
    p = madd::<FMA>(p, r, p2);
    p = madd::<FMA>(p, r, p3);
    p = madd::<FMA>(p, r, p4);
    p = madd::<FMA>(p, r, p5);
    let p = madd::<FMA>(p, r * r, r) + 1.0;
    // n as an integer, read from the mantissa of t.
    (
        p,
        (t.to_bits() as i32).wrapping_sub(SHIFTER.to_bits() as i32),
    )
}

/// [`exp_f32`], its multiply-adds fused when `FMA` (about two thirds of the instructions;
/// the last bit may differ).
#[inline(always)]
pub(crate) fn exp_f32_with<const FMA: bool>(x: f32) -> f32 {
    // Comparisons rather than min/max so that NaN passes through.
    let xc = if x > EXP_HI {
        EXP_HI
    } else if x < EXP_LO {
        EXP_LO
    } else {
        x
    };
    let (p, ni) = exp_reduced::<FMA>(xc);
    // 2^n built from its exponent bits; n = 128 (possible only near the top of the
    // range) is split as 2^127 * 2.
    let top = (ni > 127) as i32;
    let scale = f32::from_bits(((ni - top + 127) as u32) << 23);
    let y = p * scale * (1 + top) as f32;
    if x < EXP_LO { 0.0 } else { y }
}

/// [`exp_f32_with`] for `x <= 0` (or NaN), as softmax's shifted inputs are: no overflow
/// to guard, so `2^n` is one exponent field (n is at most 0), a few instructions fewer
/// per value. Wrong for `x > 0`.
#[inline(always)]
pub(crate) fn exp_nonpositive_f32_with<const FMA: bool>(x: f32) -> f32 {
    debug_assert!(x <= 0.0 || x.is_nan(), "exp_nonpositive_f32_with({x})");
    let xc = if x < EXP_LO { EXP_LO } else { x };
    let (p, ni) = exp_reduced::<FMA>(xc);
    let y = p * f32::from_bits(((ni + 127) as u32) << 23);
    if x < EXP_LO { 0.0 } else { y }
}

/// tanh(x) for f32: an odd polynomial near 0 (Cephes' `tanhf`), `1 - 2 / (e^2|x| + 1)` beyond.
#[inline(always)]
pub(crate) fn tanh_f32(x: f32) -> f32 {
    tanh_f32_with::<false>(x)
}

/// [`tanh_f32`], its multiply-adds fused when `FMA`.
#[inline(always)]
pub(crate) fn tanh_f32_with<const FMA: bool>(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let [q0, q1, q2, q3, q4] = TANH_POLY;
    let mut p = madd::<FMA>(q0, z, q1);
    p = madd::<FMA>(p, z, q2);
    p = madd::<FMA>(p, z, q3);
    p = madd::<FMA>(p, z, q4);
    let small = madd::<FMA>(p * z, x, x);
    let e = exp_f32_with::<FMA>(2.0 * a);
    let large = (1.0 - 2.0 / (e + 1.0)).copysign(x);
    if a < TANH_SMALL { small } else { large }
}

/// erfc(x) for f32 (the Chebyshev fit of Numerical Recipes, §6.2: fractional error below
/// 1.2e-7 in exact arithmetic), used by the exact GELU as `x/2 · erfc(-x/√2)`, which has
/// no cancellation in the negative tail.
#[inline(always)]
pub(crate) fn erfc_f32(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    // The degree-9 polynomial by Estrin's scheme: pairs, then powers t², t⁴, t⁸. Its
    // chain of dependent operations is 7 long instead of Horner's 18, on which the
    // vectorised GELU waited: 16M values took 21 ms on one core with Horner's, 17.5 ms
    // with this.
    let [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9] = ERFC_POLY;
    let (t2, p01, p23, p45, p67, p89) = (
        t * t,
        c0 + c1 * t,
        c2 + c3 * t,
        c4 + c5 * t,
        c6 + c7 * t,
        c8 + c9 * t,
    );
    let t4 = t2 * t2;
    let low = (p01 + p23 * t2) + (p45 + p67 * t2) * t4;
    let poly = low + p89 * (t4 * t4);
    let ans = t * exp_f32(-z * z + poly);
    if x >= 0.0 { ans } else { 2.0 - ans }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        if a == b {
            return 0;
        }
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    fn grid(lo: f32, hi: f32, n: usize) -> impl Iterator<Item = f32> {
        (0..=n).map(move |i| lo + (hi - lo) * i as f32 / n as f32)
    }

    #[test]
    fn exp_within_two_ulp() {
        for x in grid(-87.0, 88.7, 200_003) {
            let (got, want) = (exp_f32(x), (x as f64).exp() as f32);
            assert!(ulps(got, want) <= 2, "exp({x}) = {got}, want {want}");
        }
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(100.0), f32::INFINITY);
        assert_eq!(exp_f32(-100.0), 0.0);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn exp_nonpositive_matches_exp() {
        // Below ln(f32::MIN_POSITIVE) both flush to 0, where libm goes subnormal.
        for x in grid(-90.0, -87.0, 10_007) {
            assert_eq!(exp_nonpositive_f32_with::<true>(x), exp_f32_with::<true>(x));
        }
        for x in grid(-87.0, 0.0, 200_003) {
            let want = (x as f64).exp() as f32;
            for got in [
                exp_nonpositive_f32_with::<false>(x),
                exp_nonpositive_f32_with::<true>(x),
            ] {
                assert!(ulps(got, want) <= 2, "exp({x}) = {got}, want {want}");
            }
            assert_eq!(exp_nonpositive_f32_with::<false>(x), exp_f32(x));
        }
        let e = exp_nonpositive_f32_with::<false>;
        assert_eq!(e(0.0), 1.0);
        assert_eq!(e(-0.0), 1.0);
        assert_eq!(e(f32::NEG_INFINITY), 0.0);
        assert_eq!(e(-100.0), 0.0);
        assert!(e(f32::NAN).is_nan());
    }

    #[test]
    fn tanh_within_three_ulp() {
        for x in grid(-12.0, 12.0, 200_001) {
            let (got, want) = (tanh_f32(x), (x as f64).tanh() as f32);
            assert!(ulps(got, want) <= 3, "tanh({x}) = {got}, want {want}");
        }
        assert_eq!(tanh_f32(f32::INFINITY), 1.0);
        assert_eq!(tanh_f32(f32::NEG_INFINITY), -1.0);
        assert!(tanh_f32(f32::NAN).is_nan());
    }

    #[test]
    fn erfc_relative_error() {
        for x in grid(-6.0, 9.0, 150_001) {
            let (got, want) = (erfc_f32(x) as f64, libm::erfc(x as f64));
            let rel = ((got - want) / want).abs();
            let tol = 3e-7 * (1.0 + (x as f64).powi(2));
            assert!(
                rel < tol || (got - want).abs() < 1e-37,
                "erfc({x}) = {got}, want {want}"
            );
        }
    }
}
