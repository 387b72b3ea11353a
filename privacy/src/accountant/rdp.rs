//! Rényi DP of the Poisson-subsampled Gaussian mechanism (Mironov, Talwar and Zhang 2019,
//! "Rényi Differential Privacy of the Sampled Gaussian Mechanism", §3.3), and its
//! conversion to (ε, δ) by Balle et al. 2020 ("Hypothesis testing interpretations and
//! Rényi differential privacy", Theorem 21), over the orders Opacus uses.
//!
//! At order α the mechanism has RDP `ln(A_α)/(α − 1)` with
//! `A_α = E_{z∼μ₀}[(μ(z)/μ₀(z))^α]`, `μ = (1 − q)μ₀ + qμ₁` the mixture of the Gaussians
//! N(0, σ²) and N(1, σ²). For integer α the binomial expansion is a finite sum,
//! `A_α = Σᵢ C(α, i) qⁱ (1 − q)^{α−i} e^{(i² − i)/(2σ²)}`; for fractional α the series
//! splits at `z₀ = σ² ln(1/q − 1) + ½` into two, each term carrying an erfc, summed until
//! the terms fall below e⁻³⁰. Everything runs in log space.

use super::special::{log_add, log_erfc, log_sub};
use crate::{PrivacyError, Result};

/// Opacus's orders: 1.1, 1.2, …, 10.9, then 12, 13, …, 63.
pub fn default_orders() -> Vec<f64> {
    let mut orders: Vec<f64> = (1..100).map(|x| 1.0 + x as f64 / 10.0).collect();
    orders.extend((12..64).map(f64::from));
    orders
}

fn log_a_int(q: f64, sigma: f64, alpha: u64) -> f64 {
    let mut log_a = f64::NEG_INFINITY;
    let mut binom = 1.0f64; // C(alpha, i), exact in f64 for the orders used (≤ 63)
    for i in 0..=alpha {
        let fi = i as f64;
        let log_coef = binom.ln() + fi * q.ln() + (alpha - i) as f64 * (1.0 - q).ln();
        log_a = log_add(log_a, log_coef + (fi * fi - fi) / (2.0 * sigma * sigma));
        binom = binom * (alpha - i) as f64 / (fi + 1.0);
    }
    log_a
}

fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> Result<f64> {
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let sqrt2 = std::f64::consts::SQRT_2;
    let mut coef = 1.0f64; // C(alpha, i) for real alpha, by the product formula
    let mut i = 0u64;
    loop {
        let fi = i as f64;
        let j = alpha - fi;
        let log_coef = coef.abs().ln();
        let log_t0 = log_coef + fi * q.ln() + j * (1.0 - q).ln();
        let log_t1 = log_coef + j * q.ln() + fi * (1.0 - q).ln();
        let log_e0 = 0.5f64.ln() + log_erfc((fi - z0) / (sqrt2 * sigma));
        let log_e1 = 0.5f64.ln() + log_erfc((z0 - j) / (sqrt2 * sigma));
        let log_s0 = log_t0 + (fi * fi - fi) / (2.0 * sigma * sigma) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * sigma * sigma) + log_e1;
        if coef > 0.0 {
            log_a0 = log_add(log_a0, log_s0);
            log_a1 = log_add(log_a1, log_s1);
        } else {
            let sub = |a: f64, b: f64| {
                log_sub(a, b).ok_or_else(|| {
                    PrivacyError::Accountant(format!(
                        "the RDP series at order {alpha} (q = {q}, σ = {sigma}) lost its \
                         precision (a negative partial sum)"
                    ))
                })
            };
            log_a0 = sub(log_a0, log_s0)?;
            log_a1 = sub(log_a1, log_s1)?;
        }
        coef *= (alpha - fi) / (fi + 1.0);
        i += 1;
        if log_s0.max(log_s1) < -30.0 {
            break;
        }
        if i > 100_000 {
            return Err(PrivacyError::Accountant(format!(
                "the RDP series at order {alpha} (q = {q}, σ = {sigma}) did not converge"
            )));
        }
    }
    Ok(log_add(log_a0, log_a1))
}

/// The RDP at order `alpha` of one step of the Gaussian mechanism with noise multiplier
/// `sigma`, Poisson-subsampled at rate `q` (∞ without noise).
///
/// # Errors
/// [`PrivacyError::Accountant`] when the fractional-order series loses its precision.
pub fn rdp_step(q: f64, sigma: f64, alpha: f64) -> Result<f64> {
    if q == 0.0 {
        return Ok(0.0);
    }
    if sigma == 0.0 || alpha.is_infinite() {
        return Ok(f64::INFINITY);
    }
    if q == 1.0 {
        return Ok(alpha / (2.0 * sigma * sigma));
    }
    let log_a = if alpha.fract() == 0.0 {
        log_a_int(q, sigma, alpha as u64)
    } else {
        log_a_frac(q, sigma, alpha)?
    };
    Ok(log_a / (alpha - 1.0))
}

/// ε at `delta` from the RDP values `rdp` at `orders` (Balle et al. 2020, Theorem 21):
/// `min_α rdp(α) − (ln δ + ln α)/(α − 1) + ln((α − 1)/α)`, and the order that attains it.
pub fn rdp_to_epsilon(orders: &[f64], rdp: &[f64], delta: f64) -> (f64, f64) {
    let mut best = (f64::INFINITY, f64::NAN);
    for (&a, &r) in orders.iter().zip(rdp) {
        let eps = r - (delta.ln() + a.ln()) / (a - 1.0) + ((a - 1.0) / a).ln();
        if eps < best.0 {
            best = (eps, a);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_subsampling_the_rdp_is_the_gaussian_mechanism_s() {
        // The Gaussian mechanism with sensitivity 1 has RDP α/(2σ²).
        assert_eq!(rdp_step(1.0, 2.0, 8.0).unwrap(), 1.0);
        // For q → 1 the integer series tends to the same value.
        let near = rdp_step(1.0 - 1e-12, 2.0, 8.0).unwrap();
        assert!((near - 1.0).abs() < 1e-9, "{near}");
    }

    #[test]
    fn integer_and_fractional_series_agree_next_to_each_other() {
        // The two formulas are one function of α: across α = 3 they join up.
        let (q, s) = (0.01, 1.1);
        let below = rdp_step(q, s, 3.0 - 1e-7).unwrap();
        let at = rdp_step(q, s, 3.0).unwrap();
        let above = rdp_step(q, s, 3.0 + 1e-7).unwrap();
        assert!((below - at).abs() < 1e-6 * at && (above - at).abs() < 1e-6 * at);
    }
}
