//! Files: a bounded read of a regular file, and an atomic write.

use std::ffi::OsString;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::SafetensorsErrorKind as Kind;

/// The bytes of the regular file at `path` (symlinks followed), never more than its size.
///
/// The type is checked before the file is opened: opening a FIFO for reading blocks until
/// a writer appears, and a device such as `/dev/zero` never ends. The opened file is
/// checked again (the path may have been replaced in between), and its size then bounds
/// both the allocation and the read. What remains is a race in which the path is swapped
/// for a FIFO between the check and the open; closing it would need `O_NONBLOCK`, which
/// std does not offer without a platform crate.
pub(crate) fn read_regular_file(path: &Path) -> Result<Vec<u8>, Kind> {
    check_regular(&std::fs::metadata(path).map_err(Kind::io("inspect it"))?)?;
    let file = File::open(path).map_err(Kind::io("open it"))?;
    let meta = file.metadata().map_err(Kind::io("inspect it"))?;
    check_regular(&meta)?;
    let len = meta.len();
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

/// Replaces the file at `path` with `bytes`, atomically: see [`write_atomic_with`].
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Kind> {
    write_atomic_with(path, |file| file.write_all(bytes))
}

/// Replaces the file at `path` with what `fill` writes, so that `path` holds either its
/// old contents or all of the new ones, even across a crash:
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
pub(crate) fn write_atomic_with(
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
    sync_dir(dir)
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
fn sync_dir(dir: &Path) -> Result<(), Kind> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(Kind::io(
        "sync the directory after renaming (the new file is in place)",
    ))
}

/// Windows cannot open a directory as a file; its renames are synced with the file.
#[cfg(not(unix))]
fn sync_dir(_: &Path) -> Result<(), Kind> {
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
        let err = write_atomic_with(&path, |file| {
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
        write_atomic(&path, b"new contents").unwrap();
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
        write_atomic(&path, b"mine").unwrap();
        assert_eq!(std::fs::read(&planted).unwrap(), b"someone else's");
        assert_eq!(std::fs::read(&path).unwrap(), b"mine");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_path_without_a_file_name_is_an_error() {
        assert!(matches!(
            write_atomic(Path::new("/"), b"x"),
            Err(Kind::Io { op: "write it", .. })
        ));
    }
}
