//! The fused network kernels, each a forward and a backward over whole tensors:
//! convolution (im2col around GEMM), pooling, layer norm, whole-sequence RNN/LSTM/GRU, and
//! scaled dot-product attention.

pub(crate) mod attention;
pub(crate) mod conv;
pub(crate) mod ctc;
pub(crate) mod norm;
pub(crate) mod pool;
pub(crate) mod recurrent;
