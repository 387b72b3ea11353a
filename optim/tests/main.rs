//! The integration tests of strata-optim, one test binary (one link, one instantiation of
//! the generic kernels) for all of them; each module is one area.

mod behaviour;
mod parity_optimizers;
mod pytorch_trajectories;
