//! The error type of strata-autograd.

use strata_tensor::TensorError;

/// What can go wrong while building or walking a graph.
///
/// Shape errors inside an op keep the tensor crate's message, which names the op and the
/// shapes involved:
///
/// ```
/// use strata_autograd::{AutogradError, Var};
/// use strata_tensor::Tensor;
///
/// let a = Var::parameter(Tensor::<f32>::zeros(&[2, 3]));
/// let b = Var::new(Tensor::<f32>::zeros(&[4, 5]));
/// let err = a.matmul(&b).unwrap_err();
/// assert!(matches!(err, AutogradError::Tensor(_)));
/// assert_eq!(err.to_string(), "matmul: cannot multiply [2, 3] by [4, 5]");
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AutogradError {
    /// A tensor op failed (shapes, dims, indices); the message is the tensor crate's.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// `backward()` without a gradient on an output with more than one element.
    #[error(
        "backward: a gradient can be created implicitly only for a one-element output, \
         this output has shape {shape:?}; pass one with backward_with"
    )]
    NonScalarOutput {
        /// The output's shape.
        shape: Vec<usize>,
    },
    /// The gradient given to `backward_with` does not have the output's shape.
    #[error("backward: the gradient has shape {grad:?} but the output has shape {output:?}")]
    GradShape {
        /// The gradient's shape.
        grad: Vec<usize>,
        /// The output's shape.
        output: Vec<usize>,
    },
    /// `backward` on a value that does not require grad (a constant, or made under `no_grad`).
    #[error("backward: this value does not require grad and has no graph to walk")]
    NoGraph,
    /// A second backward through a part of the graph that an earlier backward freed.
    #[error(
        "backward: the graph of `{op}` was freed by an earlier backward; \
         call backward_with_options(.., retain_graph = true) the first time to walk it twice"
    )]
    GraphFreed {
        /// The op whose saved state is gone.
        op: &'static str,
    },
    /// Anomaly mode: an op's backward produced a NaN or an infinity.
    #[error(
        "anomaly: the backward of {op} produced {value} in the gradient of its input {input}; \
         {op} was recorded at:\n{recorded}"
    )]
    Anomaly {
        /// The op whose backward produced it.
        op: &'static str,
        /// Which of its inputs.
        input: usize,
        /// The first non-finite value.
        value: f64,
        /// Where the op's forward was called (a backtrace).
        recorded: String,
    },
    /// A walk with `create_graph` reached an op without a differentiable backward.
    #[error(
        "{op} has no differentiable backward, so its gradient cannot be differentiated again \
         (create_graph); custom ops give one with Var::double_backward"
    )]
    NoDoubleBackward {
        /// The op.
        op: &'static str,
    },
    /// `grad` was asked for the gradient of a var the outputs do not depend on (pass
    /// `allow_unused` to get `None` instead).
    #[error(
        "grad: input {index} was not used to compute the outputs (set allow_unused to get \
         None for it)"
    )]
    UnusedInput {
        /// Its position in the inputs.
        index: usize,
    },
    /// An op's backward produced a gradient of the wrong shape (a bug in that op's rule).
    #[error("{op} backward: gradient for input {input} has shape {got:?}, expected {expected:?}")]
    BackwardShape {
        /// The op.
        op: &'static str,
        /// Which input.
        input: usize,
        /// The shape produced.
        got: Vec<usize>,
        /// The input's shape.
        expected: Vec<usize>,
    },
    /// A leaf-only operation (changing `requires_grad`, setting a value of another shape)
    /// asked of something else.
    #[error("{op}: {msg}")]
    Invalid {
        /// The operation.
        op: &'static str,
        /// What is wrong.
        msg: String,
    },
}

/// `Result` with [`AutogradError`].
pub type Result<T, E = AutogradError> = std::result::Result<T, E>;
