//! Audit events: the one place where their shape is defined, and the append-only JSON-lines
//! sink they go to. (A tamper-evident log replaces the sink later; the event type stays.)

#![forbid(unsafe_code)]

use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit log {}: cannot append: {source}", path.display())]
    Append {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One audit event. `kind` says what happened; `detail` is the kind-specific body
/// (for "run", the run report).
#[derive(Debug, Clone, Serialize)]
pub struct Event<T: Serialize> {
    pub version: u32,
    pub kind: &'static str,
    pub time_unix_ms: u128,
    pub host_uid: u32,
    pub detail: T,
}

pub const EVENT_VERSION: u32 = 1;
pub const KIND_RUN: &str = "run";

/// An open append-only log. Opened before the run starts, so a run whose audit record
/// could not be written never happens.
pub struct Log {
    file: File,
    path: PathBuf,
}

impl Log {
    pub fn open(path: &Path) -> Result<Log, AuditError> {
        let err = |source| AuditError::Open {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| AuditError::Open {
                path: path.to_path_buf(),
                source: e,
            })?;
        Ok(Log {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Wraps a file the caller opened for appending (e.g. without following symlinks).
    pub fn from_file(file: File, path: &Path) -> Log {
        Log {
            file,
            path: path.to_path_buf(),
        }
    }

    /// Appends one event as a single line with a single write(2), so concurrent writers
    /// never interleave inside a record and a crash never leaves half a line.
    pub fn append<T: Serialize>(&mut self, event: &Event<T>) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(event).map_err(|e| AuditError::Append {
            path: self.path.clone(),
            source: e.into(),
        })?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(|source| AuditError::Append {
                path: self.path.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_one_line_per_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit.log");
        let mut log = Log::open(&path).unwrap();
        for i in 0..3 {
            log.append(&Event {
                version: EVENT_VERSION,
                kind: KIND_RUN,
                time_unix_ms: i,
                host_uid: 0,
                detail: serde_json::json!({"n": i}),
            })
            .unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["detail"]["n"], 2);
        assert_eq!(lines[0]["kind"], "run");
    }
}
