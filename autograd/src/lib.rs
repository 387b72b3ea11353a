//! Reverse-mode automatic differentiation on a dynamic graph, in the PyTorch style.
//!
//! strata-autograd owns [`Var`] (a [`Tensor`](strata_tensor::Tensor) plus, when it
//! requires grad, the node that made it), the backward walk, grad mode ([`no_grad`]) and
//! [`gradcheck`]. The kernels, forward and backward, live in strata-tensor; layers,
//! losses and optimizers live in strata-nn and strata-optim above.
//!
//! Ordinary Rust code builds the graph as it runs; `loss.backward()` fills in the
//! gradients of every leaf that requires grad. Here is the gradient-descent fit of a line
//! to five points on `y = 2x`:
//!
//! ```
//! use strata_autograd::{Var, no_grad};
//! use strata_tensor::Tensor;
//!
//! let x = Var::new(Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0], &[5])?);
//! let y = Var::new(Tensor::from_vec(vec![2.0f32, 4.0, 6.0, 8.0, 10.0], &[5])?);
//! let theta0 = Var::parameter(Tensor::zeros(&[1]));
//! let theta1 = Var::parameter(Tensor::zeros(&[1]));
//! for _ in 0..1000 {
//!     let prediction = theta0.add(&theta1.mul(&x)?)?;
//!     let loss = prediction.sub(&y)?.square().mean_all();
//!     loss.backward()?;
//!     no_grad(|| -> strata_autograd::Result<()> {
//!         for p in [&theta0, &theta1] {
//!             let g = p.take_grad().expect("backward reached every parameter");
//!             p.update_value(|v| v.axpy_(-0.01, &g))?;
//!         }
//!         Ok(())
//!     })?;
//! }
//! assert!((theta1.item()? - 2.0).abs() < 0.05);
//! # Ok::<(), strata_autograd::AutogradError>(())
//! ```
//!
//! Every op records a node only when one of its inputs requires grad and grad mode is
//! on; the graph and the intermediate gradients are freed as the backward walk passes
//! them (pass `retain_graph` to [`Var::backward_with_options`] to walk twice).
//!
//! Beyond the first derivative:
//! - every op's backward is itself differentiable: [`grad`] with
//!   [`GradOptions::create_graph`] (like `torch.autograd.grad(..., create_graph=True)`),
//!   [`vjp`], [`jvp`], [`hessian_vector_product`], checked by [`gradgradcheck`];
//! - [`Var::register_hook`] and [`Var::register_post_accumulate_grad_hook`] see or
//!   replace gradients as the walk passes them;
//! - [`checkpoint`] recomputes a function's intermediates during backward instead of
//!   keeping them ([`replayable`] random draws give the same values the second time);
//! - [`detect_anomaly`] turns a NaN or infinity produced by a backward into an error that
//!   names the op and where the forward called it;
//! - [`tap_parameters`] reports every op that consumes given vars (a model's parameters)
//!   with its activations, which per-sample gradient engines (strata-privacy) build on.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod anomaly;
mod backward;
mod checkpoint;
mod error;
mod functional;
mod grad_mode;
mod gradcheck;
mod hooks;
mod ops;
pub mod taps;
mod var;

pub use anomaly::{detect_anomaly, is_anomaly_enabled};
pub use checkpoint::{CheckpointFn, checkpoint, replayable};
pub use error::{AutogradError, Result};
pub use functional::{GradOptions, Products, grad, hessian_vector_product, jvp, vjp};
pub use grad_mode::{enable_grad, is_grad_enabled, no_grad};
pub use gradcheck::{GradcheckError, GradcheckOptions, gradcheck, gradgradcheck};
pub use hooks::HookHandle;
pub use ops::{ConvTransposeParams, RecurrentParams, einsum};
pub use taps::{
    ParamUse, RecurrentTap, SampleMixing, Tap, TapOp, Taps, note_sample_mixing, tap_parameters,
};
pub use var::{InputGrads, Needs, Var};
