//! DP-SGD across processes: what [`DpSgd`](crate::DpSgd) needs from the ranks it trains
//! with, so that strata-privacy stays free of any transport (strata-distributed implements
//! [`ProcessGroup`] for its MPI `Communicator`).
//!
//! # The mechanism with N ranks
//!
//! The data set of `n` samples is split into N disjoint shards (rank `r` holds the samples
//! `i` with `i mod N = r`, [`PoissonSampler::shard`](crate::PoissonSampler::shard)). At
//! every step each rank keeps each sample of its shard independently with probability
//! `q`, computes and clips the per-sample gradients of what it kept, and sums them. The
//! union of the ranks' batches is then exactly a Poisson sample of the whole data set at
//! rate `q` — the same sample rate, and the same expected batch size `q·n`, as one process
//! drawing from all `n` — so the accounting is unchanged by N.
//!
//! The clipped sums are summed over the ranks (an all-reduce), and only then is the
//! Gaussian noise N(0, (σC)²) added, **once**, by rank 0, which broadcasts the noisy sum;
//! every rank divides it by `q·n` and writes the same gradient, so the replicas stay
//! equal. Removing one sample changes one rank's clipped sum, hence the total, by at most
//! `C`, and the total carries noise of standard deviation σC: the subsampled Gaussian
//! mechanism of one process. (Each rank adding its own N(0, (σC)²) would give the sum N
//! times the variance — √N times the noise, for the same guarantee — and each rank adding
//! N(0, (σC)²/N) would leave the guarantee resting on every rank's generator staying
//! secret; neither is what strata does.) Only rank 0 draws noise, so only its generator
//! needs to be secure; the guarantee records whether it was.

use crate::Result;

/// The processes one DP-SGD step is shared among, as [`DpSgd`](crate::DpSgd) sees them.
///
/// Every process calls every method in the same order (they are collectives). A world of
/// one needs no implementation: a [`DpSgd`](crate::DpSgd) without a group is one.
pub trait ProcessGroup: Send {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;

    /// The number of processes.
    fn size(&self) -> usize;

    /// Replaces `data` on every process by its elementwise sum over all processes.
    ///
    /// # Errors
    /// A failed collective, as [`PrivacyError::Communication`](crate::PrivacyError::Communication).
    fn sum(&self, data: &mut [f64]) -> Result<()>;

    /// Replaces `data` on every process by `root`'s.
    ///
    /// # Errors
    /// A failed collective, as [`PrivacyError::Communication`](crate::PrivacyError::Communication).
    fn broadcast(&self, data: &mut [f64], root: usize) -> Result<()>;
}
