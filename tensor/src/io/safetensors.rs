//! The safetensors codec: [`TensorFile`] to bytes and back.
//!
//! Reading goes through the `safetensors` crate, which parses the header and checks that
//! the offsets tile the data exactly, with checked arithmetic; before it, one pass of our
//! own over the header finds repeated names (the crate's JSON maps keep the last one), and
//! after it every tensor's size is checked again, where we compute it, before its values
//! are converted. Writing builds the header here rather than in the crate, whose metadata
//! is a `HashMap` written in a different order on every run.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::SafetensorsErrorKind as Kind;
use super::{SafetensorsError, fs};
use crate::{DType, Element, Tensor, checked_numel};

/// The header key of the string metadata; no tensor may have this name.
const METADATA_KEY: &str = "__metadata__";

/// The largest header the `safetensors` crate (and so PyTorch's loader) reads.
const MAX_HEADER_BYTES: usize = 100_000_000;

/// The element type a tensor is stored as in a safetensors file, named as the format
/// names it. Decoding reads all of these; encoding writes a tensor's own element type
/// ([`F32`](StoredDType::F32) or [`F64`](StoredDType::F64)) and [`I64`](StoredDType::I64)
/// for integer counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoredDType {
    /// IEEE half precision.
    F16,
    /// bfloat16: f32's exponent, 7 bits of mantissa.
    BF16,
    /// IEEE single precision.
    F32,
    /// IEEE double precision.
    F64,
    /// Signed 8-bit integer.
    I8,
    /// Signed 16-bit integer.
    I16,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer (PyTorch's `torch.long`, its counters' type).
    I64,
    /// Unsigned 8-bit integer.
    U8,
    /// Unsigned 16-bit integer.
    U16,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 64-bit integer.
    U64,
}

impl StoredDType {
    /// The dtype a tensor of element type `dtype` is stored as.
    ///
    /// ```
    /// use strata_tensor::{DType, io::StoredDType};
    /// assert_eq!(StoredDType::of(DType::F64), StoredDType::F64);
    /// ```
    pub fn of(dtype: DType) -> Self {
        match dtype {
            DType::F32 => StoredDType::F32,
            DType::F64 => StoredDType::F64,
        }
    }

    /// Size of one element in bytes.
    pub fn size_in_bytes(self) -> usize {
        use StoredDType::*;
        match self {
            I8 | U8 => 1,
            F16 | BF16 | I16 | U16 => 2,
            F32 | I32 | U32 => 4,
            F64 | I64 | U64 => 8,
        }
    }

    /// Whether this is an integer type. Integer tensors are counters (PyTorch's
    /// `num_batches_tracked`, an optimizer's step), not weights: a loader that expects
    /// weights should refuse them.
    pub fn is_integer(self) -> bool {
        use StoredDType::*;
        matches!(self, I8 | I16 | I32 | I64 | U8 | U16 | U32 | U64)
    }

    /// The name the format uses (`"F32"`, `"I64"`, …).
    pub fn name(self) -> &'static str {
        use StoredDType::*;
        match self {
            F16 => "F16",
            BF16 => "BF16",
            F32 => "F32",
            F64 => "F64",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            U8 => "U8",
            U16 => "U16",
            U32 => "U32",
            U64 => "U64",
        }
    }

    fn from_safetensors(dtype: Dtype) -> Option<Self> {
        use StoredDType::*;
        Some(match dtype {
            Dtype::F16 => F16,
            Dtype::BF16 => BF16,
            Dtype::F32 => F32,
            Dtype::F64 => F64,
            Dtype::I8 => I8,
            Dtype::I16 => I16,
            Dtype::I32 => I32,
            Dtype::I64 => I64,
            Dtype::U8 => U8,
            Dtype::U16 => U16,
            Dtype::U32 => U32,
            Dtype::U64 => U64,
            _ => return None,
        })
    }

    /// Where the `safetensors` crate's writer puts a dtype: it orders tensors by its
    /// `Dtype` enum, descending (I64, then F64, then F32 among those we write), then by
    /// name. Writing in the same order keeps our files byte-identical to its.
    fn write_rank(self) -> u8 {
        match self {
            StoredDType::I64 => 2,
            StoredDType::F64 => 1,
            _ => 0,
        }
    }
}

impl fmt::Display for StoredDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One named tensor of a [`TensorFile`], with the dtype it is stored as.
#[derive(Clone, Debug)]
pub struct FileTensor<T: Element = f32> {
    /// The tensor's name (a state-dict key such as `encoder.0.weight`).
    pub name: String,
    /// The values, converted to `T` when read.
    pub tensor: Tensor<T>,
    /// The dtype in the file: as read, or to write.
    pub dtype: StoredDType,
    /// The exact values of an integer tensor, beside `tensor`, which holds them converted
    /// to `T` (rounded beyond 2^24 in f32, 2^53 in f64). Read: present for every integer
    /// dtype (unsigned values above `i64::MAX` saturate). Written: when present, these are
    /// the I64 values written, so a counter such as an optimizer's step survives exactly.
    pub exact: Option<Vec<i64>>,
}

impl<T: Element> FileTensor<T> {
    /// A tensor stored in its own element type (F32 or F64), exactly.
    pub fn new(name: impl Into<String>, tensor: Tensor<T>) -> Self {
        FileTensor {
            name: name.into(),
            tensor,
            dtype: StoredDType::of(T::DTYPE),
            exact: None,
        }
    }

    /// An integer counter, stored as I64 as PyTorch stores `num_batches_tracked`. Writing
    /// fails if a value is not an integer that int64 holds exactly.
    pub fn counter(name: impl Into<String>, tensor: Tensor<T>) -> Self {
        FileTensor {
            name: name.into(),
            tensor,
            dtype: StoredDType::I64,
            exact: None,
        }
    }

    /// An integer counter of `shape` given by its exact values, stored as I64 exactly
    /// (an optimizer's step beyond 2^24, which an f32 tensor would round).
    ///
    /// ```
    /// use strata_tensor::io::{FileTensor, TensorFile};
    /// let step = (1u64 << 24) + 1; // not an f32
    /// let mut file = TensorFile::<f32>::new();
    /// file.tensors.push(FileTensor::exact_counter("step", &[], vec![step as i64])?);
    /// let back = TensorFile::<f32>::from_bytes(&file.to_bytes()?)?;
    /// assert_eq!(back.get("step").unwrap().exact.as_deref(), Some(&[step as i64][..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError`](crate::TensorError) when `values` do not fill `shape`.
    pub fn exact_counter(
        name: impl Into<String>,
        shape: &[usize],
        values: Vec<i64>,
    ) -> crate::Result<Self> {
        let tensor = Tensor::from_vec(
            values.iter().map(|&v| T::from_f64(v as f64)).collect(),
            shape,
        )?;
        Ok(FileTensor {
            name: name.into(),
            tensor,
            dtype: StoredDType::I64,
            exact: Some(values),
        })
    }
}

/// The contents of a safetensors file: named tensors and string metadata.
///
/// Decoded tensors come in name order, each converted to `T` with the dtype it was stored
/// as. To encode, the order of [`tensors`](TensorFile::tensors) does not matter: the file
/// lists them by dtype, then name, as the `safetensors` crate does, so that equal contents
/// give equal bytes.
///
/// ```
/// use strata_tensor::Tensor;
/// use strata_tensor::io::{FileTensor, TensorFile};
///
/// let dir = std::env::temp_dir().join(format!("strata-doc-io-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("weights.safetensors");
/// let mut file = TensorFile::<f64>::new();
/// file.tensors.push(FileTensor::new("bias", Tensor::from_vec(vec![0.5, -1.0], &[2])?));
/// file.write(&path)?;
/// let back = TensorFile::<f64>::read(&path)?;
/// assert_eq!(back.get("bias").unwrap().tensor.to_vec(), [0.5, -1.0]);
/// std::fs::remove_dir_all(dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct TensorFile<T: Element = f32> {
    /// The tensors.
    pub tensors: Vec<FileTensor<T>>,
    /// The header's `__metadata__` strings, in key order; when empty, the header has no
    /// `__metadata__` entry.
    pub metadata: BTreeMap<String, String>,
}

impl<T: Element> TensorFile<T> {
    /// No tensors and no metadata.
    pub fn new() -> Self {
        TensorFile {
            tensors: Vec::new(),
            metadata: BTreeMap::new(),
        }
    }

    /// The tensor named `name`.
    pub fn get(&self, name: &str) -> Option<&FileTensor<T>> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The bytes of a safetensors file holding these tensors and metadata.
    ///
    /// # Errors
    /// [`DuplicateName`](Kind::DuplicateName) and [`ReservedName`](Kind::ReservedName)
    /// for names that cannot be told apart in the header,
    /// [`Unwritable`](Kind::Unwritable) for a dtype other than `T`'s own or I64,
    /// [`NotInteger`](Kind::NotInteger) for a counter holding a non-integer, and
    /// [`Header`](Kind::Header) for a header over the format's 100 MB limit.
    pub fn to_bytes(&self) -> Result<Vec<u8>, SafetensorsError> {
        encode(self).map_err(|kind| SafetensorsError { path: None, kind })
    }

    /// Writes [`to_bytes`](TensorFile::to_bytes) to `path`, atomically: the bytes go to a
    /// new temporary file beside it, which is synced and renamed over `path` (a symlink at
    /// `path` is replaced, not followed), then the directory is synced. On failure `path`
    /// is as it was and the temporary file is removed.
    ///
    /// # Errors
    /// As [`to_bytes`](TensorFile::to_bytes), and [`Io`](Kind::Io) naming the step that
    /// failed.
    pub fn write(&self, path: &Path) -> Result<(), SafetensorsError> {
        let at = |kind| SafetensorsError {
            path: Some(path.to_path_buf()),
            kind,
        };
        let bytes = encode(self).map_err(at)?;
        fs::write_atomic_kind(path, &bytes).map_err(at)
    }

    /// Decodes a safetensors file's bytes (written by strata, PyTorch or any other
    /// writer), converting every tensor to `T`.
    ///
    /// # Errors
    /// [`Header`](Kind::Header) for a malformed header or one whose sizes and offsets do
    /// not agree with the data, [`DuplicateName`](Kind::DuplicateName) and
    /// [`DuplicateMetadataKey`](Kind::DuplicateMetadataKey) for a repeated name,
    /// [`Size`](Kind::Size) for a shape that does not fit its bytes (the codec's own
    /// check, after the `safetensors` crate's, which reports such shapes as `Header`),
    /// [`UnsupportedDType`](Kind::UnsupportedDType), and [`Overflow`](Kind::Overflow) for a
    /// finite value beyond `T`'s range.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SafetensorsError> {
        decode(bytes).map_err(|kind| SafetensorsError { path: None, kind })
    }

    /// Reads and decodes the safetensors file at `path`. Only a regular file is read
    /// (symlinks are followed): a FIFO, a device or a directory is refused before it is
    /// opened, and no more bytes are read than the file's size.
    ///
    /// # Errors
    /// [`NotRegularFile`](Kind::NotRegularFile), [`TooLarge`](Kind::TooLarge),
    /// [`Io`](Kind::Io), and as [`from_bytes`](TensorFile::from_bytes).
    pub fn read(path: &Path) -> Result<Self, SafetensorsError> {
        let at = |kind| SafetensorsError {
            path: Some(path.to_path_buf()),
            kind,
        };
        let bytes = fs::read_regular_file(path).map_err(at)?;
        decode(&bytes).map_err(at)
    }
}

// ---------------------------------------------------------------------------------------
// Encoding.
// ---------------------------------------------------------------------------------------

fn encode<T: Element>(file: &TensorFile<T>) -> Result<Vec<u8>, Kind> {
    let mut names = BTreeSet::new();
    for t in &file.tensors {
        if t.name == METADATA_KEY {
            return Err(Kind::ReservedName {
                name: t.name.clone(),
            });
        }
        if !names.insert(t.name.as_str()) {
            return Err(Kind::DuplicateName {
                name: t.name.clone(),
            });
        }
        if t.dtype != StoredDType::of(T::DTYPE) && t.dtype != StoredDType::I64 {
            return Err(Kind::Unwritable {
                name: t.name.clone(),
                element: T::DTYPE,
                dtype: t.dtype,
            });
        }
    }
    let mut order: Vec<&FileTensor<T>> = file.tensors.iter().collect();
    order.sort_by(|a, b| {
        (b.dtype.write_rank().cmp(&a.dtype.write_rank())).then_with(|| a.name.cmp(&b.name))
    });

    let mut data = Vec::new();
    let mut header = Vec::from(*b"{");
    if !file.metadata.is_empty() {
        push_json_str(&mut header, METADATA_KEY)?;
        header.extend_from_slice(b":{");
        for (i, (key, value)) in file.metadata.iter().enumerate() {
            if i > 0 {
                header.push(b',');
            }
            push_json_str(&mut header, key)?;
            header.push(b':');
            push_json_str(&mut header, value)?;
        }
        header.push(b'}');
    }
    for (i, t) in order.iter().enumerate() {
        let start = data.len();
        push_values(&mut data, t)?;
        if i > 0 || !file.metadata.is_empty() {
            header.push(b',');
        }
        push_json_str(&mut header, &t.name)?;
        let shape: Vec<String> = t.tensor.shape().iter().map(usize::to_string).collect();
        let entry = format!(
            r#":{{"dtype":"{}","shape":[{}],"data_offsets":[{start},{}]}}"#,
            t.dtype,
            shape.join(","),
            data.len()
        );
        header.extend_from_slice(entry.as_bytes());
    }
    header.push(b'}');
    // The data starts 8-byte aligned, padded with spaces as the crate pads.
    header.resize(header.len().next_multiple_of(8), b' ');
    if header.len() > MAX_HEADER_BYTES {
        return Err(Kind::header(format!(
            "{} bytes of header exceed the format's limit of {MAX_HEADER_BYTES}",
            header.len()
        )));
    }
    let mut bytes = Vec::with_capacity(8 + header.len() + data.len());
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&data);
    Ok(bytes)
}

/// `text` as a JSON string, escaped as serde_json (and so the crate) escapes it.
fn push_json_str(out: &mut Vec<u8>, text: &str) -> Result<(), Kind> {
    serde_json::to_writer(out, text).map_err(|e| Kind::header(e.to_string()))
}

/// Appends the little-endian bytes of `t`'s values in its stored dtype (which [`encode`]
/// has checked is `T`'s own or I64).
fn push_values<T: Element>(out: &mut Vec<u8>, t: &FileTensor<T>) -> Result<(), Kind> {
    let owned;
    let values: &[T] = match t.tensor.as_slice() {
        Some(values) => values,
        None => {
            owned = t.tensor.to_vec();
            &owned
        }
    };
    out.reserve(values.len().saturating_mul(t.dtype.size_in_bytes()));
    match t.dtype {
        StoredDType::I64 if t.exact.is_some() => {
            let exact = t.exact.as_deref().unwrap_or_default();
            if exact.len() != values.len() {
                return Err(Kind::Size {
                    name: t.name.clone(),
                    shape: t.tensor.shape().to_vec(),
                    dtype: t.dtype,
                    bytes: exact.len().saturating_mul(8),
                });
            }
            for n in exact {
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
        StoredDType::I64 => {
            for (index, v) in values.iter().enumerate() {
                let value = Element::to_f64(*v);
                let n = exact_i64(value).ok_or_else(|| Kind::NotInteger {
                    name: t.name.clone(),
                    index,
                    value,
                })?;
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
        // `T` is f32 here, so the cast is exact.
        StoredDType::F32 => {
            for v in values {
                out.extend_from_slice(&(Element::to_f64(*v) as f32).to_le_bytes());
            }
        }
        StoredDType::F64 => {
            for v in values {
                out.extend_from_slice(&Element::to_f64(*v).to_le_bytes());
            }
        }
        dtype => {
            return Err(Kind::Unwritable {
                name: t.name.clone(),
                element: T::DTYPE,
                dtype,
            });
        }
    }
    Ok(())
}

/// `value` as an i64 when it is one exactly: NaN, infinities, fractions and values beyond
/// [-2^63, 2^63) are not.
fn exact_i64(value: f64) -> Option<i64> {
    const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63, exact in f64
    (value.fract() == 0.0 && (-LIMIT..LIMIT).contains(&value)).then_some(value as i64)
}

// ---------------------------------------------------------------------------------------
// Decoding.
// ---------------------------------------------------------------------------------------

fn decode<T: Element>(bytes: &[u8]) -> Result<TensorFile<T>, Kind> {
    check_unique_names(header_slice(bytes)?)?;
    let (header_len, meta) =
        SafeTensors::read_metadata(bytes).map_err(|e| Kind::header(e.to_string()))?;
    // `read_metadata` has checked that 8 + header_len + the data's length is the buffer's
    // length; the additions below are checked anyway, as is every slice.
    let data_start = header_len
        .checked_add(8)
        .ok_or_else(|| Kind::header("the header length overflows"))?;
    let data = bytes
        .get(data_start..)
        .ok_or_else(|| Kind::header("the header runs past the end"))?;
    let mut infos: Vec<_> = meta.tensors().into_iter().collect();
    infos.sort_by(|a, b| a.0.cmp(&b.0));
    let mut tensors = Vec::with_capacity(infos.len());
    for (name, info) in infos {
        let dtype =
            StoredDType::from_safetensors(info.dtype).ok_or_else(|| Kind::UnsupportedDType {
                name: name.clone(),
                dtype: info.dtype.to_string(),
            })?;
        let (start, end) = info.data_offsets;
        let size_error = || Kind::Size {
            name: name.clone(),
            shape: info.shape.clone(),
            dtype,
            bytes: end.saturating_sub(start),
        };
        let numel = checked_numel(&info.shape).ok_or_else(size_error)?;
        let len = numel
            .checked_mul(dtype.size_in_bytes())
            .ok_or_else(size_error)?;
        let raw = data
            .get(start..end)
            .filter(|raw| raw.len() == len)
            .ok_or_else(size_error)?;
        let values = decode_values::<T>(&name, dtype, raw)?;
        let tensor = Tensor::from_vec(values, &info.shape).map_err(|_| size_error())?;
        let exact = dtype.is_integer().then(|| exact_integers(dtype, raw));
        tensors.push(FileTensor {
            name,
            tensor,
            dtype,
            exact,
        });
    }
    let metadata = meta
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    Ok(TensorFile { tensors, metadata })
}

/// The header's JSON text: the 8-byte little-endian length, checked against the bytes
/// that follow it before it is used.
fn header_slice(bytes: &[u8]) -> Result<&[u8], Kind> {
    let Some(prefix) = bytes.first_chunk::<8>() else {
        return Err(Kind::header(format!(
            "{} bytes cannot hold the 8-byte header length",
            bytes.len()
        )));
    };
    let n = u64::from_le_bytes(*prefix);
    let rest = &bytes[8..];
    usize::try_from(n)
        .ok()
        .filter(|&n| n <= MAX_HEADER_BYTES)
        .and_then(|n| rest.get(..n))
        .ok_or_else(|| {
            Kind::header(format!(
                "a header of {n} bytes does not fit the {} bytes after its length \
                 (or the format's limit of {MAX_HEADER_BYTES})",
                rest.len()
            ))
        })
}

/// Fails on a tensor name or metadata key that appears twice in the header: the crate
/// (like most JSON readers) would keep the last one and drop the others silently.
fn check_unique_names(header: &[u8]) -> Result<(), Kind> {
    let scan: HeaderNames = serde_json::from_slice(header)
        .map_err(|e| Kind::header(format!("not a JSON object: {e}")))?;
    scan.0.map_or(Ok(()), Err)
}

/// The first repeated name of a header, if any.
struct HeaderNames(Option<Kind>);

/// The first repeated key of a `__metadata__` object, if any.
struct MetadataKeys(Option<String>);

impl<'de> Deserialize<'de> for HeaderNames {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HeaderNames;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a safetensors header object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HeaderNames, A::Error> {
                let mut seen = HashSet::new();
                let mut repeat = None;
                while let Some(key) = map.next_key::<String>()? {
                    let inner = if key == METADATA_KEY {
                        map.next_value::<Option<MetadataKeys>>()?.and_then(|m| m.0)
                    } else {
                        map.next_value::<IgnoredAny>()?;
                        None
                    };
                    if repeat.is_none() {
                        repeat = inner.map(|key| Kind::DuplicateMetadataKey { key });
                    }
                    if !seen.insert(key.clone()) && repeat.is_none() {
                        repeat = Some(Kind::DuplicateName { name: key });
                    }
                }
                Ok(HeaderNames(repeat))
            }
        }
        deserializer.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for MetadataKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MetadataKeys;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a metadata object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MetadataKeys, A::Error> {
                let mut seen = HashSet::new();
                let mut repeat = None;
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<IgnoredAny>()?;
                    if !seen.insert(key.clone()) && repeat.is_none() {
                        repeat = Some(key);
                    }
                }
                Ok(MetadataKeys(repeat))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// The values of a little-endian buffer of `dtype`, converted to `T`.
fn decode_values<T: Element>(name: &str, dtype: StoredDType, raw: &[u8]) -> Result<Vec<T>, Kind> {
    use StoredDType::*;
    match dtype {
        F16 => convert::<T, 2>(name, raw, |b| f16_to_f64(u16::from_le_bytes(b))),
        BF16 => convert::<T, 2>(name, raw, |b| {
            f32::from_bits(u32::from(u16::from_le_bytes(b)) << 16) as f64
        }),
        F32 => convert::<T, 4>(name, raw, |b| f32::from_le_bytes(b) as f64),
        F64 => convert::<T, 8>(name, raw, f64::from_le_bytes),
        I8 => convert::<T, 1>(name, raw, |b| i8::from_le_bytes(b) as f64),
        I16 => convert::<T, 2>(name, raw, |b| i16::from_le_bytes(b) as f64),
        I32 => convert::<T, 4>(name, raw, |b| i32::from_le_bytes(b) as f64),
        I64 => convert::<T, 8>(name, raw, |b| i64::from_le_bytes(b) as f64),
        U8 => convert::<T, 1>(name, raw, |b| u8::from_le_bytes(b) as f64),
        U16 => convert::<T, 2>(name, raw, |b| u16::from_le_bytes(b) as f64),
        U32 => convert::<T, 4>(name, raw, |b| u32::from_le_bytes(b) as f64),
        U64 => convert::<T, 8>(name, raw, |b| u64::from_le_bytes(b) as f64),
    }
}

/// Each `N`-byte element of `raw` read by `read` and converted to `T`; a finite value that
/// `T` cannot hold (it would round to an infinity) is an error. Integers beyond 2^53 (2^24
/// in f32) round to the nearest representable value, and tiny values may flush to zero:
/// those lose precision, not range.
fn convert<T: Element, const N: usize>(
    name: &str,
    raw: &[u8],
    read: impl Fn([u8; N]) -> f64,
) -> Result<Vec<T>, Kind> {
    raw.chunks_exact(N)
        .enumerate()
        .map(|(index, chunk)| {
            let mut b = [0u8; N];
            b.copy_from_slice(chunk);
            let value = read(b);
            let t = T::from_f64(value);
            if value.is_finite() && !t.is_finite() {
                return Err(Kind::Overflow {
                    name: name.to_string(),
                    index,
                    value,
                    element: T::DTYPE,
                });
            }
            Ok(t)
        })
        .collect()
}

/// The values of a little-endian integer buffer of `dtype` as i64 (u64 values above
/// `i64::MAX` saturate).
fn exact_integers(dtype: StoredDType, raw: &[u8]) -> Vec<i64> {
    use StoredDType::*;
    fn each<const N: usize>(raw: &[u8], read: impl Fn([u8; N]) -> i64) -> Vec<i64> {
        raw.chunks_exact(N)
            .map(|c| {
                let mut b = [0u8; N];
                b.copy_from_slice(c);
                read(b)
            })
            .collect()
    }
    match dtype {
        I8 => each::<1>(raw, |b| i8::from_le_bytes(b).into()),
        I16 => each::<2>(raw, |b| i16::from_le_bytes(b).into()),
        I32 => each::<4>(raw, |b| i32::from_le_bytes(b).into()),
        I64 => each::<8>(raw, i64::from_le_bytes),
        U8 => each::<1>(raw, |b| u8::from_le_bytes(b).into()),
        U16 => each::<2>(raw, |b| u16::from_le_bytes(b).into()),
        U32 => each::<4>(raw, |b| u32::from_le_bytes(b).into()),
        U64 => each::<8>(raw, |b| {
            i64::try_from(u64::from_le_bytes(b)).unwrap_or(i64::MAX)
        }),
        F16 | BF16 | F32 | F64 => Vec::new(),
    }
}

/// IEEE half precision to f64 (exact).
fn f16_to_f64(h: u16) -> f64 {
    let sign = if h >> 15 == 1 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f64::from(h & 0x3ff);
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (1.0 + frac / 1024.0) * 2f64.powi(exp - 15),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numel_overflow_is_caught() {
        assert_eq!(checked_numel(&[]), Some(1));
        assert_eq!(checked_numel(&[3, 0, 1 << 40]), Some(0));
        // A zero does not excuse the other sizes: no tensor has this shape, so no file may.
        assert_eq!(checked_numel(&[3, 0, usize::MAX]), None);
        assert_eq!(checked_numel(&[1 << 32, 1 << 32]), None);
        assert_eq!(checked_numel(&[usize::MAX, 2]), None);
    }

    #[test]
    fn exact_i64_accepts_integers_only() {
        assert_eq!(exact_i64(3.0), Some(3));
        assert_eq!(exact_i64(-0.0), Some(0));
        assert_eq!(exact_i64(-9_223_372_036_854_775_808.0), Some(i64::MIN));
        for bad in [
            0.5,
            f64::NAN,
            f64::INFINITY,
            9_223_372_036_854_775_808.0,
            1e300,
        ] {
            assert_eq!(exact_i64(bad), None, "{bad}");
        }
    }

    #[test]
    fn f16_matches_its_definition() {
        // 0x3c00 = 1.0, 0xc000 = -2.0, 0x0001 = 2^-24 (the smallest subnormal),
        // 0x7bff = 65504 (the largest finite), 0x7c00 = +inf.
        assert_eq!(f16_to_f64(0x3c00), 1.0);
        assert_eq!(f16_to_f64(0xc000), -2.0);
        assert_eq!(f16_to_f64(0x0001), 2f64.powi(-24));
        assert_eq!(f16_to_f64(0x7bff), 65504.0);
        assert_eq!(f16_to_f64(0x7c00), f64::INFINITY);
        assert!(f16_to_f64(0x7e00).is_nan());
    }
}
