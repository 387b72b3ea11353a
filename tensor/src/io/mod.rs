//! Reading and writing tensors: one safetensors codec for every file strata writes.
//!
//! A [`TensorFile`] is what a safetensors file holds: named tensors, each with the dtype
//! it is stored as ([`StoredDType`]), and string metadata. `strata-nn`'s state dicts and
//! `strata-optim`'s optimizer state are thin layers over it, so both get the same checks:
//!
//! - **Reading trusts nothing in the file.** Only regular files are read (a FIFO or
//!   `/dev/zero` is refused before it is opened), and never more bytes than the file's
//!   size. Every size and offset in the header is checked against the data with checked
//!   arithmetic before anything is allocated. A name that appears twice in the header is an
//!   error (JSON parsers keep the last one, a silent wrong result). A finite value that
//!   overflows the element type it is loaded into (1e300 into f32) is an error naming the
//!   tensor, never a silent infinity. Each tensor comes back with the dtype it was stored
//!   as, so a caller can refuse integers where it expects weights.
//! - **Writing is atomic and deterministic.** The bytes go to a new temporary file in the
//!   target's directory, which is synced and then renamed over the target (a symlink
//!   planted there is replaced, not followed), and the directory is synced; on failure
//!   the previous file is left as it was. The metadata is written sorted by key and the
//!   tensors ordered as the `safetensors` crate orders them (dtype, then name), so equal
//!   contents give byte-identical files, and files without metadata are byte-identical to
//!   the crate's own (which `safetensors.torch.save_file` calls).
//!
//! ```
//! use strata_tensor::Tensor;
//! use strata_tensor::io::{FileTensor, StoredDType, TensorFile};
//!
//! let mut file = TensorFile::<f32>::new();
//! file.tensors.push(FileTensor::new("weight", Tensor::from_vec(vec![1.0, 2.0], &[2])?));
//! file.tensors.push(FileTensor::counter("step", Tensor::scalar(3.0)));
//! file.metadata.insert("format".into(), "pt".into());
//! let back = TensorFile::<f32>::from_bytes(&file.to_bytes()?)?;
//! assert_eq!(back.get("step").map(|t| t.dtype), Some(StoredDType::I64));
//! assert_eq!(back.get("weight").unwrap().tensor.to_vec(), [1.0, 2.0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
pub mod fs;
mod safetensors;

pub use error::{SafetensorsError, SafetensorsErrorKind};
pub use safetensors::{FileTensor, StoredDType, TensorFile};
