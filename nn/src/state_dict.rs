//! [`StateDict`]: named tensors, and their safetensors files (through strata-tensor's
//! codec, [`strata_tensor::io`]).

use std::path::Path;

use strata_tensor::io::{FileTensor, SafetensorsError, TensorFile};
use strata_tensor::{Element, Tensor};

use crate::{NnError, Result, StateKind};

/// Named tensors in insertion order, like PyTorch's `OrderedDict` state dict. Counter
/// buffers (`num_batches_tracked`) are remembered as such so that they are saved as int64.
#[derive(Clone, Debug)]
pub struct StateDict<T: Element = f32> {
    entries: Vec<(String, Tensor<T>, StateKind)>,
}

impl<T: Element> Default for StateDict<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Element> StateDict<T> {
    /// An empty state dict.
    pub fn new() -> Self {
        StateDict {
            entries: Vec::new(),
        }
    }

    /// Inserts or replaces `name` (as a floating-point entry).
    pub fn insert(&mut self, name: &str, tensor: Tensor<T>) {
        self.insert_kind(name, tensor, StateKind::Buffer);
    }

    pub(crate) fn insert_kind(&mut self, name: &str, tensor: Tensor<T>, kind: StateKind) {
        match self.entries.iter_mut().find(|(k, _, _)| k == name) {
            Some(entry) => {
                entry.1 = tensor;
                entry.2 = kind;
            }
            None => self.entries.push((name.to_string(), tensor, kind)),
        }
    }

    /// The tensor named `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor<T>> {
        self.entries
            .iter()
            .find(|(k, _, _)| k == name)
            .map(|(_, t, _)| t)
    }

    /// Removes and returns `name`.
    pub fn remove(&mut self, name: &str) -> Option<Tensor<T>> {
        let i = self.entries.iter().position(|(k, _, _)| k == name)?;
        Some(self.entries.remove(i).1)
    }

    /// How `name` was inserted or stored: [`StateKind::Counter`] for integer entries
    /// (read from an integer dtype, or inserted as a module's counter buffer),
    /// [`StateKind::Buffer`] for other entries.
    pub fn kind(&self, name: &str) -> Option<StateKind> {
        self.entries
            .iter()
            .find(|(k, _, _)| k == name)
            .map(|(_, _, kind)| *kind)
    }

    /// The names, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _, _)| k.as_str())
    }

    /// The (name, tensor) pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor<T>)> {
        self.entries.iter().map(|(k, t, _)| (k.as_str(), t))
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes a safetensors file: floating-point entries in this dict's element type,
    /// counters as int64, as `safetensors.torch.save_file` writes a PyTorch state dict.
    /// The write is atomic (a new file renamed over `path`), and equal dicts give
    /// byte-identical files.
    ///
    /// # Errors
    /// [`NnError::Safetensors`] when the file cannot be written, or a counter holds a
    /// value that is not an integer.
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let file = TensorFile {
            tensors: self
                .entries
                .iter()
                .map(|(name, t, kind)| match kind {
                    StateKind::Counter => FileTensor::counter(name.as_str(), t.clone()),
                    _ => FileTensor::new(name.as_str(), t.clone()),
                })
                .collect(),
            metadata: Default::default(),
        };
        file.write(path).map_err(|e| file_error(path, e))
    }

    /// Reads a safetensors file written by strata or by PyTorch. F32, F64, F16, BF16 and
    /// integer entries are converted to this dict's element type (integers become
    /// counters, saved back as int64).
    ///
    /// # Errors
    /// [`NnError::Safetensors`] for an unreadable or malformed file (see
    /// [`TensorFile::read`]: a repeated name, sizes that do not fit the data, something
    /// other than a regular file), an unsupported dtype, or a value beyond `T`'s range
    /// (an F64 entry of 1e300 read as f32).
    pub fn load_safetensors(path: &Path) -> Result<Self> {
        let file = TensorFile::<T>::read(path).map_err(|e| file_error(path, e))?;
        // The codec gives the entries in name order, each name once.
        let entries = file
            .tensors
            .into_iter()
            .map(
                |FileTensor {
                     name,
                     tensor,
                     dtype,
                     ..
                 }| {
                    let kind = if dtype.is_integer() {
                        StateKind::Counter
                    } else {
                        StateKind::Buffer
                    };
                    (name, tensor, kind)
                },
            )
            .collect();
        Ok(StateDict { entries })
    }
}

fn file_error(path: &Path, e: SafetensorsError) -> NnError {
    NnError::Safetensors {
        path: path.to_path_buf(),
        msg: e.kind.to_string(),
    }
}
