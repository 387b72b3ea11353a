//! The trainings, evaluations, predictions and text generation of `strata`, written once
//! for every [`ReferenceModel`], behind [`Flows`], the object-safe face a registry entry
//! shows.
//!
//! A training is safe to interrupt and never loses finished work:
//!
//! - the output folder is checked (and created) before any data is loaded: a file, an
//!   unwritable folder or a folder holding another run is an error up front, not after the
//!   training (a run is replaced only with `force`, continued only with `resume`);
//! - a checkpoint is written (as one unit, see [`checkpoint`]) every few epochs and at the
//!   end, before anything that could fail after training (the sample text, the closed-form
//!   comparison): such a failure becomes a `report_errors` entry of the metrics and a
//!   warning, and the trained model stays saved;
//! - [`resume`](super::resume) continues a run from its checkpoint bit for bit.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::Value;
use strata_autograd::Var;
use strata_distributed::{Communicator, DdpConfig, Reducer, replicate};
use strata_nn::Module;
use strata_optim::ExponentialMovingAverage;
use strata_privacy::{DpSgd, DpSgdConfig, GaussianNoise, noise_multiplier};
use strata_tensor::seeded_rng;

use super::record::{
    self, DatasetRecord, Hyperparameters, Metrics, PrivacyRecord, Progress, Record,
};
use super::registry::Model;
use super::spec::{Defaults, Figures, Length, Network, Plan, ReferenceModel, Schedule, Task};
use super::{PrivacyOptions, TrainOptions};
use crate::train::{
    EmaHandle, EpochEnd, EpochRecord, Evaluation, LoopConfig, PrivacyHandle, PrivateTraining, Start,
};
use crate::{ModelsError, Result, checkpoint, plot};

/// A reference model with its types erased: what [`Model`] calls.
pub trait Flows: Sync {
    /// [`ReferenceModel::NAME`].
    fn name(&self) -> &'static str;
    /// [`ReferenceModel::ABOUT`].
    fn about(&self) -> &'static str;
    /// [`ReferenceModel::defaults`].
    fn defaults(&self) -> Defaults;
    /// [`ReferenceModel::DATASETS`].
    fn datasets(&self) -> &'static [&'static str];
    /// Trains the model as `opts` says; see [`train`](super::train).
    fn train(&self, opts: &TrainOptions) -> Result<Value>;
    /// Continues the training whose checkpoint (in `run/checkpoint`) has `record`; see
    /// [`resume`](super::resume).
    fn resume(&'static self, record: Record, run: &Path, how: &ResumeOptions) -> Result<Value>;
    /// Evaluates the checkpoint in `dir`, whose record is `record`.
    fn eval(&'static self, record: Record, dir: &Path) -> Result<Evaluation>;
    /// Predicts with the checkpoint in `dir` for the samples in `input`.
    fn predict(&self, record: Record, dir: &Path, input: &Path) -> Result<Vec<String>>;
    /// Samples text from the checkpoint in `dir`.
    fn generate(&self, record: Record, dir: &Path, request: &Generate<'_>) -> Result<String>;
    /// `strata export`: the checkpoint in `dir` as an ONNX model.
    fn export(&self, record: Record, dir: &Path) -> Result<strata_onnx::Exported>;
}

/// What to generate: see [`generate`](super::generate).
pub struct Generate<'a> {
    /// The text to continue.
    pub prompt: &'a str,
    /// Characters to add.
    pub length: usize,
    /// Sampling temperature.
    pub temperature: f64,
    /// Seed of the sampling.
    pub seed: u64,
}

/// How a resumed training runs (its other settings come from its checkpoint).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResumeOptions {
    /// Draw progress bars.
    pub progress: bool,
    /// Stop again after this many epochs (periods) in all, leaving a checkpoint.
    pub stop_after: Option<usize>,
    /// Epochs (periods) between checkpoints.
    pub checkpoint_every: Option<usize>,
    /// The ranks that continue the training together: as many as trained it (the
    /// record's `world_size`), since each rank's share of the data depends on their
    /// number; a world of one by default.
    pub comm: Communicator,
}

fn write_error(out: &Path, e: impl std::fmt::Display) -> ModelsError {
    ModelsError::Config(format!("{}: {e}", out.display()))
}

/// The checkpoint folder of the run in `out`.
pub fn checkpoint_dir(out: &Path) -> PathBuf {
    out.join("checkpoint")
}

/// What an output folder holds of a strata run (the names found).
fn run_artifacts(out: &Path) -> Vec<&'static str> {
    ["checkpoint", "metrics.json", "curves.svg"]
        .into_iter()
        .filter(|name| std::fs::symlink_metadata(out.join(name)).is_ok())
        .collect()
}

/// Checks and prepares the output folder before anything is loaded or trained: it must
/// be a folder (created if missing) that strata can write into, and must not hold
/// another run unless `force` (which removes that run's files) or `resuming`. Returns
/// whether it created the folder.
///
/// # Errors
/// [`ModelsError::Config`] saying what is wrong with the folder and how to go on.
pub fn prepare_out(out: &Path, force: bool, resuming: bool) -> Result<bool> {
    let mut created = false;
    match std::fs::metadata(out) {
        Ok(m) if !m.is_dir() => {
            return Err(ModelsError::Config(format!(
                "--out {} is a file, not a folder",
                out.display()
            )));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(out).map_err(|e| write_error(out, e))?;
            created = true;
        }
        Err(e) => return Err(write_error(out, e)),
    }
    let found = run_artifacts(out);
    if !found.is_empty() && !resuming {
        if !force {
            return Err(ModelsError::Config(format!(
                "{} holds another run ({}): pass --force to replace it, --resume {} to continue \
                 it, or choose another --out",
                out.display(),
                found.join(", "),
                out.display()
            )));
        }
        for name in found {
            let path = out.join(name);
            let removed = if name == "checkpoint" {
                std::fs::symlink_metadata(&path).and_then(|m| {
                    if m.is_dir() {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    }
                })
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(|e| write_error(&path, format!("cannot replace it: {e}")))?;
        }
    }
    // A probe, so that an unwritable folder is found now and not after the training.
    let probe = out.join(format!(".strata-write-test-{}", std::process::id()));
    strata_tensor::io::fs::write_atomic(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| write_error(out, format!("cannot write into it: {e}")))?;
    Ok(created)
}

/// The number of epochs (evaluation periods, for the models that train in steps) of a
/// training of `length`: the step models evaluate every twentieth of their steps.
pub fn periods(length: Length) -> usize {
    match length {
        Length::Epochs(n) => n,
        Length::Steps(n) => n.div_ceil((n / 20).max(1)),
    }
}

/// The default number of epochs (periods) between checkpoints: every one for trainings of
/// up to 50, a tenth of them beyond (linear regression's 5000 epochs take seconds; a
/// checkpoint is synced to disk).
fn default_checkpoint_every(epochs: usize) -> usize {
    if epochs <= 50 { 1 } else { epochs.div_ceil(10) }
}

/// Checks that every option given applies to the model `S`: options that do not are an
/// error, not silently ignored.
fn check_options<S: ReferenceModel>(opts: &TrainOptions, defaults: &Defaults) -> Result<()> {
    let steps_models = || {
        Model::all()
            .iter()
            .filter(|m| matches!(m.defaults().length, Length::Steps(_)))
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match defaults.length {
        Length::Steps(_) if opts.epochs.is_some() => {
            return Err(ModelsError::Config(format!(
                "{} trains in steps: use --steps instead of --epochs",
                S::NAME
            )));
        }
        Length::Epochs(_) if opts.steps.is_some() => {
            return Err(ModelsError::Config(format!(
                "--steps applies to the models that train in steps ({}); {} trains in epochs: \
                 use --epochs",
                steps_models(),
                S::NAME
            )));
        }
        _ => {}
    }
    if opts.epochs == Some(0) || opts.steps == Some(0) || opts.batch_size == Some(0) {
        return Err(ModelsError::Config(
            "--epochs, --steps and --batch-size must be positive".into(),
        ));
    }
    if opts.cell.is_some() && !S::CELL {
        let with_cell: Vec<&str> = ["char-rnn", "forecast"].to_vec();
        return Err(ModelsError::Config(format!(
            "--cell applies to {}; {} has no recurrent layer to choose",
            with_cell.join(" and "),
            S::NAME
        )));
    }
    if opts.dataset.is_some() && S::DATASETS.is_empty() {
        return Err(ModelsError::Config(format!(
            "{} has no other bundled data set to choose with --dataset",
            S::NAME
        )));
    }
    if let Some(lr) = opts.lr
        && !(lr.is_finite() && lr > 0.0)
    {
        return Err(ModelsError::Config(format!(
            "--lr must be a finite number above 0, got {lr}"
        )));
    }
    if opts.checkpoint_every == Some(0) || opts.stop_after == Some(0) {
        return Err(ModelsError::Config(
            "--checkpoint-every and --stop-after must be positive".into(),
        ));
    }
    Ok(())
}

/// Where a resumed training starts, and what it carries over.
struct Resumed {
    record: Record,
    history: Vec<EpochRecord>,
    progress: Progress,
}

/// The figures of an epoch's evaluation, for the record of a checkpoint taken during
/// training.
fn epoch_figures(r: &EpochRecord) -> Figures {
    let mut f = Figures::new();
    let num = |v: f64| serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number);
    f.insert("test_loss".into(), num(r.test.loss));
    if let Some(a) = r.test.accuracy {
        f.insert("test_accuracy".into(), num(a));
    }
    if let Some(r2) = r.test.r2 {
        f.insert("test_r2".into(), num(r2));
    }
    f
}

impl<S: ReferenceModel> Flows for S {
    fn name(&self) -> &'static str {
        S::NAME
    }

    fn about(&self) -> &'static str {
        S::ABOUT
    }

    fn defaults(&self) -> Defaults {
        ReferenceModel::defaults(self)
    }

    fn datasets(&self) -> &'static [&'static str] {
        S::DATASETS
    }

    fn train(&self, opts: &TrainOptions) -> Result<Value> {
        run_training(self, opts, None)
    }

    fn resume(&'static self, record: Record, run: &Path, how: &ResumeOptions) -> Result<Value> {
        let progress = record.progress.ok_or_else(|| ModelsError::Checkpoint {
            path: checkpoint_dir(run),
            msg: "it was written before checkpoints were resumable (it has no progress)".into(),
        })?;
        if progress.complete {
            return Err(ModelsError::Config(format!(
                "the run in {} is complete ({} of {} epochs): there is nothing to resume",
                run.display(),
                progress.epochs_done,
                progress.epochs
            )));
        }
        // Each rank's share of every batch depends on the number of ranks: another number
        // would continue with other batches, not bit for bit.
        if record.world_size != how.comm.size() {
            return Err(ModelsError::Config(format!(
                "the run in {} was trained by {} process(es); resume it with as many (it has \
                 {} now)",
                run.display(),
                record.world_size,
                how.comm.size()
            )));
        }
        let history = match checkpoint::read_history(&checkpoint_dir(run))? {
            Some(v) => serde_json::from_value(v).map_err(|e| ModelsError::Checkpoint {
                path: checkpoint_dir(run),
                msg: format!("{}: {e}", checkpoint::HISTORY_FILE),
            })?,
            None => Vec::new(),
        };
        if record.privacy.is_some() {
            return Err(ModelsError::Checkpoint {
                path: checkpoint_dir(run),
                msg: "a private (--dp) training cannot be resumed: the accountant's state is not \
                      in the checkpoint, so the guarantee of the continued run would be wrong"
                    .into(),
            });
        }
        let mut opts = options_from(Model::new(self), &record);
        let h = &record.hyperparameters;
        opts.out = run.to_path_buf();
        opts.epochs = h.epochs;
        opts.steps = h.steps;
        opts.lr = Some(h.lr);
        opts.batch_size = Some(h.batch_size);
        opts.cell = h.cell;
        // A run without an average resumes without one, whatever the model's default.
        opts.ema = Some(h.ema.unwrap_or(0.0));
        opts.progress = how.progress;
        opts.stop_after = how.stop_after;
        opts.checkpoint_every = how.checkpoint_every;
        opts.comm = how.comm.clone();
        run_training(
            self,
            &opts,
            Some(Resumed {
                record,
                history,
                progress,
            }),
        )
    }

    fn eval(&'static self, record: Record, dir: &Path) -> Result<Evaluation> {
        let (architecture, extra, net) = rebuild(self, &record, dir)?;
        let prepared = self.prepare(&options_from(Model::new(self), &record))?;
        self.check_reloaded(&extra, &prepared.extra)
            .map_err(|msg| ModelsError::Checkpoint {
                path: dir.to_path_buf(),
                msg,
            })?;
        let mut task = self.task(&architecture);
        task.restore_settings(&record.hyperparameters);
        let evaluation = task.evaluate(&net, &prepared.data)?;
        // The weights are finite (checked on load), but can be large enough to overflow
        // on the data: a NaN loss is a broken checkpoint, not a figure to print.
        let figures = [Some(evaluation.loss), evaluation.accuracy, evaluation.r2];
        if let Some(v) = figures.into_iter().flatten().find(|v| !v.is_finite()) {
            return Err(ModelsError::Checkpoint {
                path: dir.to_path_buf(),
                msg: format!(
                    "its weights give a loss or metric of {v} on the test data: they overflow \
                     f32 arithmetic (is the checkpoint corrupted?)"
                ),
            });
        }
        Ok(evaluation)
    }

    fn predict(&self, record: Record, dir: &Path, input: &Path) -> Result<Vec<String>> {
        let (architecture, extra, net) = rebuild(self, &record, dir)?;
        ReferenceModel::predict(self, &net, &record.typed(architecture, extra), input)
    }

    fn export(&self, record: Record, dir: &Path) -> Result<strata_onnx::Exported> {
        let (architecture, _, net) = rebuild(self, &record, dir)?;
        ReferenceModel::export(self, &net, &architecture)
    }

    fn generate(&self, record: Record, dir: &Path, request: &Generate<'_>) -> Result<String> {
        let (_, extra, net) = rebuild(self, &record, dir)?;
        ReferenceModel::generate(
            self,
            &net,
            &extra,
            request.prompt,
            request.length,
            request.temperature,
            &mut seeded_rng(request.seed),
        )
    }
}

/// Sets up DP-SGD for a training of `length` at (expected) batch size `batch_size`: the
/// sample rate from the task's units of privacy, the noise multiplier (given, or solved
/// for the target ε over the whole run), the noise source, and the DP-SGD step over `net`.
#[allow(clippy::too_many_arguments)]
fn private_training<T: Task>(
    task: &T,
    data: &T::Data,
    net: &T::Network,
    p: &PrivacyOptions,
    length: Length,
    batch_size: usize,
    opts: &TrainOptions,
) -> Result<(PrivacyHandle, &'static str)> {
    let (units, unit) = task.private_units(data)?;
    if units == 0 {
        return Err(ModelsError::Config(
            "private training needs training samples".into(),
        ));
    }
    let q = (batch_size as f64 / units as f64).min(1.0);
    let steps = match length {
        Length::Epochs(e) => e as u64 * ((1.0 / q).floor() as u64).max(1),
        Length::Steps(s) => s as u64,
    };
    let sigma = match (p.noise_multiplier, p.epsilon) {
        (Some(sigma), None) => sigma,
        (None, Some(eps)) => noise_multiplier(p.accountant, eps, p.delta, q, steps)?,
        _ => {
            return Err(ModelsError::Config(
                "--dp takes either --epsilon (the noise multiplier is solved for it) or \
                 --noise-multiplier (ε is reported)"
                    .into(),
            ));
        }
    };
    let noise = if p.seeded_noise {
        GaussianNoise::seeded(opts.seed)
    } else {
        GaussianNoise::secure()?
    };
    let config = DpSgdConfig {
        accountant: p.accountant,
        ..DpSgdConfig::new(p.max_grad_norm, sigma, q, q * units as f64)
    };
    // Across ranks each rank Poisson-samples its shard of the data at the same q (the
    // union is a Poisson sample of all of it), the clipped sums are summed, and rank 0
    // adds the noise once (strata-privacy's `ProcessGroup`).
    let mut dp = DpSgd::new(net, config, noise)?;
    if opts.comm.size() > 1 {
        dp = dp.across(opts.comm.clone())?;
    }
    if opts.progress && opts.comm.is_root() {
        eprintln!(
            "DP-SGD: σ = {sigma:.4}, C = {}, q = {q:.6} ({unit}s: {units}), {steps} steps, \
             δ = {}, {} noise{}",
            p.max_grad_norm,
            p.delta,
            if p.seeded_noise {
                "seeded (not private)"
            } else {
                "secure"
            },
            if opts.comm.size() > 1 {
                format!(
                    ", {} ranks (each samples its shard, rank 0 adds the noise)",
                    opts.comm.size()
                )
            } else {
                String::new()
            }
        );
    }
    let training = PrivateTraining {
        dp,
        delta: p.delta,
        epsilons: Vec::new(),
    };
    Ok((PrivacyHandle::new(training), unit))
}

/// One training of `spec` as `opts` says, from the start or (`resumed`) from a checkpoint.
fn run_training<S: ReferenceModel>(
    spec: &S,
    opts: &TrainOptions,
    resumed: Option<Resumed>,
) -> Result<Value> {
    let defaults = ReferenceModel::defaults(spec);
    check_options::<S>(opts, &defaults)?;
    // Rank 0 alone writes, so it alone checks and prepares the folder (ranks racing to
    // --force the same run away would fail each other).
    let created = if opts.comm.is_root() {
        prepare_out(&opts.out, opts.force, resumed.is_some())?
    } else {
        false
    };
    let result = train_in(spec, opts, resumed, &defaults);
    if result.is_err() && created {
        // A training that failed before writing anything leaves no empty folder behind
        // (`remove_dir` removes only an empty one).
        let _ = std::fs::remove_dir(&opts.out);
    }
    result
}

/// [`run_training`] once the options and the output folder are checked.
fn train_in<S: ReferenceModel>(
    spec: &S,
    opts: &TrainOptions,
    resumed: Option<Resumed>,
    defaults: &Defaults,
) -> Result<Value> {
    let length = match defaults.length {
        Length::Epochs(n) => Length::Epochs(opts.epochs.unwrap_or(n)),
        Length::Steps(n) => Length::Steps(opts.steps.unwrap_or(n)),
    };
    let comm = &opts.comm;
    let ema_decay = opts.ema.or(defaults.ema).filter(|&d| d != 0.0);
    if let Some(d) = ema_decay
        && !(0.0..1.0).contains(&d)
    {
        return Err(ModelsError::Config(format!(
            "--ema {d}: the decay of the average must be in [0, 1) (0 turns it off)"
        )));
    }
    let mut prepared = spec.prepare(opts)?;
    let mut task = spec.task(&prepared.architecture);
    let mut net = spec.init(&prepared, &mut seeded_rng(opts.seed))?;
    // The whole training set, before --limit, for full-batch training.
    let requested = opts
        .batch_size
        .or(defaults.batch_size)
        .unwrap_or_else(|| task.train_len(&prepared.data));
    // Data-parallel, each rank takes an equal share of the global batch: the requested
    // one, rounded up to a multiple of the number of ranks when it does not divide. (A
    // private training's batch is the expected size of the Poisson batches over all
    // ranks, which need not divide.)
    let ranks = if opts.privacy.is_some() {
        1
    } else {
        comm.size()
    };
    let batch_size = requested
        .checked_next_multiple_of(ranks)
        .ok_or_else(|| ModelsError::Config(format!("--batch-size {requested} is too large")))?;
    if batch_size != requested && comm.is_root() {
        eprintln!(
            "note: a batch of {requested} does not divide among {} ranks: each rank takes {}, \
             a global batch of {batch_size}",
            comm.size(),
            batch_size / comm.size()
        );
    }
    if let Some(n) = opts.limit {
        task.limit(&mut prepared.data, n);
    }
    if task.train_len(&prepared.data) == 0 {
        return Err(ModelsError::Config(
            "there are no training samples (is --limit 0?)".into(),
        ));
    }
    let private = match &opts.privacy {
        Some(p) => Some(private_training(
            &task,
            &prepared.data,
            &*net,
            p,
            length,
            batch_size,
            opts,
        )?),
        None => None,
    };
    let lr = opts.lr.unwrap_or(defaults.lr);
    let mut optimizer = defaults.optimizer.build(net.parameters(), lr)?;
    let ema = match ema_decay {
        Some(d) => Some(EmaHandle::new(
            ExponentialMovingAverage::new(net.parameters(), d)?.warmup(true),
        )),
        None => None,
    };
    // Under DP-SGD the per-sample clipping bounds the gradients; the model's own gradient
    // clipping would only rescale the noisy step, so it is off.
    let clip_grad_norm = defaults.clip_grad_norm.filter(|_| private.is_none());
    let (epochs, steps) = match length {
        Length::Epochs(n) => (Some(n), None),
        Length::Steps(n) => (None, Some(n)),
    };
    let mut hyperparameters = Hyperparameters {
        epochs,
        steps,
        lr,
        batch_size,
        seq_len: None,
        optimizer: defaults.optimizer,
        schedule: defaults.schedule,
        clip_grad_norm,
        limit: opts.limit,
        held_out_fraction: None,
        cell: opts.cell,
        ema: ema_decay,
    };
    task.record_settings(&mut hyperparameters);
    let data = opts.data.as_ref().map(|d| d.display().to_string());
    let is_file = opts.data.as_ref().is_some_and(|d| d.is_file());
    let mut dataset = DatasetRecord {
        name: prepared.dataset.name.clone(),
        source: prepared.dataset.source.clone(),
        license: prepared.dataset.license.clone(),
        data_dir: data.clone().filter(|_| !is_file),
        data_file: data.filter(|_| is_file),
        variant: opts.dataset.clone(),
        preprocessing: None,
    };
    dataset.preprocessing = spec.preprocessing(&dataset, &prepared.extra);
    let ckpt = checkpoint_dir(&opts.out);
    let total_epochs = periods(length);
    let (mut history, start, seconds_before) = match resumed {
        None => (Vec::new(), Start::default(), 0.0),
        Some(r) => {
            let architecture = serde_json::to_value(&prepared.architecture)
                .map_err(|e| write_error(&opts.out, e))?;
            let fail = |msg: String| ModelsError::Checkpoint {
                path: ckpt.clone(),
                msg,
            };
            if architecture != r.record.architecture {
                return Err(fail(format!(
                    "the data now gives the architecture {architecture}, the checkpoint has {}",
                    r.record.architecture
                )));
            }
            let extra: S::Extra = record::section(&r.record.extra, "extra record", S::NAME, &ckpt)?;
            spec.check_reloaded(&extra, &prepared.extra).map_err(fail)?;
            if r.progress.epochs != total_epochs || r.history.len() != r.progress.epochs_done {
                return Err(fail(format!(
                    "its progress ({} of {} epochs, {} in its history) does not fit a training \
                     of {total_epochs}",
                    r.progress.epochs_done,
                    r.progress.epochs,
                    r.history.len()
                )));
            }
            checkpoint::load_model(&ckpt, &*net)?;
            checkpoint::load_optimizer(&ckpt, optimizer.as_mut())?;
            match (&ema, checkpoint::read_ema(&ckpt, &*net)?) {
                // The model loaded is the average; training continues from the weights
                // kept beside it.
                (Some(ema), Some((weights, updates))) => {
                    let params = net.parameters();
                    let average = params.iter().map(Var::value).collect();
                    for (p, w) in params.iter().zip(weights) {
                        p.set_value(w)?;
                    }
                    ema.lock().load(average, updates)?;
                }
                (None, None) => {}
                (Some(_), None) => {
                    return Err(fail(format!(
                        "it has no {} for the average of the weights",
                        checkpoint::EMA_FILE
                    )));
                }
                (None, Some(_)) => {
                    return Err(fail(format!(
                        "it holds an average of the weights ({}) but the run has none",
                        checkpoint::EMA_FILE
                    )));
                }
            }
            task.restore_settings(&r.record.hyperparameters);
            let start = Start {
                epochs_done: r.progress.epochs_done,
                steps_done: r.progress.steps_done,
            };
            (r.history, start, r.progress.seconds)
        }
    };
    // Every rank starts from rank 0's weights (after a resume, the checkpoint's on every
    // rank) and, after each backward, holds the gradients averaged over the ranks
    // (nothing at all in a world of one).
    // Under DP-SGD the ranks only start from the same weights: the raw gradients are not
    // averaged (each rank clips its own samples, and DpSgd sums the clipped gradients and
    // adds the noise once).
    let reducer = if comm.size() > 1 && private.is_none() {
        Some(Reducer::new(&*net, comm, &DdpConfig::default())?)
    } else {
        if comm.size() > 1 {
            replicate(&*net, comm)?;
        }
        None
    };
    let plan = Plan {
        length,
        batch_size,
        seed: opts.seed,
        loop_config: LoopConfig {
            one_cycle_max_lr: (defaults.schedule == Schedule::OneCycle).then_some(lr),
            clip_grad_norm,
            progress: opts.progress,
            comm: comm.clone(),
            privacy: private.as_ref().map(|(h, _)| h.clone()),
            ema: ema.clone(),
        },
        start,
    };
    // The guarantee spent so far, for the records.
    let privacy_now = || -> Result<Option<PrivacyRecord>> {
        let Some((handle, unit)) = &private else {
            return Ok(None);
        };
        let p = handle.lock();
        let g = p.dp.guarantee(p.delta)?;
        Ok(Some(PrivacyRecord {
            epsilon: g.epsilon,
            delta: g.delta,
            accountant: g.accountant.into(),
            noise_multiplier: g.noise_multiplier,
            effective_noise_multiplier: g.effective_noise_multiplier,
            max_grad_norm: g.max_grad_norm,
            clipping: g.clipping.into(),
            sample_rate: g.sample_rate,
            steps: g.steps,
            noise: if g.secure_noise { "secure" } else { "seeded" }.into(),
            unit: (*unit).into(),
            world_size: g.world_size,
        }))
    };
    let every = opts
        .checkpoint_every
        .unwrap_or_else(|| default_checkpoint_every(total_epochs));
    let record_at = |metrics: Metrics, progress: Progress, privacy: Option<PrivacyRecord>| Record {
        model: S::NAME.into(),
        architecture: &prepared.architecture,
        hyperparameters: hyperparameters.clone(),
        dataset: dataset.clone(),
        seed: opts.seed,
        threads: rayon::current_num_threads(),
        world_size: comm.size(),
        strata_version: env!("CARGO_PKG_VERSION").into(),
        metrics,
        privacy,
        extra: &prepared.extra,
        progress: Some(progress),
    };
    let metrics_of = |r: &EpochRecord, seconds: f64, figures: Figures| Metrics {
        model: S::NAME.into(),
        dataset: prepared.dataset.name.clone(),
        epochs,
        steps,
        train_loss: r.train_loss,
        seconds,
        figures,
    };
    let started = Instant::now();
    let mut stopped = None;
    let result = task.fit(
        &mut net,
        &prepared.data,
        optimizer.as_mut(),
        &plan,
        &mut |end: &EpochEnd<'_>| {
            let r = end.record.clone();
            history.push(r.clone());
            let stop = opts.stop_after == Some(r.epoch);
            // Rank 0 alone writes (every rank holds the same weights and optimizer state);
            // a failed write ends its training, and with it every rank's.
            if (r.epoch.is_multiple_of(every) || stop) && r.epoch < total_epochs && comm.is_root() {
                let seconds = seconds_before + started.elapsed().as_secs_f64();
                let progress = Progress {
                    epochs_done: r.epoch,
                    epochs: total_epochs,
                    steps_done: r.step,
                    seconds,
                    complete: false,
                };
                let record = record_at(
                    metrics_of(&r, seconds, epoch_figures(&r)),
                    progress,
                    privacy_now()?,
                );
                let average = ema.as_ref().map(EmaHandle::lock);
                checkpoint::save_averaged(
                    &ckpt,
                    end.model,
                    end.optimizer,
                    average.as_deref(),
                    &record,
                    Some(&history),
                )?;
            }
            if stop && r.epoch < total_epochs {
                stopped = Some(r.epoch);
                return Err(ModelsError::Stopped {
                    epochs_done: r.epoch,
                    epochs: total_epochs,
                });
            }
            Ok(())
        },
    );
    let seconds = seconds_before + started.elapsed().as_secs_f64();
    drop(reducer);
    match result {
        Err(ModelsError::Stopped { .. }) if stopped.is_some() => {
            // Every rank returns once rank 0's checkpoint is written.
            comm.barrier()?;
            let last = history.last().cloned().ok_or_else(|| {
                ModelsError::Config("the training stopped before its first epoch".into())
            })?;
            let mut value = serde_json::to_value(metrics_of(&last, seconds, epoch_figures(&last)))
                .map_err(|e| write_error(&opts.out, e))?;
            if let Value::Object(map) = &mut value {
                map.insert("stopped_after".into(), last.epoch.into());
                map.insert("of".into(), total_epochs.into());
            }
            return Ok(value);
        }
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    let last = history
        .last()
        .cloned()
        .ok_or_else(|| ModelsError::Config("the training made no evaluation".into()))?;
    // The trained model is saved first (by rank 0 alone), with what is known for sure...
    let progress = Progress {
        epochs_done: last.epoch,
        epochs: total_epochs,
        steps_done: last.step,
        seconds,
        complete: true,
    };
    if comm.is_root() {
        let average = ema.as_ref().map(EmaHandle::lock);
        checkpoint::save_averaged(
            &ckpt,
            &*net,
            optimizer.as_ref(),
            average.as_deref(),
            &record_at(
                metrics_of(&last, seconds, epoch_figures(&last)),
                progress,
                privacy_now()?,
            ),
            Some(&history),
        )?;
    }
    // ...then the figures that can still fail are computed (on every rank: they may
    // evaluate together): a failure is reported, and the saved model stays.
    let mut figures = Figures::new();
    let mut report_errors = Vec::new();
    match task.metrics(&net, &prepared.data, &history, &plan) {
        Ok(f) => figures.extend(f),
        Err(e) => {
            figures.extend(epoch_figures(&last));
            report_errors.push(format!("metrics: {e}"));
        }
    }
    match spec.report(&net, &prepared) {
        Ok(f) => figures.extend(f),
        Err(e) => report_errors.push(format!("report: {e}")),
    }
    if !report_errors.is_empty() {
        figures.insert("report_errors".into(), report_errors.clone().into());
    }
    let privacy = privacy_now()?;
    if let (Some(g), Some((handle, _))) = (&privacy, &private) {
        figures.insert("epsilon".into(), g.epsilon.into());
        figures.insert("delta".into(), g.delta.into());
        figures.insert("world_size".into(), g.world_size.into());
        figures.insert(
            "epsilon_per_epoch".into(),
            handle.lock().epsilons.clone().into(),
        );
    }
    let record = record_at(metrics_of(&last, seconds, figures), progress, privacy);
    let metrics = serde_json::to_value(&record.metrics).map_err(|e| write_error(&opts.out, e))?;
    if comm.is_root() {
        checkpoint::update_record(&ckpt, &record)?;
        checkpoint::write_json(&opts.out.join("metrics.json"), &metrics)?;
        plot::training_curves(&history, S::NAME, &opts.out.join("curves.svg"))?;
    }
    // Every rank returns once the files are there.
    comm.barrier()?;
    Ok(metrics)
}

/// The most bytes a record's architecture may make strata allocate while building its
/// network, for a weights file of `len` bytes: the network's tensors are what the file
/// holds (a few times over for initialisation's temporaries), whatever the record says.
fn build_budget(len: u64) -> usize {
    usize::try_from(len)
        .unwrap_or(usize::MAX)
        .saturating_mul(8)
        .saturating_add(64 << 20)
}

/// What [`rebuild`] gives: the architecture and extra record of a checkpoint, and its
/// network with its weights.
type Rebuilt<S> = (
    <S as ReferenceModel>::Architecture,
    <S as ReferenceModel>::Extra,
    Box<Network<S>>,
);

/// The network of a checkpoint with its weights, in evaluation mode, with its
/// architecture and extra record, after checking that these fit each other and the
/// weights file: the network is built under an allocation limit set by the weights
/// file's size (a record whose sizes ask for 160 GB is refused before anything is
/// allocated), loaded strictly, and its values must be finite.
fn rebuild<S: ReferenceModel>(spec: &S, record: &Record, dir: &Path) -> Result<Rebuilt<S>> {
    let architecture: S::Architecture =
        record::section(&record.architecture, "architecture", S::NAME, dir)?;
    let len = checkpoint::model_file_len(dir)?;
    let budget = build_budget(len);
    let mut net = strata_tensor::with_allocation_limit(budget, || {
        spec.build(&architecture, &mut seeded_rng(0))
    })
    .map_err(|e| ModelsError::Checkpoint {
        path: dir.to_path_buf(),
        msg: format!(
            "its architecture asks for more memory than its weights file of {len} bytes could \
             fill ({e})"
        ),
    })??;
    checkpoint::load_model(dir, &*net)?;
    net.eval();
    let extra: S::Extra = record::section(&record.extra, "extra record", S::NAME, dir)?;
    spec.check_extra(&architecture, &extra)
        .map_err(|msg| ModelsError::Checkpoint {
            path: dir.to_path_buf(),
            msg,
        })?;
    Ok((architecture, extra, net))
}

/// The options a checkpoint of `model` was trained with, to load its data again.
fn options_from(model: Model, record: &Record) -> TrainOptions {
    let data = record
        .dataset
        .data_dir
        .as_ref()
        .or(record.dataset.data_file.as_ref());
    TrainOptions {
        seed: record.seed,
        data: data.map(PathBuf::from),
        dataset: record.dataset.variant.clone(),
        limit: record.hyperparameters.limit,
        cell: record.hyperparameters.cell,
        progress: false,
        ..TrainOptions::new(model, PathBuf::new())
    }
}
