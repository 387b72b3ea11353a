//! Reference models trained end to end on real data, the data pipeline, the training loop,
//! and the `strata` command-line tool.
//!
//! strata-models builds on the other strata crates and owns what turns them into
//! trainings: [`data`] (the [`Dataset`](data::Dataset) trait, the
//! [`DataLoader`](data::DataLoader), readers for IDX, CIFAR-10, CSV and text, and the data
//! sets bundled in the repo), the [`models`] of the reference material with their
//! [`reference`](mod@reference) trainings (one [`ReferenceModel`](reference::ReferenceModel) each, listed
//! once in the [`REGISTRY`](models::REGISTRY)), the one [`train`]ing loop with metrics,
//! [`checkpoint`]s with a provenance record, and [`plot`]s.
//!
//! ```no_run
//! use strata_models::reference::{Model, TrainOptions, train};
//!
//! let metrics = train(&TrainOptions {
//!     epochs: Some(1),
//!     ..TrainOptions::new(Model::named("cnn")?, "runs/cnn")
//! })?;
//! println!("test accuracy {}", metrics["test_accuracy"]);
//! # Ok::<(), strata_models::ModelsError>(())
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod data;
mod error;
pub mod language;
pub mod models;
pub mod plot;
pub mod reference;
pub mod train;

pub use error::{ModelsError, Result};

// The README's examples compile and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
