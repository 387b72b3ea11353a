//! [`DistributedDataParallel`]: a module whose gradients are averaged over the ranks, with
//! PyTorch DDP's semantics; [`Reducer`], the machinery, for modules one does not wrap.

mod buckets;
pub(crate) mod check;
mod reducer;

use strata_autograd::Var;
use strata_nn::{Forward, Module, NnError, StateKind};
use strata_tensor::Element;

use crate::comm::Communicator;
use crate::{DistributedError, Result};

pub use reducer::{Reducer, ReducerStats};

/// How [`DistributedDataParallel`] averages gradients; the defaults are PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DdpConfig {
    /// Gradient bytes per bucket, in MiB (`bucket_cap_mb`, 25). Smaller buckets start
    /// communicating earlier in the backward; larger ones make fewer all-reduces. 0 gives
    /// every parameter a bucket of its own.
    pub bucket_cap_mb: f64,
    /// The cap of the first bucket, the gradients the backward finishes first (PyTorch's
    /// `_DEFAULT_FIRST_BUCKET_BYTES`, 1 MiB), so that communication starts early.
    pub first_bucket_cap_mb: f64,
    /// Walk the forward's graph to find the parameters that will get no gradient, and let
    /// them contribute zeros instead of holding up their bucket (`find_unused_parameters`,
    /// false). Costs a graph walk per forward; needed when some forward passes skip some
    /// parameters (a parameter no rank used keeps no gradient).
    pub find_unused_parameters: bool,
    /// Give every rank rank 0's buffers (BatchNorm's running statistics) before each
    /// forward (`broadcast_buffers`, true).
    pub broadcast_buffers: bool,
}

impl Default for DdpConfig {
    fn default() -> Self {
        DdpConfig {
            bucket_cap_mb: 25.0,
            first_bucket_cap_mb: 1.0,
            find_unused_parameters: false,
            broadcast_buffers: true,
        }
    }
}

/// A module trained data-parallel: every rank holds a replica, runs it on its own share of
/// each batch, and after each backward holds the gradients averaged over all ranks, so that
/// the same optimizer step on every rank keeps the replicas equal
/// (`torch.nn.parallel.DistributedDataParallel`).
///
/// Construction checks that every rank has the same model (names, kinds, shapes and element
/// types of the parameters and buffers, in order; the error names the first difference)
/// and copies rank 0's parameters and buffers to every rank. During the backward,
/// gradients are averaged in buckets ([`DdpConfig::bucket_cap_mb`], in reverse
/// registration order), each bucket's all-reduce starting as soon as its last gradient is
/// final, so that communication overlaps the rest of the backward; when `backward()`
/// returns, every `.grad` holds the average. [`no_sync`](DistributedDataParallel::no_sync)
/// accumulates without communicating.
///
/// Unlike PyTorch, the state dict has the module's own keys (no `module.` prefix), so a
/// checkpoint of a data-parallel training loads straight into the plain module.
///
/// ```
/// use strata_distributed::{DdpConfig, DistributedDataParallel, World};
/// use strata_nn::{Forward, Linear, Module};
/// use strata_optim::{Optimizer, Sgd, SgdConfig};
/// use strata_autograd::Var;
/// use strata_tensor::{Tensor, seeded_rng};
///
/// let world = World::init()?;
/// let model = Linear::new(3, 1, true, &mut seeded_rng(0));
/// let ddp = DistributedDataParallel::new(model, world.comm(), DdpConfig::default())?;
/// let mut opt = Sgd::new(ddp.parameters(), SgdConfig { lr: 0.1, ..SgdConfig::default() })?;
/// // Each rank's share of the global batch.
/// let x = Var::new(Tensor::<f32>::ones(&[8, 3]));
/// opt.zero_grad();
/// ddp.forward(&x)?.square().mean_all().backward()?; // gradients averaged over the ranks
/// opt.step()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct DistributedDataParallel<M, T: Element = f32> {
    module: M,
    reducer: Reducer<T>,
}

impl<M: Module<T>, T: Element> DistributedDataParallel<M, T> {
    /// Wraps `module` for training over `comm`'s ranks. Every rank must call it.
    ///
    /// # Errors
    /// As [`Reducer::new`]: [`DistributedError::ModelMismatch`] on every rank when the
    /// models differ.
    pub fn new(module: M, comm: &Communicator, config: DdpConfig) -> Result<Self> {
        let reducer = Reducer::new(&module, comm, &config)?;
        Ok(DistributedDataParallel { module, reducer })
    }

    /// The wrapped module (`ddp.module`).
    pub fn module(&self) -> &M {
        &self.module
    }

    /// The wrapped module, mutably.
    pub fn module_mut(&mut self) -> &mut M {
        &mut self.module
    }

    /// The module, unwrapped (its hooks taken off).
    pub fn into_inner(self) -> M {
        self.module
    }

    /// The gradient averaging machinery (its buckets and measurements).
    pub fn reducer(&self) -> &Reducer<T> {
        &self.reducer
    }

    /// The communicator.
    pub fn comm(&self) -> &Communicator {
        self.reducer.comm()
    }

    /// Runs `f` without averaging gradients: see [`Reducer::no_sync`].
    ///
    /// ```
    /// # use strata_distributed::{Communicator, DdpConfig, DistributedDataParallel};
    /// # use strata_nn::{Forward, Linear};
    /// # use strata_autograd::Var;
    /// # use strata_tensor::{Tensor, seeded_rng};
    /// # let ddp = DistributedDataParallel::new(Linear::new(2, 1, true, &mut seeded_rng(0)),
    /// #     &Communicator::alone(), DdpConfig::default())?;
    /// # let micro = vec![Var::new(Tensor::<f32>::ones(&[4, 2])); 3];
    /// // Accumulate three micro-batches, communicate once.
    /// for x in &micro[..2] {
    ///     ddp.no_sync(|| -> Result<(), Box<dyn std::error::Error>> {
    ///         ddp.forward(x)?.sum_all().backward()?;
    ///         Ok(())
    ///     })?;
    /// }
    /// ddp.forward(&micro[2])?.sum_all().backward()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn no_sync<R>(&self, f: impl FnOnce() -> R) -> R {
        self.reducer.no_sync(f)
    }

    /// Runs a forward of the module that is not [`Forward`] (several inputs, several
    /// outputs) with DDP's bookkeeping around it: `f` computes the output the loss will be
    /// built from.
    ///
    /// # Errors
    /// [`DistributedError::UnfinishedReduction`] when the previous backward left parameters
    /// without a gradient (and `find_unused_parameters` is off); errors of `f`.
    pub fn forward_with<E>(
        &self,
        f: impl FnOnce(&M) -> std::result::Result<Var<T>, E>,
    ) -> Result<Var<T>>
    where
        DistributedError: From<E>,
    {
        self.reducer.before_forward()?;
        let out = f(&self.module)?;
        self.reducer.after_forward(&out)?;
        Ok(out)
    }
}

impl<M: Module<T>, T: Element> Module<T> for DistributedDataParallel<M, T> {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {
        self.module.visit_state(f);
    }

    fn set_training(&mut self, training: bool) {
        self.module.set_training(training);
    }
}

impl<M: Forward<T>, T: Element> Forward<T> for DistributedDataParallel<M, T> {
    /// The module's forward, with DDP's bookkeeping: the previous step's reduction must
    /// have finished, rank 0's buffers are broadcast (`broadcast_buffers`), and with
    /// `find_unused_parameters` the parameters the output does not depend on are marked.
    ///
    /// # Errors
    /// The module's errors; DDP's as [`NnError::Config`] naming `DistributedDataParallel`.
    fn forward(&self, x: &Var<T>) -> strata_nn::Result<Var<T>> {
        let as_nn = |e: DistributedError| match e {
            DistributedError::Nn(e) => e,
            DistributedError::Autograd(e) => NnError::Autograd(e),
            e => NnError::Config {
                layer: "DistributedDataParallel",
                msg: e.to_string(),
            },
        };
        self.reducer.before_forward().map_err(as_nn)?;
        let out = self.module.forward(x)?;
        self.reducer.after_forward(&out).map_err(as_nn)?;
        Ok(out)
    }
}

impl<M, T: Element> std::fmt::Debug for DistributedDataParallel<M, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistributedDataParallel")
            .field("reducer", &self.reducer)
            .finish_non_exhaustive()
    }
}
