//! The special functions the accountants need, in f64: `log(erfc x)` accurate far into
//! the tail, log-space addition and subtraction, and adaptive Gauss–Legendre quadrature.

/// `ln(e^a + e^b)`, exact for `a` or `b` = −∞.
pub(crate) fn log_add(a: f64, b: f64) -> f64 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    (lo - hi).exp().ln_1p() + hi
}

/// `ln(e^a − e^b)` for `a ≥ b`; `None` when `a < b` (a negative result).
pub(crate) fn log_sub(a: f64, b: f64) -> Option<f64> {
    if a < b {
        return None;
    }
    if b == f64::NEG_INFINITY {
        return Some(a);
    }
    if a == b {
        return Some(f64::NEG_INFINITY);
    }
    let d = (a - b).exp_m1();
    Some(if d.is_finite() { d.ln() + b } else { a })
}

/// `ln(erfc(x))`, accurate to a few ulps also where `erfc(x)` underflows: libm's `erfc` up
/// to x = 26 (erfc(26) ≈ 6e-296 is still a normal number), then the asymptotic series
/// `erfc(x) = e^{−x²}/(x√π)·Σₖ (−1)ᵏ (2k−1)!!/(2x²)ᵏ`, whose terms fall by `(2k−1)/(2x²)`
/// (below 10⁻¹⁴ after six terms for x ≥ 26).
pub(crate) fn log_erfc(x: f64) -> f64 {
    if x < 26.0 {
        return libm::erfc(x).ln();
    }
    log_erfc_asymptotic(x)
}

/// The asymptotic series of `ln(erfc(x))` for large `x`.
fn log_erfc_asymptotic(x: f64) -> f64 {
    let inv = 1.0 / (2.0 * x * x);
    let (mut term, mut sum) = (1.0f64, 1.0f64);
    for k in 1..12 {
        term *= -((2 * k - 1) as f64) * inv;
        sum += term;
        if term.abs() < 1e-17 {
            break;
        }
    }
    -x * x - (x * std::f64::consts::PI.sqrt()).ln() + sum.ln()
}

/// Nodes and weights of the `n`-point Gauss–Legendre rule on [−1, 1], by Newton's method
/// on the Legendre polynomial from the Chebyshev guesses (Press et al., `gauleg`).
fn gauss_legendre(n: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut z = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut dp = 1.0;
        for _ in 0..100 {
            // P_n(z) by the recurrence, and its derivative.
            let (mut p1, mut p2) = (1.0f64, 0.0f64);
            for j in 0..n {
                let p3 = p2;
                p2 = p1;
                p1 = ((2 * j + 1) as f64 * z * p2 - j as f64 * p3) / (j + 1) as f64;
            }
            dp = n as f64 * (z * p1 - p2) / (z * z - 1.0);
            let step = p1 / dp;
            z -= step;
            if step.abs() < 1e-16 {
                break;
            }
        }
        out.push((z, 2.0 / ((1.0 - z * z) * dp * dp)));
    }
    out
}

/// `∫ₐᵇ f`, by 20-point Gauss–Legendre on halves of each piece until a piece agrees with
/// its halves within `tol` (absolute, shared out by length), at most `depth` halvings.
pub(crate) fn integrate(f: &dyn Fn(f64) -> f64, a: f64, b: f64, tol: f64) -> f64 {
    let rule = gauss_legendre(20);
    let gl = |a: f64, b: f64| -> f64 {
        let (mid, half) = ((a + b) / 2.0, (b - a) / 2.0);
        half * rule
            .iter()
            .map(|&(x, w)| w * f(mid + half * x))
            .sum::<f64>()
    };
    fn refine(
        gl: &dyn Fn(f64, f64) -> f64,
        a: f64,
        b: f64,
        whole: f64,
        tol: f64,
        depth: u32,
    ) -> f64 {
        let m = (a + b) / 2.0;
        let (left, right) = (gl(a, m), gl(m, b));
        if depth == 0 || (left + right - whole).abs() <= tol {
            return left + right;
        }
        refine(gl, a, m, left, tol / 2.0, depth - 1) + refine(gl, m, b, right, tol / 2.0, depth - 1)
    }
    if a == b {
        return 0.0;
    }
    refine(&gl, a, b, gl(a, b), tol, 40)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_erfc_is_continuous_across_the_switch_and_matches_known_values() {
        // erfc(1) = 0.157299207050285130658...
        assert!((log_erfc(1.0) - 0.157_299_207_050_285_13f64.ln()).abs() < 1e-14);
        // Where both are accurate, the series and libm agree.
        for x in [20.0, 24.0, 26.0] {
            let (libm, series) = (libm::erfc(x).ln(), log_erfc_asymptotic(x));
            assert!(
                (libm - series).abs() < 1e-12 * libm.abs(),
                "{x}: {libm} {series}"
            );
        }
        // ln erfc(30) = −900 − ln(30√π) + ln(1 − 1/1800 + …) = −903.97...
        let want = -900.0 - (30.0 * std::f64::consts::PI.sqrt()).ln()
            + (1.0f64 - 1.0 / 1800.0 + 3.0 / (4.0 * 810_000.0)).ln();
        // (the next term, 15/(8·30⁶), is 2.6e-9)
        assert!((log_erfc(30.0) - want).abs() < 5e-9);
    }

    #[test]
    fn gauss_legendre_integrates_polynomials_and_a_kink() {
        // ∫₋₁¹ x²⁰ dx = 2/21: exact for a 20-point rule (degree ≤ 39).
        let v = integrate(&|x: f64| x.powi(20), -1.0, 1.0, 1e-14);
        assert!((v - 2.0 / 21.0).abs() < 1e-15);
        // ∫₋₁² |x| dx = 1/2 + 2 = 2.5, with the kink inside a piece.
        let v = integrate(&|x: f64| x.abs(), -1.0, 2.0, 1e-13);
        assert!((v - 2.5).abs() < 1e-11, "{v}");
    }

    #[test]
    fn log_space_arithmetic() {
        assert!((log_add(1f64.ln(), 2f64.ln()) - 3f64.ln()).abs() < 1e-15);
        assert!((log_sub(3f64.ln(), 2f64.ln()).unwrap() - 0.0).abs() < 1e-15);
        assert_eq!(log_sub(1.0, 2.0), None);
        assert_eq!(log_add(f64::NEG_INFINITY, 0.5), 0.5);
    }
}
