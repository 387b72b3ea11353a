//! Files, as strata reads and writes every one of them: a bounded read of a regular file,
//! and an atomic write.
//!
//! The safetensors codec uses these, and so does everything else strata writes
//! (strata-models' metrics, provenance records, plots and checkpoint folders) or reads
//! (its IDX, CIFAR-10, CSV and text readers, provenance records):
//!
//! - [`read`] and [`open_regular`] refuse anything but a regular file before opening it (a
//!   FIFO blocks until a writer appears, `/dev/zero` never ends), and [`read`] never reads
//!   more than the file's size;
//! - [`write_atomic`] and [`write_atomic_with`] write a new file beside the target, sync
//!   it, rename it over the target (a symlink planted there is replaced, not followed) and
//!   sync the directory, so the target holds either its old contents or all of the new.
//!
//! Errors are `std::io::Error`s whose message says which step failed; the path is the
//! caller's to add.
//!
//! ```
//! use strata_tensor::io::fs;
//! let dir = std::env::temp_dir().join(format!("strata-doc-fs-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("notes.txt");
//! fs::write_atomic(&path, b"written whole or not at all")?;
//! assert_eq!(fs::read(&path)?, b"written whole or not at all");
//! # #[cfg(unix)]
//! assert!(fs::read(std::path::Path::new("/dev/zero")).is_err()); // not a regular file
//! std::fs::remove_dir_all(dir)?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::ffi::OsString;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::SafetensorsErrorKind as Kind;

/// The bytes of the regular file at `path` (symlinks followed), never more than its size.
///
/// # Errors
/// A path that is not a regular file (`InvalidInput`: "it is a FIFO, not a regular
/// file"), a file larger than the memory that can be set aside for it (`OutOfMemory`),
/// and the operating system's errors, each saying which step failed.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    read_regular_file(path).map_err(into_io)
}

/// The regular file at `path`, opened for reading, and its size: for readers that stream
/// (a gzip decoder), which must then read no more than they can check.
///
/// The type is checked before the file is opened and again on the opened file, as
/// [`read`] does.
///
/// # Errors
/// As [`read`].
pub fn open_regular(path: &Path) -> io::Result<(File, u64)> {
    open_checked(path).map_err(into_io)
}

/// Replaces the file at `path` with `bytes`, atomically (see [`write_atomic_with`]).
///
/// # Errors
/// As [`write_atomic_with`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_kind(path, bytes).map_err(into_io)
}

/// Replaces the file at `path` with what `fill` writes, atomically: a new file is created
/// beside it (never following a symlink), filled, synced and renamed over `path` (which
/// replaces a symlink there rather than writing through it), then the directory is synced.
/// On failure `path` is as it was and the new file is removed. The file's permissions are
/// those of any new file (`0666` less the umask), whatever was there before.
///
/// # Errors
/// The operating system's errors, saying which step failed; a path without a file name.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    write_atomic_with_kind(path, fill).map_err(into_io)
}

/// Syncs the directory `dir`, so that the renames and new entries in it survive a crash
/// (a no-op where directories cannot be opened, as on Windows).
///
/// # Errors
/// The operating system's error.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    sync_dir_kind(dir).map_err(into_io)
}

/// The error of a failed step as an `io::Error` whose message names the step.
fn into_io(kind: Kind) -> io::Error {
    match kind {
        Kind::Io { op, source } => io::Error::new(source.kind(), format!("cannot {op}: {source}")),
        Kind::NotRegularFile { what } => io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {what}, not a regular file"),
        ),
        other => io::Error::new(io::ErrorKind::OutOfMemory, other.to_string()),
    }
}

/// The checked open of [`open_regular`].
///
/// The type is checked before the file is opened: opening a FIFO for reading blocks until
/// a writer appears, and a device such as `/dev/zero` never ends. The opened file is
/// checked again (the path may have been replaced in between). What remains is a race in
/// which the path is swapped for a FIFO between the check and the open; closing it would
/// need `O_NONBLOCK`, which std does not offer without a platform crate.
fn open_checked(path: &Path) -> Result<(File, u64), Kind> {
    check_regular(&std::fs::metadata(path).map_err(Kind::io("inspect it"))?)?;
    let file = File::open(path).map_err(Kind::io("open it"))?;
    let meta = file.metadata().map_err(Kind::io("inspect it"))?;
    check_regular(&meta)?;
    Ok((file, meta.len()))
}

/// [`read`], with the codec's error: the opened file's size bounds both the allocation
/// and the read.
pub(crate) fn read_regular_file(path: &Path) -> Result<Vec<u8>, Kind> {
    let (file, len) = open_checked(path)?;
    let capacity = usize::try_from(len).map_err(|_| Kind::TooLarge { len })?;
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(capacity)
        .map_err(|_| Kind::TooLarge { len })?;
    file.take(len)
        .read_to_end(&mut bytes)
        .map_err(Kind::io("read it"))?;
    if bytes.len() != capacity {
        return Err(Kind::Io {
            op: "read it",
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "it shrank from {len} to {} bytes while being read",
                    bytes.len()
                ),
            ),
        });
    }
    Ok(bytes)
}

fn check_regular(meta: &Metadata) -> Result<(), Kind> {
    let t = meta.file_type();
    if t.is_file() {
        return Ok(());
    }
    let what = if t.is_dir() {
        "a directory"
    } else {
        special_kind(&t)
    };
    Err(Kind::NotRegularFile { what })
}

#[cfg(unix)]
fn special_kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &std::fs::FileType) -> &'static str {
    "a special file"
}

/// [`write_atomic`], with the codec's error.
pub(crate) fn write_atomic_kind(path: &Path, bytes: &[u8]) -> Result<(), Kind> {
    write_atomic_with_kind(path, |file| file.write_all(bytes))
}

/// [`write_atomic_with`], with the codec's error. `path` holds either its old contents or
/// all of the new ones, even across a crash:
///
/// 1. a temporary file is created beside `path` with `create_new` (`O_EXCL`: it is never
///    an existing file, and a symlink planted at its name is not followed);
/// 2. `fill` writes it and it is synced to disk;
/// 3. it is renamed over `path`. The rename replaces the directory entry, so a symlink at
///    `path` is itself replaced and whatever it pointed to is untouched;
/// 4. the directory is synced, so that the rename is on disk too.
///
/// If step 1, 2 or 3 fails, the temporary file is removed and `path` is as it was. If
/// step 4 fails, the new contents are in place but may not survive a crash, and the error
/// says so.
pub(crate) fn write_atomic_with_kind(
    path: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), Kind> {
    let Some(name) = path.file_name() else {
        return Err(Kind::Io {
            op: "write it",
            source: io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"),
        });
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let (temp, mut file) = create_temp(dir, name)?;
    let written = fill(&mut file)
        .map_err(Kind::io("write a temporary file"))
        .and_then(|()| file.sync_all().map_err(Kind::io("sync a temporary file")));
    drop(file);
    let renamed = written.and_then(|()| {
        std::fs::rename(&temp, path).map_err(Kind::io("rename a temporary file over it"))
    });
    if let Err(e) = renamed {
        // Best effort: the error that matters is the one above.
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    sync_dir_kind(dir)
}

/// A new file beside the target: `.{name}.{pid}.{n}.tmp`, hidden, and unique within this
/// process; a name left behind by a crashed process with the same id is skipped.
fn create_temp(dir: &Path, name: &std::ffi::OsStr) -> Result<(PathBuf, File), Kind> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut last = None;
    for _ in 0..64 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut temp = OsString::from(".");
        temp.push(name);
        temp.push(format!(".{}.{n}.tmp", std::process::id()));
        let temp = dir.join(temp);
        match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(Kind::io("create a temporary file")(e)),
        }
    }
    let source = last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists));
    Err(Kind::io("create a temporary file")(source))
}

#[cfg(unix)]
fn sync_dir_kind(dir: &Path) -> Result<(), Kind> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(Kind::io(
        "sync the directory after renaming (the new file is in place)",
    ))
}

/// Windows cannot open a directory as a file; its renames are synced with the file.
#[cfg(not(unix))]
fn sync_dir_kind(_: &Path) -> Result<(), Kind> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("strata-io-fs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_write_that_fails_midway_leaves_the_old_file_and_no_temporary() {
        let dir = scratch("midway");
        let path = dir.join("state.safetensors");
        std::fs::write(&path, b"old contents").unwrap();
        let err = write_atomic_with_kind(&path, |file| {
            file.write_all(b"half of the new")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(
            matches!(
                err,
                Kind::Io {
                    op: "write a temporary file",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"old contents");
        assert_eq!(entries(&dir), ["state.safetensors"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_write_replaces_the_file_and_leaves_nothing_else() {
        let dir = scratch("replace");
        let path = dir.join("state.safetensors");
        std::fs::write(&path, b"old").unwrap();
        write_atomic_kind(&path, b"new contents").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new contents");
        assert_eq!(entries(&dir), ["state.safetensors"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_temporary_name_left_behind_is_skipped() {
        let dir = scratch("stale");
        let path = dir.join("f");
        // Plant the next name this process would use; create_new must not reuse it.
        let n = {
            let (temp, _) = create_temp(&dir, path.file_name().unwrap()).unwrap();
            std::fs::remove_file(&temp).unwrap();
            temp.to_string_lossy()
                .rsplit('.')
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        };
        let planted = dir.join(format!(".f.{}.{}.tmp", std::process::id(), n + 1));
        std::fs::write(&planted, b"someone else's").unwrap();
        write_atomic_kind(&path, b"mine").unwrap();
        assert_eq!(std::fs::read(&planted).unwrap(), b"someone else's");
        assert_eq!(std::fs::read(&path).unwrap(), b"mine");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_path_without_a_file_name_is_an_error() {
        assert!(matches!(
            write_atomic_kind(Path::new("/"), b"x"),
            Err(Kind::Io { op: "write it", .. })
        ));
    }
}
