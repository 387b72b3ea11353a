//! [`OnnxError`]: why an export failed.

use std::path::PathBuf;

/// Why an export failed. Every variant names what it is about (the layer or op, the
/// path, the shapes).
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// A layer, op or setting with no ONNX equivalent in the exporter.
    #[error("ONNX export: {what} cannot be exported: {why}")]
    Unsupported {
        /// The layer or op (`"AdaptiveAvgPool2d"`, `"strata_models::…::MyLayer"`).
        what: String,
        /// Why, and what to do instead when there is something.
        why: String,
    },
    /// The example input does not fit the export (no batch, a zero-size batch, the wrong
    /// element type).
    #[error("ONNX export: example input {shape:?}: {why}")]
    Input {
        /// The example's shape.
        shape: Vec<usize>,
        /// What is wrong with it.
        why: String,
    },
    /// The module's own forward failed on the example input.
    #[error("ONNX export: the forward on the example input failed: {0}")]
    Forward(#[from] strata_nn::NnError),
    /// An op of the forward failed on the example input.
    #[error("ONNX export: the forward on the example input failed: {0}")]
    Autograd(#[from] strata_autograd::AutogradError),
    /// A tensor op of the exporter failed.
    #[error("ONNX export: {0}")]
    Tensor(#[from] strata_tensor::TensorError),
    /// The file could not be written.
    #[error("ONNX export: cannot write {path}: {source}")]
    Io {
        /// The target path.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// `Result<T, OnnxError>`.
pub type Result<T> = std::result::Result<T, OnnxError>;

/// An [`OnnxError::Unsupported`] for `what`.
pub(crate) fn unsupported(what: impl Into<String>, why: impl Into<String>) -> OnnxError {
    OnnxError::Unsupported {
        what: what.into(),
        why: why.into(),
    }
}
