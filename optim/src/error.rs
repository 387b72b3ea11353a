//! The error type of strata-optim.

use std::path::PathBuf;

use strata_autograd::AutogradError;
use strata_tensor::TensorError;

/// What can go wrong when configuring, stepping, saving or loading an optimizer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OptimError {
    /// An impossible hyper-parameter, caught at construction.
    #[error("{optimizer}: {msg}")]
    Config {
        /// The optimizer or schedule.
        optimizer: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// A state dict that does not fit this optimizer or its parameters.
    #[error("{optimizer}: cannot load state: {msg}")]
    State {
        /// The optimizer.
        optimizer: &'static str,
        /// What does not fit.
        msg: String,
    },
    /// The total gradient norm is NaN or infinite (`clip_grad_norm` with
    /// `error_if_nonfinite`).
    #[error(
        "clip_grad_norm: the total norm of order {norm_type} of the gradients is non-finite ({total}), so it cannot be clipped"
    )]
    NonFiniteNorm {
        /// The norm's order.
        norm_type: f64,
        /// The norm found.
        total: f64,
    },
    /// A graph or tensor operation failed.
    #[error(transparent)]
    Autograd(#[from] AutogradError),
    /// A state file could not be read or written.
    #[error("optimizer state file {path}: {msg}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
}

impl From<TensorError> for OptimError {
    fn from(e: TensorError) -> Self {
        OptimError::Autograd(AutogradError::Tensor(e))
    }
}

/// `Result` with [`OptimError`].
pub type Result<T, E = OptimError> = std::result::Result<T, E>;

pub(crate) fn config(optimizer: &'static str, msg: impl Into<String>) -> OptimError {
    OptimError::Config {
        optimizer,
        msg: msg.into(),
    }
}
