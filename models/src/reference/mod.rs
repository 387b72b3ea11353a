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

pub use flows::{ResumeOptions, checkpoint_dir, periods, prepare_out};
pub use language::{CharExtra, LanguageTask, corpus, language_model_predicts_nothing};
pub use record::{
    DatasetRecord, Hyperparameters, Metrics, Preprocessing, PrivacyRecord, Progress, Record,
};
pub use registry::{Model, datasets_help, defaults_help, epochs_help};
#[cfg(test)]
pub(crate) use spec::assert_round_trip;
pub use spec::{
    Defaults, Figures, Length, Network, NoExtra, OptimizerKind, Plan, Prepared, ReferenceModel,
    Schedule, Task, TaskData, figures,
};
pub use supervised::{
    Split, Standardized, SupervisedTask, data_root, image_input, image_preprocessing, images,
    outputs, row_input, tabular,
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
    /// Replace a run already in `out` (without it, such a folder is an error).
    pub force: bool,
    /// Epochs (evaluation periods, for the models that train in steps) between
    /// checkpoints; by default every one up to 50, a tenth of them beyond.
    pub checkpoint_every: Option<usize>,
    /// Stop after this many epochs (periods), leaving a checkpoint that
    /// [`resume`] continues.
    pub stop_after: Option<usize>,
    /// The ranks that train together: a world of one by default; under an MPI launcher,
    /// the launcher's world (`strata_distributed::World::init`), each rank then reading its
    /// share of every global batch of `batch_size`.
    pub comm: Communicator,
    /// Train with differential privacy (DP-SGD); `None` trains as usual.
    pub privacy: Option<PrivacyOptions>,
    /// Evaluate and save an exponential moving average of the weights with this decay
    /// (in `[0, 1)`; 0 turns off a model's default average).
    pub ema: Option<f64>,
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
            force: false,
            checkpoint_every: None,
            stop_after: None,
            comm: Communicator::alone(),
            privacy: None,
            ema: None,
        }
    }
}

/// Trains a reference model and writes `metrics.json`, the checkpoint (`checkpoint/`) and
/// the loss curves (`curves.svg`) into `opts.out`; returns the metrics.
///
/// The output folder is checked before anything is trained (see [`prepare_out`]); the
/// checkpoint is written every few epochs (`checkpoint_every`) and at the end, each time
/// as one unit, and before the figures that could still fail (a failure of those is
/// recorded as `report_errors` in the metrics, and the trained model stays saved). With
/// `stop_after`, the training stops after that many epochs and returns the metrics of the
/// last one with `"stopped_after"`; [`resume`] continues it.
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

/// Continues the training whose run folder is `dir` (the `out` of [`train`], holding
/// `checkpoint/`; or that checkpoint folder itself), from its last checkpoint, with the
/// options it was started with: the model, optimizer and schedule state, the epochs done
/// and the data order continue exactly, so a training stopped and resumed ends with the
/// same weights, bit for bit, as one that never stopped. (The character models' windows
/// come from an RNG that runs across the whole training: resuming replays its draws for
/// the steps already done. None of the reference models uses dropout, whose RNG state is
/// not in the checkpoint.)
///
/// # Errors
/// [`ModelsError::Checkpoint`](crate::ModelsError::Checkpoint) for a missing, foreign or
/// malformed checkpoint, or data that no longer gives the recorded architecture;
/// [`ModelsError::Config`](crate::ModelsError::Config) for a complete training; the errors
/// of [`train`].
pub fn resume(dir: &Path, how: &ResumeOptions) -> Result<Value> {
    let run = if dir.join(checkpoint::RECORD_FILE).exists() {
        if dir.file_name().is_none_or(|n| n != "checkpoint") {
            return Err(crate::ModelsError::Config(format!(
                "{} is a checkpoint outside a run folder: --resume takes the --out folder of \
                 the training (which holds checkpoint/)",
                dir.display()
            )));
        }
        dir.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    } else {
        dir.to_path_buf()
    };
    let record = record::read(&checkpoint_dir(&run))?;
    Model::named(&record.model)?
        .flows()
        .resume(record, &run, how)
}

/// Evaluates the checkpoint in `dir` on the test split of the data it was trained on (the
/// held-out text, for the character models).
///
/// # Errors
/// [`ModelsError::Checkpoint`](crate::ModelsError::Checkpoint) for a missing or foreign
/// checkpoint, or one whose weights give a NaN or infinite loss or metric on the data;
/// data errors.
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
/// format or size; [`ModelsError::Config`](crate::ModelsError::Config) for a model that
/// does not predict from files, or an output that is NaN or infinite.
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
/// generate text, a prompt with characters the model never saw, a negative temperature,
/// or logits that are NaN or infinite.
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

/// The checkpoint in `dir` as an ONNX model (opset 17, weights as initializers, a dynamic
/// batch dimension), written atomically to `out`; returns the export, with strata's own
/// output on the example input it was traced on.
///
/// # Errors
/// [`ModelsError::Checkpoint`](crate::ModelsError::Checkpoint) for a missing or foreign
/// checkpoint; [`ModelsError::Onnx`](crate::ModelsError::Onnx) for a layer ONNX cannot
/// express or a file that cannot be written.
pub fn export(dir: &Path, out: &Path) -> Result<strata_onnx::Exported> {
    let record = record::read(dir)?;
    let exported = Model::named(&record.model)?.flows().export(record, dir)?;
    exported.save(out)?;
    Ok(exported)
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
