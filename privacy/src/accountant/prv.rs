//! Numerical composition of privacy random variables (Gopi, Lee and Wutschitz 2021,
//! "Numerical Composition of Differential Privacy"), as Opacus's `PRVAccountant` and the
//! authors' `prv_accountant` do it.
//!
//! The privacy loss of one step of the Poisson-subsampled Gaussian mechanism is a random
//! variable `Y` (its CDF is closed form, Gopi et al. Proposition B4); the loss of `k`
//! steps is the sum of `k` independent copies, and `δ(ε) = E[(1 − e^{ε−Y})₊]`. The
//! accountant:
//!
//! 1. picks a domain `[−L, L]` outside of which the composed loss has negligible mass
//!    (from RDP bounds, Remark 5.6) and a mesh `h = ε_err / √(k·ln(12/δ_err)/2)`;
//! 2. discretises each step's PRV on the mesh (the mass of each cell, from the CDF of the
//!    PRV truncated to the domain), shifting the grid so that the discrete mean equals the
//!    continuous one;
//! 3. composes: `k` identical steps by one FFT, the pmf's transform raised to the `k`-th
//!    power (a circular convolution of the domain's length, as the analysis assumes), and
//!    different kinds of steps by linear convolution;
//! 4. reads ε for a δ off the composed pmf with the tail sums `Σ_{t ≥ ε} p(t)` and
//!    `Σ_{t ≥ ε} p(t) e^{−t}`, and reports the upper bound `ε(δ − δ_err) + ε_err`, which
//!    holds with the discretisation and truncation errors accounted for (Theorem 5.5).

use strata_tensor::parallel_map;

use super::fft::{Complex, Plan, convolve};
use super::rdp::{default_orders, rdp_step, rdp_to_epsilon};
use super::special::integrate;
use crate::{PrivacyError, Result};

/// The machine epsilon of x86's 80-bit `long double`, which Opacus checks δ against.
const LONG_DOUBLE_EPS: f64 = 1.084_202_172_485_504_4e-19;

/// The privacy loss of one Poisson-subsampled Gaussian step.
#[derive(Clone, Copy, Debug)]
struct Prv {
    q: f64,
    sigma: f64,
}

impl Prv {
    /// `P(Y ≤ t)` (Gopi et al., Proposition B4).
    fn cdf(&self, t: f64) -> f64 {
        let (q, s) = (self.q, self.sigma);
        if t <= (1.0 - q).ln() {
            return 0.0;
        }
        let z = ((t.exp() + q - 1.0) / q).ln();
        let sq = std::f64::consts::SQRT_2;
        1.0 - q * libm::erfc((2.0 * z * s * s - 1.0) / (2.0 * sq * s)) / 2.0
            - (1.0 - q) * libm::erfc((2.0 * z * s * s + 1.0) / (2.0 * sq * s)) / 2.0
    }
}

/// The PRV truncated to `[t_min, t_max)` and renormalised.
struct Truncated {
    prv: Prv,
    t_min: f64,
    t_max: f64,
    mass: f64,
    cdf_min: f64,
}

impl Truncated {
    fn new(prv: Prv, t_min: f64, t_max: f64) -> Self {
        let cdf_min = prv.cdf(t_min);
        Truncated {
            prv,
            t_min,
            t_max,
            mass: prv.cdf(t_max) - cdf_min,
            cdf_min,
        }
    }

    fn cdf(&self, t: f64) -> f64 {
        if t < self.t_min {
            0.0
        } else if t < self.t_max {
            (self.prv.cdf(t) - self.cdf_min) / self.mass
        } else {
            1.0
        }
    }

    /// `E[Y]` by `∫ t dF = [t F] − ∫ F`, piece by piece on a logarithmic grid around 0
    /// (where the mass sits) as Opacus splits it.
    fn mean(&self) -> f64 {
        let lower = self.t_min.abs().log10().trunc() as i32;
        let upper = self.t_max.log10().trunc() as i32;
        let logspace = |a: i32, b: i32| -> Vec<f64> {
            (0..10)
                .map(|k| 10f64.powf(a as f64 + (b - a) as f64 * k as f64 / 9.0))
                .collect()
        };
        let mut points = vec![self.t_min];
        points.extend(logspace(lower, -5).into_iter().map(|v| -v));
        points.push(0.0);
        points.extend(logspace(-5, upper));
        points.push(self.t_max);
        let f = |t: f64| self.cdf(t);
        points
            .windows(2)
            .map(|w| {
                let (l, r) = (w[0], w[1]);
                r * self.cdf(r) - l * self.cdf(l) - integrate(&f, l, r, 1e-13)
            })
            .sum()
    }
}

/// An evenly spaced grid `t_min, t_min + dt, …, t_max` of an even number of points.
#[derive(Clone, Copy, Debug)]
struct Domain {
    t_min: f64,
    t_max: f64,
    size: usize,
    shifts: f64,
}

impl Domain {
    fn aligned(t_min: f64, t_max: f64, dt: f64) -> Result<Self> {
        let t_min = (t_min / dt).floor() * dt;
        let mut t_max = (t_max / dt).ceil() * dt;
        let mut size = ((t_max - t_min) / dt).round() as usize + 1;
        if size % 2 == 1 {
            size += 1;
            t_max += dt;
        }
        let d = Domain {
            t_min,
            t_max,
            size,
            shifts: 0.0,
        };
        if ((d.dt() - dt) / dt).abs() >= 1e-8 {
            return Err(PrivacyError::Accountant(format!(
                "the PRV domain's mesh {} is not the requested {dt}",
                d.dt()
            )));
        }
        Ok(d)
    }

    fn dt(&self) -> f64 {
        (self.t_max - self.t_min) / (self.size - 1) as f64
    }

    fn shift_right(self, dt: f64) -> Self {
        Domain {
            t_min: self.t_min + dt,
            t_max: self.t_max + dt,
            size: self.size,
            shifts: self.shifts + dt,
        }
    }

    /// The points, as `numpy.linspace` makes them.
    fn ts(&self) -> Vec<f64> {
        let step = self.dt();
        let mut ts: Vec<f64> = (0..self.size)
            .map(|i| self.t_min + i as f64 * step)
            .collect();
        if let Some(last) = ts.last_mut()
            && self.size > 1
        {
            *last = self.t_max;
        }
        ts
    }
}

/// A discretised PRV.
struct Discrete {
    pmf: Vec<f64>,
    domain: Domain,
}

/// Mesh points per task of [`discretize`] (each costs two CDF evaluations).
const DISCRETIZE_PIECE: usize = 1024;

fn discretize(prv: &Truncated, domain: Domain) -> Result<Discrete> {
    let ts = domain.ts();
    let half = domain.dt() / 2.0;
    let pieces = parallel_map(ts.chunks(DISCRETIZE_PIECE).collect(), |piece| {
        piece
            .iter()
            .map(|&t| prv.cdf(t + half) - prv.cdf(t - half))
            .collect::<Vec<f64>>()
    });
    let pmf: Vec<f64> = pieces.concat();
    let mean_d: f64 = ts.iter().zip(&pmf).map(|(t, p)| t * p).sum();
    let shift = prv.mean() - mean_d;
    if shift.abs() >= half {
        return Err(PrivacyError::Accountant(
            "the discretised PRV's mean differs from the continuous one by more than half \
             a mesh step"
                .into(),
        ));
    }
    Ok(Discrete {
        pmf,
        domain: domain.shift_right(shift),
    })
}

/// `k` self-compositions of `d` by one FFT of the domain's length.
fn compose_fourier(d: &Discrete, k: u64) -> Discrete {
    let n = d.pmf.len();
    let plan = Plan::new(n);
    let x: Vec<Complex> = d.pmf.iter().map(|&p| Complex::new(p, 0.0)).collect();
    let powered: Vec<Complex> = plan.forward(&x).into_iter().map(|z| z.powu(k)).collect();
    let composed: Vec<f64> = plan
        .inverse(&powered)
        .into_iter()
        .map(|z| z.re / n as f64)
        .collect();
    // The sum of k variables on [t_min, t_max] starts at k·t_min: rolling by k − 1 (plus
    // half the length for even k) puts it back on the grid, as numpy.roll does.
    let mut m = (k - 1) as usize % n;
    if k.is_multiple_of(2) {
        m = (m + n / 2) % n;
    }
    let mut pmf = vec![0.0; n];
    for (i, v) in composed.into_iter().enumerate() {
        pmf[(i + m) % n] = v;
    }
    Discrete {
        pmf,
        domain: d.domain.shift_right(d.domain.shifts * (k - 1) as f64),
    }
}

/// Two different PRVs composed by linear convolution, centred (`mode="same"`).
fn compose_two(a: &Discrete, b: &Discrete) -> Discrete {
    let full = convolve(&a.pmf, &b.pmf);
    let n = a.pmf.len();
    let start = (full.len() - n) / 2;
    Discrete {
        pmf: full[start..start + n].to_vec(),
        domain: a.domain.shift_right(b.domain.shifts),
    }
}

impl Discrete {
    /// (lower bound, estimate, upper bound) of ε at `delta`.
    fn epsilon(&self, delta: f64, delta_error: f64, eps_error: f64) -> Result<[f64; 3]> {
        if delta <= 0.0 {
            return Ok([f64::INFINITY; 3]);
        }
        if LONG_DOUBLE_EPS * self.domain.size as f64 > delta - delta_error {
            return Err(PrivacyError::Accountant(
                "floating-point errors dominate for so small a delta: increase delta or \
                 eps_error"
                    .into(),
            ));
        }
        let ts = self.domain.ts();
        let n = ts.len();
        // Tail sums from the right, accumulated in order as numpy's cumsum does.
        let (mut d1, mut d2) = (vec![0.0; n], vec![0.0; n]);
        let (mut a1, mut a2) = (0.0, 0.0);
        for i in (0..n).rev() {
            a1 += self.pmf[i];
            a2 += self.pmf[i] * (-ts[i]).exp();
            d1[i] = a1;
            d2[i] = a2;
        }
        let ndelta: Vec<f64> = (0..n).map(|i| ts[i].exp() * d2[i] - d1[i]).collect();
        let find = |target: f64| -> Result<f64> {
            // numpy.searchsorted(ndelta, −target, side="left")
            let v = -target;
            let (mut lo, mut hi) = (0usize, n);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if ndelta[mid] < v {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            if lo == 0 || lo >= n {
                return Err(PrivacyError::Accountant(
                    "epsilon lies outside the PRV domain".into(),
                ));
            }
            Ok(((d1[lo] - target) / d2[lo]).ln())
        };
        Ok([
            find(delta + delta_error)? - eps_error,
            find(delta)?,
            find(delta - delta_error)? + eps_error,
        ])
    }
}

/// The RDP ε of a history at `delta` (the domain bound needs it).
fn rdp_epsilon(history: &[(f64, f64, u64)], delta: f64) -> Result<f64> {
    let orders = default_orders();
    let mut rdp = vec![0.0; orders.len()];
    for &(sigma, q, steps) in history {
        for (r, &a) in rdp.iter_mut().zip(&orders) {
            *r += rdp_step(q, sigma, a)? * steps as f64;
        }
    }
    Ok(rdp_to_epsilon(&orders, &rdp, delta).0)
}

/// The (lower, estimate, upper) ε at `delta` of a history of `(σ, q, steps)`.
pub(crate) fn prv_epsilon(
    history: &[(f64, f64, u64)],
    delta: f64,
    eps_error: f64,
    delta_error: f64,
) -> Result<[f64; 3]> {
    let total: u64 = history.iter().map(|h| h.2).sum();
    // The safe domain of Remark 5.6, as the reference implementation computes it.
    let mut l_max = rdp_epsilon(history, delta_error / 4.0)?;
    for &(sigma, q, _) in history {
        let one = rdp_epsilon(&[(sigma, q, 1)], delta_error / (8.0 * total as f64))?;
        l_max = l_max.max(one);
    }
    let l = l_max.max(eps_error) + 3.0;
    let mesh = eps_error / (total as f64 * (12.0 / delta_error).ln() / 2.0).sqrt();
    let domain = Domain::aligned(-l, l, mesh)?;
    if domain.size > 1 << 26 {
        return Err(PrivacyError::Accountant(format!(
            "the PRV domain would have {} points; increase eps_error",
            domain.size
        )));
    }
    let mut composed: Vec<Discrete> = Vec::with_capacity(history.len());
    for &(sigma, q, steps) in history {
        let prv = Truncated::new(Prv { q, sigma }, domain.t_min, domain.t_max);
        let d = discretize(&prv, domain)?;
        composed.push(compose_fourier(&d, steps));
    }
    // Neighbours convolved pairwise until one is left, the odd one out carried along.
    while composed.len() > 1 {
        let mut next = Vec::with_capacity(composed.len().div_ceil(2));
        if composed.len() % 2 == 1 {
            next.push(composed.pop().expect("non-empty"));
        }
        let mut it = composed.into_iter();
        while let (Some(a), Some(b)) = (it.next(), it.next()) {
            next.push(compose_two(&a, &b));
        }
        composed = next;
    }
    let d = composed.pop().ok_or_else(|| {
        PrivacyError::Accountant("an empty history has no privacy loss to compose".into())
    })?;
    d.epsilon(delta, delta_error, eps_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prv_cdf_is_a_distribution() {
        let prv = Prv {
            q: 0.01,
            sigma: 1.0,
        };
        assert_eq!(prv.cdf((0.99f64).ln() - 1e-9), 0.0);
        assert!(prv.cdf(30.0) > 1.0 - 1e-12);
        let mut last = 0.0;
        for k in -40..400 {
            let c = prv.cdf(k as f64 * 0.05);
            assert!(c >= last - 1e-15);
            last = c;
        }
    }

    #[test]
    fn without_subsampling_one_step_matches_the_gaussian_mechanism() {
        // The Gaussian mechanism with σ = 1: δ(ε) = Φ(−ε + ½) − e^ε Φ(−ε − ½)
        // (Balle & Wang 2018); at ε = 1 that is 0.12693673750664397.
        let [lo, est, hi] =
            prv_epsilon(&[(1.0, 1.0, 1)], 0.126_936_737_506_643_97, 0.01, 1e-6).unwrap();
        assert!((est - 1.0).abs() < 2e-3, "{est}");
        assert!(lo <= 1.0 && hi >= 1.0);
    }
}
