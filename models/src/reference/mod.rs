//! The reference trainings behind the `strata` command, and evaluation, prediction,
//! generation and inspection of their checkpoints.
//!
//! Each reference model is one type implementing [`ReferenceModel`] (beside the model, in
//! [`models`](crate::models)), listed once in [`REGISTRY`](crate::models::REGISTRY); a
//! [`Model`] is a handle on a registry entry. What follows from the trait is written once:
//! [`train`] resolves the model's [`Defaults`] with the [`TrainOptions`], prepares its data,
//! builds its network, trains it through the one training loop
//! ([`train::run`](crate::train::run)) by way of its [`Task`], and writes the metrics, a
//! checkpoint whose provenance [`Record`] is a serde struct, and the curves; [`eval`],
//! [`predict`] and [`generate`] rebuild the network from a checkpoint's record.
//!
//! Adding a model: a file in `models/` with the network, its architecture struct and a
//! `ReferenceModel` implementation (reusing [`SupervisedTask`] or [`LanguageTask`], or a
//! [`Task`] of its own), and its line in the registry.

mod flows;
mod language;
pub mod record;
mod registry;
mod spec;
mod supervised;

use std::path::{Path, PathBuf};

use serde_json::Value;
use strata_distributed::Communicator;
use strata_privacy::AccountantKind;

use crate::models::RecurrentKind;
use crate::train::Evaluation;
use crate::{Result, checkpoint};

pub use language::{CharExtra, LanguageTask, corpus, language_model_predicts_nothing};
pub use record::{DatasetRecord, Hyperparameters, Metrics, PrivacyRecord, Record};
pub use registry::{Model, datasets_help, defaults_help, epochs_help};
#[cfg(test)]
pub(crate) use spec::assert_round_trip;
pub use spec::{
    Defaults, Figures, Length, Network, NoExtra, OptimizerKind, Plan, Prepared, ReferenceModel,
    Schedule, Task, TaskData, figures,
};
pub use supervised::{
    Split, Standardized, SupervisedTask, data_root, image_input, images, outputs, row_input,
    tabular,
};

/// What to train and how; `None` takes the model's default. Start from
/// [`TrainOptions::new`] and change what you need.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainOptions {
    /// The model.
    pub model: Model,
    /// Epochs (not for the models that train in steps).
    pub epochs: Option<usize>,
    /// Optimizer steps of the models that train in steps.
    pub steps: Option<usize>,
    /// Learning rate.
    pub lr: Option<f64>,
    /// Batch size.
    pub batch_size: Option<usize>,
    /// LSTM or GRU, for char-rnn and forecast.
    pub cell: Option<RecurrentKind>,
    /// The seed of initialisation, splits and shuffling.
    pub seed: u64,
    /// Where to write metrics.json, the checkpoint and the plot.
    pub out: PathBuf,
    /// Data to train on instead of the bundled set: a folder of files of the model's
    /// format, or a UTF-8 text file for the character models.
    pub data: Option<PathBuf>,
    /// A bundled data set other than the model's default (see [`Model::datasets`]).
    pub dataset: Option<String>,
    /// Use only the first `n` training samples (quick runs and tests); for the character
    /// models, the first `n` characters of the text.
    pub limit: Option<usize>,
    /// Draw progress bars.
    pub progress: bool,
    /// The ranks that train together: a world of one by default; under an MPI launcher,
    /// the launcher's world (`strata_distributed::World::init`), each rank then reading its
    /// share of every global batch of `batch_size`.
    pub comm: Communicator,
    /// Train with differential privacy (DP-SGD); `None` trains as usual.
    pub privacy: Option<PrivacyOptions>,
}

/// Private training (`strata train --dp`): DP-SGD from strata-privacy, with Poisson
/// batches of expected size `batch_size`, each sample's gradient clipped to
/// `max_grad_norm`, Gaussian noise, and an accountant; the guarantee goes into the
/// checkpoint's provenance record and ε per epoch into `metrics.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct PrivacyOptions {
    /// The ε to spend over the whole run: the noise multiplier is solved for it. Give
    /// this or `noise_multiplier`.
    pub epsilon: Option<f64>,
    /// The δ of the guarantee.
    pub delta: f64,
    /// C: the bound on each sample's gradient norm.
    pub max_grad_norm: f64,
    /// σ, given instead of `epsilon` (ε is then reported).
    pub noise_multiplier: Option<f64>,
    /// The accountant.
    pub accountant: AccountantKind,
    /// Noise (and sampling) from the run's seed instead of the OS: reproducible, and
    /// recorded as not private.
    pub seeded_noise: bool,
}

impl PrivacyOptions {
    /// A target of (`epsilon`, `delta`) with C = 1, the PRV accountant and secure noise.
    pub fn target(epsilon: f64, delta: f64) -> Self {
        PrivacyOptions {
            epsilon: Some(epsilon),
            delta,
            max_grad_norm: 1.0,
            noise_multiplier: None,
            accountant: AccountantKind::Prv,
            seeded_noise: false,
        }
    }
}

impl TrainOptions {
    /// The model's defaults, seed 0, writing into `out`, with progress bars.
    pub fn new(model: Model, out: impl Into<PathBuf>) -> Self {
        TrainOptions {
            model,
            epochs: None,
            steps: None,
            lr: None,
            batch_size: None,
            cell: None,
            seed: 0,
            out: out.into(),
            data: None,
            dataset: None,
            limit: None,
            progress: true,
            comm: Communicator::alone(),
            privacy: None,
        }
    }
}

/// Trains a reference model and writes `metrics.json`, the checkpoint (`checkpoint/`) and
/// the loss curves (`curves.svg`) into `opts.out`; returns the metrics.
///
/// With several ranks in `opts.comm`, every rank must call it: the model's gradients are
/// averaged over the ranks ([`Reducer`](strata_distributed::Reducer)), each rank reads its
/// share of every batch, the global batch is `batch_size` rounded up to a multiple of the
/// number of ranks, and rank 0 alone writes the files (the provenance record names the
/// world size).
///
/// # Errors
/// Data, configuration, training and file errors, each naming what is wrong.
pub fn train(opts: &TrainOptions) -> Result<Value> {
    opts.model.flows().train(opts)
}

/// Evaluates the checkpoint in `dir` on the test split of the data it was trained on (the
/// held-out text, for the character models).
///
/// # Errors
/// [`ModelsError::Checkpoint`](crate::ModelsError::Checkpoint) for a missing or foreign
/// checkpoint; data errors.
pub fn eval(dir: &Path) -> Result<Evaluation> {
    let record = record::read(dir)?;
    Model::named(&record.model)?.flows().eval(record, dir)
}

/// Predictions of the checkpoint in `dir` for the samples in `input`: an IDX image file
/// for the image models (cnn, mlp, seq-classifier), CSV rows of raw features (no header)
/// for the tabular ones, or a series of raw values (one per line) for the forecaster.
/// One line per sample: the class or the value; for the forecaster, one forecast per
/// window of the series, the last one of the value after the series' end.
///
/// # Errors
/// [`ModelsError::Checkpoint`](crate::ModelsError::Checkpoint) for a missing or foreign
/// checkpoint, [`ModelsError::Data`](crate::ModelsError::Data) for an input of the wrong
/// format or size; a model that does not predict from files.
pub fn predict(dir: &Path, input: &Path) -> Result<Vec<String>> {
    let record = record::read(dir)?;
    Model::named(&record.model)?
        .flows()
        .predict(record, dir, input)
}

/// Text sampled from the character model of the checkpoint in `dir`: `prompt` continued
/// by `length` characters at `temperature` (0: the most likely character each time),
/// drawn with an RNG seeded with `seed`.
///
/// # Errors
/// [`ModelsError::Checkpoint`](crate::ModelsError::Checkpoint) for a missing checkpoint;
/// [`ModelsError::Config`](crate::ModelsError::Config) for one of a model that does not
/// generate text, a prompt with characters the model never saw or a negative temperature.
pub fn generate(
    dir: &Path,
    prompt: &str,
    length: usize,
    temperature: f64,
    seed: u64,
) -> Result<String> {
    let record = record::read(dir)?;
    let request = flows::Generate {
        prompt,
        length,
        temperature,
        seed,
    };
    Model::named(&record.model)?
        .flows()
        .generate(record, dir, &request)
}

/// The provenance record of the checkpoint in `dir`, pretty-printed as it is.
///
/// # Errors
/// [`ModelsError::Checkpoint`](crate::ModelsError::Checkpoint) for a missing or unreadable
/// record.
pub fn info(dir: &Path) -> Result<String> {
    let record = checkpoint::read_record(dir)?;
    Ok(serde_json::to_string_pretty(&record).expect("plain JSON values"))
}
