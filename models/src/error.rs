//! The error type of strata-models.

use std::path::PathBuf;

use strata_autograd::AutogradError;
use strata_distributed::DistributedError;
use strata_nn::NnError;
use strata_optim::OptimError;
use strata_privacy::PrivacyError;
use strata_tensor::TensorError;

/// What can go wrong while loading data, training, or handling checkpoints.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelsError {
    /// A data file is missing, truncated, corrupt or of the wrong shape.
    #[error("{}: {msg}", path.display())]
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A checkpoint is missing, unreadable, or of another model.
    #[error("checkpoint {}: {msg}", path.display())]
    Checkpoint {
        /// The checkpoint directory.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// Settings that cannot work (a zero batch size, a split that leaves nothing, …).
    #[error("{0}")]
    Config(String),
    /// A layer or loss failed.
    #[error(transparent)]
    Nn(#[from] NnError),
    /// An optimizer failed.
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// A graph op failed.
    #[error(transparent)]
    Autograd(#[from] AutogradError),
    /// Training across processes failed (models that differ between ranks, MPI).
    #[error(transparent)]
    Distributed(#[from] DistributedError),
    /// Private training failed (a layer without per-sample gradients, an accountant that
    /// cannot reach the target).
    #[error(transparent)]
    Privacy(#[from] PrivacyError),
}

impl From<TensorError> for ModelsError {
    fn from(e: TensorError) -> Self {
        ModelsError::Autograd(AutogradError::Tensor(e))
    }
}

/// `Result` with [`ModelsError`].
pub type Result<T, E = ModelsError> = std::result::Result<T, E>;

pub(crate) fn data_error(path: impl Into<PathBuf>, msg: impl Into<String>) -> ModelsError {
    ModelsError::Data {
        path: path.into(),
        msg: msg.into(),
    }
}
