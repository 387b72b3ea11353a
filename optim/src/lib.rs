//! Optimizers, learning-rate schedules and gradient clipping with PyTorch's update rules.
//!
//! strata-optim owns the [`Optimizer`] trait and its update rules (SGD, Adam, AdamW,
//! RMSprop, Adagrad, Lion), the [`schedule`]s that set learning rates, and gradient
//! clipping. It works on [`Var`](strata_autograd::Var) parameters from strata-autograd,
//! so it needs no layers: hand it `module.parameters()` from strata-nn or any vars.
//!
//! Each update is one fused pass over a parameter, its gradient and its state, split
//! across threads for large parameters; the rules follow PyTorch operation for operation
//! and are tested against its trajectories.
//!
//! ```
//! use strata_optim::{Adam, AdamConfig, Optimizer};
//! use strata_autograd::Var;
//! use strata_tensor::Tensor;
//!
//! let w = Var::parameter(Tensor::from_vec(vec![3.0f32, -2.0], &[2])?);
//! let mut opt = Adam::new(vec![w.clone()], AdamConfig { lr: 0.1, ..AdamConfig::default() })?;
//! for _ in 0..200 {
//!     opt.zero_grad();
//!     w.square().sum_all().backward()?;
//!     opt.step()?;
//! }
//! assert!(w.to_vec().iter().all(|v| v.abs() < 0.05));
//! # Ok::<(), strata_optim::OptimError>(())
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod adagrad;
mod adam;
mod adaptive;
mod clip;
mod ema;
mod error;
mod lbfgs;
mod lion;
mod optimizer;
mod rmsprop;
pub mod schedule;
mod schedules_more;
mod sgd;
mod state;

pub use adagrad::{Adagrad, AdagradConfig};
pub use adam::{Adam, AdamConfig, AdamW, AdamWConfig};
pub use adaptive::{
    Adamax, AdamaxConfig, Asgd, AsgdConfig, NAdam, NAdamConfig, RAdam, RAdamConfig,
};
pub use clip::{clip_grad_norm, clip_grad_value};
pub use ema::ExponentialMovingAverage;
pub use error::{OptimError, Result};
pub use lbfgs::{Lbfgs, LbfgsConfig};
pub use lion::{Lion, LionConfig};
pub use optimizer::{Optimizer, ParamGroup};
pub use rmsprop::{RmsProp, RmsPropConfig};
pub use sgd::{Sgd, SgdConfig};
pub use state::OptimizerState;
