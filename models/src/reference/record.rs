//! The provenance record of a reference checkpoint (`provenance.json`) and the metrics of a
//! training (`metrics.json`), as serde structs: written with `serde_json::to_*`, read with
//! `from_*`, and every missing, unknown or mistyped field is a [`ModelsError`] naming the
//! checkpoint.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::spec::{Figures, OptimizerKind, Schedule};
use crate::checkpoint::{self, RECORD_FILE};
use crate::{ModelsError, Result};

/// The provenance record of a checkpoint: which model with which architecture, trained
/// how, on what, with which outcome. `A` and `E` are the model's architecture and extra
/// records ([`ReferenceModel::Architecture`](super::ReferenceModel::Architecture),
/// [`ReferenceModel::Extra`](super::ReferenceModel::Extra)); [`Value`] while the model is
/// not known yet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record<A = Value, E = Value> {
    /// The model's name (`"cnn"`).
    pub model: String,
    /// Its architecture.
    pub architecture: A,
    /// How it trained.
    pub hyperparameters: Hyperparameters,
    /// What it trained on.
    pub dataset: DatasetRecord,
    /// The seed of initialisation, splits, shuffling and sampling.
    pub seed: u64,
    /// Worker threads (of each rank).
    pub threads: usize,
    /// The number of processes that trained it together (data-parallel); 1 for records
    /// written before strata-distributed.
    #[serde(default = "one")]
    pub world_size: usize,
    /// The strata version that trained it.
    pub strata_version: String,
    /// The metrics of the training (as in `metrics.json`).
    pub metrics: Metrics,
    /// The differential-privacy guarantee, for a model trained with DP-SGD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<PrivacyRecord>,
    /// What inference needs besides the weights and the architecture.
    pub extra: E,
    /// How far the training had got when this checkpoint was written (absent in records
    /// of complete trainings written before checkpoints were resumable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

/// How far a training had got at a checkpoint: what `strata train --resume` continues.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// Epochs (evaluation periods, for the models that train in steps) done.
    pub epochs_done: usize,
    /// Epochs (periods) of the whole training.
    pub epochs: usize,
    /// Optimizer steps taken.
    pub steps_done: usize,
    /// Wall-clock seconds of training so far.
    pub seconds: f64,
    /// Whether the training is finished.
    pub complete: bool,
}

/// The (ε, δ) guarantee of a model trained with DP-SGD (`strata train --dp`), and what it
/// rests on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyRecord {
    /// ε at `delta` after the whole training.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// The accountant that computed ε (`"rdp"` or `"prv"`).
    pub accountant: String,
    /// The noise multiplier σ (the noise's standard deviation over C).
    pub noise_multiplier: f64,
    /// σ as accounted for, after the noise grid's sensitivity margin.
    pub effective_noise_multiplier: f64,
    /// C, the bound on each sample's gradient norm.
    pub max_grad_norm: f64,
    /// `"flat"` or `"per-layer"` clipping.
    pub clipping: String,
    /// q, each sample's probability of being in a batch (Poisson sampling).
    pub sample_rate: f64,
    /// The noisy steps taken.
    pub steps: u64,
    /// `"secure"`: noise from the OS-seeded ChaCha generator; `"seeded"`: from the run's
    /// seed, reproducible and therefore **not private**.
    pub noise: String,
    /// What one unit of privacy is (a training sample, a window of text).
    pub unit: String,
    /// The processes each step was shared among: each clipped its own Poisson share of
    /// the data, and rank 0 added the noise once to the sum over all of them (1 for one
    /// process, and for records written before DP-SGD ran across ranks).
    #[serde(default = "one")]
    pub world_size: usize,
}

impl Record {
    /// The record with its architecture and extra record replaced by typed ones.
    pub fn typed<A, E>(self, architecture: A, extra: E) -> Record<A, E> {
        Record {
            model: self.model,
            architecture,
            hyperparameters: self.hyperparameters,
            dataset: self.dataset,
            seed: self.seed,
            threads: self.threads,
            world_size: self.world_size,
            strata_version: self.strata_version,
            metrics: self.metrics,
            privacy: self.privacy,
            extra,
            progress: self.progress,
        }
    }
}

/// How a model trained. Fields that do not apply to it are left out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hyperparameters {
    /// Passes over the training data (models trained in epochs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    /// Optimizer steps (models trained in steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    /// The learning rate (the peak of a one-cycle schedule).
    pub lr: f64,
    /// Samples (or windows) per batch.
    pub batch_size: usize,
    /// Characters per window, for the character models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_len: Option<usize>,
    /// The optimizer.
    pub optimizer: OptimizerKind,
    /// The learning-rate schedule.
    pub schedule: Schedule,
    /// The gradient norm was clipped to this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_grad_norm: Option<f64>,
    /// Only the first samples (characters, for the character models) were used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// The share of the text held out, for the character models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out_fraction: Option<f64>,
    /// The recurrent layer asked for with `--cell`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<crate::models::RecurrentKind>,
    /// The decay of the exponential moving average of the weights that was evaluated
    /// and saved (the checkpoint's model is the average).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<f64>,
}

/// What a model trained on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetRecord {
    /// The data set's name.
    pub name: String,
    /// Where it comes from.
    pub source: String,
    /// Its licence.
    pub license: String,
    /// The folder given with `--data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    /// The file given with `--data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_file: Option<String>,
    /// The bundled set given with `--dataset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// How raw inputs become the model's inputs: what a user running the weights
    /// elsewhere (PyTorch, an ONNX runtime) applies first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessing: Option<Preprocessing>,
}

/// The input preprocessing of a trained model: `(raw · scale − mean[c]) / std[c]` per
/// channel or feature `c` (no means and deviations: scaling only), and in words, with
/// what the numbers do not say (a vocabulary's indices, say).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocessing {
    /// What is done, in words.
    pub description: String,
    /// The factor raw values are first multiplied by.
    pub scale: f64,
    /// The means subtracted after scaling, per channel (images) or feature (tables).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mean: Vec<f64>,
    /// The deviations divided by, one per mean.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub std: Vec<f64>,
}

impl Preprocessing {
    /// A preprocessing described in words only (scale 1, no means).
    pub fn described(description: impl Into<String>) -> Self {
        Preprocessing {
            description: description.into(),
            scale: 1.0,
            mean: Vec::new(),
            std: Vec::new(),
        }
    }
}

/// The metrics of a training: the common ones, then the figures of its task and model
/// (`test_accuracy`, `held_out_loss`, `closed_form`, …).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// The model's name.
    pub model: String,
    /// The data set's name.
    pub dataset: String,
    /// Epochs trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    /// Steps trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    /// The mean training loss of the last epoch (or evaluation period).
    pub train_loss: f64,
    /// Wall-clock seconds of the training.
    pub seconds: f64,
    /// The task's and the model's own figures.
    #[serde(flatten)]
    pub figures: Figures,
}

fn one() -> usize {
    1
}

fn checkpoint_error(dir: &Path, msg: String) -> ModelsError {
    ModelsError::Checkpoint {
        path: dir.to_path_buf(),
        msg,
    }
}

/// The record of the checkpoint in `dir`, with its architecture and extra record left as
/// JSON, and the name of its model.
///
/// # Errors
/// [`ModelsError::Checkpoint`] for a missing, unreadable or malformed record.
pub fn read(dir: &Path) -> Result<Record> {
    let value = checkpoint::read_record(dir)?;
    // The model first, so that a record of an unknown model says so.
    #[derive(Deserialize)]
    struct Head {
        model: String,
    }
    let head = Head::deserialize(&value)
        .map_err(|e| checkpoint_error(dir, format!("{RECORD_FILE} names no model: {e}")))?;
    if super::Model::named(&head.model).is_err() {
        return Err(checkpoint_error(
            dir,
            format!("the record names no known model ({:?})", head.model),
        ));
    }
    Record::deserialize(&value).map_err(|e| {
        checkpoint_error(
            dir,
            format!("{RECORD_FILE} is not a record of {}: {e}", head.model),
        )
    })
}

/// `section` of the record in `dir` (`"architecture"`, `"extra"`) as the model `model`'s
/// type for it.
///
/// # Errors
/// [`ModelsError::Checkpoint`] naming the section, the model and the field at fault.
pub fn section<T: DeserializeOwned>(
    value: &Value,
    section: &str,
    model: &str,
    dir: &Path,
) -> Result<T> {
    T::deserialize(value).map_err(|e| {
        checkpoint_error(
            dir,
            format!("its {section} does not describe a {model}: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            model: "cnn".into(),
            architecture: serde_json::json!({ "in_channels": 1 }),
            hyperparameters: Hyperparameters {
                epochs: Some(1),
                steps: None,
                lr: 3e-3,
                batch_size: 64,
                seq_len: None,
                optimizer: OptimizerKind::Adam,
                schedule: Schedule::OneCycle,
                clip_grad_norm: None,
                limit: Some(300),
                held_out_fraction: None,
                cell: None,
                ema: None,
            },
            dataset: DatasetRecord {
                name: "digits".into(),
                source: "UCI".into(),
                license: "CC BY 4.0".into(),
                data_dir: None,
                data_file: None,
                variant: Some("digits".into()),
                preprocessing: None,
            },
            seed: 0,
            threads: 2,
            world_size: 2,
            strata_version: "0.1.0".into(),
            metrics: Metrics {
                model: "cnn".into(),
                dataset: "digits".into(),
                epochs: Some(1),
                steps: None,
                train_loss: 0.5,
                seconds: 1.25,
                figures: serde_json::json!({ "test_accuracy": 0.9 })
                    .as_object()
                    .cloned()
                    .unwrap(),
            },
            privacy: None,
            extra: serde_json::json!({}),
            progress: None,
        }
    }

    #[test]
    fn records_round_trip_with_the_keys_of_the_readme() {
        let r = record();
        let text = serde_json::to_string_pretty(&r).unwrap();
        let back: Record = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["hyperparameters"]["optimizer"], "adam");
        assert_eq!(v["hyperparameters"]["schedule"], "one-cycle");
        assert_eq!(v["metrics"]["test_accuracy"], 0.9);
        assert_eq!(v["world_size"], 2);
        // Records from before data-parallel training read as a world of one.
        let mut old = v.clone();
        old.as_object_mut().unwrap().remove("world_size");
        assert_eq!(<Record>::deserialize(&old).unwrap().world_size, 1);
        // A private run's guarantee names the ranks it was shared among; guarantees from
        // before DP-SGD ran across ranks read as one process.
        let mut private = r.clone();
        private.privacy = Some(PrivacyRecord {
            epsilon: 2.99,
            delta: 1e-5,
            accountant: "prv".into(),
            noise_multiplier: 1.1,
            effective_noise_multiplier: 1.1,
            max_grad_norm: 1.0,
            clipping: "flat".into(),
            sample_rate: 0.01,
            steps: 100,
            noise: "secure".into(),
            unit: "training sample".into(),
            world_size: 2,
        });
        let pv = serde_json::to_value(&private).unwrap();
        assert_eq!(pv["privacy"]["world_size"], 2);
        let mut old_privacy = pv.clone();
        old_privacy["privacy"]
            .as_object_mut()
            .unwrap()
            .remove("world_size");
        let back = <Record>::deserialize(&old_privacy).unwrap();
        assert_eq!(back.privacy.unwrap().world_size, 1);
        assert!(v["hyperparameters"].get("steps").is_none(), "{v}");
        assert!(v["dataset"].get("data_dir").is_none(), "{v}");
    }

    #[test]
    fn unknown_missing_and_mistyped_fields_are_errors() {
        let good = serde_json::to_value(record()).unwrap();
        let mut unknown = good.clone();
        unknown["hyperparameters"]["momentum"] = 0.9.into();
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove("seed");
        let mut mistyped = good.clone();
        mistyped["hyperparameters"]["optimizer"] = "adagrad".into();
        for (bad, needle) in [
            (unknown, "momentum"),
            (missing, "seed"),
            (mistyped, "adagrad"),
        ] {
            let err = <Record>::deserialize(&bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
