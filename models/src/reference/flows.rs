//! The trainings, evaluations, predictions and text generation of `strata`, written once
//! for every [`ReferenceModel`], behind [`Flows`], the object-safe face a registry entry
//! shows.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::Value;
use strata_distributed::{DdpConfig, Reducer};
use strata_nn::Module;
use strata_privacy::{DpSgd, DpSgdConfig, GaussianNoise, noise_multiplier};
use strata_tensor::seeded_rng;

use super::record::{self, DatasetRecord, Hyperparameters, Metrics, PrivacyRecord, Record};
use super::registry::Model;
use super::spec::{Defaults, Length, Network, Plan, ReferenceModel, Schedule, Task};
use super::{PrivacyOptions, TrainOptions};
use crate::train::{Evaluation, LoopConfig, PrivacyHandle, PrivateTraining};
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
    /// Evaluates the checkpoint in `dir`, whose record is `record`.
    fn eval(&'static self, record: Record, dir: &Path) -> Result<Evaluation>;
    /// Predicts with the checkpoint in `dir` for the samples in `input`.
    fn predict(&self, record: Record, dir: &Path, input: &Path) -> Result<Vec<String>>;
    /// Samples text from the checkpoint in `dir`.
    fn generate(&self, record: Record, dir: &Path, request: &Generate<'_>) -> Result<String>;
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

fn write_error(out: &Path, e: impl std::fmt::Display) -> ModelsError {
    ModelsError::Config(format!("{}: {e}", out.display()))
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
        let defaults = ReferenceModel::defaults(self);
        let length = match defaults.length {
            Length::Epochs(n) => Length::Epochs(opts.epochs.unwrap_or(n)),
            Length::Steps(_) if opts.epochs.is_some() => {
                return Err(ModelsError::Config(format!(
                    "{} trains in steps: use --steps instead of --epochs",
                    S::NAME
                )));
            }
            Length::Steps(n) => Length::Steps(opts.steps.unwrap_or(n)),
        };
        let comm = &opts.comm;
        let mut prepared = self.prepare(opts)?;
        let mut task = self.task(&prepared.architecture);
        let mut net = self.init(&prepared, &mut seeded_rng(opts.seed))?;
        // The whole training set, before --limit, for full-batch training.
        let requested = opts
            .batch_size
            .or(defaults.batch_size)
            .unwrap_or_else(|| task.train_len(&prepared.data));
        // Data-parallel, each rank takes an equal share of the global batch: the requested
        // one, rounded up to a multiple of the number of ranks when it does not divide.
        let batch_size = requested.div_ceil(comm.size()) * comm.size();
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
        // Every rank starts from rank 0's weights and, after each backward, holds the
        // gradients averaged over the ranks (nothing at all in a world of one).
        let reducer = if comm.size() > 1 {
            Some(Reducer::new(&*net, comm, &DdpConfig::default())?)
        } else {
            None
        };
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
        // Under DP-SGD the per-sample clipping bounds the gradients; the model's own
        // gradient clipping would only rescale the noisy step, so it is off.
        let clip_grad_norm = defaults.clip_grad_norm.filter(|_| private.is_none());
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
            },
        };
        let start = Instant::now();
        let history = task.fit(
            &mut net,
            &prepared.data,
            optimizer.as_mut(),
            &plan,
            &mut |_| Ok(()),
        )?;
        let seconds = start.elapsed().as_secs_f64();
        drop(reducer);
        let last = history
            .last()
            .ok_or_else(|| ModelsError::Config("the training made no evaluation".into()))?;
        let mut figures = task.metrics(&net, &prepared.data, &history, &plan)?;
        figures.extend(self.report(&net, &prepared)?);
        let privacy = match &private {
            Some((handle, unit)) => {
                let p = handle.lock();
                let g = p.dp.guarantee(p.delta)?;
                figures.insert("epsilon".into(), g.epsilon.into());
                figures.insert("delta".into(), g.delta.into());
                figures.insert("epsilon_per_epoch".into(), p.epsilons.clone().into());
                Some(PrivacyRecord {
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
                })
            }
            None => None,
        };
        let (epochs, steps) = match length {
            Length::Epochs(n) => (Some(n), None),
            Length::Steps(n) => (None, Some(n)),
        };
        let metrics = Metrics {
            model: S::NAME.into(),
            dataset: prepared.dataset.name.clone(),
            epochs,
            steps,
            train_loss: last.train_loss,
            seconds,
            figures,
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
        };
        task.record_settings(&mut hyperparameters);
        let data = opts.data.as_ref().map(|d| d.display().to_string());
        let is_file = opts.data.as_ref().is_some_and(|d| d.is_file());
        let record = Record {
            model: S::NAME.into(),
            architecture: &prepared.architecture,
            hyperparameters,
            dataset: DatasetRecord {
                name: prepared.dataset.name.clone(),
                source: prepared.dataset.source.clone(),
                license: prepared.dataset.license.clone(),
                data_dir: data.clone().filter(|_| !is_file),
                data_file: data.filter(|_| is_file),
                variant: opts.dataset.clone(),
            },
            seed: opts.seed,
            threads: rayon::current_num_threads(),
            world_size: comm.size(),
            strata_version: env!("CARGO_PKG_VERSION").into(),
            metrics,
            privacy,
            extra: &prepared.extra,
        };
        let metrics =
            serde_json::to_value(&record.metrics).map_err(|e| write_error(&opts.out, e))?;
        // Rank 0 alone writes; the others wait for it, so that every rank returns once the
        // files are there (and a failed write ends every rank).
        if comm.is_root() {
            std::fs::create_dir_all(&opts.out).map_err(|e| write_error(&opts.out, e))?;
            checkpoint::save(
                &opts.out.join("checkpoint"),
                &*net,
                optimizer.as_ref(),
                &record,
            )?;
            let text =
                serde_json::to_string_pretty(&metrics).map_err(|e| write_error(&opts.out, e))?;
            std::fs::write(opts.out.join("metrics.json"), text + "\n")
                .map_err(|e| write_error(&opts.out, e))?;
            plot::training_curves(&history, S::NAME, &opts.out.join("curves.svg"))?;
        }
        comm.barrier()?;
        Ok(metrics)
    }

    fn eval(&'static self, record: Record, dir: &Path) -> Result<Evaluation> {
        let (architecture, net) = rebuild(self, &record, dir)?;
        let extra: S::Extra = record::section(&record.extra, "extra record", S::NAME, dir)?;
        let prepared = self.prepare(&options_from(Model::new(self), &record))?;
        self.check_reloaded(&extra, &prepared.extra)
            .map_err(|msg| ModelsError::Checkpoint {
                path: dir.to_path_buf(),
                msg,
            })?;
        let mut task = self.task(&architecture);
        task.restore_settings(&record.hyperparameters);
        task.evaluate(&net, &prepared.data)
    }

    fn predict(&self, record: Record, dir: &Path, input: &Path) -> Result<Vec<String>> {
        let (architecture, net) = rebuild(self, &record, dir)?;
        let extra: S::Extra = record::section(&record.extra, "extra record", S::NAME, dir)?;
        ReferenceModel::predict(self, &net, &record.typed(architecture, extra), input)
    }

    fn generate(&self, record: Record, dir: &Path, request: &Generate<'_>) -> Result<String> {
        let (_, net) = rebuild(self, &record, dir)?;
        let extra: S::Extra = record::section(&record.extra, "extra record", S::NAME, dir)?;
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
    if opts.comm.size() > 1 {
        return Err(ModelsError::Config(
            "private training (--dp) runs in one process: DP-SGD across ranks is not \
             supported yet"
                .into(),
        ));
    }
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
    let dp = DpSgd::new(net, config, noise)?;
    if opts.progress {
        eprintln!(
            "DP-SGD: σ = {sigma:.4}, C = {}, q = {q:.6} ({unit}s: {units}), {steps} steps, \
             δ = {}, {} noise",
            p.max_grad_norm,
            p.delta,
            if p.seeded_noise {
                "seeded (not private)"
            } else {
                "secure"
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

/// The network of a checkpoint with its weights, in evaluation mode, and its architecture.
fn rebuild<S: ReferenceModel>(
    spec: &S,
    record: &Record,
    dir: &Path,
) -> Result<(S::Architecture, Box<Network<S>>)> {
    let architecture: S::Architecture =
        record::section(&record.architecture, "architecture", S::NAME, dir)?;
    let mut net = spec.build(&architecture, &mut seeded_rng(0))?;
    checkpoint::load_model(dir, &*net)?;
    net.eval();
    Ok((architecture, net))
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
        progress: false,
        ..TrainOptions::new(model, PathBuf::new())
    }
}
