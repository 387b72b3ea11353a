//! The error type of strata-privacy.

use strata_autograd::AutogradError;
use strata_nn::NnError;
use strata_tensor::TensorError;

/// What can go wrong while computing per-sample gradients, clipping, adding noise or
/// accounting.
///
/// ```
/// use strata_privacy::{Accountant, PrivacyError, RdpAccountant};
///
/// let err = RdpAccountant::new().step(-1.0, 0.01).unwrap_err();
/// assert!(matches!(err, PrivacyError::Config { .. }));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrivacyError {
    /// A graph or tensor op failed.
    #[error(transparent)]
    Autograd(#[from] AutogradError),
    /// A layer failed.
    #[error(transparent)]
    Nn(#[from] NnError),
    /// A setting is out of range (a negative noise multiplier, a sample rate above 1, …).
    #[error("{what}: {msg}")]
    Config {
        /// The setting or function.
        what: &'static str,
        /// What is wrong, with the value.
        msg: String,
    },
    /// The model contains a layer that mixes the samples of a batch (BatchNorm), so a
    /// sample's gradient depends on the others and cannot be clipped on its own.
    #[error(
        "{layer} is a BatchNorm layer: batch normalisation mixes the samples of a batch, so \
         per-sample gradients (and DP-SGD's guarantee) do not exist for it; replace it with \
         GroupNorm or LayerNorm"
    )]
    BatchNorm {
        /// The layer's name in the state dict (e.g. `bn1`).
        layer: String,
    },
    /// A parameter is used by an op that has no per-sample gradient rule.
    #[error(
        "parameter `{param}` is used by the op `{op}`, which strata-privacy cannot compute \
         per-sample gradients for; use it through a layer (Linear, Conv1d/2d, Embedding, \
         LayerNorm, RMSNorm, RNN/LSTM/GRU, MultiheadAttention, the transformer layers) or \
         through elementwise add/sub/mul with per-sample data"
    )]
    Unsupported {
        /// The parameter's name.
        param: String,
        /// The op's name.
        op: &'static str,
    },
    /// The batch does not have the shape per-sample gradients need.
    #[error("per-sample gradients: {0}")]
    Batch(String),
    /// A collective between the processes of a [`ProcessGroup`](crate::ProcessGroup)
    /// failed.
    #[error("communication between ranks: {0}")]
    Communication(String),
    /// An accountant could not compute what was asked.
    #[error("accountant: {0}")]
    Accountant(String),
}

impl From<TensorError> for PrivacyError {
    fn from(e: TensorError) -> Self {
        PrivacyError::Autograd(AutogradError::Tensor(e))
    }
}

/// `Result` with [`PrivacyError`].
pub type Result<T, E = PrivacyError> = std::result::Result<T, E>;

pub(crate) fn config(what: &'static str, msg: impl Into<String>) -> PrivacyError {
    PrivacyError::Config {
        what,
        msg: msg.into(),
    }
}
