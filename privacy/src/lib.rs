//! Differentially private training for strata: DP-SGD with per-sample gradients.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod accountant;
mod error;
mod grad_sample;

pub use accountant::{Accountant, AccountantKind, PrvAccountant, RdpAccountant, noise_multiplier};
pub use error::{PrivacyError, Result};
pub use grad_sample::{Captured, GradSampler, LossReduction, NormMethod};
