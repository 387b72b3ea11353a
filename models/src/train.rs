//! The training loop: fit and evaluate a model on in-memory data, with a progress bar,
//! metrics and a per-epoch history.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use strata_autograd::{Var, no_grad};
use strata_nn::Forward;
use strata_nn::loss::{self, ClassLossOptions, Reduction};
use strata_optim::Optimizer;
use strata_optim::schedule::OneCycleLR;

use crate::data::{Batch, DataLoader, InMemoryDataset};
use crate::models::r2_score;
use crate::{ModelsError, Result};

/// What a model's output is trained against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Objective {
    /// Logits `[B, C]` against class indices: cross-entropy; accuracy by argmax.
    CrossEntropy,
    /// One logit `[B]` against classes 0/1: binary cross-entropy on logits; accuracy by
    /// the sign of the logit.
    BinaryLogits,
    /// Predictions `[B]` against values: mean squared error; R².
    Mse,
}

/// How to train.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainConfig {
    /// Passes over the training data.
    pub epochs: usize,
    /// Samples per batch.
    pub batch_size: usize,
    /// The seed of the shuffling (initialisation is seeded by the caller).
    pub seed: u64,
    /// Draw a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Follow a one-cycle schedule (`OneCycleLR` with PyTorch's defaults) peaking at this
    /// learning rate, stepped after every batch; `None` keeps the optimizer's lr.
    pub one_cycle_max_lr: Option<f64>,
}

/// The metrics of one evaluation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Evaluation {
    /// The mean loss.
    pub loss: f64,
    /// The accuracy, for classification.
    pub accuracy: Option<f64>,
    /// The coefficient of determination, for regression.
    pub r2: Option<f64>,
}

/// The record of one epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochRecord {
    /// The epoch, from 1.
    pub epoch: usize,
    /// The mean training loss over the epoch's batches (weighted by batch size).
    pub train_loss: f64,
    /// The evaluation on the test data after the epoch.
    pub test: Evaluation,
    /// Wall-clock seconds of the epoch's training (without evaluation).
    pub seconds: f64,
    /// Training samples per second.
    pub samples_per_s: f64,
}

/// The loss of `output` on `batch` for `objective`.
///
/// # Errors
/// When the batch lacks the labels the objective needs, or shapes disagree.
pub fn batch_loss(objective: Objective, output: &Var, batch: &Batch) -> Result<Var> {
    let missing =
        || ModelsError::Config(format!("{objective:?} needs labels the data does not have"));
    Ok(match objective {
        Objective::CrossEntropy => {
            let target = batch.classes.as_ref().ok_or_else(missing)?;
            loss::cross_entropy(output, target, &ClassLossOptions::default())?
        }
        Objective::BinaryLogits => {
            let target = batch
                .classes
                .as_ref()
                .ok_or_else(missing)?
                .to_tensor::<f32>();
            loss::binary_cross_entropy_with_logits(
                output,
                &Var::new(target),
                None,
                None,
                Reduction::Mean,
            )?
        }
        Objective::Mse => {
            let target = batch.values.as_ref().ok_or_else(missing)?;
            loss::mse_loss(output, &Var::new(target.clone()), Reduction::Mean)?
        }
    })
}

/// Evaluates `model` on `data` without recording graphs.
///
/// # Errors
/// As [`batch_loss`], and errors of the model.
pub fn evaluate(
    model: &dyn Forward,
    data: &InMemoryDataset,
    objective: Objective,
    batch_size: usize,
) -> Result<Evaluation> {
    no_grad(|| {
        let loader = DataLoader::new(data, batch_size.max(256));
        let (mut loss_sum, mut correct, mut n) = (0.0, 0usize, 0usize);
        let (mut preds, mut targets) = (Vec::new(), Vec::new());
        for batch in loader.epoch(0) {
            let out = model.forward(&Var::new(batch.x.clone()))?;
            loss_sum += batch_loss(objective, &out, &batch)?.item()? as f64 * batch.len() as f64;
            n += batch.len();
            match objective {
                Objective::CrossEntropy => {
                    let predicted = out.value().argmax(Some(1), false)?;
                    let truth = batch.classes.as_ref().expect("checked by batch_loss");
                    correct += predicted
                        .as_slice()
                        .iter()
                        .zip(truth.as_slice())
                        .filter(|(a, b)| a == b)
                        .count();
                }
                Objective::BinaryLogits => {
                    let truth = batch.classes.as_ref().expect("checked by batch_loss");
                    correct += out
                        .to_vec()
                        .iter()
                        .zip(truth.as_slice())
                        .filter(|(logit, t)| i64::from(**logit > 0.0) == **t)
                        .count();
                }
                Objective::Mse => {
                    preds.extend(out.to_vec());
                    targets.extend(
                        batch
                            .values
                            .as_ref()
                            .expect("checked by batch_loss")
                            .to_vec(),
                    );
                }
            }
        }
        let n_f = n.max(1) as f64;
        Ok(Evaluation {
            loss: loss_sum / n_f,
            accuracy: (objective != Objective::Mse).then(|| correct as f64 / n_f),
            r2: (objective == Objective::Mse).then(|| r2_score(&preds, &targets)),
        })
    })
}

/// Trains `model` with `optimizer` for `config.epochs` epochs of shuffled batches,
/// evaluating on `test` after each; `on_epoch` sees every record as it is made (for
/// checkpoints and logs).
///
/// Like a PyTorch loop, the model trains in training mode (dropout active) and is
/// evaluated in evaluation mode; it is left in evaluation mode, ready for inference.
///
/// # Errors
/// As [`batch_loss`], errors of the model and optimizer, and a non-finite loss (training
/// diverged).
pub fn fit(
    model: &mut dyn Forward,
    optimizer: &mut dyn Optimizer,
    train: &InMemoryDataset,
    test: &InMemoryDataset,
    objective: Objective,
    config: &TrainConfig,
    mut on_epoch: impl FnMut(&EpochRecord) -> Result<()>,
) -> Result<Vec<EpochRecord>> {
    if config.batch_size == 0 || config.epochs == 0 {
        return Err(ModelsError::Config(
            "epochs and batch size must be positive".into(),
        ));
    }
    let loader = DataLoader::new(train, config.batch_size).shuffle(config.seed);
    let total_steps = config.epochs * loader.num_batches();
    let mut schedule = match config.one_cycle_max_lr {
        Some(max_lr) => Some(OneCycleLR::new(max_lr, total_steps.max(1)).scheduler(optimizer)?),
        None => None,
    };
    let mut steps = 0;
    let mut history = Vec::with_capacity(config.epochs);
    for epoch in 1..=config.epochs {
        let bar = progress_bar(
            config.progress,
            loader.num_batches() as u64,
            epoch,
            config.epochs,
        );
        let start = Instant::now();
        model.train();
        let (mut loss_sum, mut seen) = (0.0f64, 0usize);
        for batch in loader.epoch(epoch as u64) {
            optimizer.zero_grad();
            let out = model.forward(&Var::new(batch.x.clone()))?;
            let loss = batch_loss(objective, &out, &batch)?;
            loss.backward()?;
            optimizer.step()?;
            steps += 1;
            if let Some(s) = &mut schedule
                && steps < total_steps
            {
                s.step(optimizer);
            }
            let l = loss.item()? as f64;
            if !l.is_finite() {
                return Err(ModelsError::Config(format!(
                    "training diverged: loss {l} in epoch {epoch}; try a smaller learning rate"
                )));
            }
            loss_sum += l * batch.len() as f64;
            seen += batch.len();
            bar.set_message(format!(
                "loss {:.4}  {:.0} samples/s",
                loss_sum / seen as f64,
                seen as f64 / start.elapsed().as_secs_f64()
            ));
            bar.inc(1);
        }
        let seconds = start.elapsed().as_secs_f64();
        bar.finish_and_clear();
        model.eval();
        let record = EpochRecord {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            test: evaluate(&*model, test, objective, config.batch_size)?,
            seconds,
            samples_per_s: seen as f64 / seconds.max(1e-9),
        };
        on_epoch(&record)?;
        history.push(record);
    }
    Ok(history)
}

fn progress_bar(show: bool, batches: u64, epoch: usize, epochs: usize) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(batches);
    let style =
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} (ETA {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{epoch}/{epochs}"));
    bar
}
