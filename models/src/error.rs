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
    /// A training stopped as asked (`--stop-after`) after `epochs_done` of its `epochs`
    /// epochs (evaluation periods); its checkpoint resumes it.
    #[error("the training stopped after {epochs_done} of {epochs} epochs, as asked")]
    Stopped {
        /// Epochs (periods) done.
        epochs_done: usize,
        /// Epochs (periods) of the whole training.
        epochs: usize,
    },
    /// Training across processes failed (models that differ between ranks, MPI).
    #[error(transparent)]
    Distributed(#[from] DistributedError),
    /// Private training failed (a layer without per-sample gradients, an accountant that
    /// cannot reach the target).
    #[error(transparent)]
    Privacy(#[from] PrivacyError),
    /// ONNX export failed (a layer ONNX cannot express, a file that cannot be written).
    #[error(transparent)]
    Onnx(#[from] strata_onnx::OnnxError),
}

impl From<TensorError> for ModelsError {
    fn from(e: TensorError) -> Self {
        ModelsError::Autograd(AutogradError::Tensor(e))
    }
}

/// `Result` with [`ModelsError`].
pub type Result<T, E = ModelsError> = std::result::Result<T, E>;

/// The error for a network output (a logit, a prediction) that is NaN or infinite.
/// Weights that are finite (a checkpoint's are checked on load) can still be large
/// enough to overflow f32 on some input — a corrupted or hand-edited checkpoint —, and an
/// argmax, a threshold or a sampler reading NaN would print an answer without a word.
pub(crate) fn non_finite_output(what: &str, index: usize, value: f32) -> ModelsError {
    ModelsError::Config(format!(
        "the model's {what} {index} is {value}: its weights overflow f32 arithmetic on this \
         input (is the checkpoint corrupted?)"
    ))
}

/// `values` when every one is finite, [`non_finite_output`] naming the first that is
/// not otherwise.
pub(crate) fn finite_outputs<'a>(what: &str, values: &'a [f32]) -> Result<&'a [f32]> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(non_finite_output(what, i, values[i])),
        None => Ok(values),
    }
}

pub(crate) fn data_error(path: impl Into<PathBuf>, msg: impl Into<String>) -> ModelsError {
    ModelsError::Data {
        path: path.into(),
        msg: msg.into(),
    }
}
