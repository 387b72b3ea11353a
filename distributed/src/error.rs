//! The error type of strata-distributed.

use strata_autograd::AutogradError;
use strata_nn::NnError;
use strata_optim::OptimError;
use strata_tensor::TensorError;

/// What can go wrong when processes train together.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DistributedError {
    /// An MPI launcher started this process as one of several, but this build of strata
    /// cannot talk MPI.
    #[error(
        "{launcher} started this process as one of {size} ranks, but strata-distributed was \
         built without MPI: rebuild with `--features mpi` (see the README, \"Many processes, \
         many machines\")"
    )]
    NotBuiltWithMpi {
        /// The launcher, as its environment names it (`mpirun (Open MPI)`, …).
        launcher: String,
        /// The number of processes it started.
        size: String,
    },
    /// MPI could not be initialised, or was initialised already.
    #[error("MPI initialisation: {0}")]
    Init(String),
    /// The ranks' models differ: the message names the first difference.
    #[error("the models of the ranks differ: {0}")]
    ModelMismatch(String),
    /// Parameters that got no gradient left a gradient reduction unfinished.
    #[error(
        "the previous backward did not finish its gradient reduction: {} parameter(s) got no \
         gradient ({}). Every parameter must take part in every loss, or construct \
         DistributedDataParallel with find_unused_parameters: true",
        .0.len(),
        .0.join(", ")
    )]
    UnfinishedReduction(Vec<String>),
    /// A setting or argument out of range (a root rank beyond the world, a negative bucket
    /// size, buffers of different lengths, …).
    #[error("{0}")]
    Config(String),
    /// The communication thread has stopped (the world was finalised, or MPI failed).
    #[error("the MPI communication thread has stopped: {0}")]
    Stopped(String),
    /// A tensor op failed.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// An autograd op failed.
    #[error(transparent)]
    Autograd(#[from] AutogradError),
    /// A module operation failed.
    #[error(transparent)]
    Nn(#[from] NnError),
    /// An optimizer failed.
    #[error(transparent)]
    Optim(#[from] OptimError),
}

/// `Result` with [`DistributedError`].
pub type Result<T, E = DistributedError> = std::result::Result<T, E>;

pub(crate) fn config(msg: impl Into<String>) -> DistributedError {
    DistributedError::Config(msg.into())
}
