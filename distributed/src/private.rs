//! DP-SGD across ranks: the [`Communicator`] as strata-privacy's
//! [`ProcessGroup`](strata_privacy::ProcessGroup), and [`replicate`], which starts the
//! ranks from the same model without hooking a [`Reducer`](crate::Reducer) on it.
//!
//! A private step must not average the raw gradients (DDP's reducer would, during the
//! backward that computes the per-sample gradients, and would wait for ranks whose Poisson
//! batch was empty and ran no backward): each rank clips its own samples and
//! [`DpSgd`](strata_privacy::DpSgd) sums the clipped gradients, adds the noise once on
//! rank 0 and hands every rank the same gradient.
//!
//! ```
//! use strata_distributed::{World, replicate};
//! use strata_nn::{Linear, Module};
//! use strata_privacy::{DpSgd, DpSgdConfig, GaussianNoise};
//! use strata_tensor::seeded_rng;
//!
//! let world = World::init()?; // under `mpirun -np 4`: rank 0..3 of 4
//! let comm = world.comm();
//! let model = Linear::<f32>::new(4, 2, true, &mut seeded_rng(0));
//! replicate(&model, comm)?; // the same model, rank 0's weights, on every rank
//! let config = DpSgdConfig::new(1.0, 1.1, 0.01, 600.0); // C, σ, q, q·n over all ranks
//! let dp = DpSgd::new(&model, config, GaussianNoise::secure()?)?.across(comm.clone())?;
//! assert_eq!(dp.world_size(), comm.size());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use strata_nn::Module;
use strata_privacy::{PrivacyError, ProcessGroup};
use strata_tensor::Element;

use crate::comm::Communicator;
use crate::ddp::check;
use crate::{ReduceOp, Result};

impl ProcessGroup for Communicator {
    fn rank(&self) -> usize {
        Communicator::rank(self)
    }

    fn size(&self) -> usize {
        Communicator::size(self)
    }

    fn sum(&self, data: &mut [f64]) -> strata_privacy::Result<()> {
        self.all_reduce(data, ReduceOp::Sum)
            .map_err(|e| PrivacyError::Communication(e.to_string()))
    }

    fn broadcast(&self, data: &mut [f64], root: usize) -> strata_privacy::Result<()> {
        Communicator::broadcast(self, data, root)
            .map_err(|e| PrivacyError::Communication(e.to_string()))
    }
}

/// Checks that every rank has the same model (names, kinds, shapes and element types of
/// every parameter and buffer, in order) and copies rank 0's parameters and buffers to
/// every rank: what [`Reducer::new`](crate::Reducer::new) does first, without hooking
/// the gradients. Every rank must call it.
///
/// # Errors
/// [`DistributedError::ModelMismatch`](crate::DistributedError::ModelMismatch) on every
/// rank when the models differ; communication errors.
pub fn replicate<T: Element, M: Module<T> + ?Sized>(module: &M, comm: &Communicator) -> Result<()> {
    check::check_same(comm, &check::describe(module))?;
    let mut all = Vec::new();
    module.visit_state(&mut |_, var, _| all.push(var.clone()));
    check::broadcast_values(comm, &all, 0)
}
