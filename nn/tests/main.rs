//! The integration tests of strata-nn, one test binary (one link, one instantiation of
//! the generic kernels) for all of them; each module is one area.

mod common;

mod attention;
mod checkpoint;
mod gradcheck_layers;
mod gradcheck_losses;
mod gradcheck_parity_losses;
mod hooks;
mod init;
mod interop;
mod pytorch_fixtures;
mod pytorch_losses;
mod rnn;
