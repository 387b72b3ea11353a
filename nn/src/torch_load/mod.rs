//! Reading the files `torch.save(model.state_dict(), path)` writes, without executing
//! pickle code.
//!
//! Since PyTorch 1.6 such a file is a ZIP archive (entries stored uncompressed) holding
//! `<name>/data.pkl`, a pickle of the ordered dict, and one entry `<name>/data/<key>` per
//! storage. The pickle is read by a small machine that knows only what a state dict
//! needs (see the `pickle` module): every other callable is refused by name, so a hostile
//! file can neither run code nor make strata allocate beyond what the file holds. The
//! legacy (pre-1.6, non-ZIP) format is refused with a hint to re-save.

mod pickle;
mod zip;

use std::path::Path;

use strata_tensor::{Element, Tensor};

use crate::{NnError, Result, StateDict};
use pickle::{STORAGES, TensorRef, Value};

fn torch_error(path: &Path, msg: impl Into<String>) -> NnError {
    NnError::TorchFile {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Reads a PyTorch state dict saved with `torch.save(model.state_dict(), path)` (the ZIP
/// format of PyTorch ≥ 1.6) into a [`StateDict`], converting every tensor to `T`:
/// floating-point storages (f32, f64, f16, bf16) as values, integer and boolean ones
/// (such as `num_batches_tracked`) exactly or not at all. Load it into a module with
/// [`Module::load_state_dict`](crate::Module::load_state_dict).
///
/// ```no_run
/// use strata_nn::{Linear, Module, load_pytorch};
/// use strata_tensor::seeded_rng;
///
/// let fc = Linear::<f32>::new(784, 10, true, &mut seeded_rng(0));
/// let sd = load_pytorch::<f32>("weights.pt".as_ref())?; // from torch.save(fc.state_dict(), ...)
/// fc.load_state_dict(&sd, true)?;
/// # Ok::<(), strata_nn::NnError>(())
/// ```
///
/// # Errors
/// [`NnError::TorchFile`] naming the file and the problem: not a regular file (a FIFO or a
/// device is refused without being read), not a readable ZIP archive, a
/// legacy-format file, a pickle that calls anything but the tensor reconstructors, a value
/// that is not a dict of tensors, a storage missing or shorter than its tensors claim, an
/// integer that the element type cannot hold exactly.
pub fn load_pytorch<T: Element>(path: &Path) -> Result<StateDict<T>> {
    // A regular file only, and no more than its size: a FIFO would block, /dev/zero
    // never end (as every reader of strata, see `strata_tensor::io::fs`).
    let bytes = strata_tensor::io::fs::read(path).map_err(|e| torch_error(path, e.to_string()))?;
    load_pytorch_bytes(&bytes).map_err(|msg| torch_error(path, msg))
}

/// [`load_pytorch`] on the bytes of a file.
///
/// # Errors
/// As [`load_pytorch`], the message as a string.
pub fn load_pytorch_bytes<T: Element>(bytes: &[u8]) -> std::result::Result<StateDict<T>, String> {
    if bytes.starts_with(&[0x80, 0x02, 0x8a, 0x0a]) {
        return Err(
            "a legacy (pre-PyTorch 1.6) file; re-save it with a current PyTorch (the default zip format)"
                .into(),
        );
    }
    let archive = zip::Archive::parse(bytes)?;
    let pkl = archive
        .names()
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .ok_or("the archive has no data.pkl; is it a file torch.save wrote?")?
        .to_string();
    let prefix = &pkl[..pkl.len() - "data.pkl".len()];
    if let Some(order) = archive.get(&format!("{prefix}byteorder"))
        && &bytes[order] != b"little"
    {
        return Err("the tensors are stored big-endian; only little-endian files are read".into());
    }
    let root = pickle::load(&bytes[archive.get(&pkl).expect("listed")])?;
    let Value::Dict(entries) = root else {
        return Err("the pickle holds no dict; save model.state_dict(), not the model".into());
    };
    let mut sd = StateDict::new();
    for (key, value) in entries.iter() {
        let Value::Str(name) = key else {
            return Err(format!("a state dict key that is not a string: {key:?}"));
        };
        let Value::Tensor(t) = value else {
            return Err(format!("entry {name} is not a tensor"));
        };
        if sd.get(name).is_some() {
            return Err(format!("entry {name} appears twice"));
        }
        let range = archive
            .get(&format!("{prefix}data/{}", t.key))
            .ok_or_else(|| format!("entry {name}: its storage {} is missing", t.key))?;
        sd.insert(name, materialise(name, t, &bytes[range], bytes.len())?);
    }
    Ok(sd)
}

/// The values of a tensor view of `storage` as `T`.
/// `file_len` bounds what a tensor may expand to (a view with zero strides can name many
/// more elements than its storage holds): 16 times the file, plus 1 MiB.
fn materialise<T: Element>(
    name: &str,
    t: &TensorRef,
    storage: &[u8],
    file_len: usize,
) -> std::result::Result<Tensor<T>, String> {
    let size = STORAGES
        .iter()
        .find(|(n, _)| *n == &*t.dtype)
        .map(|&(_, s)| s)
        .expect("known storage");
    let need = t
        .storage_numel
        .checked_mul(size)
        .filter(|&n| n <= storage.len())
        .ok_or_else(|| {
            format!(
                "entry {name}: its storage claims {} elements of {size} bytes, the file holds {} bytes",
                t.storage_numel,
                storage.len()
            )
        })?;
    let storage = &storage[..need];
    let numel = if t.shape.contains(&0) {
        0
    } else {
        t.shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| {
                format!(
                    "entry {name}: shape {:?} has more elements than memory",
                    t.shape
                )
            })?
    };
    let bound = file_len.saturating_mul(16).saturating_add(1 << 20);
    if numel.saturating_mul(std::mem::size_of::<T>()) > bound {
        return Err(format!(
            "entry {name}: shape {:?} would expand a {}-byte file beyond {bound} bytes",
            t.shape, file_len
        ));
    }
    let read = |i: usize| -> std::result::Result<T, String> {
        let b = &storage[i * size..(i + 1) * size];
        let exact = |v: f64| -> std::result::Result<T, String> {
            let x = T::from_f64(v);
            if x.to_f64() == v {
                Ok(x)
            } else {
                Err(format!(
                    "entry {name}: the integer {v} is not exactly representable as {}",
                    std::any::type_name::<T>()
                ))
            }
        };
        Ok(match &*t.dtype {
            "FloatStorage" => T::from_f64(f64::from(f32::from_le_bytes(b.try_into().expect("4")))),
            "DoubleStorage" => T::from_f64(f64::from_le_bytes(b.try_into().expect("8"))),
            "HalfStorage" => T::from_f64(half_to_f64(u16::from_le_bytes(b.try_into().expect("2")))),
            "BFloat16Storage" => {
                let bits = u32::from(u16::from_le_bytes(b.try_into().expect("2"))) << 16;
                T::from_f64(f64::from(f32::from_bits(bits)))
            }
            "LongStorage" => {
                let v = i64::from_le_bytes(b.try_into().expect("8"));
                if v.unsigned_abs() > 1 << 53 {
                    return Err(format!(
                        "entry {name}: the integer {v} is beyond what a float holds exactly"
                    ));
                }
                exact(v as f64)?
            }
            "IntStorage" => exact(f64::from(i32::from_le_bytes(b.try_into().expect("4"))))?,
            "ShortStorage" => exact(f64::from(i16::from_le_bytes(b.try_into().expect("2"))))?,
            "CharStorage" => exact(f64::from(b[0] as i8))?,
            "ByteStorage" | "BoolStorage" => exact(f64::from(b[0]))?,
            other => return Err(format!("entry {name}: storage type {other}")),
        })
    };
    let mut values = Vec::new();
    values
        .try_reserve_exact(numel)
        .map_err(|_| format!("entry {name}: {numel} elements do not fit in memory"))?;
    let nd = t.shape.len();
    let mut index = vec![0usize; nd];
    for _ in 0..numel {
        let at = t.offset
            + index
                .iter()
                .zip(&t.stride)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        values.push(read(at)?);
        for d in (0..nd).rev() {
            index[d] += 1;
            if index[d] < t.shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Tensor::from_vec(values, &t.shape).map_err(|e| format!("entry {name}: {e}"))
}

/// An IEEE half-precision value.
fn half_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f64::from(h & 0x3ff);
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}
