//! A job for a held sandbox: the command, its environment, its stdin and the files to put
//! in its working directory, handed to a sandbox that was built ahead of time (the warm
//! pool of `ironcage serve`).
//!
//! Wire format, the same from the server to the supervisor and from the supervisor to init:
//! a 4-byte little-endian header length, the header as JSON, then the blobs the header
//! announces (stdin first, then each file's content, in order) as raw bytes. Code and data
//! travel as bytes, never as JSON arrays of numbers or base64.

use serde::{Deserialize, Serialize};
use std::path::{Component, Path};

/// The largest header and the largest job (header + blobs) accepted.
pub const MAX_HEADER: usize = 1 << 20;
pub const MAX_JOB: usize = 256 << 20;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Job {
    pub argv: Vec<String>,
    /// Replaces the plan's environment entries of the same name; others are kept.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    #[serde(default, skip)]
    pub stdin: Vec<u8>,
    #[serde(default)]
    pub files: Vec<JobFile>,
    /// Lowers the plan's wall-clock timeout for this job.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Lowers the run cgroup's memory limit for this job.
    #[serde(default)]
    pub memory_limit_bytes: Option<u64>,
    /// RLIMIT_CPU for the workload (seconds of CPU time per process).
    #[serde(default)]
    pub cpu_seconds: Option<u64>,
    /// RLIMIT_FSIZE for the workload; never raises the plan's.
    #[serde(default)]
    pub max_file_size: Option<u64>,
    /// After the workload ends, end whatever it left running and send back the working
    /// directory's contents (see `capture`): a long-lived sandbox's files between commands.
    #[serde(default)]
    pub capture: bool,
    /// The most file content a capture sends; beyond it, an error frame instead.
    #[serde(default)]
    pub capture_limit: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobFile {
    /// Relative to the working directory; checked by `check_relative_path`.
    pub path: String,
    #[serde(default, skip)]
    pub content: Vec<u8>,
    #[serde(default)]
    pub executable: bool,
    #[serde(default)]
    pub kind: FileKind,
}

/// What an entry of the working directory is. Directories and symbolic links come only
/// from captures (the API takes files).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    #[default]
    File,
    Dir,
    /// `content` is the link's target.
    Symlink,
}

#[derive(Serialize, Deserialize)]
struct Header {
    job: Job,
    stdin_len: u64,
    file_lens: Vec<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JobError {
    #[error("job frame: {0}")]
    Frame(String),
    #[error("file path {path:?}: {reason}")]
    Path { path: String, reason: &'static str },
}

/// Why a path given for a file in the sandbox is refused, if it is: it must be relative,
/// stay below the working directory (no `..`), have no NUL, and name a file.
pub fn check_relative_path(path: &str) -> Result<(), JobError> {
    let bad = |reason| {
        Err(JobError::Path {
            path: path.to_string(),
            reason,
        })
    };
    if path.is_empty() {
        return bad("empty");
    }
    if path.contains('\0') {
        return bad("contains NUL");
    }
    if path.len() > 4096 {
        return bad("longer than 4096 bytes");
    }
    if path.ends_with('/') {
        return bad("names a directory");
    }
    let mut named = false;
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) if n.len() > 255 => {
                return bad("has a name longer than 255 bytes")
            }
            Component::Normal(_) => named = true,
            Component::CurDir => {}
            Component::ParentDir => return bad("contains `..`"),
            Component::RootDir | Component::Prefix(_) => return bad("is absolute"),
        }
    }
    if !named {
        return bad("names no file");
    }
    Ok(())
}

/// From a frame's header (the JSON after the length prefix): how many blob bytes follow.
pub fn blob_len(header: &[u8]) -> Result<u64, JobError> {
    let h: Header = serde_json::from_slice(header).map_err(|e| JobError::Frame(e.to_string()))?;
    h.file_lens
        .iter()
        .try_fold(h.stdin_len, |a, b| a.checked_add(*b))
        .filter(|t| *t <= MAX_JOB as u64)
        .ok_or_else(|| JobError::Frame("job larger than 256 MiB".into()))
}

impl Job {
    /// Decodes a whole frame held in memory.
    pub fn decode(bytes: &[u8]) -> Result<Job, JobError> {
        let mut cur = std::io::Cursor::new(bytes);
        Job::read_from(|b| std::io::Read::read_exact(&mut cur, b))
    }

    pub fn validate(&self) -> Result<(), JobError> {
        if self.argv.is_empty() || self.argv[0].is_empty() {
            return Err(JobError::Frame("empty argv".into()));
        }
        let nul = |s: &str| s.contains('\0');
        if self.argv.iter().any(|a| nul(a))
            || self
                .env
                .iter()
                .any(|(k, v)| nul(k) || nul(v) || k.is_empty() || k.contains('='))
        {
            return Err(JobError::Frame(
                "argv/env contain NUL or a bad variable name".into(),
            ));
        }
        for f in &self.files {
            check_relative_path(&f.path)?;
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        let header = Header {
            job: self.clone_without_blobs(),
            stdin_len: self.stdin.len() as u64,
            file_lens: self.files.iter().map(|f| f.content.len() as u64).collect(),
        };
        let h = serde_json::to_vec(&header).unwrap_or_default();
        let blobs: usize =
            self.stdin.len() + self.files.iter().map(|f| f.content.len()).sum::<usize>();
        let mut out = Vec::with_capacity(4 + h.len() + blobs);
        out.extend_from_slice(&(h.len() as u32).to_le_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(&self.stdin);
        for f in &self.files {
            out.extend_from_slice(&f.content);
        }
        out
    }

    fn clone_without_blobs(&self) -> Job {
        Job {
            stdin: Vec::new(),
            files: self
                .files
                .iter()
                .map(|f| JobFile {
                    path: f.path.clone(),
                    content: Vec::new(),
                    executable: f.executable,
                    kind: f.kind,
                })
                .collect(),
            ..self.clone()
        }
    }

    /// Reads one job with `read_exact` (a blocking reader: a pipe or a socket).
    pub fn read_from(
        mut read_exact: impl FnMut(&mut [u8]) -> std::io::Result<()>,
    ) -> Result<Job, JobError> {
        let io = |e: std::io::Error| JobError::Frame(e.to_string());
        let mut len = [0u8; 4];
        read_exact(&mut len).map_err(io)?;
        let hlen = u32::from_le_bytes(len) as usize;
        if hlen > MAX_HEADER {
            return Err(JobError::Frame(format!("header of {hlen} bytes")));
        }
        let mut h = vec![0u8; hlen];
        read_exact(&mut h).map_err(io)?;
        let header: Header =
            serde_json::from_slice(&h).map_err(|e| JobError::Frame(e.to_string()))?;
        if header.file_lens.len() != header.job.files.len() {
            return Err(JobError::Frame("file count mismatch".into()));
        }
        header
            .file_lens
            .iter()
            .try_fold(header.stdin_len, |a, b| a.checked_add(*b))
            .filter(|t| *t <= MAX_JOB as u64)
            .ok_or_else(|| JobError::Frame("job larger than 256 MiB".into()))?;
        let mut job = header.job;
        job.stdin = vec![0u8; header.stdin_len as usize];
        read_exact(&mut job.stdin).map_err(io)?;
        for (f, len) in job.files.iter_mut().zip(&header.file_lens) {
            f.content = vec![0u8; *len as usize];
            read_exact(&mut f.content).map_err(io)?;
        }
        job.validate()?;
        Ok(job)
    }
}

/// Limits of a capture: a working directory is a size-limited tmpfs, but its entries and
/// the frame are bounded here too.
pub const MAX_CAPTURE_ENTRIES: usize = 100_000;

/// What a capture found: entries in frame order (parents before children; symlinks not
/// followed; FIFOs, sockets, devices skipped) with their sizes, and what it had to leave
/// out (unreadable, or a name that is not UTF-8).
pub struct CaptureList {
    pub entries: Vec<(JobFile, u64)>,
    pub skipped: Vec<String>,
}

/// Lists the working directory (contents are not read yet: `write_capture` streams them).
pub fn capture_list(dir: &Path) -> std::io::Result<CaptureList> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    let mut stack = vec![std::path::PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let rd = match std::fs::read_dir(dir.join(&rel)) {
            Ok(rd) => rd,
            Err(_) if !rel.as_os_str().is_empty() => {
                skipped.push(rel.to_string_lossy().into_owned());
                continue;
            }
            Err(e) => return Err(e),
        };
        for e in rd.filter_map(Result::ok) {
            let rel_path = rel.join(e.file_name());
            let Some(path_str) = rel_path.to_str().map(str::to_string) else {
                skipped.push(rel_path.to_string_lossy().into_owned());
                continue; // not UTF-8: cannot travel in the frame's JSON header
            };
            let full = dir.join(&rel_path);
            let Ok(meta) = std::fs::symlink_metadata(&full) else {
                skipped.push(path_str);
                continue;
            };
            let ft = meta.file_type();
            let entry = if ft.is_dir() {
                stack.push(rel_path.clone());
                (
                    JobFile {
                        path: path_str,
                        kind: FileKind::Dir,
                        ..JobFile::default()
                    },
                    0,
                )
            } else if ft.is_symlink() {
                let Ok(target) = std::fs::read_link(&full) else {
                    skipped.push(path_str);
                    continue;
                };
                let target = target.into_os_string().into_encoded_bytes();
                let n = target.len() as u64;
                (
                    JobFile {
                        path: path_str,
                        content: target,
                        kind: FileKind::Symlink,
                        ..JobFile::default()
                    },
                    n,
                )
            } else if ft.is_file() {
                (
                    JobFile {
                        path: path_str,
                        executable: meta.permissions().mode() & 0o111 != 0,
                        kind: FileKind::File,
                        ..JobFile::default()
                    },
                    meta.len(),
                )
            } else {
                continue;
            };
            if entries.len() >= MAX_CAPTURE_ENTRIES {
                return Err(std::io::Error::other(format!(
                    "working directory holds more than {MAX_CAPTURE_ENTRIES} entries"
                )));
            }
            entries.push(entry);
        }
    }
    // Parents first: a directory precedes what it holds.
    entries.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    Ok(CaptureList { entries, skipped })
}

/// Writes the working directory to `out` as a job frame (argv `capture` followed by the
/// paths left out), streaming file contents so memory stays small whatever the size.
/// More than `limit` bytes of contents: an error frame instead (argv `capture-failed`).
/// Runs in init when nothing else is left in the sandbox, so files do not change under it;
/// a file that cannot be opened is sent empty and named among the left-out paths.
pub fn write_capture(dir: &Path, limit: u64, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let fail = |out: &mut dyn std::io::Write, why: String| {
        out.write_all(
            &Job {
                argv: vec!["capture-failed".into(), why],
                ..Job::default()
            }
            .encode(),
        )
    };
    let list = match capture_list(dir) {
        Ok(l) => l,
        Err(e) => return fail(out, e.to_string()),
    };
    let total: u64 = list.entries.iter().map(|(_, n)| n).sum();
    if total > limit {
        return fail(
            out,
            format!("/work holds {total} bytes, more than the {limit} kept per sandbox"),
        );
    }
    // Files that cannot be opened now are announced empty, so the frame stays exact.
    let mut skipped = list.skipped;
    let mut opened = Vec::with_capacity(list.entries.len());
    let mut entries = Vec::with_capacity(list.entries.len());
    for (f, n) in list.entries {
        if f.kind == FileKind::File {
            match std::fs::File::open(dir.join(&f.path)) {
                Ok(file) => {
                    opened.push(Some((file, n)));
                    entries.push((f, n));
                }
                Err(_) => {
                    skipped.push(f.path.clone());
                    opened.push(None);
                    entries.push((f, 0));
                }
            }
        } else {
            opened.push(None);
            entries.push((f, n));
        }
    }
    let mut argv = vec!["capture".to_string()];
    argv.extend(skipped);
    let header = Header {
        job: Job {
            argv,
            files: entries
                .iter()
                .map(|(f, _)| JobFile {
                    path: f.path.clone(),
                    content: Vec::new(),
                    executable: f.executable,
                    kind: f.kind,
                })
                .collect(),
            ..Job::default()
        },
        stdin_len: 0,
        file_lens: entries.iter().map(|(_, n)| *n).collect(),
    };
    let h = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
    if h.len() > MAX_HEADER {
        return fail(
            out,
            format!(
                "the list of files is {} bytes, more than {MAX_HEADER}",
                h.len()
            ),
        );
    }
    out.write_all(&(h.len() as u32).to_le_bytes())?;
    out.write_all(&h)?;
    for ((f, _), file) in entries.iter().zip(opened) {
        match (f.kind, file) {
            (FileKind::Symlink, _) => out.write_all(&f.content)?,
            (FileKind::File, Some((file, n))) => {
                // Exactly n bytes, whatever the file holds now.
                let copied = std::io::copy(&mut std::io::Read::take(file, n), out)?;
                if copied < n {
                    std::io::copy(
                        &mut std::io::Read::take(std::io::repeat(0), n - copied),
                        out,
                    )?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_binary_blobs() {
        let job = Job {
            argv: vec!["python3".into(), "main.py".into()],
            env: vec![("A".into(), "b".into())],
            stdin: vec![0, 1, 2, 255],
            files: vec![
                JobFile {
                    path: "main.py".into(),
                    content: b"print(1)\n".to_vec(),
                    ..JobFile::default()
                },
                JobFile {
                    path: "d/x.bin".into(),
                    content: (0..=255u8).collect(),
                    executable: true,
                    ..JobFile::default()
                },
                JobFile {
                    path: "d/link".into(),
                    content: b"../main.py".to_vec(),
                    kind: FileKind::Symlink,
                    ..JobFile::default()
                },
            ],
            timeout_ms: Some(5),
            memory_limit_bytes: Some(1 << 20),
            cpu_seconds: Some(3),
            max_file_size: None,
            capture: true,
            capture_limit: Some(1 << 20),
        };
        let bytes = job.encode();
        let mut cur = std::io::Cursor::new(bytes);
        let back = Job::read_from(|b| std::io::Read::read_exact(&mut cur, b)).unwrap();
        assert_eq!(back, job);
    }

    #[test]
    fn capture_lists_parents_first_keeps_links_as_links_and_skips_fifos() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/f"), b"data").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", d.path().join("a/l")).unwrap();
        let fifo = std::ffi::CString::new(d.path().join("p").to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) };
        assert_eq!(rc, 0);
        let mut frame = Vec::new();
        write_capture(d.path(), 1 << 20, &mut frame).unwrap();
        let job = Job::decode(&frame).unwrap();
        assert_eq!(job.argv, ["capture"]);
        let got: Vec<(&str, FileKind, &[u8])> = job
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.kind, f.content.as_slice()))
            .collect();
        assert_eq!(
            got,
            [
                ("a", FileKind::Dir, &b""[..]),
                ("a/b", FileKind::Dir, b""),
                ("a/b/f", FileKind::File, b"data"),
                ("a/l", FileKind::Symlink, b"/etc/shadow"),
            ]
        );
        // Over the limit: an error frame, nothing streamed.
        let mut frame = Vec::new();
        write_capture(d.path(), 3, &mut frame).unwrap();
        assert_eq!(Job::decode(&frame).unwrap().argv[0], "capture-failed");
    }

    #[test]
    fn refuses_paths_that_leave_the_working_directory() {
        for p in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a\0b",
            "dir/",
            "a/..",
        ] {
            assert!(check_relative_path(p).is_err(), "{p:?} accepted");
        }
        for p in ["main.py", "a/b/c.txt", "./x", ".hidden", "a..b"] {
            assert!(check_relative_path(p).is_ok(), "{p:?} refused");
        }
    }

    #[test]
    fn refuses_truncated_and_oversized_frames() {
        let job = Job {
            argv: vec!["true".into()],
            stdin: b"abc".to_vec(),
            ..Job::default()
        };
        let bytes = job.encode();
        let mut cur = std::io::Cursor::new(bytes[..bytes.len() - 1].to_vec());
        assert!(Job::read_from(|b| std::io::Read::read_exact(&mut cur, b)).is_err());
        let mut huge = (u32::MAX).to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        let mut cur = std::io::Cursor::new(huge);
        assert!(Job::read_from(|b| std::io::Read::read_exact(&mut cur, b)).is_err());
    }
}
