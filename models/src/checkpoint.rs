//! Checkpoints: model and optimizer state as safetensors files beside a JSON provenance
//! record (architecture, hyper-parameters, data set and licence, seed, strata version,
//! metrics), so that what a model was trained on is never a guess.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;
use strata_nn::Module;
use strata_optim::{Optimizer, OptimizerState};

use crate::{ModelsError, Result};

/// The files of a checkpoint directory.
pub const MODEL_FILE: &str = "model.safetensors";
/// The optimizer state file.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// The provenance record.
pub const RECORD_FILE: &str = "provenance.json";

fn checkpoint_error(dir: &Path, msg: impl Into<String>) -> ModelsError {
    ModelsError::Checkpoint {
        path: dir.to_path_buf(),
        msg: msg.into(),
    }
}

/// Writes `model`, `optimizer` and `record` (any serde record, such as a
/// [`Record`](crate::reference::Record)) into `dir` (created if needed).
///
/// # Errors
/// [`ModelsError::Checkpoint`] when a file cannot be written.
pub fn save<M: Module + ?Sized>(
    dir: &Path,
    model: &M,
    optimizer: &dyn Optimizer,
    record: &impl Serialize,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| checkpoint_error(dir, e.to_string()))?;
    model.save_safetensors(&dir.join(MODEL_FILE))?;
    optimizer.state_dict().save(&dir.join(OPTIMIZER_FILE))?;
    let text =
        serde_json::to_string_pretty(record).map_err(|e| checkpoint_error(dir, e.to_string()))?;
    std::fs::write(dir.join(RECORD_FILE), text + "\n")
        .map_err(|e| checkpoint_error(dir, e.to_string()))
}

/// The provenance record of the checkpoint in `dir`.
///
/// # Errors
/// [`ModelsError::Checkpoint`] when the directory or its record is missing or unreadable.
pub fn read_record(dir: &Path) -> Result<Value> {
    let path = dir.join(RECORD_FILE);
    if !dir.is_dir() {
        return Err(checkpoint_error(dir, "no such checkpoint directory"));
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| checkpoint_error(dir, format!("{RECORD_FILE}: {e}")))?;
    serde_json::from_str(&text)
        .map_err(|e| checkpoint_error(dir, format!("{RECORD_FILE} is not valid JSON: {e}")))
}

/// Loads the weights of the checkpoint in `dir` into `model` (strictly: the keys and
/// shapes must be the model's).
///
/// # Errors
/// [`ModelsError::Checkpoint`] naming the mismatch when the checkpoint is of another model.
pub fn load_model<M: Module + ?Sized>(dir: &Path, model: &M) -> Result<()> {
    model
        .load_safetensors(&dir.join(MODEL_FILE), true)
        .map(drop)
        .map_err(|e| checkpoint_error(dir, format!("its weights do not fit this model: {e}")))
}

/// Loads the optimizer state of the checkpoint in `dir`, to resume training.
///
/// # Errors
/// [`ModelsError::Checkpoint`] when the file is missing or of another optimizer.
pub fn load_optimizer(dir: &Path, optimizer: &mut dyn Optimizer) -> Result<()> {
    let state = OptimizerState::load(&dir.join(OPTIMIZER_FILE))
        .map_err(|e| checkpoint_error(dir, e.to_string()))?;
    optimizer
        .load_state_dict(&state)
        .map_err(|e| checkpoint_error(dir, e.to_string()))
}

/// `dir/name`.
pub fn file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
