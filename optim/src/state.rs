//! [`OptimizerState`]: an optimizer's state dict, and its safetensors file.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, View};
use strata_tensor::{DType, Element, Tensor};

use crate::{OptimError, Result};

/// An optimizer's state dict, like PyTorch's `{"state": …, "param_groups": …}`: the
/// per-parameter tensors keyed `state.{index}.{name}` (`exp_avg`, `momentum_buffer`, …,
/// and `step`), each group's learning rate and weight decay, and the other
/// hyper-parameters.
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
    /// The per-parameter state tensors.
    pub tensors: Vec<(String, Tensor<T>)>,
}

impl<T: Element> OptimizerState<T> {
    /// The tensor named `key`.
    pub fn get(&self, key: &str) -> Option<&Tensor<T>> {
        self.tensors.iter().find(|(k, _)| k == key).map(|(_, t)| t)
    }

    /// Writes a safetensors file: the tensors in `T`'s dtype (exactly, so a resumed run
    /// continues bit for bit), everything else in the file's metadata.
    ///
    /// # Errors
    /// [`OptimError::File`] when the file cannot be written.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut meta = HashMap::new();
        meta.insert("optimizer".to_string(), self.optimizer.clone());
        meta.insert("group_lrs".to_string(), join(&self.group_lrs));
        meta.insert(
            "group_weight_decays".to_string(),
            join(&self.group_weight_decays),
        );
        let sizes: Vec<f64> = self.group_sizes.iter().map(|&s| s as f64).collect();
        meta.insert("group_sizes".to_string(), join(&sizes));
        for (k, v) in &self.hyper {
            meta.insert(format!("hyper.{k}"), format!("{v:?}"));
        }
        let raws: Vec<(&str, Raw)> = self
            .tensors
            .iter()
            .map(|(k, t)| (k.as_str(), Raw::new(t)))
            .collect();
        safetensors::serialize_to_file(raws, Some(meta), path)
            .map_err(|e| file_error(path, e.to_string()))
    }

    /// Reads a file written by [`save`](OptimizerState::save).
    ///
    /// # Errors
    /// [`OptimError::File`] for an unreadable file, a dtype other than `T`'s, or missing
    /// metadata.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| file_error(path, e.to_string()))?;
        let (_, metadata) =
            SafeTensors::read_metadata(&bytes).map_err(|e| file_error(path, e.to_string()))?;
        let file = SafeTensors::deserialize(&bytes).map_err(|e| file_error(path, e.to_string()))?;
        let meta = metadata.metadata().clone().unwrap_or_default();
        let field = |k: &str| {
            meta.get(k)
                .cloned()
                .ok_or_else(|| file_error(path, format!("metadata lacks {k}")))
        };
        let numbers = |k: &str| -> Result<Vec<f64>> {
            split(&field(k)?).ok_or_else(|| file_error(path, format!("bad {k}")))
        };
        let mut hyper = BTreeMap::new();
        for (k, v) in &meta {
            if let Some(name) = k.strip_prefix("hyper.") {
                let v = v
                    .parse()
                    .map_err(|_| file_error(path, format!("bad value for {k}")))?;
                hyper.insert(name.to_string(), v);
            }
        }
        let mut names: Vec<String> = file.names().into_iter().map(String::from).collect();
        names.sort();
        let mut tensors = Vec::with_capacity(names.len());
        for name in names {
            let view = file
                .tensor(&name)
                .map_err(|e| file_error(path, e.to_string()))?;
            let values: Vec<T> = match (view.dtype(), T::DTYPE) {
                (Dtype::F32, DType::F32) => view
                    .data()
                    .chunks_exact(4)
                    .map(|b| T::from_f64(f32::from_le_bytes(b.try_into().expect("4 bytes")) as f64))
                    .collect(),
                (Dtype::F64, DType::F64) => view
                    .data()
                    .chunks_exact(8)
                    .map(|b| T::from_f64(f64::from_le_bytes(b.try_into().expect("8 bytes"))))
                    .collect(),
                (d, _) => {
                    return Err(file_error(
                        path,
                        format!("{name} has dtype {d:?}, expected {:?}", T::DTYPE),
                    ));
                }
            };
            tensors.push((name, Tensor::from_vec(values, view.shape())?));
        }
        Ok(OptimizerState {
            optimizer: field("optimizer")?,
            group_lrs: numbers("group_lrs")?,
            group_weight_decays: numbers("group_weight_decays")?,
            group_sizes: numbers("group_sizes")?
                .into_iter()
                .map(|v| v as usize)
                .collect(),
            hyper,
            tensors,
        })
    }
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

struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl Raw {
    fn new<T: Element>(t: &Tensor<T>) -> Raw {
        let values = t.to_vec();
        let (dtype, bytes) = match T::DTYPE {
            DType::F32 => (
                Dtype::F32,
                values
                    .iter()
                    .flat_map(|v| (Element::to_f64(*v) as f32).to_le_bytes())
                    .collect(),
            ),
            DType::F64 => (
                Dtype::F64,
                values
                    .iter()
                    .flat_map(|v| Element::to_f64(*v).to_le_bytes())
                    .collect(),
            ),
        };
        Raw {
            dtype,
            shape: t.shape().to_vec(),
            bytes,
        }
    }
}

impl View for Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}
