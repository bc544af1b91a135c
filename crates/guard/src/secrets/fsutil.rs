//! File plumbing for the secret store: private directories, bounded reads, atomic
//! replacement and the writers' lock. Knows nothing about secrets.

use super::SecretError;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// Fills `buf` from the OS random source.
pub(super) fn random(buf: &mut [u8]) -> Result<(), SecretError> {
    getrandom::fill(buf).map_err(|e| SecretError::Random {
        reason: e.to_string(),
    })
}

/// Creates `dir` and missing parents with mode 0700 (existing directories are left as
/// they are).
pub(super) fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The directory holding `path` ("." for a bare file name).
pub(super) fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// fsyncs the directory holding `path`, so a create or rename in it survives a crash.
pub(super) fn sync_parent(path: &Path) -> io::Result<()> {
    File::open(parent_of(path))?.sync_all()
}

/// Reads at most `max` bytes; a longer file is an error rather than a partial read.
pub(super) fn read_bounded(file: File, max: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    file.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than the {max}-byte limit"),
        ));
    }
    Ok(out)
}

/// Writes `bytes` to a new 0600 temporary file beside `path` (same directory, so a rename
/// or link to `path` stays on one file system) and fsyncs it. Returns its path.
fn write_temp(path: &Path, bytes: &[u8]) -> Result<PathBuf, SecretError> {
    let mut tag = [0u8; 6];
    random(&mut tag)?;
    let name = path
        .file_name()
        .map_or_else(|| "secrets".into(), |n| n.to_string_lossy().into_owned());
    let tmp: PathBuf = parent_of(path).join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        tag.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        });
    match written {
        Ok(()) => Ok(tmp),
        Err(source) => {
            let _ = std::fs::remove_file(&tmp);
            Err(SecretError::Io {
                op: "write temporary file",
                path: tmp,
                source,
            })
        }
    }
}

/// Replaces `path` with `bytes` so that a reader sees the old file or the new one, never a
/// mix, and a crash leaves one of the two: write and fsync a temporary file, rename it over
/// `path`, fsync the directory.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SecretError> {
    let tmp = write_temp(path, bytes)?;
    if let Err(source) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(SecretError::Io {
            op: "replace",
            path: path.to_path_buf(),
            source,
        });
    }
    sync_parent(path).map_err(|source| SecretError::Io {
        op: "sync directory of",
        path: path.to_path_buf(),
        source,
    })
}

/// Creates `path` holding `bytes` only if it does not exist, and makes it appear complete:
/// the content is written and fsynced under a temporary name first, then hard-linked to
/// `path` (link, unlike rename, fails if the target exists). A plain O_EXCL create would
/// let a concurrent reader see the file while it is still empty. Returns `false` if
/// `path` already existed (nothing is written then).
pub(super) fn create_complete(path: &Path, bytes: &[u8]) -> Result<bool, SecretError> {
    let tmp = write_temp(path, bytes)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(source) => {
            return Err(SecretError::Io {
                op: "create",
                path: path.to_path_buf(),
                source,
            })
        }
    }
    sync_parent(path).map_err(|source| SecretError::Io {
        op: "sync directory of",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(true)
}

/// An exclusive `flock` on `<store>.lock`, held while a writer reads, changes and replaces
/// the store, so two writers (threads or processes) cannot both start from the same old
/// file and lose one's entry. The lock is on a separate file because the store itself is
/// replaced by rename: a lock on the old inode would not exclude a writer that opened the
/// new one. Released on drop (closing the descriptor releases the flock).
pub(super) struct WriteLock {
    _file: File,
}

impl WriteLock {
    pub(super) fn acquire(store: &Path) -> Result<WriteLock, SecretError> {
        let mut lock_path = store.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        let io_err = |op| {
            let p = lock_path.clone();
            move |source| SecretError::Io {
                op,
                path: p,
                source,
            }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err("open lock file"))?;
        file.lock().map_err(io_err("lock"))?;
        Ok(WriteLock { _file: file })
    }
}
