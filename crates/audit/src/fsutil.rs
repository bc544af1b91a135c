//! File opening rules for everything the audit log touches: never through a symlink in the
//! last component (a sandbox may have planted one where a log or key is expected), only
//! regular files (opened non-blocking, so a FIFO planted in their place cannot hang us
//! before the check; O_NONBLOCK means nothing to regular files), close-on-exec.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

fn not_regular(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{} is not a regular file", path.display()),
    )
}

fn check_regular(file: File, path: &Path) -> io::Result<File> {
    if file.metadata()?.is_file() {
        Ok(file)
    } else {
        Err(not_regular(path))
    }
}

fn explain(e: io::Error, path: &Path) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        io::Error::new(
            e.kind(),
            format!(
                "{} is a symbolic link; ironcage never follows links to audit files",
                path.display()
            ),
        )
    } else {
        e
    }
}

pub fn open_read(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| explain(e, path))?;
    check_regular(f, path)
}

/// Opens for reading and writing, creating with `mode` if missing.
pub fn open_rw_create(path: &Path, mode: u32) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| explain(e, path))?;
    check_regular(f, path)
}

/// Reads a file a user named (a saved checkpoint, a bundle): symlinks are followed, but
/// only a regular file is read (a FIFO in its place must not hang us).
pub fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)?;
    let mut f = check_regular(f, path)?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(buf)
}

pub fn read_nofollow(path: &Path) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    open_read(path)?.read_to_end(&mut buf)?;
    Ok(buf)
}

/// Creates a new file (failing if anything exists there) with `mode`, writes and syncs it.
pub fn write_new_file(path: &Path, mode: u32, data: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| explain(e, path))?;
    // The umask may have narrowed the mode; a public key must stay readable.
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(data)?;
    f.sync_all()
}

/// Makes a directory entry durable (after creating or renaming a file in it).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
