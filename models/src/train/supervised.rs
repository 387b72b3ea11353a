//! Training on a data set in memory: the objectives, the loss of a batch, evaluation,
//! shuffled epochs of batches, and [`fit`], the loop of [`run`](super::run) for a network
//! and its targets.

use std::sync::Arc;

use strata_autograd::{Var, no_grad};
use strata_distributed::{Communicator, DistributedSampler, ReduceOp};
use strata_nn::Forward;
use strata_nn::Module;
use strata_nn::loss::{self, ClassLossOptions, Reduction};
use strata_optim::Optimizer;
use strata_privacy::PoissonSampler;

use super::{Batches, EpochRecord, Evaluation, Learner, LoopConfig, StepLoss, run};
use crate::data::{Batch, DataLoader, Dataset, InMemoryDataset};
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
    evaluate_on(model, data, objective, batch_size, &Communicator::alone())
}

/// [`evaluate`] shared among `comm`'s ranks (every rank holds the same model and data):
/// each evaluates a contiguous part of `data`, and the sums (and, for regression, the
/// predictions) are gathered, so that every rank gets the evaluation of the whole set.
///
/// # Errors
/// As [`evaluate`], and communication errors.
pub fn evaluate_on(
    model: &dyn Forward,
    data: &InMemoryDataset,
    objective: Objective,
    batch_size: usize,
    comm: &Communicator,
) -> Result<Evaluation> {
    let (rank, size) = (comm.rank(), comm.size());
    let part = |r: usize| r * data.len() / size;
    no_grad(|| {
        let mut loader = DataLoader::new(data, batch_size.max(256));
        if size > 1 {
            loader = loader.sampler(Arc::new(part(rank)..part(rank + 1)));
        }
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
        if size > 1 {
            let mut sums = [loss_sum, correct as f64];
            comm.all_reduce(&mut sums, ReduceOp::Sum)?;
            (loss_sum, correct, n) = (sums[0], sums[1] as usize, data.len());
            if objective == Objective::Mse {
                // The parts differ by at most one sample: gather them padded to the longest.
                let longest = data.len().div_ceil(size);
                preds.resize(longest, 0.0);
                let all = comm.all_gather(&preds)?;
                preds = (0..size)
                    .flat_map(|r| all[r * longest..][..part(r + 1) - part(r)].to_vec())
                    .collect();
                targets = match data.labels() {
                    crate::data::Labels::Values(v) => v.clone(),
                    crate::data::Labels::Classes { .. } => Vec::new(),
                };
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

/// Shuffled passes over a data set: epoch `e` is the data in an order drawn from the seed
/// and `e` (so any epoch can be drawn again, to resume), cut into batches.
pub struct Epochs<'a> {
    loader: DataLoader<'a, InMemoryDataset>,
    epochs: usize,
}

impl<'a> Epochs<'a> {
    /// `epochs` passes over `data` in batches of `batch_size`, shuffled with `seed`.
    ///
    /// # Errors
    /// [`ModelsError::Config`] for zero epochs, a zero batch size or no samples (a
    /// training of nothing would end "successfully" with a loss of 0).
    pub fn new(
        data: &'a InMemoryDataset,
        batch_size: usize,
        epochs: usize,
        seed: u64,
    ) -> Result<Self> {
        if batch_size == 0 || epochs == 0 {
            return Err(ModelsError::Config(
                "epochs and batch size must be positive".into(),
            ));
        }
        if data.is_empty() {
            return Err(ModelsError::Config(
                "there are no training samples (is --limit 0?)".into(),
            ));
        }
        Ok(Epochs {
            loader: DataLoader::new(data, batch_size).shuffle(seed),
            epochs,
        })
    }

    /// This rank's share of the epochs of [`new`](Epochs::new) with a global batch of
    /// `batch_size` over `comm`'s ranks: each rank reads its part of the same shuffled
    /// permutation ([`DistributedSampler`], padded as PyTorch's) in batches of
    /// `batch_size / size` (which must divide), so that the ranks' batches of a step are
    /// together the batch one process would read. With one rank, exactly [`new`](Epochs::new).
    ///
    /// # Errors
    /// [`ModelsError::Config`] for zero epochs or batch size, or a batch size that does not
    /// divide among the ranks.
    pub fn distributed(
        data: &'a InMemoryDataset,
        batch_size: usize,
        epochs: usize,
        seed: u64,
        comm: &Communicator,
    ) -> Result<Self> {
        let size = comm.size();
        if size == 1 {
            return Self::new(data, batch_size, epochs, seed);
        }
        if batch_size == 0 || epochs == 0 || !batch_size.is_multiple_of(size) {
            return Err(ModelsError::Config(format!(
                "epochs and batch size must be positive, and the batch size ({batch_size}) a \
                 multiple of the number of ranks ({size})"
            )));
        }
        let sampler = DistributedSampler::new(data.len(), comm).seed(seed);
        Ok(Epochs {
            loader: DataLoader::new(data, batch_size / size).sampler(Arc::new(sampler)),
            epochs,
        })
    }
}

/// Poisson-sampled epochs for private training: every step keeps each training sample
/// independently with probability `q` (strata-privacy's [`PoissonSampler`]), so batches
/// vary in size and may be empty; an epoch is `⌊1/q⌋` steps, as in Opacus.
pub struct PoissonEpochs<'a> {
    loader: DataLoader<'a, InMemoryDataset>,
    sampler: PoissonSampler,
    epochs: usize,
}

impl<'a> PoissonEpochs<'a> {
    /// `epochs` epochs over `data` with the batches `sampler` draws.
    ///
    /// # Errors
    /// [`ModelsError::Config`] for no epochs or a sampler of another data set's size.
    pub fn new(data: &'a InMemoryDataset, sampler: PoissonSampler, epochs: usize) -> Result<Self> {
        if epochs == 0 {
            return Err(ModelsError::Config("epochs must be positive".into()));
        }
        Ok(PoissonEpochs {
            loader: DataLoader::new(data, 1),
            sampler,
            epochs,
        })
    }
}

impl Batches for PoissonEpochs<'_> {
    type Batch = Batch;

    fn epochs(&self) -> usize {
        self.epochs
    }

    fn steps_in(&self, _epoch: usize) -> usize {
        self.sampler.steps_per_epoch()
    }

    fn epoch(&mut self, _epoch: usize) -> Box<dyn Iterator<Item = Result<Batch>> + '_> {
        let steps = self.sampler.steps_per_epoch();
        let (loader, sampler) = (&self.loader, &mut self.sampler);
        Box::new((0..steps).map(move |_| Ok(loader.batch(&sampler.sample()))))
    }
}

impl Batches for Epochs<'_> {
    type Batch = Batch;

    fn epochs(&self) -> usize {
        self.epochs
    }

    fn steps_in(&self, _epoch: usize) -> usize {
        self.loader.num_batches()
    }

    fn epoch(&mut self, epoch: usize) -> Box<dyn Iterator<Item = Result<Batch>> + '_> {
        Box::new(self.loader.epoch(epoch as u64).map(Ok))
    }
}

/// A network trained on batches of a data set against their targets with an
/// [`Objective`], and evaluated on held-out data.
pub struct Supervised<'a> {
    model: &'a mut dyn Forward,
    objective: Objective,
    test: &'a InMemoryDataset,
    eval_batch_size: usize,
    comm: Communicator,
}

impl<'a> Supervised<'a> {
    /// `model` trained for `objective`, evaluated on `test` in batches of at least 256
    /// (`eval_batch_size` when larger).
    pub fn new(
        model: &'a mut dyn Forward,
        objective: Objective,
        test: &'a InMemoryDataset,
        eval_batch_size: usize,
    ) -> Self {
        Supervised {
            model,
            objective,
            test,
            eval_batch_size,
            comm: Communicator::alone(),
        }
    }

    /// Evaluates with the test set shared among `comm`'s ranks ([`evaluate_on`]).
    pub fn shared_by(mut self, comm: &Communicator) -> Self {
        self.comm = comm.clone();
        self
    }
}

impl Learner for Supervised<'_> {
    type Batch = Batch;

    fn module(&mut self) -> &mut dyn Module {
        self.model
    }

    fn samples(&self, batch: &Batch) -> Option<usize> {
        Some(batch.len())
    }

    fn loss(&self, batch: &Batch) -> Result<StepLoss> {
        let out = self.model.forward(&Var::new(batch.x.clone()))?;
        Ok(StepLoss {
            loss: batch_loss(self.objective, &out, batch)?,
            weight: batch.len() as f64,
            items: batch.len(),
        })
    }

    fn evaluate(&self, _last: bool) -> Result<Evaluation> {
        evaluate_on(
            &*self.model,
            self.test,
            self.objective,
            self.eval_batch_size,
            &self.comm,
        )
    }

    fn describe(&self, r: &EpochRecord) -> String {
        let metric = match (r.test.accuracy, r.test.r2) {
            (Some(a), _) => format!("test accuracy {:.2}%", 100.0 * a),
            (_, Some(r2)) => format!("test R² {r2:.4}"),
            _ => String::new(),
        };
        format!(
            "train loss {:.4}, test loss {:.4}, {metric}, {:.0} samples/s",
            r.train_loss, r.test.loss, r.samples_per_s
        )
    }
}

/// Trains `model` with `optimizer` for `config.epochs` epochs of shuffled batches of
/// `train`, evaluating on `test` after each; `on_epoch` sees every record as it is made
/// (for logs; an error stops training). [`run`](super::run) with [`Epochs`] and
/// [`Supervised`].
///
/// Like a PyTorch loop, the model trains in training mode (dropout active) and is
/// evaluated in evaluation mode; it is left in evaluation mode, ready for inference.
///
/// # Errors
/// As [`batch_loss`], errors of the model and optimizer, zero epochs or batch size, and a
/// non-finite loss (training diverged).
pub fn fit(
    model: &mut dyn Forward,
    optimizer: &mut dyn Optimizer,
    train: &InMemoryDataset,
    test: &InMemoryDataset,
    objective: Objective,
    config: &TrainConfig,
    mut on_epoch: impl FnMut(&EpochRecord) -> Result<()>,
) -> Result<Vec<EpochRecord>> {
    let mut batches = Epochs::new(train, config.batch_size, config.epochs, config.seed)?;
    let mut learner = Supervised::new(model, objective, test, config.batch_size);
    let loop_config = LoopConfig {
        one_cycle_max_lr: config.one_cycle_max_lr,
        clip_grad_norm: None,
        progress: config.progress,
        comm: Communicator::alone(),
        privacy: None,
        ema: None,
    };
    run(
        &mut learner,
        &mut batches,
        optimizer,
        &loop_config,
        &mut |end| on_epoch(end.record),
    )
}
