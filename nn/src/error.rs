//! The error type of strata-nn.

use std::fmt;
use std::path::PathBuf;

use strata_autograd::AutogradError;
use strata_tensor::TensorError;

/// What can go wrong in a layer, a loss, or while moving weights.
///
/// ```
/// use strata_nn::{Conv2d, Forward, NnError};
/// use strata_autograd::Var;
/// use strata_tensor::{Tensor, seeded_rng};
///
/// let conv = Conv2d::<f32>::new(3, 8, 3, &mut seeded_rng(0))?;
/// let err = conv.forward(&Var::new(Tensor::zeros(&[2, 3, 32]))).unwrap_err();
/// assert!(matches!(err, NnError::Input { layer: "Conv2d", .. }));
/// assert_eq!(
///     err.to_string(),
///     "Conv2d: expected input [N, C, H, W] or [C, H, W] with C = 3, got [2, 3, 32]"
/// );
/// # Ok::<(), NnError>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NnError {
    /// A graph or tensor op failed; the message names the op and the shapes.
    #[error(transparent)]
    Autograd(#[from] AutogradError),
    /// A layer or loss was given an input it cannot take.
    #[error("{layer}: {msg}")]
    Input {
        /// The layer or loss.
        layer: &'static str,
        /// What is wrong, with the shapes.
        msg: String,
    },
    /// A layer was configured with impossible settings.
    #[error("{layer}: {msg}")]
    Config {
        /// The layer.
        layer: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// A state dict does not fit the module.
    #[error("{0}")]
    StateDict(StateDictMismatch),
    /// A PyTorch checkpoint could not be read (see [`load_pytorch`](crate::load_pytorch)).
    #[error("PyTorch file {path}: {msg}")]
    TorchFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A safetensors file could not be read or written.
    #[error("safetensors file {path}: {msg}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
}

impl From<TensorError> for NnError {
    fn from(e: TensorError) -> Self {
        NnError::Autograd(AutogradError::Tensor(e))
    }
}

/// Every way a state dict failed to fit a module, like the message of PyTorch's
/// `load_state_dict` (whose lists its `Display` shortens to the first eight keys and a
/// count; the fields hold them all).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateDictMismatch {
    /// Keys the module has and the state dict lacks.
    pub missing: Vec<String>,
    /// Keys the state dict has and the module lacks.
    pub unexpected: Vec<String>,
    /// Keys present in both with different shapes: (key, in the state dict, in the module).
    pub shape_mismatch: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// Keys whose entry in the state dict holds integers (it was stored as an integer
    /// dtype: a counter such as `num_batches_tracked`) where the module has a
    /// floating-point parameter or buffer. Loading them would turn a counter into weights
    /// without a word.
    pub dtype_mismatch: Vec<String>,
}

impl StateDictMismatch {
    /// Whether nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.shape_mismatch.is_empty()
            && self.dtype_mismatch.is_empty()
    }
}

impl fmt::Display for StateDictMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error(s) in loading state dict:")?;
        if !self.missing.is_empty() {
            write!(f, "\n  missing keys: {}", quoted(&self.missing))?;
        }
        if !self.unexpected.is_empty() {
            write!(f, "\n  unexpected keys: {}", quoted(&self.unexpected))?;
        }
        for (key, got, want) in self.shape_mismatch.iter().take(LISTED_KEYS) {
            write!(
                f,
                "\n  size mismatch for {key}: the state dict has shape {got:?}, \
                 the module has shape {want:?}"
            )?;
        }
        for key in self.dtype_mismatch.iter().take(LISTED_KEYS) {
            write!(
                f,
                "\n  dtype mismatch for {key}: the state dict holds integers, the module a \
                 floating-point tensor"
            )?;
        }
        let more = self.shape_mismatch.len().saturating_sub(LISTED_KEYS)
            + self.dtype_mismatch.len().saturating_sub(LISTED_KEYS);
        if more > 0 {
            write!(f, "\n  and {more} more mismatches")?;
        }
        Ok(())
    }
}

/// The keys most listed in one line of the report: a state dict of another depth (a
/// hand-edited record asking for 31 transformer layers) would otherwise make a message of
/// thousands of names.
const LISTED_KEYS: usize = 8;

fn quoted(keys: &[String]) -> String {
    let mut listed = keys
        .iter()
        .take(LISTED_KEYS)
        .map(|k| format!("\"{k}\""))
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > LISTED_KEYS {
        listed += &format!(", … ({} in all)", keys.len());
    }
    listed
}

/// `Result` with [`NnError`].
pub type Result<T, E = NnError> = std::result::Result<T, E>;

pub(crate) fn input_error(layer: &'static str, msg: impl Into<String>) -> NnError {
    NnError::Input {
        layer,
        msg: msg.into(),
    }
}

pub(crate) fn config_error(layer: &'static str, msg: impl Into<String>) -> NnError {
    NnError::Config {
        layer,
        msg: msg.into(),
    }
}
