//! Checkpoints: model and optimizer state as safetensors files beside a JSON provenance
//! record (architecture, hyper-parameters, data set and licence, seed, strata version,
//! metrics, progress), so that what a model was trained on is never a guess.
//!
//! A checkpoint is one unit on disk, replaced whole or not at all ([`write_unit`]):
//!
//! 1. its files are written into a new hidden folder beside it (`.NAME.new-…`), each
//!    synced, then the folder is synced;
//! 2. the previous checkpoint, if any, is renamed aside (`.NAME.old-…`), the new folder is
//!    renamed into place, the parent folder is synced, and only then is the previous one
//!    removed.
//!
//! A crash, a full disk or a failed write before step 2 leaves the previous checkpoint as
//! it was (and a hidden leftover that the next save removes). A crash between the two
//! renames of step 2 leaves both complete copies under their hidden names; the next read
//! or save of the checkpoint ([`recover`]) renames the new one into place. Nothing is
//! written through a symbolic link: a link planted at the checkpoint's name is itself
//! moved aside, and every file is created anew.
//!
//! Reading trusts nothing: the record is read only from a regular file of bounded size,
//! the weights must fit the model strictly (keys, shapes, no integers where floats
//! belong) and be finite.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde_json::Value;
use strata_nn::Module;
use strata_optim::{ExponentialMovingAverage, Optimizer, OptimizerState};
use strata_tensor::Tensor;
use strata_tensor::io::{FileTensor, TensorFile, fs};

use crate::{ModelsError, Result};

/// The files of a checkpoint directory.
pub const MODEL_FILE: &str = "model.safetensors";
/// The optimizer state file.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// The provenance record.
pub const RECORD_FILE: &str = "provenance.json";
/// The history of the epochs trained so far (for `--resume`: the curves and the final
/// metrics of a resumed training cover the whole run).
pub const HISTORY_FILE: &str = "history.json";
/// The file of a checkpoint whose model is an average of the weights
/// ([`ExponentialMovingAverage`]): the weights training continues from, by their
/// state-dict names, and the average's count of updates, so that a resume continues both.
pub const EMA_FILE: &str = "ema.safetensors";
/// The count of updates in [`EMA_FILE`].
const EMA_UPDATES: &str = "ema.updates";

/// The largest provenance record (or history) read: a record is a few kilobytes (a
/// character model's vocabulary at most a few megabytes); a bigger file is not one.
pub const MAX_RECORD_BYTES: u64 = 64 << 20;

fn checkpoint_error(dir: &Path, msg: impl Into<String>) -> ModelsError {
    ModelsError::Checkpoint {
        path: dir.to_path_buf(),
        msg: msg.into(),
    }
}

/// A file of a checkpoint unit: its name, and what writes it into a given path.
pub type FileWriter<'a> = (&'a str, &'a dyn Fn(&Path) -> Result<()>);

/// Writes `model`, `optimizer`, `record` (any serde record, such as a
/// [`Record`](crate::reference::Record)) and, when given, the epochs' `history` into the
/// checkpoint `dir` as one unit (see the module docs).
///
/// # Errors
/// [`ModelsError::Checkpoint`] when a file cannot be written; the previous checkpoint is
/// then intact.
pub fn save<M: Module + ?Sized>(
    dir: &Path,
    model: &M,
    optimizer: &dyn Optimizer,
    record: &impl Serialize,
    history: Option<&impl Serialize>,
) -> Result<()> {
    save_averaged(dir, model, optimizer, None, record, history)
}

/// [`save`] of a model that holds an average of the weights (`ema`, swapped in: see
/// [`ExponentialMovingAverage::is_swapped`]): the average is the checkpoint's model, and
/// the weights training continues from go into [`EMA_FILE`].
///
/// # Errors
/// As [`save`]; an average that is not swapped into the model.
pub fn save_averaged<M: Module + ?Sized>(
    dir: &Path,
    model: &M,
    optimizer: &dyn Optimizer,
    ema: Option<&ExponentialMovingAverage>,
    record: &impl Serialize,
    history: Option<&impl Serialize>,
) -> Result<()> {
    if ema.is_some_and(|e| !e.is_swapped()) {
        return Err(checkpoint_error(
            dir,
            "the model must hold the average when it is saved",
        ));
    }
    let write_model = |p: &Path| Ok(model.save_safetensors(p)?);
    let write_ema = |p: &Path| match ema {
        Some(e) => write_ema(p, model, e),
        None => Ok(()),
    };
    let write_optimizer = |p: &Path| Ok(optimizer.state_dict().save(p)?);
    let write_record = |p: &Path| write_json(p, record);
    let write_history = |p: &Path| match history {
        Some(h) => write_json(p, h),
        None => Ok(()),
    };
    let mut files: Vec<FileWriter<'_>> = vec![
        (MODEL_FILE, &write_model),
        (OPTIMIZER_FILE, &write_optimizer),
    ];
    if ema.is_some() {
        files.push((EMA_FILE, &write_ema));
    }
    if history.is_some() {
        files.push((HISTORY_FILE, &write_history));
    }
    // The record last: a staged folder holding it holds everything.
    files.push((RECORD_FILE, &write_record));
    write_unit(dir, &files)
}

/// `value` as pretty JSON in a new file at `path`, written atomically.
///
/// # Errors
/// [`ModelsError::Checkpoint`] naming the file.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| checkpoint_error(path, e.to_string()))?;
    fs::write_atomic(path, (text + "\n").as_bytes())
        .map_err(|e| checkpoint_error(path, e.to_string()))
}

/// Replaces the record of the complete checkpoint in `dir` (one file, replaced atomically:
/// the weights it describes do not change). The final metrics of a training are added
/// this way, after the checkpoint itself has been saved.
///
/// # Errors
/// [`ModelsError::Checkpoint`] when it cannot be written.
pub fn update_record(dir: &Path, record: &impl Serialize) -> Result<()> {
    write_json(&dir.join(RECORD_FILE), record)
}

/// Writes the files `files` (name, writer) into the folder `dir` as one unit: every
/// writer writes into a new hidden folder beside `dir`, which then replaces `dir` whole
/// (see the module docs). `dir`'s parent must exist.
///
/// # Errors
/// [`ModelsError::Checkpoint`] for the first writer that fails or a step that the
/// operating system refuses; `dir` is then as it was.
pub fn write_unit(dir: &Path, files: &[FileWriter<'_>]) -> Result<()> {
    let (parent, name) = split(dir)?;
    recover(dir)?;
    let staged = fresh_sibling(&parent, &name, "new")?;
    let written = (|| {
        for (file, write) in files {
            write(&staged.join(file)).map_err(|e| {
                checkpoint_error(dir, format!("cannot write {file}: {}", one_line(&e)))
            })?;
        }
        fs::sync_dir(&staged).map_err(|e| checkpoint_error(dir, e.to_string()))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(e);
    }
    swap_in(dir, &parent, &name, &staged)
}

/// Renames `staged` into place at `dir`, moving a previous `dir` aside first and removing
/// it once the new one is in place.
fn swap_in(dir: &Path, parent: &Path, name: &OsString, staged: &Path) -> Result<()> {
    let fail = |step: &str, e: std::io::Error| checkpoint_error(dir, format!("cannot {step}: {e}"));
    let previous = match std::fs::symlink_metadata(dir) {
        Ok(_) => {
            let aside = fresh_name(parent, name, "old");
            if let Err(e) = std::fs::rename(dir, &aside) {
                let _ = std::fs::remove_dir_all(staged);
                return Err(fail("move the previous checkpoint aside", e));
            }
            Some(aside)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            let _ = std::fs::remove_dir_all(staged);
            return Err(fail("inspect the previous checkpoint", e));
        }
    };
    if let Err(e) = std::fs::rename(staged, dir) {
        // Put the previous checkpoint back; the new one stays staged for `recover`
        // only if that fails too.
        if let Some(aside) = &previous
            && std::fs::rename(aside, dir).is_ok()
        {
            let _ = std::fs::remove_dir_all(staged);
        }
        return Err(fail("rename the new checkpoint into place", e));
    }
    fs::sync_dir(parent).map_err(|e| checkpoint_error(dir, e.to_string()))?;
    if let Some(aside) = previous {
        remove_entry(&aside);
    }
    remove_leftovers(parent, name);
    Ok(())
}

/// Removes a file, a symbolic link or a folder (never following a link).
fn remove_entry(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// Removes what interrupted saves of `name` left beside it (`.NAME.new-…`, `.NAME.old-…`).
/// Called once `name` holds a complete checkpoint.
fn remove_leftovers(parent: &Path, name: &OsString) {
    for (path, _) in siblings(parent, name) {
        remove_entry(&path);
    }
}

/// The hidden siblings of `name` in `parent` that interrupted saves leave, with their kind
/// (`"new"` or `"old"`).
fn siblings(parent: &Path, name: &OsString) -> Vec<(PathBuf, &'static str)> {
    let mut prefix = OsString::from(".");
    prefix.push(name);
    let prefix = prefix.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut found: Vec<(PathBuf, &'static str)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let rest = file.strip_prefix(&prefix)?;
            let kind = if rest.starts_with(".new-") {
                "new"
            } else if rest.starts_with(".old-") {
                "old"
            } else {
                return None;
            };
            Some((e.path(), kind))
        })
        .collect();
    found.sort();
    found
}

/// Whether `dir` holds a complete checkpoint: a folder (not a link) with a model and a
/// record.
fn complete(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir())
        && [MODEL_FILE, RECORD_FILE]
            .iter()
            .all(|f| std::fs::symlink_metadata(dir.join(f)).is_ok_and(|m| m.is_file()))
}

/// Finishes a save that a crash interrupted between its two renames: when `dir` is
/// missing but a complete new (or, failing that, previous) copy sits beside it, renames it
/// into place. Does nothing otherwise.
///
/// # Errors
/// [`ModelsError::Checkpoint`] when the rename is refused.
pub fn recover(dir: &Path) -> Result<()> {
    if std::fs::symlink_metadata(dir).is_ok() {
        return Ok(());
    }
    let Ok((parent, name)) = split(dir) else {
        return Ok(());
    };
    let found = siblings(&parent, &name);
    let pick = found
        .iter()
        .filter(|(p, kind)| *kind == "new" && complete(p))
        .chain(
            found
                .iter()
                .filter(|(p, kind)| *kind == "old" && complete(p)),
        )
        .next();
    if let Some((copy, _)) = pick {
        std::fs::rename(copy, dir).map_err(|e| {
            checkpoint_error(
                dir,
                format!(
                    "an interrupted save left {}, which cannot be renamed into place: {e}",
                    copy.display()
                ),
            )
        })?;
        let _ = fs::sync_dir(&parent);
        remove_leftovers(&parent, &name);
    }
    Ok(())
}

/// `dir`'s parent (`.` for a bare name) and file name.
fn split(dir: &Path) -> Result<(PathBuf, OsString)> {
    let name = dir
        .file_name()
        .ok_or_else(|| checkpoint_error(dir, "the path names no folder"))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name.to_os_string()))
}

/// `.NAME.KIND-PID-N` in `parent`, unique within this process.
fn fresh_name(parent: &Path, name: &OsString, kind: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut file = OsString::from(".");
    file.push(name);
    file.push(format!(".{kind}-{}-{n}", std::process::id()));
    parent.join(file)
}

/// A new, empty folder `.NAME.KIND-…` beside `name` (never an existing one: `create_dir`
/// fails on anything already there, link or not).
fn fresh_sibling(parent: &Path, name: &OsString, kind: &str) -> Result<PathBuf> {
    let mut last = None;
    for _ in 0..64 {
        let path = fresh_name(parent, name, kind);
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => {
                return Err(checkpoint_error(
                    &parent.join(name),
                    format!("cannot create a folder beside it: {e}"),
                ));
            }
        }
    }
    Err(checkpoint_error(
        &parent.join(name),
        format!("cannot create a folder beside it: {last:?}"),
    ))
}

/// The first line of an error's message (a state-dict report spans several).
fn one_line(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join(" ")
}

/// The JSON file `file` of the checkpoint in `dir`: a regular file of at most
/// [`MAX_RECORD_BYTES`], parsed.
fn read_json(dir: &Path, file: &str) -> Result<Value> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(checkpoint_error(
                dir,
                "not a checkpoint directory (not a folder)",
            ));
        }
        Err(_) => return Err(checkpoint_error(dir, "no such checkpoint directory")),
    }
    let path = dir.join(file);
    let (handle, len) =
        fs::open_regular(&path).map_err(|e| checkpoint_error(dir, format!("{file}: {e}")))?;
    drop(handle);
    if len > MAX_RECORD_BYTES {
        return Err(checkpoint_error(
            dir,
            format!("{file} is {len} bytes, more than a record ({MAX_RECORD_BYTES}) holds"),
        ));
    }
    let bytes = fs::read(&path).map_err(|e| checkpoint_error(dir, format!("{file}: {e}")))?;
    serde_json::from_slice::<UniqueMembers>(&bytes)
        .and_then(|_| serde_json::from_slice(&bytes))
        .map_err(|e| checkpoint_error(dir, format!("{file} is not valid JSON: {e}")))
}

/// A JSON document in which no object names a member twice. serde_json keeps the last
/// of repeated members, while a person reading a hand-edited record sees the first: a
/// record that says two things is refused, as a safetensors header with a repeated
/// tensor name is.
struct UniqueMembers;

impl<'de> serde::Deserialize<'de> for UniqueMembers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(UniqueMembers)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueMembers {
    type Value = UniqueMembers;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> std::result::Result<Self, E> {
        Ok(self)
    }

    fn visit_i64<E>(self, _: i64) -> std::result::Result<Self, E> {
        Ok(self)
    }

    fn visit_u64<E>(self, _: u64) -> std::result::Result<Self, E> {
        Ok(self)
    }

    fn visit_f64<E>(self, _: f64) -> std::result::Result<Self, E> {
        Ok(self)
    }

    fn visit_str<E>(self, _: &str) -> std::result::Result<Self, E> {
        Ok(self)
    }

    fn visit_unit<E>(self) -> std::result::Result<Self, E> {
        Ok(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut items: A,
    ) -> std::result::Result<Self, A::Error> {
        while items.next_element::<UniqueMembers>()?.is_some() {}
        Ok(self)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut members: A,
    ) -> std::result::Result<Self, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = members.next_key::<String>()? {
            members.next_value::<UniqueMembers>()?;
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!(
                    "the member {key:?} appears more than once"
                )));
            }
        }
        Ok(self)
    }
}

/// The provenance record of the checkpoint in `dir` (after finishing a save a crash
/// interrupted, see [`recover`]).
///
/// # Errors
/// [`ModelsError::Checkpoint`] when the directory or its record is missing, not a regular
/// file, too large, or not JSON.
pub fn read_record(dir: &Path) -> Result<Value> {
    // A read-only checkpoint cannot be recovered; it is read as it is.
    let _ = recover(dir);
    read_json(dir, RECORD_FILE)
}

/// The history saved with the checkpoint in `dir`, if it has one.
///
/// # Errors
/// [`ModelsError::Checkpoint`] for a history that is not a regular file of JSON.
pub fn read_history(dir: &Path) -> Result<Option<Value>> {
    if std::fs::symlink_metadata(dir.join(HISTORY_FILE)).is_err() {
        return Ok(None);
    }
    read_json(dir, HISTORY_FILE).map(Some)
}

/// Loads the weights of the checkpoint in `dir` into `model`: strictly (the keys and
/// shapes must be the model's, and integer entries load only into counters), and only
/// finite values (a NaN weight would evaluate and predict without a word).
///
/// # Errors
/// [`ModelsError::Checkpoint`] naming the mismatch, or the first tensor and element that
/// is not finite; the model is unchanged then.
pub fn load_model<M: Module + ?Sized>(dir: &Path, model: &M) -> Result<()> {
    let state = strata_nn::StateDict::<f32>::load_safetensors(&dir.join(MODEL_FILE))
        .map_err(|e| checkpoint_error(dir, one_line(&e)))?;
    for (name, t) in state.iter() {
        if let Some((i, v)) = t.to_vec().iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(checkpoint_error(
                dir,
                format!("its weights are not finite: {name}[{i}] = {v}"),
            ));
        }
    }
    model.load_state_dict(&state, true).map(drop).map_err(|e| {
        checkpoint_error(
            dir,
            format!("its weights do not fit this model: {}", one_line(&e)),
        )
    })
}

/// Loads the optimizer state of the checkpoint in `dir`, to resume training.
///
/// # Errors
/// [`ModelsError::Checkpoint`] when the file is missing, malformed, of another optimizer,
/// or holds settings the optimizer refuses.
pub fn load_optimizer(dir: &Path, optimizer: &mut dyn Optimizer) -> Result<()> {
    let state = OptimizerState::load(&dir.join(OPTIMIZER_FILE))
        .map_err(|e| checkpoint_error(dir, e.to_string()))?;
    optimizer
        .load_state_dict(&state)
        .map_err(|e| checkpoint_error(dir, e.to_string()))
}

fn write_ema<M: Module + ?Sized>(
    path: &Path,
    model: &M,
    ema: &ExponentialMovingAverage,
) -> Result<()> {
    let names = model.named_parameters();
    if names.len() != ema.held().len() {
        return Err(checkpoint_error(
            path,
            "the average does not hold one tensor per parameter",
        ));
    }
    let updates = i64::try_from(ema.updates())
        .map_err(|_| checkpoint_error(path, "the count of updates is beyond int64"))?;
    let mut tensors: Vec<FileTensor> = names
        .iter()
        .zip(ema.held())
        .map(|((name, _), t)| FileTensor::new(name.as_str(), t.clone()))
        .collect();
    tensors.push(
        FileTensor::exact_counter(EMA_UPDATES, &[], vec![updates])
            .map_err(|e| checkpoint_error(path, e.to_string()))?,
    );
    let mut file = TensorFile::new();
    file.tensors = tensors;
    file.metadata
        .insert("decay".into(), format!("{:?}", ema.decay()));
    file.write(path)
        .map_err(|e| checkpoint_error(path, e.kind.to_string()))
}

/// The [`EMA_FILE`] of the checkpoint in `dir`, if it has one: the weights training
/// continues from, one per parameter of `model` in its order, and the average's count of
/// updates. Nothing in it is trusted: the names and shapes must be the model's
/// parameters', the values finite, the count a non-negative integer.
///
/// # Errors
/// [`ModelsError::Checkpoint`] for an unreadable or malformed file, or one that does not
/// fit `model`.
pub fn read_ema<M: Module + ?Sized>(
    dir: &Path,
    model: &M,
) -> Result<Option<(Vec<Tensor<f32>>, u64)>> {
    let path = dir.join(EMA_FILE);
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    let fail = |msg: String| checkpoint_error(dir, format!("{EMA_FILE}: {msg}"));
    let file = TensorFile::<f32>::read(&path).map_err(|e| fail(e.kind.to_string()))?;
    let updates = file
        .get(EMA_UPDATES)
        .and_then(|t| match t.exact.as_deref() {
            Some(&[n]) => u64::try_from(n).ok(),
            _ => None,
        })
        .ok_or_else(|| fail(format!("no count of updates ({EMA_UPDATES})")))?;
    let names = model.named_parameters();
    if file.tensors.len() != names.len() + 1 {
        return Err(fail(format!(
            "{} tensors for a model of {} parameters",
            file.tensors.len().saturating_sub(1),
            names.len()
        )));
    }
    let mut weights = Vec::with_capacity(names.len());
    for (name, p) in &names {
        let t = file
            .get(name)
            .ok_or_else(|| fail(format!("no weights for {name}")))?;
        if t.exact.is_some() || t.tensor.shape() != p.shape() {
            return Err(fail(format!(
                "{name} is {:?}, the model's is {:?}",
                t.tensor.shape(),
                p.shape()
            )));
        }
        if let Some((i, v)) = t
            .tensor
            .to_vec()
            .iter()
            .enumerate()
            .find(|(_, v)| !v.is_finite())
        {
            return Err(fail(format!(
                "its weights are not finite: {name}[{i}] = {v}"
            )));
        }
        weights.push(t.tensor.clone());
    }
    Ok(Some((weights, updates)))
}

/// `dir/name`.
pub fn file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// The bytes of the weights file of the checkpoint in `dir` (the budget of the network
/// that a record's architecture may build: see `reference`).
///
/// # Errors
/// [`ModelsError::Checkpoint`] when it is missing or not a regular file.
pub fn model_file_len(dir: &Path) -> Result<u64> {
    let (_, len) = fs::open_regular(&dir.join(MODEL_FILE))
        .map_err(|e| checkpoint_error(dir, format!("{MODEL_FILE}: {e}")))?;
    Ok(len)
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
        // What a save killed half-way leaves: a staged folder beside the checkpoint.
        std::fs::create_dir_all(root.join(".checkpoint.new-1-0")).unwrap();
        std::fs::write(root.join(".checkpoint.new-1-0").join(MODEL_FILE), b"half").unwrap();
        let model = Linear::<f32>::new(2, 1, true, &mut seeded_rng(0));
        let opt = Sgd::new(model.parameters(), SgdConfig::default()).unwrap();
        for run in 0..2 {
            let record = serde_json::json!({ "run": run });
            save(&dir, &model, &opt, &record, None::<&()>).unwrap();
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

    #[test]
    fn an_averaged_checkpoint_keeps_the_training_weights_and_refuses_a_foreign_file() {
        let root = std::env::temp_dir().join(format!("strata-ckpt-ema-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let dir = root.join("checkpoint");
        let model = Linear::<f32>::new(3, 2, true, &mut seeded_rng(0));
        let opt = Sgd::new(model.parameters(), SgdConfig::default()).unwrap();
        let mut ema = ExponentialMovingAverage::new(model.parameters(), 0.5).unwrap();
        ema.update().unwrap();
        let trained: Vec<Tensor<f32>> = model.parameters().iter().map(|p| p.value()).collect();
        for p in model.parameters() {
            p.set_value(p.value().mul_scalar(3.0)).unwrap();
        }
        ema.update().unwrap();
        let live: Vec<Vec<f32>> = model.parameters().iter().map(|p| p.to_vec()).collect();
        let record = serde_json::json!({});
        // Saved only while the model holds the average.
        assert!(save_averaged(&dir, &model, &opt, Some(&ema), &record, None::<&()>).is_err());
        ema.swap().unwrap();
        save_averaged(&dir, &model, &opt, Some(&ema), &record, None::<&()>).unwrap();
        // The model file is the average (2× the first weights), the EMA file the weights.
        let fresh = Linear::<f32>::new(3, 2, true, &mut seeded_rng(1));
        load_model(&dir, &fresh).unwrap();
        for (p, t) in fresh.parameters().iter().zip(&trained) {
            let want: Vec<f32> = t.to_vec().iter().map(|v| 2.0 * v).collect();
            assert_eq!(p.to_vec(), want);
        }
        let (weights, updates) = read_ema(&dir, &fresh).unwrap().unwrap();
        assert_eq!(updates, 2);
        let weights: Vec<Vec<f32>> = weights.iter().map(Tensor::to_vec).collect();
        assert_eq!(weights, live);
        // Another model's shapes are refused, naming the file.
        let other = Linear::<f32>::new(4, 2, true, &mut seeded_rng(0));
        let e = read_ema(&dir, &other).unwrap_err().to_string();
        assert!(e.contains(EMA_FILE) && e.contains("weight"), "{e}");
        // A plain save has no EMA file.
        save(&dir, &model, &opt, &record, None::<&()>).unwrap();
        assert!(read_ema(&dir, &model).unwrap().is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
