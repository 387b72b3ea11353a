//! Data-parallel training across processes and machines on MPI, with PyTorch DDP's
//! semantics.
//!
//! strata-distributed owns what lets several processes train one model together: the
//! [`World`] of processes an MPI launcher started (or a world of one), the
//! [`Communicator`] and its collectives (all-reduce, broadcast, all-gather, barrier),
//! [`DistributedDataParallel`] (gradients averaged over the ranks in buckets, each
//! all-reduce overlapping the rest of the backward, hung on strata-autograd's
//! post-accumulate-grad hooks), the [`DistributedSampler`] that gives each rank its share
//! of a data set, optimizer-state sharding ([`ZeroRedundancyOptimizer`]), and DP-SGD
//! across ranks (the [`Communicator`] is strata-privacy's `ProcessGroup`: each rank clips
//! its own samples, the clipped sums are summed and rank 0 adds the noise once;
//! [`replicate`] starts the ranks from one model without DDP's gradient hooks). Models,
//! layers and optimizers are strata-nn's and strata-optim's; data loading and the training
//! loop are strata-models'.
//!
//! Every byte between ranks goes through MPI (Open MPI or MPICH, through the `mpi` crate),
//! behind the `mpi` feature. Without it, or in a process no launcher started, the world has
//! one process and the same code runs unchanged, each collective the identity.
//!
//! ```
//! use strata_distributed::{DdpConfig, DistributedDataParallel, World};
//! use strata_nn::{Forward, Linear, Module};
//! use strata_autograd::Var;
//! use strata_tensor::{Tensor, seeded_rng};
//!
//! let world = World::init()?; // under `mpirun -np 4`: rank 0..3 of 4
//! let ddp = DistributedDataParallel::new(Linear::new(4, 2, true, &mut seeded_rng(0)), world.comm(), DdpConfig::default())?;
//! ddp.forward(&Var::new(Tensor::<f32>::ones(&[8, 4])))?.sum_all().backward()?; // .grad: averaged over the ranks
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Faults: a rank that fails should end the job rather than leave the others waiting in a
//! collective. [`World::fail`] prints the error and aborts every rank (`MPI_Abort`),
//! [`World::abort_on_panic`] does the same for panics, the launcher ends the job when a
//! rank is killed, and a collective that waits longer than `STRATA_COLLECTIVE_TIMEOUT`
//! seconds (default 1800) aborts it.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod buffer;
mod comm;
mod ddp;
mod error;
pub mod launcher;
#[cfg(feature = "mpi")]
mod mpi;
mod private;
mod sampler;
mod world;
mod zero;

pub use buffer::{ReduceOp, Scalar};
pub use comm::Communicator;
pub use ddp::{DdpConfig, DistributedDataParallel, Reducer, ReducerStats};
pub use error::{DistributedError, Result};
pub use private::replicate;
pub use sampler::DistributedSampler;
pub use world::World;
pub use zero::{OptimizerFactory, ZeroRedundancyOptimizer, state_elements, total_state_elements};

pub(crate) use error::config;
