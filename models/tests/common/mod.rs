//! Shared helpers of the strata-models tests: unique temporary folders, IDX and CIFAR-10
//! fixtures written in the exact file layouts, gzip, and checks of data errors.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use strata_models::ModelsError;

/// A fresh folder under the system's temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty folder whose name contains `tag`, the process id and a counter.
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "strata-models-{tag}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create a temporary folder");
        TempDir(dir)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `name` inside the folder.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `bytes` to `name` inside the folder and returns the path.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create the parent folder");
        }
        std::fs::write(&path, bytes).expect("write a fixture");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The bundled data folder of the repository.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("data")
}

/// An IDX file of unsigned bytes: magic `0 0 0x08 ndim`, big-endian dimensions, data.
pub fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// `bytes` gzipped.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("gzip in memory");
    enc.finish().expect("gzip in memory")
}

/// The pixel of CIFAR-10 fixture image `image` (counted over the whole fixture) at
/// channel `c`, row `y`, column `x`.
pub fn cifar_pixel(image: usize, c: usize, y: usize, x: usize) -> u8 {
    ((image * 31 + c * 97 + y * 5 + x * 3) % 256) as u8
}

/// CIFAR-10 binary records: for each label, one label byte and 3072 pixel bytes (the R
/// plane, then G, then B, each 32 rows of 32), images numbered from `first`.
pub fn cifar_bytes(labels: &[u8], first: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(labels.len() * 3073);
    for (i, &label) in labels.iter().enumerate() {
        out.push(label);
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    out.push(cifar_pixel(first + i, c, y, x));
                }
            }
        }
    }
    out
}

/// Panics unless `result` is a [`ModelsError::Data`] naming `path` whose message contains
/// every one of `needles`; returns the message.
#[track_caller]
pub fn assert_data_error<T: std::fmt::Debug>(
    result: Result<T, ModelsError>,
    path: &Path,
    needles: &[&str],
) -> String {
    match result {
        Err(ModelsError::Data { path: p, msg }) => {
            assert_eq!(p, path, "the error names another file (message {msg:?})");
            for needle in needles {
                assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
            }
            let shown = ModelsError::Data {
                path: p,
                msg: msg.clone(),
            }
            .to_string();
            assert!(
                shown.contains(&path.display().to_string()),
                "{shown:?} does not name the file"
            );
            msg
        }
        other => panic!(
            "expected a data error for {}, got {other:?}",
            path.display()
        ),
    }
}
