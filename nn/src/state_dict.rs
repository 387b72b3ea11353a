//! [`StateDict`]: named tensors, and their safetensors files.

use std::borrow::Cow;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, View};
use strata_tensor::{DType, Element, Tensor};

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
    ///
    /// # Errors
    /// [`NnError::Safetensors`] when the file cannot be written.
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let views: Vec<(&str, Raw)> = self
            .entries
            .iter()
            .map(|(name, t, kind)| (name.as_str(), Raw::from_tensor(t, *kind)))
            .collect();
        safetensors::serialize_to_file(views, None, path).map_err(|e| NnError::Safetensors {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })
    }

    /// Reads a safetensors file written by strata or by PyTorch. F32, F64, F16, BF16 and
    /// integer entries are converted to this dict's element type (integers become
    /// counters, saved back as int64).
    ///
    /// # Errors
    /// [`NnError::Safetensors`] for an unreadable file or an unsupported dtype.
    pub fn load_safetensors(path: &Path) -> Result<Self> {
        let err = |msg: String| NnError::Safetensors {
            path: path.to_path_buf(),
            msg,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let file = SafeTensors::deserialize(&bytes).map_err(|e| err(e.to_string()))?;
        // The file stores tensors sorted by dtype and name; keep the names' order.
        let mut names: Vec<String> = file.names().into_iter().map(String::from).collect();
        names.sort();
        let mut sd = StateDict::new();
        for name in names {
            let view = file.tensor(&name).map_err(|e| err(e.to_string()))?;
            let (values, kind) = decode(view.dtype(), view.data()).ok_or_else(|| {
                err(format!(
                    "tensor {name}: unsupported dtype {:?}",
                    view.dtype()
                ))
            })?;
            let tensor =
                Tensor::from_vec(values.into_iter().map(T::from_f64).collect(), view.shape())?;
            sd.insert_kind(&name, tensor, kind);
        }
        Ok(sd)
    }
}

/// An owned little-endian buffer that safetensors can write.
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl Raw {
    fn from_tensor<T: Element>(t: &Tensor<T>, kind: StateKind) -> Raw {
        let values = t.to_vec();
        let (dtype, bytes): (Dtype, Vec<u8>) = match (kind, T::DTYPE) {
            (StateKind::Counter, _) => (
                Dtype::I64,
                values
                    .iter()
                    .flat_map(|v| (Element::to_f64(*v) as i64).to_le_bytes())
                    .collect(),
            ),
            (_, DType::F32) => (
                Dtype::F32,
                values
                    .iter()
                    .flat_map(|v| (Element::to_f64(*v) as f32).to_le_bytes())
                    .collect(),
            ),
            (_, DType::F64) => (
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

/// The values of a little-endian buffer as f64, and whether they are a counter.
fn decode(dtype: Dtype, data: &[u8]) -> Option<(Vec<f64>, StateKind)> {
    fn chunks<const N: usize>(data: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        data.chunks_exact(N)
            .map(|c| c.try_into().expect("chunks_exact yields N bytes"))
    }
    let float = StateKind::Buffer;
    Some(match dtype {
        Dtype::F32 => (
            chunks::<4>(data)
                .map(|b| f32::from_le_bytes(b) as f64)
                .collect(),
            float,
        ),
        Dtype::F64 => (chunks::<8>(data).map(f64::from_le_bytes).collect(), float),
        Dtype::F16 => (
            chunks::<2>(data)
                .map(|b| f16_to_f64(u16::from_le_bytes(b)))
                .collect(),
            float,
        ),
        Dtype::BF16 => (
            chunks::<2>(data)
                .map(|b| f32::from_bits((u16::from_le_bytes(b) as u32) << 16) as f64)
                .collect(),
            float,
        ),
        Dtype::I64 => (
            chunks::<8>(data)
                .map(|b| i64::from_le_bytes(b) as f64)
                .collect(),
            StateKind::Counter,
        ),
        Dtype::I32 => (
            chunks::<4>(data)
                .map(|b| i32::from_le_bytes(b) as f64)
                .collect(),
            StateKind::Counter,
        ),
        _ => return None,
    })
}

/// IEEE half precision to f64.
fn f16_to_f64(h: u16) -> f64 {
    let sign = if h >> 15 == 1 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f64;
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (1.0 + frac / 1024.0) * 2f64.powi(exp - 15),
    }
}
