//! Differentially private training for strata: DP-SGD with per-sample gradients, secure
//! noise and privacy accounting, like Opacus for PyTorch.
//!
//! strata-privacy owns what makes a training run (ε, δ)-differentially private:
//!
//! - **per-sample gradients** ([`GradSampler`]) of every strata layer with parameters —
//!   Linear, Conv1d/Conv2d (stride, padding, dilation, groups), Embedding, LayerNorm,
//!   RMSNorm, RNN/LSTM/GRU and their cells, MultiheadAttention, the transformer layers,
//!   learned positional encodings — from each op's activations and output gradient
//!   (batched products, im2col), and their norms without forming them ("ghost" norms)
//!   where that is cheaper. It taps ops, not modules
//!   ([`tap_parameters`](strata_autograd::tap_parameters)), so custom modules and
//!   functional code work too, and a parameter used by an op without a per-sample rule is
//!   an error, never a wrong gradient. BatchNorm mixes samples and is refused;
//! - **the DP-SGD step** ([`DpSgd`]): clip each sample (flat or per layer), sum, add
//!   N(0, (σC)²) noise once per logical batch (micro-batches accumulate), divide by the
//!   expected batch size, and write `.grad`, so every strata-optim optimizer works on it;
//!   across processes ([`DpSgd::across`], [`ProcessGroup`]) each rank clips its own
//!   samples, the clipped sums are summed over the ranks and rank 0 adds the noise once;
//! - **Poisson sampling** ([`PoissonSampler`]), as the accounting assumes;
//! - **accountants** ([`RdpAccountant`], [`PrvAccountant`], [`noise_multiplier`]) that agree
//!   with Opacus's;
//! - **secure noise** ([`GaussianNoise`]): ChaCha seeded by the OS, added exactly on a grid
//!   against the floating-point attack (see its docs for what is and is not covered).
//!
//! It leaves the layers to strata-nn, the optimizers to strata-optim and the data
//! loading, training loop and checkpoints (with the guarantee in their provenance) to
//! strata-models.
//!
//! ```
//! use strata_autograd::Var;
//! use strata_nn::loss::{ClassLossOptions, cross_entropy};
//! use strata_nn::{Forward, Linear, Module, ReLU, Sequential};
//! use strata_optim::{Adam, AdamConfig, Optimizer};
//! use strata_privacy::{
//!     AccountantKind, DpSgd, DpSgdConfig, GaussianNoise, PoissonSampler, noise_multiplier,
//! };
//! use strata_tensor::{IndexTensor, Tensor, seeded_rng};
//!
//! let mut rng = seeded_rng(0);
//! let (n, q, epochs) = (512, 64.0 / 512.0, 2);
//! let x = Tensor::<f32>::randn(&[n, 4], &mut rng);
//! let y: Vec<i64> = x.to_vec().chunks(4).map(|r| i64::from(r[0] > 0.0)).collect();
//! let model = Sequential::new()
//!     .push(Linear::new(4, 16, true, &mut rng))
//!     .push(ReLU)
//!     .push(Linear::new(16, 2, true, &mut rng));
//! let mut sampler = PoissonSampler::new(n, q)?;
//! let steps = (sampler.steps_per_epoch() * epochs) as u64;
//! // The noise that spends ε = 3 at δ = 1e-5 over the whole run.
//! let sigma = noise_multiplier(AccountantKind::Rdp, 3.0, 1e-5, q, steps)?;
//! let config = DpSgdConfig::new(1.0, sigma, q, sampler.expected_batch_size());
//! let mut dp = DpSgd::new(&model, config, GaussianNoise::secure()?)?;
//! let mut opt = Adam::new(model.parameters(), AdamConfig { lr: 1e-2, ..AdamConfig::default() })?;
//! for _ in 0..epochs {
//!     for batch in sampler.epoch() {
//!         let (b, idx) = (batch.len(), batch.iter().map(|&i| i as i64).collect());
//!         let xb = Var::new(x.index_select(0, &IndexTensor::from_vec(idx, &[b])?)?);
//!         let yb = IndexTensor::from_vec(batch.iter().map(|&i| y[i]).collect(), &[b])?;
//!         dp.step(b, || cross_entropy(&model.forward(&xb)?, &yb, &ClassLossOptions::default()))?;
//!         opt.step()?;
//!     }
//! }
//! let spent = dp.guarantee(1e-5)?;
//! assert!(spent.epsilon <= 3.0 && spent.secure_noise);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod accountant;
mod dp_sgd;
mod error;
mod grad_sample;
mod group;
mod noise;
mod sampler;

pub use accountant::{Accountant, AccountantKind, PrvAccountant, RdpAccountant, noise_multiplier};
pub use dp_sgd::{BatchStats, Clipping, DpSgd, DpSgdConfig, Guarantee};
pub use error::{PrivacyError, Result};
pub use grad_sample::{Captured, GradSampler, LossReduction, NormMethod};
pub use group::ProcessGroup;
pub use noise::GaussianNoise;
pub use sampler::PoissonSampler;
