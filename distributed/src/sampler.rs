//! [`DistributedSampler`]: each rank's share of a data set, epoch by epoch.

use strata_tensor::rand::seq::SliceRandom;
use strata_tensor::seeded_rng;

use crate::comm::Communicator;
use crate::{Result, config};

/// The indices of a data set that one rank reads in an epoch, like
/// `torch.utils.data.DistributedSampler`: every rank draws the same seeded permutation of
/// the epoch (or keeps the order, without shuffling), pads it by repeating its start until
/// its length divides by the number of ranks (or, with `drop_last`, cuts the tail), and
/// takes every `num_replicas`-th index from its rank on. Across the ranks an epoch covers
/// the data set exactly once, plus the padding.
///
/// The permutation is the one strata-models' `DataLoader` draws for the same seed and epoch,
/// so with batches of `B / N` on each of `N` ranks, the ranks' batches together are exactly
/// the batches of `B` one process reads: a data-parallel training sees the same data, step
/// by step, as one process.
///
/// ```
/// use strata_distributed::DistributedSampler;
///
/// // 10 samples over 4 ranks: 3 each, the permutation padded with its first 2 indices.
/// let shards: Vec<Vec<usize>> = (0..4)
///     .map(|rank| DistributedSampler::with_replicas(10, 4, rank).unwrap().seed(7).indices(1))
///     .collect();
/// assert!(shards.iter().all(|s| s.len() == 3));
/// let mut all: Vec<usize> = shards.concat();
/// all.sort();
/// all.dedup();
/// assert_eq!(all, (0..10).collect::<Vec<_>>());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistributedSampler {
    len: usize,
    num_replicas: usize,
    rank: usize,
    shuffle: bool,
    seed: u64,
    drop_last: bool,
}

impl DistributedSampler {
    /// This rank's share of `len` samples over `comm`'s ranks: shuffled, seed 0, padded
    /// (PyTorch's defaults).
    pub fn new(len: usize, comm: &Communicator) -> Self {
        DistributedSampler {
            len,
            num_replicas: comm.size(),
            rank: comm.rank(),
            shuffle: true,
            seed: 0,
            drop_last: false,
        }
    }

    /// Rank `rank`'s share of `len` samples over `num_replicas` ranks.
    ///
    /// # Errors
    /// [`DistributedError::Config`](crate::DistributedError::Config) for no replicas or a
    /// rank outside them.
    pub fn with_replicas(len: usize, num_replicas: usize, rank: usize) -> Result<Self> {
        if rank >= num_replicas {
            return Err(config(format!(
                "rank {rank} is outside {num_replicas} replicas"
            )));
        }
        Ok(DistributedSampler {
            num_replicas,
            rank,
            ..DistributedSampler::new(len, &Communicator::alone())
        })
    }

    /// Shuffles every epoch (true by default).
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// The seed of the shuffle (0 by default); every rank must use the same.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Cuts the tail that does not divide among the ranks instead of padding (false by
    /// default).
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// The number of samples each rank reads per epoch.
    pub fn num_samples(&self) -> usize {
        if self.drop_last {
            self.len / self.num_replicas
        } else {
            self.len.div_ceil(self.num_replicas)
        }
    }

    /// The samples read per epoch over all ranks (the data set plus padding, or minus the
    /// dropped tail).
    pub fn total_size(&self) -> usize {
        self.num_samples() * self.num_replicas
    }

    /// The indices this rank reads in epoch `epoch` (PyTorch's `set_epoch` then `iter`):
    /// the permutation depends on the seed and the epoch only.
    pub fn indices(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len).collect();
        if self.shuffle {
            // The mixing of strata-models' DataLoader, so that both draw one permutation.
            let mixed = self.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            order.shuffle(&mut seeded_rng(mixed));
        }
        let total = self.total_size();
        if total > order.len() && !order.is_empty() {
            // Pad with the start of the permutation, repeated if the padding is longer.
            let mut k = 0;
            while order.len() < total {
                order.push(order[k]);
                k += 1;
            }
        }
        order.truncate(total);
        order
            .into_iter()
            .skip(self.rank)
            .step_by(self.num_replicas)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PyTorch: `list(DistributedSampler(range(5), num_replicas=4, rank=r, shuffle=False))`
    /// gives [0, 4], [1, 0], [2, 1], [3, 2]; with `drop_last=True`, [0], [1], [2], [3].
    #[test]
    fn padding_and_dropping_as_in_pytorch() {
        let shard = |r, drop| {
            DistributedSampler::with_replicas(5, 4, r)
                .unwrap()
                .shuffle(false)
                .drop_last(drop)
                .indices(0)
        };
        let padded: Vec<Vec<usize>> = (0..4).map(|r| shard(r, false)).collect();
        assert_eq!(padded, vec![vec![0, 4], vec![1, 0], vec![2, 1], vec![3, 2]]);
        let dropped: Vec<Vec<usize>> = (0..4).map(|r| shard(r, true)).collect();
        assert_eq!(dropped, vec![vec![0], vec![1], vec![2], vec![3]]);
        // Padding longer than the data: 2 samples over 5 ranks repeat them.
        let tiny: Vec<usize> = (0..5)
            .flat_map(|r| {
                DistributedSampler::with_replicas(2, 5, r)
                    .unwrap()
                    .shuffle(false)
                    .indices(0)
            })
            .collect();
        assert_eq!(tiny, vec![0, 1, 0, 1, 0]);
        assert!(
            DistributedSampler::with_replicas(0, 3, 1)
                .unwrap()
                .indices(0)
                .is_empty()
        );
        assert!(DistributedSampler::with_replicas(5, 2, 2).is_err());
    }

    #[test]
    fn one_replica_reads_the_dataloader_permutation_and_epochs_differ() {
        let s = DistributedSampler::new(50, &Communicator::alone()).seed(3);
        let mut expected: Vec<usize> = (0..50).collect();
        expected.shuffle(&mut seeded_rng(
            3 ^ 2u64.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        ));
        assert_eq!(s.indices(2), expected);
        assert_ne!(s.indices(1), s.indices(2));
    }
}
