//! Privacy accountants: how much privacy a run of DP-SGD has spent, as ε for a δ.
//!
//! Each step of DP-SGD is the Gaussian mechanism (noise multiplier σ) on a Poisson sample
//! of the data (rate q). An accountant keeps the history of `(σ, q, steps)` and composes
//! it:
//!
//! - [`RdpAccountant`]: Rényi DP at Opacus's orders (1.1 … 10.9, 12 … 63), converted to
//!   (ε, δ) by Balle et al. 2020; fast, a slight overestimate.
//! - [`PrvAccountant`]: numerical composition of the privacy loss distributions (Gopi et
//!   al. 2021) with an FFT; tighter, and reports an upper bound that accounts for its own
//!   discretisation error (`eps_error`, `delta_error`).
//!
//! Both agree with Opacus 1.6 (see `privacy/tests/fixtures/generate.py`): the RDP values
//! to 1e-6 relative, the PRV bounds within their stated error.
//!
//! ```
//! use strata_privacy::{Accountant, PrvAccountant, RdpAccountant, noise_multiplier, AccountantKind};
//!
//! let mut rdp = RdpAccountant::new();
//! rdp.step_many(1.1, 256.0 / 60_000.0, 2_350)?; // 10 epochs of MNIST at batch 256
//! let eps = rdp.epsilon(1e-5)?;
//! assert!(eps > 1.0 && eps < 3.0, "{eps}");
//! // And the noise multiplier that reaches ε = 3 in those steps:
//! let sigma = noise_multiplier(AccountantKind::Rdp, 3.0, 1e-5, 256.0 / 60_000.0, 2_350)?;
//! assert!(sigma < 1.1);
//! # Ok::<(), strata_privacy::PrivacyError>(())
//! ```

pub(crate) mod fft;
mod prv;
pub mod rdp;
pub(crate) mod special;

use crate::error::config;
use crate::{PrivacyError, Result};

/// The accountants, by name (for configurations and records).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AccountantKind {
    /// Rényi DP ([`RdpAccountant`]).
    #[default]
    Rdp,
    /// Numerical composition of PRVs ([`PrvAccountant`]).
    Prv,
}

impl AccountantKind {
    /// `"rdp"` or `"prv"`, Opacus's names.
    pub fn name(self) -> &'static str {
        match self {
            AccountantKind::Rdp => "rdp",
            AccountantKind::Prv => "prv",
        }
    }

    /// A fresh accountant of this kind.
    pub fn make(self) -> Box<dyn Accountant> {
        match self {
            AccountantKind::Rdp => Box::new(RdpAccountant::new()),
            AccountantKind::Prv => Box::new(PrvAccountant::new()),
        }
    }
}

/// Tracks the steps of the subsampled Gaussian mechanism and converts them to ε.
pub trait Accountant: Send + Sync {
    /// The history: `(noise multiplier, sample rate, steps)`, consecutive equal steps
    /// merged.
    fn history(&self) -> &[(f64, f64, u64)];

    /// Records `steps` steps with noise multiplier `noise_multiplier` at sample rate
    /// `sample_rate`.
    ///
    /// # Errors
    /// [`PrivacyError::Config`] for a negative or non-finite noise multiplier or a rate
    /// outside `[0, 1]`.
    fn step_many(&mut self, noise_multiplier: f64, sample_rate: f64, steps: u64) -> Result<()>;

    /// Records one step.
    ///
    /// # Errors
    /// As [`step_many`](Accountant::step_many).
    fn step(&mut self, noise_multiplier: f64, sample_rate: f64) -> Result<()> {
        self.step_many(noise_multiplier, sample_rate, 1)
    }

    /// ε spent so far at `delta` (0 before any step).
    ///
    /// # Errors
    /// [`PrivacyError::Config`] for a δ outside `(0, 1)`; [`PrivacyError::Accountant`]
    /// when the computation fails.
    fn epsilon(&self, delta: f64) -> Result<f64>;

    /// Which accountant this is.
    fn kind(&self) -> AccountantKind;
}

fn push_history(history: &mut Vec<(f64, f64, u64)>, sigma: f64, q: f64, steps: u64) -> Result<()> {
    if !(sigma.is_finite() && sigma >= 0.0) {
        return Err(config(
            "noise_multiplier",
            format!("must be finite and non-negative, got {sigma}"),
        ));
    }
    if !(0.0..=1.0).contains(&q) {
        return Err(config(
            "sample_rate",
            format!("must be within [0, 1], got {q}"),
        ));
    }
    if steps == 0 {
        return Ok(());
    }
    match history.last_mut() {
        Some(last) if last.0 == sigma && last.1 == q => last.2 += steps,
        _ => history.push((sigma, q, steps)),
    }
    Ok(())
}

fn check_delta(delta: f64) -> Result<()> {
    if !(delta > 0.0 && delta < 1.0) {
        return Err(config(
            "delta",
            format!("must be within (0, 1), got {delta}"),
        ));
    }
    Ok(())
}

/// The Rényi DP accountant (Opacus's `RDPAccountant`).
#[derive(Clone, Debug)]
pub struct RdpAccountant {
    history: Vec<(f64, f64, u64)>,
    orders: Vec<f64>,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        Self::new()
    }
}

impl RdpAccountant {
    /// An accountant over Opacus's orders.
    pub fn new() -> Self {
        RdpAccountant {
            history: Vec::new(),
            orders: rdp::default_orders(),
        }
    }

    /// An accountant over other orders (each above 1).
    ///
    /// # Errors
    /// [`PrivacyError::Config`] for an order ≤ 1 or no orders.
    pub fn with_orders(orders: Vec<f64>) -> Result<Self> {
        if orders.is_empty() || orders.iter().any(|&a| a.is_nan() || a <= 1.0) {
            return Err(config(
                "orders",
                format!("must all be above 1, got {orders:?}"),
            ));
        }
        Ok(RdpAccountant {
            history: Vec::new(),
            orders,
        })
    }

    /// The RDP of the history at each order.
    ///
    /// # Errors
    /// [`PrivacyError::Accountant`] when a series fails.
    pub fn rdp(&self) -> Result<Vec<f64>> {
        let mut total = vec![0.0; self.orders.len()];
        for &(sigma, q, steps) in &self.history {
            for (t, &a) in total.iter_mut().zip(&self.orders) {
                *t += rdp::rdp_step(q, sigma, a)? * steps as f64;
            }
        }
        Ok(total)
    }

    /// ε at `delta` and the order that attains it.
    ///
    /// # Errors
    /// As [`Accountant::epsilon`].
    pub fn epsilon_and_order(&self, delta: f64) -> Result<(f64, f64)> {
        check_delta(delta)?;
        if self.history.is_empty() {
            return Ok((0.0, f64::NAN));
        }
        Ok(rdp::rdp_to_epsilon(&self.orders, &self.rdp()?, delta))
    }
}

impl Accountant for RdpAccountant {
    fn history(&self) -> &[(f64, f64, u64)] {
        &self.history
    }

    fn step_many(&mut self, noise_multiplier: f64, sample_rate: f64, steps: u64) -> Result<()> {
        push_history(&mut self.history, noise_multiplier, sample_rate, steps)
    }

    fn epsilon(&self, delta: f64) -> Result<f64> {
        Ok(self.epsilon_and_order(delta)?.0)
    }

    fn kind(&self) -> AccountantKind {
        AccountantKind::Rdp
    }
}

/// The PRV accountant (Opacus's `PRVAccountant`): ε is the upper bound
/// `ε(δ − δ_err) + ε_err`, with `eps_error` 0.01 and `delta_error` δ/1000 by default.
#[derive(Clone, Debug)]
pub struct PrvAccountant {
    history: Vec<(f64, f64, u64)>,
    eps_error: f64,
    delta_error: Option<f64>,
}

impl Default for PrvAccountant {
    fn default() -> Self {
        Self::new()
    }
}

impl PrvAccountant {
    /// Opacus's defaults: `eps_error` 0.01, `delta_error` δ/1000.
    pub fn new() -> Self {
        PrvAccountant {
            history: Vec::new(),
            eps_error: 0.01,
            delta_error: None,
        }
    }

    /// Other error targets (`delta_error = None` is δ/1000).
    ///
    /// # Errors
    /// [`PrivacyError::Config`] for a non-positive error.
    pub fn with_errors(eps_error: f64, delta_error: Option<f64>) -> Result<Self> {
        let positive = |v: f64| v > 0.0 && v.is_finite();
        if !positive(eps_error) || delta_error.is_some_and(|d| !positive(d)) {
            return Err(config(
                "PrvAccountant",
                format!("errors must be positive, got {eps_error} and {delta_error:?}"),
            ));
        }
        Ok(PrvAccountant {
            history: Vec::new(),
            eps_error,
            delta_error,
        })
    }

    /// (lower bound, estimate, upper bound) of ε at `delta`.
    ///
    /// # Errors
    /// As [`Accountant::epsilon`].
    pub fn epsilon_bounds(&self, delta: f64) -> Result<[f64; 3]> {
        check_delta(delta)?;
        if self.history.is_empty() {
            return Ok([0.0; 3]);
        }
        let delta_error = self.delta_error.unwrap_or(delta / 1000.0);
        prv::prv_epsilon(&self.history, delta, self.eps_error, delta_error)
    }
}

impl Accountant for PrvAccountant {
    fn history(&self) -> &[(f64, f64, u64)] {
        &self.history
    }

    fn step_many(&mut self, noise_multiplier: f64, sample_rate: f64, steps: u64) -> Result<()> {
        push_history(&mut self.history, noise_multiplier, sample_rate, steps)
    }

    fn epsilon(&self, delta: f64) -> Result<f64> {
        Ok(self.epsilon_bounds(delta)?[2])
    }

    fn kind(&self) -> AccountantKind {
        AccountantKind::Prv
    }
}

/// The largest noise multiplier [`noise_multiplier`] tries before giving up.
const MAX_SIGMA: f64 = 1e6;

/// The noise multiplier σ with which `steps` steps at `sample_rate` spend at most
/// `target_epsilon` at `target_delta`, by bisection to within 0.01 of the target, as
/// Opacus's `get_noise_multiplier` (same search, same result).
///
/// # Errors
/// [`PrivacyError::Config`] for a target that is not positive, a rate outside (0, 1] or no
/// steps; [`PrivacyError::Accountant`] when no σ up to 10⁶ reaches the target.
pub fn noise_multiplier(
    kind: AccountantKind,
    target_epsilon: f64,
    target_delta: f64,
    sample_rate: f64,
    steps: u64,
) -> Result<f64> {
    if !(target_epsilon > 0.0 && target_epsilon.is_finite()) {
        return Err(config(
            "target_epsilon",
            format!("must be positive, got {target_epsilon}"),
        ));
    }
    check_delta(target_delta)?;
    if !(sample_rate > 0.0 && sample_rate <= 1.0) || steps == 0 {
        return Err(config(
            "noise_multiplier",
            format!("needs a sample rate in (0, 1] and steps > 0, got {sample_rate} and {steps}"),
        ));
    }
    let eps_at = |sigma: f64| -> Result<f64> {
        let mut acc = kind.make();
        acc.step_many(sigma, sample_rate, steps)?;
        acc.epsilon(target_delta)
    };
    const TOLERANCE: f64 = 0.01;
    let (mut sigma_low, mut sigma_high) = (0.0f64, 10.0f64);
    let mut eps_high = f64::INFINITY;
    while eps_high > target_epsilon {
        sigma_high *= 2.0;
        eps_high = eps_at(sigma_high)?;
        if sigma_high > MAX_SIGMA {
            return Err(PrivacyError::Accountant(format!(
                "no noise multiplier up to {MAX_SIGMA} reaches ε = {target_epsilon}: the \
                 privacy budget is too low"
            )));
        }
    }
    while target_epsilon - eps_high > TOLERANCE {
        let sigma = (sigma_low + sigma_high) / 2.0;
        let eps = eps_at(sigma)?;
        if eps < target_epsilon {
            sigma_high = sigma;
            eps_high = eps;
        } else {
            sigma_low = sigma;
        }
    }
    Ok(sigma_high)
}
