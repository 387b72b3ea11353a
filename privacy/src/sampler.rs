//! Poisson sampling: each step includes every sample independently with probability `q`,
//! so batch sizes vary around `q·n` — the sampling the accountants' subsampled-Gaussian
//! analysis assumes (a fixed-size shuffled batch is a different mechanism, whose privacy
//! amplification the RDP and PRV bounds do not cover).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::Result;
use crate::error::config;
use crate::noise::os_seeded;

/// Draws Poisson-sampled batches of indices into a data set of `len` samples, like
/// Opacus's `UniformWithReplacementSampler`: an epoch is `⌊1/q⌋` steps, and every step
/// keeps each index with probability `q` (a 64-bit uniform below `q·2⁶⁴`), so a batch may
/// also be empty. The indices come out in increasing order; feed them to a data loader
/// that reads batches by index (strata-models' `DataLoader::batch`).
///
/// ```
/// use strata_privacy::PoissonSampler;
///
/// let mut sampler = PoissonSampler::seeded(60_000, 256.0 / 60_000.0, 0)?;
/// assert_eq!(sampler.steps_per_epoch(), 234);
/// let batch = sampler.sample();
/// assert!(batch.len() > 150 && batch.len() < 380); // about 256
/// assert!(batch.windows(2).all(|w| w[0] < w[1]));
/// # Ok::<(), strata_privacy::PrivacyError>(())
/// ```
pub struct PoissonSampler {
    len: usize,
    rate: f64,
    threshold: u64,
    rng: StdRng,
    secure: bool,
    /// `(rank, ranks)`: this sampler draws only from the indices `i ≡ rank (mod ranks)`.
    shard: (usize, usize),
}

impl PoissonSampler {
    fn with_rng(len: usize, sample_rate: f64, rng: StdRng, secure: bool) -> Result<Self> {
        if !(sample_rate > 0.0 && sample_rate <= 1.0) {
            return Err(config(
                "PoissonSampler",
                format!("the sample rate must be within (0, 1], got {sample_rate}"),
            ));
        }
        // P(u < threshold) = threshold / 2⁶⁴ = q (q = 1 keeps every index).
        let threshold = if sample_rate >= 1.0 {
            u64::MAX
        } else {
            (sample_rate * 2f64.powi(64)) as u64
        };
        Ok(PoissonSampler {
            len,
            rate: sample_rate,
            threshold,
            rng,
            secure,
            shard: (0, 1),
        })
    }

    /// A sampler drawing from a generator seeded by the operating system (which samples
    /// are in a batch is part of what the guarantee keeps secret).
    ///
    /// # Errors
    /// [`PrivacyError::Config`](crate::PrivacyError::Config) for a rate outside (0, 1] or
    /// a failing OS generator.
    pub fn new(len: usize, sample_rate: f64) -> Result<Self> {
        Self::with_rng(len, sample_rate, os_seeded()?, true)
    }

    /// A reproducible sampler (for tests and experiments; not private).
    ///
    /// # Errors
    /// As [`new`](PoissonSampler::new).
    pub fn seeded(len: usize, sample_rate: f64, seed: u64) -> Result<Self> {
        Self::with_rng(len, sample_rate, StdRng::seed_from_u64(seed), false)
    }

    /// This rank's shard of the data set, for DP-SGD across `ranks` processes: from now on
    /// the sampler keeps, with the same probability `q`, only the indices `i` with
    /// `i mod ranks = rank` (still numbered in the whole data set). The ranks' shards are
    /// disjoint and cover the data set, so the union of their batches is a Poisson sample
    /// of all `len` samples at rate `q`: the sample rate, the expected batch size `q·len`
    /// and the steps per epoch stay those of one process (see
    /// [`ProcessGroup`](crate::ProcessGroup)). A seeded sampler derives a stream of its own
    /// for each rank from its seed.
    ///
    /// ```
    /// use strata_privacy::PoissonSampler;
    ///
    /// let mut rank1 = PoissonSampler::seeded(1000, 0.5, 0)?.shard(1, 4)?;
    /// assert_eq!(rank1.expected_batch_size(), 500.0); // over all ranks
    /// assert!(rank1.sample().iter().all(|i| i % 4 == 1));
    /// # Ok::<(), strata_privacy::PrivacyError>(())
    /// ```
    ///
    /// # Errors
    /// [`PrivacyError::Config`](crate::PrivacyError::Config) for `rank >= ranks`.
    pub fn shard(mut self, rank: usize, ranks: usize) -> Result<Self> {
        if rank >= ranks {
            return Err(config(
                "PoissonSampler::shard",
                format!("rank {rank} of {ranks} ranks"),
            ));
        }
        if !self.secure {
            // Every rank starts from the same seed: one draw, the same on all, mixed with
            // the rank (a SplitMix64 constant) seeds each rank's own stream.
            let base = self.rng.next_u64();
            let mixed = base ^ (rank as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            self.rng = StdRng::seed_from_u64(mixed);
        }
        self.shard = (rank, ranks);
        Ok(self)
    }

    /// The sample rate `q`.
    pub fn sample_rate(&self) -> f64 {
        self.rate
    }

    /// The expected batch size `q·n` (over all ranks for a [`shard`](PoissonSampler::shard)).
    pub fn expected_batch_size(&self) -> f64 {
        self.rate * self.len as f64
    }

    /// Steps per epoch, `⌊1/q⌋` (at least 1), as Opacus counts them.
    pub fn steps_per_epoch(&self) -> usize {
        ((1.0 / self.rate).floor() as usize).max(1)
    }

    /// Whether the sampler draws from the OS-seeded generator.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// One batch: every index (of this rank's shard) kept independently with probability
    /// `q`, in order.
    pub fn sample(&mut self) -> Vec<usize> {
        let (rank, ranks) = self.shard;
        let expected = self.expected_batch_size() / ranks as f64;
        let mut out = Vec::with_capacity((expected * 1.2) as usize + 8);
        for i in (rank..self.len).step_by(ranks) {
            if self.threshold == u64::MAX || self.rng.next_u64() < self.threshold {
                out.push(i);
            }
        }
        out
    }

    /// The batches of one epoch.
    pub fn epoch(&mut self) -> impl Iterator<Item = Vec<usize>> + '_ {
        let steps = self.steps_per_epoch();
        (0..steps).map(move |_| self.sample())
    }
}
