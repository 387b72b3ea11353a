//! The integration tests of strata-autograd, one test binary (one link, one instantiation of
//! the generic kernels) for all of them; each module is one area.
#![forbid(unsafe_code)]

mod common;

mod engine;
mod gradcheck_elementwise;
mod gradcheck_graph;
mod gradcheck_index;
mod gradcheck_nn;
mod gradcheck_parity;
mod gradcheck_reduce;
mod gradcheck_view;
mod higher_order;
mod hooks;
mod parity_ops;
