//! The training loop: one loop for every model, over optimizer steps grouped into epochs,
//! with a progress bar, an optional one-cycle schedule and gradient clipping, an evaluation
//! after each epoch and a per-epoch history.
//!
//! [`run`] sees a training through two small traits: [`Batches`], the training data as
//! epochs of batches, and [`Learner`], what one step computes and how the model is
//! evaluated. An epoch is whatever the data source says: a shuffled pass over a data set
//! ([`Epochs`]), or a period of steps over random windows of a text between two
//! evaluations ([`Windows`](crate::language::Windows)). Two ready-made pairs wrap it:
//! [`fit`] for data sets in memory and [`language::fit`](crate::language::fit) for text;
//! the reference trainings of [`reference`](crate::reference) go through the same [`run`].
//!
//! ```
//! use strata_models::data::{InMemoryDataset, Labels};
//! use strata_models::models::LinearRegression;
//! use strata_models::train::{self, Objective, TrainConfig};
//! use strata_nn::Module;
//! use strata_optim::{Sgd, SgdConfig};
//! use strata_tensor::seeded_rng;
//!
//! // y = 2x + 1 from eight points.
//! let x: Vec<f32> = (0..8).map(|i| i as f32 / 4.0).collect();
//! let y = x.iter().map(|v| 2.0 * v + 1.0).collect();
//! let data = InMemoryDataset::new(x, &[1], Labels::Values(y))?;
//! let mut model = LinearRegression::new(1, &mut seeded_rng(0));
//! let mut opt = Sgd::new(model.parameters(), SgdConfig { lr: 0.1, ..SgdConfig::default() })?;
//! let config = TrainConfig { epochs: 200, batch_size: 8, seed: 0, progress: false, one_cycle_max_lr: None };
//! let history = train::fit(&mut model, &mut opt, &data, &data, Objective::Mse, &config, |_| Ok(()))?;
//! assert!(history.last().unwrap().test.r2.unwrap() > 0.99);
//! # Ok::<(), strata_models::ModelsError>(())
//! ```
//!
//! Between two epochs the whole state of a training is the model, the optimizer (whose
//! learning rate the schedule has set), the step count and the data source; `on_epoch`
//! sees the first three (to write checkpoints), and [`Epochs`] draws epoch `e` from the
//! seed and `e` alone, so a later resume needs only the optimizer's state and the epoch.
//! [`run_from`] resumes: it skips the epochs already done ([`Batches::skip_epoch`] lets a
//! data source that draws from a running RNG, like the text windows, replay its draws),
//! sets the schedule to the step reached, and continues bit for bit.

mod supervised;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use strata_autograd::Var;
use strata_distributed::{Communicator, ReduceOp};
use strata_nn::Module;
use strata_optim::schedule::{OneCycleLR, SchedulerState};
use strata_optim::{ExponentialMovingAverage, Optimizer, clip_grad_norm};
use strata_privacy::{AccountantKind, DpSgd, PoissonSampler, PrivacyError};

use crate::{ModelsError, Result};

pub use supervised::{
    Epochs, Objective, PoissonEpochs, Supervised, TrainConfig, batch_loss, evaluate, evaluate_on,
    fit,
};

/// The metrics of one evaluation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluation {
    /// The mean loss.
    pub loss: f64,
    /// The accuracy, for classification.
    pub accuracy: Option<f64>,
    /// The coefficient of determination, for regression.
    pub r2: Option<f64>,
}

/// The most points of the training-loss curve one epoch keeps ([`EpochRecord::curve`]);
/// longer epochs average consecutive steps into this many points.
pub const CURVE_POINTS_PER_EPOCH: usize = 500;

/// The record of one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochRecord {
    /// The epoch, from 1.
    pub epoch: usize,
    /// The optimizer steps taken so far, over all epochs.
    pub step: usize,
    /// The mean training loss over the epoch's batches (weighted by
    /// [`StepLoss::weight`]: samples for data sets, one per batch of text windows).
    pub train_loss: f64,
    /// The evaluation after the epoch.
    pub test: Evaluation,
    /// Wall-clock seconds of the epoch's training (without evaluation).
    pub seconds: f64,
    /// Training items per second: samples, or characters for the character models.
    pub samples_per_s: f64,
    /// The privacy spent so far (ε at the run's δ), for private training.
    pub epsilon: Option<f64>,
    /// The training loss along the epoch, `[step, loss]` (1-based optimizer steps over
    /// all epochs): every step's batch loss, or, in epochs of more than
    /// [`CURVE_POINTS_PER_EPOCH`] steps, the mean of each run of consecutive steps (at the
    /// last step of the run). Under several ranks, rank 0's batches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub curve: Vec<[f64; 2]>,
}

/// Averages the per-step losses of an epoch of `steps` steps into at most
/// [`CURVE_POINTS_PER_EPOCH`] points.
struct CurveBuilder {
    group: usize,
    sum: f64,
    count: usize,
    points: Vec<[f64; 2]>,
}

impl CurveBuilder {
    fn new(steps: usize) -> Self {
        CurveBuilder {
            group: steps.div_ceil(CURVE_POINTS_PER_EPOCH).max(1),
            sum: 0.0,
            count: 0,
            points: Vec::new(),
        }
    }

    /// The loss `loss` of optimizer step `step`.
    fn push(&mut self, step: usize, loss: f64) {
        self.sum += loss;
        self.count += 1;
        if self.count == self.group {
            self.flush(step);
        }
    }

    fn flush(&mut self, step: usize) {
        if self.count > 0 {
            self.points
                .push([step as f64, self.sum / self.count as f64]);
            (self.sum, self.count) = (0.0, 0);
        }
    }

    fn finish(mut self, step: usize) -> Vec<[f64; 2]> {
        self.flush(step);
        self.points
    }
}

/// How a data source counts its progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Passes over a data set: the bar reads "epoch 2/3", the log "epoch 2: …".
    Epoch,
    /// A stream of batches evaluated every so many steps: the log reads "step 300: …".
    Step,
}

/// The training data as the loop sees it: epochs of batches.
pub trait Batches {
    /// One batch.
    type Batch;

    /// The number of epochs.
    fn epochs(&self) -> usize;

    /// The steps (batches) of epoch `epoch`, from 1.
    fn steps_in(&self, epoch: usize) -> usize;

    /// The batches of epoch `epoch`, from 1, [`steps_in`](Batches::steps_in) of them.
    /// Drawing them may advance state (an RNG) that the next epoch continues from.
    fn epoch(&mut self, epoch: usize) -> Box<dyn Iterator<Item = Result<Self::Batch>> + '_>;

    /// How progress is counted.
    fn unit(&self) -> Unit {
        Unit::Epoch
    }

    /// Passes over epoch `epoch` without training on it, when a training resumes after it:
    /// a source whose batches depend on state that runs across epochs (an RNG) advances
    /// that state exactly as [`epoch`](Batches::epoch) would. The default does nothing,
    /// right for sources that draw each epoch from the seed and the epoch alone.
    ///
    /// # Errors
    /// Errors of drawing the batches.
    fn skip_epoch(&mut self, _epoch: usize) -> Result<()> {
        Ok(())
    }
}

/// Where [`run_from`] starts: after `epochs_done` epochs and `steps_done` optimizer steps
/// (both 0 for a fresh training).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    /// Epochs already trained.
    pub epochs_done: usize,
    /// Optimizer steps already taken.
    pub steps_done: usize,
}

/// The loss of one training step, as the loop records it.
pub struct StepLoss {
    /// The batch's mean loss, recorded for `backward`.
    pub loss: Var,
    /// Its weight in the epoch's mean training loss.
    pub weight: f64,
    /// Items it trains on, for the throughput (samples, or characters).
    pub items: usize,
}

/// What the loop trains: a model, what one step computes on a batch, and how the model is
/// evaluated after each epoch.
pub trait Learner {
    /// The batches it trains on.
    type Batch;

    /// The model, to switch between training and evaluation and to list its parameters.
    fn module(&mut self) -> &mut dyn Module;

    /// The loss of `batch`, recorded for `backward`.
    ///
    /// # Errors
    /// Model and loss errors, and data the objective cannot use.
    fn loss(&self, batch: &Self::Batch) -> Result<StepLoss>;

    /// Evaluates the model (already in evaluation mode) after an epoch; `last` after the
    /// last one.
    ///
    /// # Errors
    /// Model and loss errors.
    fn evaluate(&self, last: bool) -> Result<Evaluation>;

    /// One line about an epoch's record, for the log.
    fn describe(&self, record: &EpochRecord) -> String;

    /// What [`StepLoss::items`] counts, for the progress bar.
    fn items(&self) -> &'static str {
        "samples"
    }

    /// The number of samples (the units of privacy) in `batch`, for private training;
    /// `None` for learners that cannot train privately.
    fn samples(&self, _batch: &Self::Batch) -> Option<usize> {
        None
    }
}

/// DP-SGD inside the loop ([`LoopConfig::privacy`]): the step, the δ at which ε is
/// reported, and ε after each epoch.
pub struct PrivateTraining {
    /// Clips, noises and writes the gradients of each step.
    pub dp: DpSgd,
    /// The δ of the guarantee.
    pub delta: f64,
    /// ε after each epoch.
    pub epsilons: Vec<f64>,
}

/// A shared handle on the [`PrivateTraining`] of a run (the loop steps it, the caller
/// reads the guarantee afterwards).
#[derive(Clone)]
pub struct PrivacyHandle(pub Arc<Mutex<PrivateTraining>>);

impl PrivacyHandle {
    /// A handle on `training`.
    pub fn new(training: PrivateTraining) -> Self {
        PrivacyHandle(Arc::new(Mutex::new(training)))
    }

    /// The private training, locked.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, PrivateTraining> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The Poisson sampler of this rank for `n` units of privacy: each unit kept with the
    /// training's sample rate, from the OS generator unless the noise is seeded (then
    /// from `seed`, and the run repeats); across ranks, each rank samples its own shard
    /// at the same rate, so that together they draw one Poisson sample of all `n`.
    ///
    /// # Errors
    /// A sampler the sizes do not allow (no units, more ranks than units).
    pub fn sampler(&self, n: usize, seed: u64, comm: &Communicator) -> Result<PoissonSampler> {
        let (q, secure) = {
            let p = self.lock();
            (p.dp.config().sample_rate, p.dp.secure_noise())
        };
        let sampler = if secure {
            PoissonSampler::new(n, q)?
        } else {
            PoissonSampler::seeded(n, q, seed)?
        };
        Ok(sampler.shard(comm.rank(), comm.size())?)
    }
}

impl std::fmt::Debug for PrivacyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivacyHandle")
    }
}

impl PartialEq for PrivacyHandle {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A shared handle on the [`ExponentialMovingAverage`] of a run's parameters
/// ([`LoopConfig::ema`]): the loop updates it, the caller saves what it holds with its
/// checkpoints and restores it on a resume.
#[derive(Clone)]
pub struct EmaHandle(pub Arc<Mutex<ExponentialMovingAverage>>);

impl EmaHandle {
    /// A handle on `ema`.
    pub fn new(ema: ExponentialMovingAverage) -> Self {
        EmaHandle(Arc::new(Mutex::new(ema)))
    }

    /// The average, locked.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, ExponentialMovingAverage> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl std::fmt::Debug for EmaHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmaHandle")
    }
}

impl PartialEq for EmaHandle {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// How [`run`] trains, besides the data and the model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoopConfig {
    /// Follow a one-cycle schedule (`OneCycleLR` with PyTorch's defaults) peaking at this
    /// learning rate, stepped after every optimizer step; `None` keeps the optimizer's lr.
    pub one_cycle_max_lr: Option<f64>,
    /// Clip the gradients' global 2-norm to this before each step (`None`: no clipping).
    pub clip_grad_norm: Option<f64>,
    /// Draw a progress bar on stderr (hidden when stderr is not a terminal) and log a line
    /// per epoch (per tenth of the run beyond 50 epochs). Only rank 0 draws it.
    pub progress: bool,
    /// The ranks training together (a world of one by default). The loop itself only
    /// sums the epoch's losses and throughput over them; the data source gives each rank
    /// its share, and a [`Reducer`](strata_distributed::Reducer) on the model averages
    /// the gradients.
    pub comm: Communicator,
    /// Train with DP-SGD: each step's gradient is clipped per sample, summed, noised and
    /// divided by the expected batch size ([`PrivateTraining`]) instead of the plain
    /// backward; the data source must then draw Poisson batches.
    pub privacy: Option<PrivacyHandle>,
    /// Evaluate an exponential moving average of the model's parameters: updated after
    /// every optimizer step, swapped into the model for each evaluation and `on_epoch`
    /// (which then sees the average as the model, and the weights training continues from
    /// in [`ExponentialMovingAverage::held`]), swapped back to train on, and left in the
    /// model at the end. Buffers (BatchNorm's running statistics) are the trained model's.
    pub ema: Option<EmaHandle>,
}

/// What `on_epoch` sees after each epoch: its record, and the model and optimizer as they
/// are (to write a checkpoint).
pub struct EpochEnd<'a> {
    /// The epoch's record.
    pub record: &'a EpochRecord,
    /// The model, in evaluation mode.
    pub model: &'a dyn Module,
    /// The optimizer.
    pub optimizer: &'a dyn Optimizer,
}

/// Trains `learner` with `optimizer` over `batches`: per step zero the gradients, compute
/// the loss, backward, clip, step the optimizer and the schedule; after each epoch evaluate
/// (in evaluation mode) and hand the record to `on_epoch`. Like a PyTorch loop, the model
/// trains in training mode (dropout active) and is left in evaluation mode.
///
/// Data-parallel, every rank runs the loop on its share of the batches; the records hold
/// the training loss and throughput over all ranks, the progress bar and log are rank 0's,
/// and `on_epoch` runs on every rank (it may call collectives).
///
/// # Errors
/// Errors of the data, the learner, the optimizer and `on_epoch` (which stop training),
/// a number of steps beyond `usize`, and a non-finite loss (training diverged).
pub fn run<B>(
    learner: &mut dyn Learner<Batch = B>,
    batches: &mut dyn Batches<Batch = B>,
    optimizer: &mut dyn Optimizer,
    config: &LoopConfig,
    on_epoch: &mut dyn FnMut(&EpochEnd<'_>) -> Result<()>,
) -> Result<Vec<EpochRecord>> {
    run_from(
        learner,
        batches,
        optimizer,
        config,
        Start::default(),
        on_epoch,
    )
}

/// The total steps of `batches`: the sum of its epochs' steps, computed without
/// overflow and without walking a huge number of epochs one by one (`--epochs 1e18`
/// must be an error or a number at once, not a hang before the first step).
///
/// # Errors
/// [`ModelsError::Config`] when the total does not fit in `usize`.
pub fn total_steps<B>(batches: &dyn Batches<Batch = B>) -> Result<usize> {
    let epochs = batches.epochs();
    let too_many = || {
        ModelsError::Config(format!(
            "{epochs} epochs of batches are more optimizer steps than can be counted"
        ))
    };
    // Every epoch but the last has the first epoch's steps for the sources strata has;
    // check that cheaply on the first, second and last, and sum exactly when small.
    if epochs <= 1 << 16 {
        return (1..=epochs)
            .try_fold(0usize, |t, e| t.checked_add(batches.steps_in(e)))
            .ok_or_else(too_many);
    }
    let (first, last) = (batches.steps_in(1), batches.steps_in(epochs));
    if batches.steps_in(2) != first {
        return Err(ModelsError::Config(format!(
            "{epochs} epochs of unequal lengths are too many to count one by one"
        )));
    }
    first
        .checked_mul(epochs - 1)
        .and_then(|t| t.checked_add(last))
        .ok_or_else(too_many)
}

/// [`run`], resuming after `start.epochs_done` epochs and `start.steps_done` steps: the
/// model and optimizer must hold the state they had then (loaded from a checkpoint); the
/// epochs done are skipped ([`Batches::skip_epoch`]) and the schedule is set to the step
/// reached, so the training continues exactly as if it had never stopped. Returns the
/// records of the epochs it trains.
///
/// # Errors
/// As [`run`], and a start beyond the training's end.
pub fn run_from<B>(
    learner: &mut dyn Learner<Batch = B>,
    batches: &mut dyn Batches<Batch = B>,
    optimizer: &mut dyn Optimizer,
    config: &LoopConfig,
    start: Start,
    on_epoch: &mut dyn FnMut(&EpochEnd<'_>) -> Result<()>,
) -> Result<Vec<EpochRecord>> {
    let epochs = batches.epochs();
    let total = total_steps(&*batches)?;
    if start.epochs_done > epochs || start.steps_done > total {
        return Err(ModelsError::Config(format!(
            "cannot resume after epoch {} (step {}) of a training of {epochs} epochs ({total} \
             steps)",
            start.epochs_done, start.steps_done
        )));
    }
    let params = learner.module().parameters();
    let mut schedule = match config.one_cycle_max_lr {
        Some(max_lr) => Some(OneCycleLR::new(max_lr, total.max(1)).scheduler(optimizer)?),
        None => None,
    };
    if let Some(s) = &mut schedule
        && start.steps_done > 0
    {
        // The loop steps the schedule after every optimizer step but the last.
        let state = SchedulerState {
            last_epoch: start.steps_done.min(total.saturating_sub(1)),
            base_lrs: s.state().base_lrs,
        };
        s.load_state(&state, optimizer)?;
    }
    for epoch in 1..=start.epochs_done {
        batches.skip_epoch(epoch)?;
    }
    let unit = batches.unit();
    let comm = &config.comm;
    let show = config.progress && comm.is_root();
    let bar = progress_bar(show, total, unit);
    bar.set_position(start.steps_done as u64);
    let log_every = if epochs <= 50 { 1 } else { epochs / 10 };
    // ε in the bar: RDP is cheap enough to refresh ten times an epoch; PRV, whose FFT
    // takes a moment, once an epoch.
    let epsilon_every = match &config.privacy {
        Some(p) if p.lock().dp.accountant().kind() == AccountantKind::Rdp => {
            (total / epochs.max(1) / 10).max(1)
        }
        _ => usize::MAX,
    };
    let mut epsilon_note = String::new();
    let mut step = start.steps_done;
    // Not `with_capacity(epochs)`: a user's epoch count is no allocation size.
    let mut history = Vec::new();
    for epoch in start.epochs_done + 1..=epochs {
        if unit == Unit::Epoch {
            bar.set_prefix(format!("epoch {epoch}/{epochs}"));
        }
        learner.module().train();
        let start = Instant::now();
        let (mut loss_sum, mut weight, mut items) = (0.0f64, 0.0f64, 0usize);
        let mut curve = CurveBuilder::new(batches.steps_in(epoch));
        for batch in batches.epoch(epoch) {
            let batch = batch?;
            optimizer.zero_grad();
            let out = match &config.privacy {
                None => {
                    let out = learner.loss(&batch)?;
                    out.loss.backward()?;
                    if let Some(max_norm) = config.clip_grad_norm {
                        clip_grad_norm(&params, max_norm, 2.0, false)?;
                    }
                    Some(out)
                }
                Some(private) => private_step(&*learner, &batch, private)?,
            };
            optimizer.step()?;
            step += 1;
            if let Some(ema) = &config.ema {
                ema.lock().update()?;
            }
            if let Some(s) = &mut schedule
                && step < total
            {
                s.step(optimizer)?;
            }
            if let Some(private) = &config.privacy
                && show
                && step.is_multiple_of(epsilon_every)
            {
                let p = private.lock();
                epsilon_note = format!("  ε {:.3}", p.dp.epsilon(p.delta)?);
            }
            // An empty Poisson batch has no loss: the step was noise only.
            let Some(out) = out else {
                bar.inc(1);
                continue;
            };
            let l = out.loss.item()? as f64;
            if !l.is_finite() {
                return Err(ModelsError::Config(format!(
                    "training diverged: loss {l} at step {step} (epoch {epoch}); try a smaller learning rate"
                )));
            }
            curve.push(step, l);
            loss_sum += l * out.weight;
            weight += out.weight;
            items += out.items;
            bar.set_message(format!(
                "loss {:.4}  {:.0} {}/s{epsilon_note}",
                loss_sum / weight,
                items as f64 / start.elapsed().as_secs_f64(),
                learner.items()
            ));
            bar.inc(1);
        }
        let seconds = start.elapsed().as_secs_f64();
        let (loss_sum, weight, items) = if comm.size() > 1 {
            let mut sums = [loss_sum, weight, items as f64];
            comm.all_reduce(&mut sums, ReduceOp::Sum)?;
            (sums[0], sums[1], sums[2] as usize)
        } else {
            (loss_sum, weight, items)
        };
        learner.module().eval();
        if let Some(ema) = &config.ema {
            ema.lock().swap()?;
        }
        let epsilon = match &config.privacy {
            Some(private) => {
                let mut p = private.lock();
                let eps = p.dp.epsilon(p.delta)?;
                p.epsilons.push(eps);
                epsilon_note = format!("  ε {eps:.3}");
                Some(eps)
            }
            None => None,
        };
        let record = EpochRecord {
            epoch,
            step,
            train_loss: if weight > 0.0 { loss_sum / weight } else { 0.0 },
            test: learner.evaluate(epoch == epochs)?,
            seconds,
            samples_per_s: items as f64 / seconds.max(1e-9),
            epsilon,
            curve: curve.finish(step),
        };
        if show && epoch % log_every == 0 {
            let at = match unit {
                Unit::Epoch => format!("epoch {epoch}"),
                Unit::Step => format!("step {step}"),
            };
            let mut line = format!("{at}: {}", learner.describe(&record));
            if let Some(eps) = record.epsilon {
                line.push_str(&format!(", ε {eps:.3}"));
            }
            if bar.is_hidden() {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
        }
        on_epoch(&EpochEnd {
            record: &record,
            model: learner.module(),
            optimizer,
        })?;
        history.push(record);
        if let Some(ema) = &config.ema
            && epoch < epochs
        {
            ema.lock().swap()?;
        }
    }
    bar.finish_and_clear();
    learner.module().eval();
    Ok(history)
}

/// One DP-SGD step on `batch`: the learner's forward runs inside the per-sample capture,
/// and the clipped, noised gradient lands in `.grad`. `None` for an empty batch.
fn private_step<B>(
    learner: &dyn Learner<Batch = B>,
    batch: &B,
    private: &PrivacyHandle,
) -> Result<Option<StepLoss>> {
    let samples = learner.samples(batch).ok_or_else(|| {
        ModelsError::Config("this model's training cannot run with DP-SGD".into())
    })?;
    let mut out = None;
    let mut failure = None;
    let mut p = private.lock();
    let stepped = p.dp.step(samples, || {
        let r = learner.loss(batch).map(|o| {
            let loss = o.loss.clone();
            out = Some(o);
            loss
        });
        r.map_err(|e| {
            let msg = e.to_string();
            failure = Some(e);
            PrivacyError::Batch(msg)
        })
    });
    match (stepped, failure) {
        (Ok(_), _) => Ok(out),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(e.into()),
    }
}

fn progress_bar(show: bool, steps: usize, unit: Unit) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps as u64);
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} (ETA {eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    if unit == Unit::Step {
        bar.set_prefix("step");
    }
    bar
}
