//! [`OptimizerState`]: an optimizer's state dict, and its safetensors file (through
//! strata-tensor's codec, [`strata_tensor::io`]).

use std::collections::BTreeMap;
use std::path::Path;

use strata_tensor::io::{FileTensor, StoredDType, TensorFile};
use strata_tensor::{Element, Tensor};

use crate::{OptimError, Result};

/// An optimizer's state dict, like PyTorch's `{"state": …, "param_groups": …}`: the
/// per-parameter tensors keyed `state.{index}.{name}` (`exp_avg`, `momentum_buffer`, …),
/// each parameter's step count, each group's learning rate and weight decay, and the
/// other hyper-parameters.
#[derive(Clone, Debug)]
pub struct OptimizerState<T: Element = f32> {
    /// The optimizer's name (`"Adam"`, …).
    pub optimizer: String,
    /// Each group's learning rate.
    pub group_lrs: Vec<f64>,
    /// Each group's weight decay.
    pub group_weight_decays: Vec<f64>,
    /// The number of parameters in each group.
    pub group_sizes: Vec<usize>,
    /// The other hyper-parameters by name (`beta1`, `momentum`, …; flags as 0/1).
    pub hyper: BTreeMap<String, f64>,
    /// Each parameter's step count, by parameter index (parameters without state have
    /// none). Kept as integers: an `f32` would round a step beyond 2^24.
    pub steps: BTreeMap<usize, u64>,
    /// The per-parameter state tensors.
    pub tensors: Vec<(String, Tensor<T>)>,
}

impl<T: Element> OptimizerState<T> {
    /// The tensor named `key`.
    pub fn get(&self, key: &str) -> Option<&Tensor<T>> {
        self.tensors.iter().find(|(k, _)| k == key).map(|(_, t)| t)
    }

    /// Writes a safetensors file: the state tensors in `T`'s dtype (exactly, so a resumed
    /// run continues bit for bit), the step counts (`state.{index}.step`) as int64, exact
    /// at any size, everything else in the file's metadata, sorted by key. The write is
    /// atomic (a new file renamed over `path`), and equal states give byte-identical
    /// files.
    ///
    /// # Errors
    /// [`OptimError::File`] when the file cannot be written, or a step count is beyond
    /// int64.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut metadata = BTreeMap::new();
        metadata.insert("optimizer".to_string(), self.optimizer.clone());
        metadata.insert("group_lrs".to_string(), join(&self.group_lrs));
        metadata.insert(
            "group_weight_decays".to_string(),
            join(&self.group_weight_decays),
        );
        let sizes: Vec<f64> = self.group_sizes.iter().map(|&s| s as f64).collect();
        metadata.insert("group_sizes".to_string(), join(&sizes));
        for (k, v) in &self.hyper {
            metadata.insert(format!("hyper.{k}"), format!("{v:?}"));
        }
        let mut tensors: Vec<FileTensor<T>> = self
            .tensors
            .iter()
            .map(|(k, t)| FileTensor::new(k.as_str(), t.clone()))
            .collect();
        for (&index, &step) in &self.steps {
            let step = i64::try_from(step).map_err(|_| {
                file_error(
                    path,
                    format!("step count {step} of parameter {index} is beyond int64"),
                )
            })?;
            let counter = FileTensor::exact_counter(format!("state.{index}.step"), &[], vec![step])
                .map_err(|e| file_error(path, e.to_string()))?;
            tensors.push(counter);
        }
        TensorFile { tensors, metadata }
            .write(path)
            .map_err(|e| file_error(path, e.kind.to_string()))
    }

    /// Reads a file written by [`save`](OptimizerState::save), or by strata before step
    /// counts were stored as integers (they were stored in `T`'s dtype).
    ///
    /// Nothing in the file is trusted: the hyper-parameters must be finite numbers, the
    /// group lists of one length, the step counts whole numbers (as the optimizer's
    /// `load_state_dict` then checks each value against the constructor's rules).
    ///
    /// # Errors
    /// [`OptimError::File`] for an unreadable or malformed file (see
    /// [`TensorFile::read`]), a state tensor whose dtype is not `T`'s (a step count may
    /// also be an integer), a step count that is not a whole number, or metadata that is
    /// missing, unparsable, not finite, or whose group lists differ in length.
    pub fn load(path: &Path) -> Result<Self> {
        let file = TensorFile::<T>::read(path).map_err(|e| file_error(path, e.kind.to_string()))?;
        let meta = &file.metadata;
        let field = |k: &str| {
            meta.get(k)
                .cloned()
                .ok_or_else(|| file_error(path, format!("metadata lacks {k}")))
        };
        let numbers = |k: &str| -> Result<Vec<f64>> {
            split(&field(k)?).ok_or_else(|| file_error(path, format!("bad {k}")))
        };
        let mut hyper = BTreeMap::new();
        for (k, v) in meta {
            if let Some(name) = k.strip_prefix("hyper.") {
                let v: f64 = v
                    .parse()
                    .ok()
                    .filter(|v: &f64| v.is_finite())
                    .ok_or_else(|| file_error(path, format!("bad value for {k}: {v:?}")))?;
                hyper.insert(name.to_string(), v);
            }
        }
        let own = StoredDType::of(T::DTYPE);
        let mut tensors = Vec::with_capacity(file.tensors.len());
        let mut steps = BTreeMap::new();
        for FileTensor {
            name,
            tensor,
            dtype,
            exact,
        } in file.tensors
        {
            if let Some(index) = step_index(&name) {
                let step = match (exact.as_deref(), tensor.numel()) {
                    (Some(&[n]), _) => u64::try_from(n).ok(),
                    // The layout before integer steps: a float that must be a count.
                    (None, 1) if dtype == own => tensor
                        .item()
                        .ok()
                        .map(|v| v.to_f64())
                        .and_then(|v| count(v).map(|c| c as u64)),
                    _ => None,
                };
                let step = step.ok_or_else(|| {
                    file_error(
                        path,
                        format!("{name} is not a step count (a whole number >= 0, one value)"),
                    )
                })?;
                steps.insert(index, step);
                continue;
            }
            if dtype != own {
                return Err(file_error(
                    path,
                    format!("{name} has dtype {dtype}, expected {own}"),
                ));
            }
            tensors.push((name, tensor));
        }
        let group_lrs = numbers("group_lrs")?;
        let group_weight_decays = numbers("group_weight_decays")?;
        if let Some(v) = group_lrs
            .iter()
            .chain(&group_weight_decays)
            .find(|v| !v.is_finite())
        {
            return Err(file_error(
                path,
                format!("a group's lr or weight decay is {v}"),
            ));
        }
        let group_sizes = numbers("group_sizes")?
            .into_iter()
            .map(count)
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| file_error(path, "bad group_sizes: not counts".to_string()))?;
        if group_lrs.len() != group_sizes.len() || group_weight_decays.len() != group_sizes.len() {
            return Err(file_error(
                path,
                format!(
                    "the metadata lists {} learning rates and {} weight decays for {} groups",
                    group_lrs.len(),
                    group_weight_decays.len(),
                    group_sizes.len()
                ),
            ));
        }
        Ok(OptimizerState {
            optimizer: field("optimizer")?,
            group_lrs,
            group_weight_decays,
            group_sizes,
            hyper,
            steps,
            tensors,
        })
    }
}

/// The parameter index of a step count's key (`state.{index}.step`).
fn step_index(key: &str) -> Option<usize> {
    key.strip_prefix("state.")?
        .strip_suffix(".step")?
        .parse()
        .ok()
}

/// `v` as a count, when it is a whole number f64 represents exactly (below 2^53).
fn count(v: f64) -> Option<usize> {
    (v.fract() == 0.0 && (0.0..9_007_199_254_740_992.0).contains(&v)).then_some(v as usize)
}

fn file_error(path: &Path, msg: String) -> OptimError {
    OptimError::File {
        path: path.to_path_buf(),
        msg,
    }
}

/// Numbers as text that parses back to the same f64 (`{:?}` round-trips exactly).
fn join(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn split(text: &str) -> Option<Vec<f64>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split(',').map(|v| v.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("strata-optim-state-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn adam_state<T: Element>(step: u64) -> OptimizerState<T> {
        let v = |x: &[f64]| Tensor::from_vec(x.iter().map(|&x| T::from_f64(x)).collect(), &[2]);
        OptimizerState {
            optimizer: "Adam".to_string(),
            group_lrs: vec![1e-3, 0.1],
            group_weight_decays: vec![0.0, 1e-2],
            group_sizes: vec![1, 0],
            hyper: [
                ("beta1", 0.9),
                ("beta2", 0.999),
                ("eps", 1e-8),
                ("amsgrad", 0.0),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            steps: BTreeMap::from([(0, step)]),
            tensors: vec![
                ("state.0.exp_avg".to_string(), v(&[0.25, -1.5]).unwrap()),
                ("state.0.exp_avg_sq".to_string(), v(&[1e-9, 3.0]).unwrap()),
            ],
        }
    }

    #[test]
    fn equal_states_give_byte_identical_files() {
        // The metadata used to be a HashMap, written in a different order on every run.
        let dir = scratch("identical");
        let (a, b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
        adam_state::<f32>(7).save(&a).unwrap();
        let mut reordered = adam_state::<f32>(7);
        reordered.tensors.reverse();
        reordered.save(&b).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_step_is_stored_as_int64_and_loads_back_exactly() {
        // 2^24 + 1 is no f32, 2^53 + 1 no f64: both survive in f32 and f64 states.
        let dir = scratch("step");
        let path = dir.join("opt.safetensors");
        for step in [(1u64 << 24) + 1, (1 << 53) + 1, i64::MAX as u64] {
            adam_state::<f32>(step).save(&path).unwrap();
            let file = TensorFile::<f32>::read(&path).unwrap();
            let dtype = |k: &str| file.get(k).unwrap().dtype;
            assert_eq!(dtype("state.0.step"), StoredDType::I64);
            assert_eq!(dtype("state.0.exp_avg"), StoredDType::F32);
            let back = OptimizerState::<f32>::load(&path).unwrap();
            assert_eq!(back.steps, BTreeMap::from([(0, step)]));
            assert_eq!(back.hyper, adam_state::<f32>(step).hyper);
            assert_eq!(back.group_sizes, [1, 0]);
            adam_state::<f64>(step).save(&path).unwrap();
            assert_eq!(OptimizerState::<f64>::load(&path).unwrap().steps[&0], step);
        }
        let err = adam_state::<f32>(u64::MAX).save(&path).unwrap_err();
        assert!(err.to_string().contains("beyond int64"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn files_with_the_step_in_the_element_type_still_load() {
        // The layout before the shared codec: every tensor in T's dtype.
        let dir = scratch("old-layout");
        let path = dir.join("opt.safetensors");
        let state = adam_state::<f32>(3);
        let mut file = TensorFile::<f32>::new();
        for (k, t) in &state.tensors {
            file.tensors.push(FileTensor::new(k.as_str(), t.clone()));
        }
        file.tensors
            .push(FileTensor::new("state.0.step", Tensor::scalar(3.0)));
        file.metadata = [
            ("optimizer", "Adam"),
            ("group_lrs", "0.001,0.1"),
            ("group_weight_decays", "0.0,0.01"),
            ("group_sizes", "1.0,0.0"),
            ("hyper.beta1", "0.9"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        file.write(&path).unwrap();
        let back = OptimizerState::<f32>::load(&path).unwrap();
        assert_eq!(back.steps[&0], 3);
        assert_eq!(back.group_sizes, [1, 0]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn integer_state_other_than_the_step_and_bad_group_lists_are_refused() {
        let dir = scratch("refused");
        let path = dir.join("opt.safetensors");
        let write = |edit: &dyn Fn(&mut TensorFile<f32>)| {
            let mut file = TensorFile::<f32>::new();
            for (k, t) in &adam_state::<f32>(1).tensors {
                file.tensors.push(FileTensor::new(k.as_str(), t.clone()));
            }
            file.metadata = [
                ("optimizer", "Adam"),
                ("group_lrs", "0.001"),
                ("group_weight_decays", "0.0"),
                ("group_sizes", "1.0"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            edit(&mut file);
            file.write(&path).unwrap();
            OptimizerState::<f32>::load(&path).unwrap_err().to_string()
        };
        let err = write(&|f| {
            let ints = Tensor::from_vec(vec![1.0, 2.0], &[2]).unwrap();
            f.tensors[0] = FileTensor::counter("state.0.exp_avg", ints);
        });
        assert!(
            err.contains("state.0.exp_avg has dtype I64, expected F32"),
            "{err}"
        );
        let err = write(&|f| {
            f.metadata.insert("group_lrs".into(), "0.001,0.1".into());
        });
        assert!(
            err.contains("2 learning rates and 1 weight decays for 1 groups"),
            "{err}"
        );
        let err = write(&|f| {
            f.metadata.insert("group_sizes".into(), "1.5".into());
        });
        assert!(err.contains("bad group_sizes"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
