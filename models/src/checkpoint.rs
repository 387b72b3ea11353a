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
/// [`Record`](crate::reference::Record)) into `dir`, as one atomic unit: the files are
/// written into a sibling directory (`dir.partial-<pid>`), synced, and the directory is
/// renamed to `dir` (an older checkpoint there is moved aside first, then removed). A
/// training that dies while saving leaves the previous checkpoint, or none, at `dir`,
/// never a mixture; the next save removes the partial directories left behind.
///
/// # Errors
/// [`ModelsError::Checkpoint`] when a file cannot be written.
pub fn save<M: Module + ?Sized>(
    dir: &Path,
    model: &M,
    optimizer: &dyn Optimizer,
    record: &impl Serialize,
) -> Result<()> {
    let fail = |e: std::io::Error| checkpoint_error(dir, e.to_string());
    let name = dir
        .file_name()
        .ok_or_else(|| checkpoint_error(dir, "a checkpoint needs a directory name"))?
        .to_string_lossy()
        .into_owned();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(fail)?;
    remove_partials(&parent, &name);
    let pid = std::process::id();
    let partial = parent.join(format!("{name}.partial-{pid}"));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(fail)?;
    model.save_safetensors(&partial.join(MODEL_FILE))?;
    optimizer.state_dict().save(&partial.join(OPTIMIZER_FILE))?;
    let text =
        serde_json::to_string_pretty(record).map_err(|e| checkpoint_error(dir, e.to_string()))?;
    std::fs::write(partial.join(RECORD_FILE), text + "\n").map_err(fail)?;
    for file in [MODEL_FILE, OPTIMIZER_FILE, RECORD_FILE] {
        sync(&partial.join(file)).map_err(fail)?;
    }
    sync(&partial).map_err(fail)?;
    let old = parent.join(format!("{name}.old-{pid}"));
    let had_one = dir.exists();
    if had_one {
        std::fs::rename(dir, &old).map_err(fail)?;
    }
    std::fs::rename(&partial, dir).map_err(fail)?;
    // Directory syncs are advisory on some systems: a failure there does not undo the save.
    let _ = sync(&parent);
    if had_one {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(())
}

/// Flushes a file or directory to the disk.
fn sync(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// Removes the `name.partial-*` directories an interrupted save left in `parent` (and
/// `name.old-*` ones a save interrupted after moving the previous checkpoint aside, when
/// `name` itself is in place).
fn remove_partials(parent: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let complete = parent.join(name).is_dir();
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let stale = file.starts_with(&format!("{name}.partial-"))
            || complete && file.starts_with(&format!("{name}.old-"));
        if stale {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use strata_nn::Linear;
    use strata_optim::{Sgd, SgdConfig};
    use strata_tensor::seeded_rng;

    #[test]
    fn a_save_replaces_the_checkpoint_whole_and_clears_what_an_interrupted_one_left() {
        let root = std::env::temp_dir().join(format!("strata-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("checkpoint");
        // What a save killed half-way leaves: a partial directory beside the checkpoint.
        std::fs::create_dir_all(root.join("checkpoint.partial-1")).unwrap();
        std::fs::write(root.join("checkpoint.partial-1").join(MODEL_FILE), b"half").unwrap();
        let model = Linear::<f32>::new(2, 1, true, &mut seeded_rng(0));
        let opt = Sgd::new(model.parameters(), SgdConfig::default()).unwrap();
        for run in 0..2 {
            save(&dir, &model, &opt, &serde_json::json!({ "run": run })).unwrap();
            assert_eq!(read_record(&dir).unwrap()["run"], run);
            load_model(&dir, &model).unwrap();
        }
        let mut left: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["checkpoint"]);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
