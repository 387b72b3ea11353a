//! Differentially private training for strata: DP-SGD with per-sample gradients.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod accountant;
mod error;
mod grad_sample;

pub use error::{PrivacyError, Result};
pub use grad_sample::{Captured, GradSampler, LossReduction, NormMethod};
