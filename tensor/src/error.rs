//! The error type of every fallible tensor operation.

/// What went wrong in a tensor operation.
///
/// Every variant names the operation (`op`) and the shapes or values involved, so that the
/// message alone tells the user what to fix:
///
/// ```
/// use strata_tensor::{Tensor, TensorError};
/// let a = Tensor::<f32>::zeros(&[2, 3]);
/// let b = Tensor::<f32>::zeros(&[4, 5]);
/// let err = a.matmul(&b).unwrap_err();
/// assert!(matches!(err, TensorError::Matmul { .. }));
/// assert_eq!(err.to_string(), "matmul: cannot multiply [2, 3] by [4, 5]");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TensorError {
    /// A buffer's length does not match the element count of the requested shape.
    #[error("{op}: {len} values cannot fill shape {shape:?}, which holds {numel}")]
    DataLength {
        /// The operation.
        op: &'static str,
        /// Length of the buffer given.
        len: usize,
        /// The requested shape.
        shape: Vec<usize>,
        /// Element count of `shape`.
        numel: usize,
    },
    /// Two shapes are not broadcastable (NumPy/PyTorch rules).
    #[error("{op}: shapes {lhs:?} and {rhs:?} cannot be broadcast together")]
    Broadcast {
        /// The operation.
        op: &'static str,
        /// Left operand's shape (or the source shape of an expand).
        lhs: Vec<usize>,
        /// Right operand's shape (or the target shape of an expand).
        rhs: Vec<usize>,
    },
    /// The inner dimensions of a matrix product disagree.
    #[error("{op}: cannot multiply {lhs:?} by {rhs:?}")]
    Matmul {
        /// The operation.
        op: &'static str,
        /// Left operand's shape.
        lhs: Vec<usize>,
        /// Right operand's shape.
        rhs: Vec<usize>,
    },
    /// A dimension index is out of range (negative indices count from the end).
    #[error("{op}: dimension {dim} is out of range for a tensor of shape {shape:?}")]
    Dim {
        /// The operation.
        op: &'static str,
        /// The dimension asked for.
        dim: isize,
        /// The tensor's shape.
        shape: Vec<usize>,
    },
    /// A reshape to a shape with a different element count, or with a bad `-1`.
    #[error("{op}: cannot reshape {from:?} into {to:?}")]
    Reshape {
        /// The operation.
        op: &'static str,
        /// The tensor's shape.
        from: Vec<usize>,
        /// The requested shape, `-1` marking the inferred dimension.
        to: Vec<isize>,
    },
    /// A view whose strides cannot express the requested shape without a copy.
    #[error(
        "{op}: a tensor of shape {shape:?} and strides {strides:?} cannot be viewed as {to:?} \
         without a copy; use reshape"
    )]
    View {
        /// The operation.
        op: &'static str,
        /// The tensor's shape.
        shape: Vec<usize>,
        /// The tensor's strides.
        strides: Vec<usize>,
        /// The requested shape.
        to: Vec<usize>,
    },
    /// An index (into a dimension, or a class index) is out of range.
    #[error("{op}: index {index} is out of bounds for dimension {dim} with size {size}")]
    Index {
        /// The operation.
        op: &'static str,
        /// The offending index.
        index: i64,
        /// The dimension it indexes.
        dim: usize,
        /// The size of that dimension.
        size: usize,
    },
    /// Operand shapes that do not fit together for this operation.
    #[error("{op}: {msg}")]
    Shape {
        /// The operation.
        op: &'static str,
        /// What is wrong, with the shapes involved.
        msg: String,
    },
    /// An argument outside the operation's domain (a zero stride, a negative size, ...).
    #[error("{op}: {msg}")]
    Invalid {
        /// The operation.
        op: &'static str,
        /// What is wrong, with the value given.
        msg: String,
    },
    /// A shape whose element count overflows `usize`, or whose bytes exceed what one
    /// allocation may hold (`isize::MAX`): no such tensor can exist.
    #[error("{op}: a tensor of shape {shape:?} has more elements than memory can hold")]
    TooLarge {
        /// The operation.
        op: &'static str,
        /// The shape asked for.
        shape: Vec<usize>,
    },
    /// The allocator refused the memory a result needs.
    #[error("{op}: cannot allocate {bytes} bytes for a tensor of shape {shape:?}")]
    OutOfMemory {
        /// The operation.
        op: &'static str,
        /// The shape of the result.
        shape: Vec<usize>,
        /// The bytes asked for.
        bytes: usize,
    },
    /// A single value was expected but the tensor holds several (or none).
    #[error("{op}: a tensor of shape {shape:?} is not a single value")]
    NotScalar {
        /// The operation.
        op: &'static str,
        /// The tensor's shape.
        shape: Vec<usize>,
    },
}

/// Shorthand for `Result<T, TensorError>`.
pub type Result<T, E = TensorError> = std::result::Result<T, E>;

impl TensorError {
    /// A [`TensorError::Shape`] for `op`.
    pub fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        TensorError::Shape {
            op,
            msg: msg.into(),
        }
    }

    /// A [`TensorError::Invalid`] for `op`.
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        TensorError::Invalid {
            op,
            msg: msg.into(),
        }
    }
}
