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
//! - `Z` itself comes from the ziggurat (Marsaglia and Tsang 2000, 256 layers, its tail by
//!   Marsaglia's exact method) on 53-bit uniforms in doubles. Its cell masses are the
//!   Gaussian's up to the layers' floating-point boundaries and the 53-bit resolution
//!   (relative errors of order 10⁻¹⁵ on cells of width 2⁻³⁰), which is data-independent
//!   but not formally bounded here; the tail reaches about |Z| = 40 (the smallest uniform
//!   is 2⁻⁵⁴). An exact discrete Gaussian sampler (Canonne, Kamath and Steinke 2020) would
//!   close the gap, at a cost of many more random draws per coordinate.
//! - Timing side channels of the sampler are not addressed.

use rand::rngs::{StdRng, SysRng};
use rand::{Rng, SeedableRng};

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

/// The ziggurat of Marsaglia and Tsang (2000, "The Ziggurat Method for Generating Random
/// Variables") for the standard normal: 256 layers of equal area `v` under
/// `f(x) = e^{−x²/2}`, the base layer's tail beyond `r` sampled by Marsaglia's method. A
/// draw is one 64-bit word (8 bits pick the layer, 53 the position) in 99 % of cases.
/// The boundaries are computed here from `r` alone (`v` follows from it by the area of
/// the base layer), not copied from tables.
struct Ziggurat {
    /// `x[0] = v/f(r)` (the base layer's virtual width), `x[1] = r`, …, `x[256] = 0`.
    x: [f64; 257],
    /// `f(x[i])`.
    f: [f64; 257],
}

/// The base layer's right edge for 256 layers.
const ZIGGURAT_R: f64 = 3.654_152_885_361_009;

fn ziggurat() -> &'static Ziggurat {
    static TABLE: std::sync::OnceLock<Ziggurat> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let f = |x: f64| (-0.5 * x * x).exp();
        let r = ZIGGURAT_R;
        // The area of each layer: the base rectangle r·f(r) plus the tail ∫_r^∞ f.
        let v = r * f(r)
            + (std::f64::consts::PI / 2.0).sqrt() * libm::erfc(r / std::f64::consts::SQRT_2);
        let mut x = [0.0; 257];
        x[0] = v / f(r);
        x[1] = r;
        for i in 2..256 {
            x[i] = (-2.0 * (v / x[i - 1] + f(x[i - 1])).ln()).sqrt();
        }
        x[256] = 0.0;
        let mut fx = [0.0; 257];
        for i in 0..257 {
            fx[i] = f(x[i]);
        }
        Ziggurat { x, f: fx }
    })
}

/// A uniform in (0, 1) from 53 random bits.
fn open01<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    ((rng.next_u64() >> 11) as f64 + 0.5) * (-53f64).exp2()
}

/// One standard normal draw by the ziggurat.
fn standard_normal<R: Rng + ?Sized>(rng: &mut R, z: &Ziggurat) -> f64 {
    loop {
        let bits = rng.next_u64();
        let i = (bits & 0xff) as usize;
        // Uniform in [−1, 1) from the top 53 bits (disjoint from the layer's 8).
        let u = 2.0 * ((bits >> 11) as f64 * (-53f64).exp2()) - 1.0;
        let x = u * z.x[i];
        if x.abs() < z.x[i + 1] {
            return x;
        }
        if i == 0 {
            // The tail beyond r (Marsaglia 1964).
            loop {
                let a = -open01(rng).ln() / ZIGGURAT_R;
                let b = -open01(rng).ln();
                if 2.0 * b > a * a {
                    return if u < 0.0 {
                        -(ZIGGURAT_R + a)
                    } else {
                        ZIGGURAT_R + a
                    };
                }
            }
        }
        if z.f[i + 1] + (z.f[i] - z.f[i + 1]) * open01(rng) < (-0.5 * x * x).exp() {
            return x;
        }
    }
}

/// `x` rounded to the nearest integer (ties to even), without a libm call, for
/// `|x| < 2⁵¹`: adding and subtracting 1.5·2⁵² leaves no fraction bits.
fn round_small(x: f64) -> f64 {
    const MAGIC: f64 = 6_755_399_441_055_744.0;
    if x.abs() < 2_251_799_813_685_248.0 {
        (x + MAGIC) - MAGIC
    } else {
        x.round()
    }
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
        standard_normal(&mut self.rng, ziggurat())
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
        // One call per chunk, on strata's threads: each reports the first value of its
        // chunk that left the grid.
        let jobs: Vec<_> = values.chunks_mut(CHUNK).zip(seeds).collect();
        let bad = strata_tensor::parallel_map(jobs, |(chunk, seed)| {
            let mut rng = StdRng::from_seed(seed);
            let table = ziggurat();
            let mut bad = None;
            for v in chunk.iter_mut() {
                let z = standard_normal(&mut rng, table);
                let m = round_small(*v / delta);
                let k = round_small(scale * z);
                let out = m + k;
                if out.is_nan() || out.abs() >= limit {
                    bad.get_or_insert(*v);
                }
                *v = out * delta;
            }
            bad
        })
        .into_iter()
        .flatten()
        .next();
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
