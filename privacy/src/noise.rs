//! Gaussian noise for DP-SGD: from a cryptographically secure generator seeded by the
//! operating system, added exactly on a grid so that floating-point arithmetic cannot
//! leak what it was added to.
//!
//! # The generator
//!
//! By default the noise comes from rand's `StdRng` (ChaCha12, a CSPRNG) seeded from the
//! OS (`getrandom`); nobody who sees the model can predict or replay the noise. A seeded
//! generator exists for tests and reproducible experiments; the guarantee it gives is
//! recorded as *not private* ([`GaussianNoise::is_secure`]), because anyone who knows the
//! seed can subtract the noise.
//!
//! # The floating-point attack, and what strata does about it
//!
//! Differential privacy is proved for real-valued noise, but computers add floating-point
//! noise. Mironov (2012, "On significance of the least significant bits for differential
//! privacy") showed that the textbook Laplace sampler `−b·ln(U)` on doubles produces only
//! some floating-point values, and that the set of values `x + noise` can reach depends
//! on `x`: from a single output an attacker can often tell which of two neighbouring
//! inputs produced it, destroying the guarantee. Jin, McMurtry, Rubinstein and
//! Ohrimenko (2022, "Are We There Yet? Timing and Floating-Point Attacks on Differential
//! Privacy Systems") carried the attack to Gaussian samplers (Box–Muller, polar,
//! ziggurat) as used by DP libraries, Opacus included, and Haney et al. / Holohan and
//! Braghin (2021, "Secure Random Sampling in Differential Privacy") proposed mitigations —
//! Opacus's `secure_mode` sums four Gaussian draws, which makes the attack expensive but
//! keeps floating-point rounding data-dependent.
//!
//! strata removes the data-dependent rounding instead. With `std = σ·C`, let
//! `Δ = 2^{⌊log₂ std⌋ − 30}` (a power of two, about `std/2³⁰`). Each coordinate `s` of the
//! clipped sum is rounded to the grid, `m = round(s/Δ)` (exact: dividing by a power of two
//! is exact), and the noise is an integer number of grid steps, `k = round(std/Δ · Z)` with
//! `Z` standard normal. The output `(m + k)·Δ` is computed exactly (integers below 2⁵³
//! times a power of two), and since `m` is an integer it equals `Δ·round(s_Δ + std·Z/Δ)`
//! for `s_Δ = m·Δ`: the output is the continuous Gaussian mechanism applied to the
//! rounded sum, followed by rounding to the grid — post-processing, whose result no
//! longer depends on how the floating-point `x + noise` would have rounded. What the
//! output can be (the grid) and how likely each point is (the mass of `Z`'s cells of
//! width 2⁻³⁰) do not depend on the data.
//!
//! What this does and does not cover, honestly:
//! - Rounding the sum moves each coordinate by at most `Δ/2`, so neighbouring sums
//!   differ by up to `C + √d·Δ` instead of `C` (`d` coordinates). The accountant is given
//!   the noise multiplier for that sensitivity, `σ / (1 + √d·Δ/C)`
//!   ([`effective_noise_multiplier`](GaussianNoise::effective_noise_multiplier)): about
//!   1 − 10⁻⁶·σ for a million parameters.
//! - `Z` itself comes from the Box–Muller transform on two 64-bit uniforms in doubles. Its
//!   cell masses are the Gaussian's up to floating-point error in `ln`, `sqrt`, `sin` and
//!   `cos` (relative 10⁻¹⁵ or so), which is data-independent but not formally bounded here;
//!   and its tails end at |Z| ≈ 9.4 (the smallest uniform is 2⁻⁶⁵), a probability of
//!   about 2·10⁻²¹ per coordinate that a formal treatment would add to δ. An exact
//!   discrete Gaussian sampler (Canonne, Kamath and Steinke 2020) would close both gaps,
//!   at a cost of many more random draws per coordinate.
//! - Timing side channels of the sampler are not addressed.

use rand::rngs::{StdRng, SysRng};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::error::config;
use crate::{PrivacyError, Result};

/// Coordinates per task (each task has its own generator, seeded in order from the main
/// one, so the noise does not depend on the thread count).
const CHUNK: usize = 1 << 14;

/// Grid steps per noise standard deviation, as a power of two.
const GRID_BITS: i32 = 30;

/// A source of Gaussian noise (see the module docs).
///
/// ```
/// use strata_privacy::GaussianNoise;
///
/// let mut noise = GaussianNoise::secure()?;
/// assert!(noise.is_secure());
/// let mut sum = vec![0.25f64; 4];
/// noise.add_noise(&mut sum, 1.5)?; // N(0, 1.5²) on each coordinate
/// assert!(sum.iter().all(|v| v.is_finite()));
/// // Seeded noise repeats, and is recorded as not private.
/// let (mut a, mut b) = (GaussianNoise::seeded(7), GaussianNoise::seeded(7));
/// let (mut x, mut y) = (vec![0.0; 3], vec![0.0; 3]);
/// a.add_noise(&mut x, 1.0)?;
/// b.add_noise(&mut y, 1.0)?;
/// assert_eq!(x, y);
/// assert!(!a.is_secure());
/// # Ok::<(), strata_privacy::PrivacyError>(())
/// ```
pub struct GaussianNoise {
    rng: StdRng,
    seed: Option<u64>,
}

impl std::fmt::Debug for GaussianNoise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GaussianNoise")
            .field("secure", &self.is_secure())
            .finish()
    }
}

/// A generator seeded from the operating system.
pub(crate) fn os_seeded() -> Result<StdRng> {
    StdRng::try_from_rng(&mut SysRng).map_err(|e| {
        config(
            "GaussianNoise",
            format!("the operating system's random generator failed: {e}"),
        )
    })
}

/// A standard normal pair by Box–Muller from two 64-bit uniforms: `u ∈ (0, 1]` with
/// 2⁻⁶⁵ resolution near 0 (the tails reach |Z| ≈ 9.4), `θ` uniform on 53 bits.
fn normal_pair<R: Rng + ?Sized>(rng: &mut R) -> (f64, f64) {
    let u = (rng.next_u64() as f64 + 0.5) * (-64f64).exp2();
    let v = (rng.next_u64() >> 11) as f64 * (-53f64).exp2();
    let r = (-2.0 * u.min(1.0).ln()).sqrt();
    let (s, c) = (std::f64::consts::TAU * v).sin_cos();
    (r * c, r * s)
}

impl GaussianNoise {
    /// Noise from ChaCha12 seeded by the operating system: the private default.
    ///
    /// # Errors
    /// [`PrivacyError::Config`] when the OS generator fails.
    pub fn secure() -> Result<Self> {
        Ok(GaussianNoise {
            rng: os_seeded()?,
            seed: None,
        })
    }

    /// Noise from ChaCha12 seeded with `seed`: reproducible, and therefore not private.
    pub fn seeded(seed: u64) -> Self {
        GaussianNoise {
            rng: StdRng::seed_from_u64(seed),
            seed: Some(seed),
        }
    }

    /// Whether the noise is private (seeded by the OS, not by a known seed).
    pub fn is_secure(&self) -> bool {
        self.seed.is_none()
    }

    /// The seed of a seeded source.
    pub fn seed(&self) -> Option<u64> {
        self.seed
    }

    /// The grid the noise of standard deviation `std` is added on: `2^{⌊log₂ std⌋ − 30}`.
    pub fn grid(std: f64) -> f64 {
        2f64.powi(std.log2().floor() as i32 - GRID_BITS)
    }

    /// The noise multiplier to account for when noise of `noise_multiplier · max_grad_norm`
    /// is added on the grid to a sum of `dims` coordinates: rounding to the grid adds up to
    /// `√dims · Δ` to the sum's sensitivity (see the module docs).
    pub fn effective_noise_multiplier(
        noise_multiplier: f64,
        max_grad_norm: f64,
        dims: usize,
    ) -> f64 {
        let std = noise_multiplier * max_grad_norm;
        if std <= 0.0 || max_grad_norm <= 0.0 {
            return noise_multiplier;
        }
        noise_multiplier / (1.0 + (dims as f64).sqrt() * Self::grid(std) / max_grad_norm)
    }

    /// One standard normal draw (for tests of the sampler).
    pub fn standard_normal(&mut self) -> f64 {
        normal_pair(&mut self.rng).0
    }

    /// Adds N(0, std²) noise to every value, exactly on the grid of `std` (see the
    /// module docs); `std = 0` leaves the values alone.
    ///
    /// # Errors
    /// [`PrivacyError::Config`] for a negative or non-finite `std`, a non-finite value, or
    /// a value too large for exact arithmetic on the grid (beyond 2⁵³ grid steps, about
    /// 8·10⁶ standard deviations).
    pub fn add_noise(&mut self, values: &mut [f64], std: f64) -> Result<()> {
        if !(std.is_finite() && std >= 0.0) {
            return Err(config(
                "GaussianNoise",
                format!("the standard deviation must be finite and non-negative, got {std}"),
            ));
        }
        if std == 0.0 {
            return Ok(());
        }
        let delta = Self::grid(std);
        let scale = std / delta;
        let limit = 2f64.powi(53);
        let seeds: Vec<[u8; 32]> = (0..values.len().div_ceil(CHUNK))
            .map(|_| {
                let mut s = [0u8; 32];
                self.rng.fill_bytes(&mut s);
                s
            })
            .collect();
        let bad = values
            .par_chunks_mut(CHUNK)
            .zip(seeds)
            .map(|(chunk, seed)| {
                let mut rng = StdRng::from_seed(seed);
                let mut bad = None;
                for pair in chunk.chunks_mut(2) {
                    let (z0, z1) = normal_pair(&mut rng);
                    for (v, z) in pair.iter_mut().zip([z0, z1]) {
                        let m = (*v / delta).round();
                        let k = (scale * z).round();
                        let out = m + k;
                        if out.is_nan() || out.abs() >= limit {
                            bad.get_or_insert(*v);
                        }
                        *v = out * delta;
                    }
                }
                bad
            })
            .reduce(|| None, |a, b| a.or(b));
        match bad {
            Some(v) => Err(PrivacyError::Config {
                what: "GaussianNoise",
                msg: format!(
                    "the value {v} is too large (or not finite) for noise of standard \
                     deviation {std} added exactly on its grid"
                ),
            }),
            None => Ok(()),
        }
    }
}
