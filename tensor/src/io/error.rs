//! The error of the safetensors codec.

use std::fmt;
use std::path::PathBuf;

use super::StoredDType;
use crate::DType;

/// A safetensors file (or buffer) that could not be read or written: which file, and what
/// went wrong. Tests and callers match on [`kind`](SafetensorsError::kind).
///
/// ```
/// use strata_tensor::io::{SafetensorsErrorKind, TensorFile};
///
/// // Three bytes cannot even hold the header's length.
/// let err = TensorFile::<f32>::from_bytes(&[2, 0, 0]).unwrap_err();
/// assert!(matches!(err.kind, SafetensorsErrorKind::Header { .. }));
/// assert_eq!(err.path, None);
/// ```
#[derive(Debug)]
pub struct SafetensorsError {
    /// The file, or `None` for bytes decoded or encoded in memory.
    pub path: Option<PathBuf>,
    /// What went wrong.
    pub kind: SafetensorsErrorKind,
}

impl fmt::Display for SafetensorsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "safetensors file {}: {}", path.display(), self.kind),
            None => write!(f, "safetensors data: {}", self.kind),
        }
    }
}

impl std::error::Error for SafetensorsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.kind)
    }
}

/// What went wrong reading or writing safetensors data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SafetensorsErrorKind {
    /// The operating system refused an operation (`op`: open, read, write, sync, rename…).
    #[error("cannot {op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The path names something other than a regular file. It is not read: a FIFO could
    /// block forever and a device like `/dev/zero` never ends.
    #[error("it is {what}, not a regular file")]
    NotRegularFile {
        /// What it is ("a FIFO", "a directory", "a character device", …).
        what: &'static str,
    },
    /// The file is larger than the memory that could be set aside to read it.
    #[error("its {len} bytes cannot be held in memory")]
    TooLarge {
        /// The file's size in bytes.
        len: u64,
    },
    /// Not a safetensors header, or a header whose layout does not agree with the data:
    /// a length past the end of the file, offsets that leave gaps or overlap, a size that
    /// is not the shape's (checked by the `safetensors` crate), or a header too large to
    /// write.
    #[error("invalid header: {msg}")]
    Header {
        /// What is wrong.
        msg: String,
    },
    /// A tensor name appears more than once (in a header read, or in tensors to write).
    #[error("tensor {name:?} appears more than once")]
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// A metadata key appears more than once in the header.
    #[error("metadata key {key:?} appears more than once")]
    DuplicateMetadataKey {
        /// The repeated key.
        key: String,
    },
    /// A tensor named `__metadata__`, which the format reserves for the metadata.
    #[error("tensor name {name:?} is reserved for the metadata")]
    ReservedName {
        /// The name.
        name: String,
    },
    /// A tensor whose shape does not fit its data: the element or byte count overflows,
    /// or differs from the number of bytes stored. The codec checks this itself, after the
    /// `safetensors` crate has checked the same (and reported it as
    /// [`Header`](SafetensorsErrorKind::Header)): a second line, should the crate's check
    /// ever change.
    #[error("tensor {name:?}: shape {shape:?} of {dtype} does not fit its {bytes} bytes")]
    Size {
        /// The tensor.
        name: String,
        /// Its shape, as the header declares it.
        shape: Vec<usize>,
        /// Its dtype.
        dtype: StoredDType,
        /// The bytes the header gives it.
        bytes: usize,
    },
    /// A dtype strata does not read (booleans, 8-bit floats, complex numbers…).
    #[error("tensor {name:?} has dtype {dtype}, which strata cannot read")]
    UnsupportedDType {
        /// The tensor.
        name: String,
        /// The dtype, as the header names it.
        dtype: String,
    },
    /// A finite stored value outside the range of the element type it is loaded into
    /// (1e300 into f32), which would otherwise become an infinity.
    #[error("tensor {name:?}: element {index} = {value:e} overflows {element}")]
    Overflow {
        /// The tensor.
        name: String,
        /// The element's index (row-major).
        index: usize,
        /// The stored value.
        value: f64,
        /// The element type loaded into.
        element: DType,
    },
    /// A value to be written as an integer that is not one int64 can hold exactly
    /// (a fraction, an infinity, NaN, or beyond ±2^63).
    #[error("tensor {name:?}: element {index} = {value} is not an integer int64 can hold")]
    NotInteger {
        /// The tensor.
        name: String,
        /// The element's index (row-major).
        index: usize,
        /// The value.
        value: f64,
    },
    /// A tensor asked to be written in a dtype the codec does not write for its element
    /// type (only the element type's own dtype and I64 are written).
    #[error("tensor {name:?}: {element} values are not written as {dtype}")]
    Unwritable {
        /// The tensor.
        name: String,
        /// The tensor's element type.
        element: DType,
        /// The dtype asked for.
        dtype: StoredDType,
    },
}

impl SafetensorsErrorKind {
    pub(crate) fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| SafetensorsErrorKind::Io { op, source }
    }

    pub(crate) fn header(msg: impl Into<String>) -> Self {
        SafetensorsErrorKind::Header { msg: msg.into() }
    }
}
