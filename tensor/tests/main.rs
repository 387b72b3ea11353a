//! The integration tests of strata-tensor, one test binary (one link, one instantiation of
//! the generic kernels) for all of them; each module is one area.
#![forbid(unsafe_code)]

#[macro_use]
mod common;

mod broadcast;
mod conv_pool;
mod errors;
mod hostile;
mod hostile_parity;
mod indexing;
mod matmul;
mod reductions;
mod safetensors_io;
mod softmax;
mod views;
