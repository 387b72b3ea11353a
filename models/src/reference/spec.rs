//! What a reference model is: the [`ReferenceModel`] trait each one implements once, the
//! [`Task`] a family of models shares (how it trains and is measured), and the small types
//! they exchange.

use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use strata_autograd::Var;
use strata_nn::Module;
use strata_optim::{Adam, AdamConfig, AdamW, AdamWConfig, Optimizer, Sgd, SgdConfig};
use strata_tensor::rand::rngs::StdRng;

use super::TrainOptions;
use super::record::{DatasetRecord, Hyperparameters, Preprocessing, Record};
use crate::data::bundled::Provenance;
use crate::train::{EpochEnd, EpochRecord, Evaluation, LoopConfig, Start};
use crate::{ModelsError, Result};

/// Named figures of a training's metrics beyond the common ones (`test_accuracy`,
/// `held_out_loss`, `closed_form`, …), as they appear in `metrics.json`.
pub type Figures = Map<String, Value>;

/// The network of a reference model `S`.
pub type Network<S> = <<S as ReferenceModel>::Task as Task>::Network;

/// The data of a reference model `S`, as its [`Task`] trains on it.
pub type TaskData<S> = <<S as ReferenceModel>::Task as Task>::Data;

/// One reference model of the `strata` command: its name, its defaults, its data, how it
/// builds its network from its architecture record, and what prediction needs. Implement it
/// on a unit struct beside the model and add a line to
/// [`REGISTRY`](crate::models::REGISTRY); training, evaluation, checkpoints, the command
/// line and its help follow from it.
///
/// Training goes: [`prepare`](ReferenceModel::prepare) the data (which also decides the
/// architecture and what inference needs besides the weights), [`init`](ReferenceModel::init)
/// the network, then the model's [`Task`] trains it through the one training loop.
/// A checkpoint is rebuilt from its record alone with [`build`](ReferenceModel::build).
pub trait ReferenceModel: Sync + 'static {
    /// The architecture record: what [`build`](ReferenceModel::build) needs, written into
    /// every checkpoint (`"architecture"`) and read back with serde.
    type Architecture: Serialize + DeserializeOwned;
    /// What inference needs besides the weights and the architecture (a standardiser, a
    /// vocabulary; [`NoExtra`] when nothing): the record's `"extra"`.
    type Extra: Serialize + DeserializeOwned;
    /// How the model trains and is measured.
    type Task: Task;

    /// The name on the command line and in checkpoints, e.g. `"cnn"`.
    const NAME: &'static str;
    /// One line about the model and its data, for `strata train --help`.
    const ABOUT: &'static str;
    /// The bundled data sets `--dataset` takes besides the default one.
    const DATASETS: &'static [&'static str] = &[];
    /// Whether `--cell` (LSTM or GRU) applies to the model.
    const CELL: bool = false;

    /// The training defaults that options left unset take.
    fn defaults(&self) -> Defaults;

    /// Loads the data `opts` names (`data`, `dataset`, `seed` for splits, `cell`, and for
    /// models that must cut their data themselves, `limit`), and decides the architecture
    /// and the extra record. Called again by `eval` with the options of the record.
    ///
    /// # Errors
    /// Data errors naming the file; an unknown data set.
    fn prepare(&self, opts: &TrainOptions) -> Result<Prepared<Self>>;

    /// A freshly initialised network of `architecture`, drawing from `rng`.
    ///
    /// # Errors
    /// An architecture the network cannot have.
    fn build(
        &self,
        architecture: &Self::Architecture,
        rng: &mut StdRng,
    ) -> Result<Box<Network<Self>>>;

    /// The network to train on `prepared` data: [`build`](ReferenceModel::build), then
    /// whatever the model fits on the data first (polynomial regression's standardisation).
    ///
    /// # Errors
    /// As [`build`](ReferenceModel::build).
    fn init(&self, prepared: &Prepared<Self>, rng: &mut StdRng) -> Result<Box<Network<Self>>> {
        self.build(&prepared.architecture, rng)
    }

    /// The task for a network of `architecture` (e.g. the objective its output needs).
    fn task(&self, architecture: &Self::Architecture) -> Self::Task;

    /// The model's own figures after training, added to the metrics (e.g. linear
    /// regression's closed-form comparison).
    ///
    /// # Errors
    /// Errors of computing them.
    fn report(&self, _net: &Network<Self>, _prepared: &Prepared<Self>) -> Result<Figures> {
        Ok(Figures::new())
    }

    /// How raw inputs become the network's inputs, recorded in the provenance record
    /// (`dataset.preprocessing`) for users who run the weights elsewhere; `None` (the
    /// default) when the network takes its data as it is.
    fn preprocessing(
        &self,
        _dataset: &DatasetRecord,
        _extra: &Self::Extra,
    ) -> Option<Preprocessing> {
        None
    }

    /// Checks an extra record read from a checkpoint against its architecture, before
    /// either is used: a hand-edited record (a vocabulary of another size, a standardiser
    /// with a zero deviation, collocation counts in the billions) is an error, not a wrong
    /// answer or a huge allocation.
    ///
    /// # Errors
    /// A message saying what does not fit.
    fn check_extra(
        &self,
        _architecture: &Self::Architecture,
        _extra: &Self::Extra,
    ) -> std::result::Result<(), String> {
        Ok(())
    }

    /// Checks, for `eval`, that data loaded again is what the checkpoint trained on, by the
    /// extra records of the training (`recorded`) and of the data now (`reloaded`).
    ///
    /// # Errors
    /// A message saying what has changed.
    fn check_reloaded(
        &self,
        _recorded: &Self::Extra,
        _reloaded: &Self::Extra,
    ) -> std::result::Result<(), String> {
        Ok(())
    }

    /// Predictions of the trained `net` of `record` for the samples in the file `input`,
    /// one line each.
    ///
    /// # Errors
    /// An input of the wrong format or size; by default, that the model does not predict
    /// from files.
    fn predict(
        &self,
        _net: &Network<Self>,
        _record: &Record<Self::Architecture, Self::Extra>,
        _input: &Path,
    ) -> Result<Vec<String>> {
        Err(ModelsError::Config(format!(
            "{} does not predict from an input file",
            Self::NAME
        )))
    }

    /// The trained `net` of `architecture` as an ONNX model (`strata export`), traced on an
    /// example input of one sample; the batch dimension stays dynamic.
    ///
    /// # Errors
    /// A network ONNX cannot express (naming the layer or op); by default, that the model
    /// has no export.
    fn export(
        &self,
        _net: &Network<Self>,
        _architecture: &Self::Architecture,
    ) -> Result<strata_onnx::Exported> {
        Err(ModelsError::Config(format!(
            "{} has no ONNX export",
            Self::NAME
        )))
    }

    /// Text sampled from the trained `net`: `prompt` continued by `length` characters at
    /// `temperature`, drawn from `rng`.
    ///
    /// # Errors
    /// A prompt or temperature the model cannot take; by default, that the model does not
    /// generate text.
    fn generate(
        &self,
        _net: &Network<Self>,
        _extra: &Self::Extra,
        _prompt: &str,
        _length: usize,
        _temperature: f64,
        _rng: &mut StdRng,
    ) -> Result<String> {
        Err(ModelsError::Config(format!(
            "{} is not a character language model: there is no text to generate",
            Self::NAME
        )))
    }
}

/// How a family of models trains and is measured: its network and data, one training
/// through the one loop ([`run`](crate::train::run)), the evaluation of `strata eval`, and
/// the figures of its metrics. The supervised models share
/// [`SupervisedTask`](super::SupervisedTask), the character models
/// [`LanguageTask`](super::LanguageTask); a model unlike both brings its own.
pub trait Task {
    /// The network.
    type Network: Module + ?Sized;
    /// The data, as prepared.
    type Data;

    /// Keeps only the first `n` training samples, for quick runs (models that cut their
    /// data while loading it do nothing here).
    fn limit(&self, data: &mut Self::Data, n: usize);

    /// The number of training samples (the batch size of full-batch training).
    fn train_len(&self, data: &Self::Data) -> usize;

    /// Trains `net` on `data` with `optimizer` as `plan` says, handing `on_epoch` every
    /// epoch's end; returns the history.
    ///
    /// # Errors
    /// A plan the task cannot follow; errors of the loop.
    fn fit(
        &mut self,
        net: &mut Self::Network,
        data: &Self::Data,
        optimizer: &mut dyn Optimizer,
        plan: &Plan,
        on_epoch: &mut dyn FnMut(&EpochEnd<'_>) -> Result<()>,
    ) -> Result<Vec<EpochRecord>>;

    /// The final evaluation of a trained `net` (in evaluation mode) on `data`, as `strata
    /// eval` reports it.
    ///
    /// # Errors
    /// Model and data errors.
    fn evaluate(&self, net: &Self::Network, data: &Self::Data) -> Result<Evaluation>;

    /// The task's figures of a finished training.
    ///
    /// # Errors
    /// Model errors.
    fn metrics(
        &mut self,
        net: &Self::Network,
        data: &Self::Data,
        history: &[EpochRecord],
        plan: &Plan,
    ) -> Result<Figures>;

    /// For private training (`--dp`): the number of units of privacy the batches are
    /// Poisson-sampled from (training samples; windows of text) and what one unit is, or
    /// an error saying why the task cannot train with DP-SGD (the default).
    ///
    /// # Errors
    /// [`ModelsError::Config`] for a task without private training.
    fn private_units(&self, _data: &Self::Data) -> Result<(usize, &'static str)> {
        Err(ModelsError::Config(
            "this model cannot train with DP-SGD".into(),
        ))
    }

    /// Writes the task's own fixed settings into the record's hyper-parameters.
    fn record_settings(&self, _hyperparameters: &mut Hyperparameters) {}

    /// Takes the task's own settings back from a record.
    fn restore_settings(&mut self, _hyperparameters: &Hyperparameters) {}
}

/// What [`ReferenceModel::prepare`] returns: the data, the architecture and extra record
/// they decide, and where the data comes from.
pub struct Prepared<S: ReferenceModel + ?Sized> {
    /// The data.
    pub data: TaskData<S>,
    /// The architecture of a network for it.
    pub architecture: S::Architecture,
    /// What inference needs besides the weights.
    pub extra: S::Extra,
    /// The data set's name, source and licence.
    pub dataset: Provenance,
}

/// The extra record of a model that needs nothing besides its weights: `{}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoExtra {}

/// How long a model trains by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Length {
    /// Passes over the training data (`--epochs`).
    Epochs(usize),
    /// Optimizer steps (`--steps`), evaluated twenty times along the way.
    Steps(usize),
}

/// The optimizers of the reference trainings, with PyTorch's defaults besides the lr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Plain SGD.
    Sgd,
    /// Adam.
    Adam,
    /// AdamW (weight decay 1e-2).
    AdamW,
}

impl OptimizerKind {
    /// `"sgd"`, `"adam"` or `"adamw"`, as in records.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
            OptimizerKind::AdamW => "adamw",
        }
    }

    /// An optimizer of this kind over `params` at learning rate `lr`.
    ///
    /// # Errors
    /// An invalid learning rate.
    pub fn build(self, params: Vec<Var>, lr: f64) -> Result<Box<dyn Optimizer>> {
        Ok(match self {
            OptimizerKind::Sgd => Box::new(Sgd::new(
                params,
                SgdConfig {
                    lr,
                    ..SgdConfig::default()
                },
            )?),
            OptimizerKind::Adam => Box::new(Adam::new(
                params,
                AdamConfig {
                    lr,
                    ..AdamConfig::default()
                },
            )?),
            OptimizerKind::AdamW => Box::new(AdamW::new(
                params,
                AdamWConfig {
                    lr,
                    ..AdamWConfig::default()
                },
            )?),
        })
    }
}

/// The learning-rate schedules of the reference trainings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// The lr throughout.
    Constant,
    /// A one-cycle schedule (PyTorch's `OneCycleLR` defaults) peaking at the lr.
    OneCycle,
}

/// A model's training defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Defaults {
    /// How long it trains.
    pub length: Length,
    /// The learning rate (the peak of a one-cycle schedule).
    pub lr: f64,
    /// Samples per batch; `None` for the whole training set in one batch.
    pub batch_size: Option<usize>,
    /// The optimizer.
    pub optimizer: OptimizerKind,
    /// The schedule.
    pub schedule: Schedule,
    /// Clip the gradient norm to this before each step.
    pub clip_grad_norm: Option<f64>,
    /// Evaluate and save an exponential moving average of the weights with this decay
    /// (with a warm-up, see [`ExponentialMovingAverage`](strata_optim::ExponentialMovingAverage)).
    pub ema: Option<f64>,
}

impl fmt::Display for Defaults {
    /// `"1 epoch, batch 64, adam, one-cycle to lr 0.003"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (n, unit) = match self.length {
            Length::Epochs(n) => (n, "epoch"),
            Length::Steps(n) => (n, "step"),
        };
        write!(f, "{n} {unit}{}, ", if n == 1 { "" } else { "s" })?;
        match self.batch_size {
            Some(b) => write!(f, "batch {b}, ")?,
            None => write!(f, "full batch, ")?,
        }
        write!(f, "{}, ", self.optimizer.name())?;
        match self.schedule {
            Schedule::Constant => write!(f, "lr {}", self.lr)?,
            Schedule::OneCycle => write!(f, "one-cycle to lr {}", self.lr)?,
        }
        if let Some(c) = self.clip_grad_norm {
            write!(f, ", gradient norm clipped at {c}")?;
        }
        if let Some(d) = self.ema {
            write!(f, ", weights averaged (EMA {d})")?;
        }
        Ok(())
    }
}

/// How one training runs: its defaults and options resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// How long.
    pub length: Length,
    /// Samples (or windows) per batch.
    pub batch_size: usize,
    /// The seed of shuffling and sampling.
    pub seed: u64,
    /// Schedule, clipping and progress.
    pub loop_config: LoopConfig,
    /// Where the training starts: after the epochs and steps of the checkpoint it resumes
    /// (see [`run_from`](crate::train::run_from)), or at the beginning.
    pub start: Start,
}

/// The fields of `figures` (a struct with named fields) as named figures.
///
/// # Errors
/// [`ModelsError::Config`] when `figures` does not serialise to a JSON object.
pub fn figures(figures: &impl Serialize) -> Result<Figures> {
    match serde_json::to_value(figures) {
        Ok(Value::Object(map)) => Ok(map),
        other => Err(ModelsError::Config(format!(
            "figures must serialise to named fields, got {other:?}"
        ))),
    }
}

/// Asserts that `value` serialises to `json` and back to itself.
#[cfg(test)]
#[track_caller]
pub(crate) fn assert_round_trip<T>(value: &T, json: Value)
where
    T: Serialize + DeserializeOwned + PartialEq + fmt::Debug,
{
    assert_eq!(serde_json::to_value(value).unwrap(), json);
    assert_eq!(&serde_json::from_value::<T>(json).unwrap(), value);
}
