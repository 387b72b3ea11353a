//! The integration tests of strata-nn, one test binary (one link, one instantiation of
//! the generic kernels) for all of them; each module is one area.
#![forbid(unsafe_code)]

mod common;

mod attention;
mod checkpoint;
mod decoder;
mod fuzz;
mod gradcheck_layers;
mod gradcheck_losses;
mod gradcheck_parity_layers;
mod gradcheck_parity_losses;
mod hooks;
mod hostile;
mod hostile_layers;
mod init;
mod interop;
mod pytorch_checkpoints;
mod pytorch_fixtures;
mod pytorch_layers;
mod pytorch_losses;
mod rnn;
