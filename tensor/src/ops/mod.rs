//! The tensor ops, one family per file: constructors and random tensors, views and shape
//! ops, elementwise binary and unary ops, each declared once with its derivative,
//! reductions, softmax, indexing, in-place updates for optimizers, matrix products, least
//! squares, and printing.

pub(crate) mod binary;
pub(crate) mod construct;
pub(crate) mod display;
pub(crate) mod einsum;
pub(crate) mod index;
pub(crate) mod inplace;
pub(crate) mod linalg;
pub(crate) mod matmul;
pub(crate) mod norm;
pub(crate) mod random;
pub(crate) mod rearrange;
pub(crate) mod reduce;
pub(crate) mod scalar;
pub(crate) mod scan;
pub(crate) mod shape_ops;
pub(crate) mod softmax;
pub(crate) mod sorting;
pub(crate) mod unary;
pub(crate) mod view;
