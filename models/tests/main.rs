//! The integration tests of strata-models, one test binary (one link, one instantiation of
//! the generic kernels) for all of them; each module is one area.
#![forbid(unsafe_code)]

mod common;

mod cli;
mod data;
mod export;
mod fuzz;
mod hostile;
mod models;
mod pinn;
mod private;
mod provenance;
mod readers;
mod seq2seq;
mod sequence;
