//! One execution: the request as the API takes it, the job it becomes, running the job on
//! a pooled sandbox while capturing (and optionally streaming) its output, and the result.

use crate::config::{Config, Language};
use crate::host::HostMessage;
use crate::pool::Warm;
use base64::Engine;
use ironcage_sandbox::job::{check_relative_path, Job, JobFile};
use ironcage_sandbox::report::{Outcome, Violation};
use ironcage_sandbox::RunReport;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedSender;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionRequest {
    pub language: String,
    pub code: String,
    #[serde(default)]
    pub stdin: Option<String>,
    #[serde(default)]
    pub files: Vec<FileSpec>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Bytes, or a size such as "128M".
    #[serde(default)]
    pub memory_limit: Option<MemoryLimit>,
    #[serde(default)]
    pub cpu_seconds: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MemoryLimit {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub path: String,
    pub content: String,
    /// "utf8" (default) or "base64".
    #[serde(default)]
    pub encoding: Option<String>,
    #[serde(default)]
    pub executable: bool,
}

/// A request the API refuses with 400, naming the field.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A name that is not among the available ones: the error lists them.
pub fn unknown<'a>(
    field: &str,
    name: &str,
    available: impl IntoIterator<Item = &'a String>,
) -> Invalid {
    let names: Vec<&str> = available.into_iter().map(String::as_str).collect();
    invalid(
        field,
        format!("unknown {field} {name:?}; available: {}", names.join(", ")),
    )
}

/// Files one request may bring.
pub const MAX_FILES: usize = 10_000;

/// Checks requested limits against the server's defaults and maxima:
/// (timeout ms, memory bytes, CPU seconds).
pub fn limits(
    cfg: &Config,
    timeout_ms: Option<u64>,
    memory_limit: Option<MemoryLimit>,
    cpu_seconds: Option<u64>,
) -> Result<(u64, u64, u64), Invalid> {
    let l = &cfg.limits;
    let limit = |field: &str, asked: Option<u64>, default: u64, max: u64| match asked {
        None => Ok(default),
        Some(0) => Err(invalid(field, "must be above 0")),
        Some(v) if v > max => Err(invalid(
            field,
            format!("{v} is above this server's maximum of {max}"),
        )),
        Some(v) => Ok(v),
    };
    let timeout_ms = limit(
        "timeout_ms",
        timeout_ms,
        l.default_timeout_ms,
        l.max_timeout_ms,
    )?;
    let memory = match memory_limit {
        None => None,
        Some(MemoryLimit::Bytes(b)) => Some(b),
        Some(MemoryLimit::Text(t)) => {
            Some(ironcage_policy::units::parse_size(&t).map_err(|e| invalid("memory_limit", e))?)
        }
    };
    let memory = limit(
        "memory_limit",
        memory,
        l.default_memory_bytes,
        l.max_memory_bytes,
    )?;
    if memory < 4 << 20 {
        return Err(invalid("memory_limit", "must be at least 4M"));
    }
    let cpu = limit(
        "cpu_seconds",
        cpu_seconds,
        l.default_cpu_seconds,
        l.max_cpu_seconds,
    )?;
    Ok((timeout_ms, memory, cpu))
}

/// Environment variables from a request, checked.
pub fn env_of(
    env: BTreeMap<String, String>,
    field: &str,
) -> Result<Vec<(String, String)>, Invalid> {
    env.into_iter()
        .map(|(k, v)| {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                Err(invalid(
                    format!("{field}.{k}"),
                    "bad variable name or NUL in value",
                ))
            } else {
                Ok((k, v))
            }
        })
        .collect()
}

/// The job and the facts recorded with it.
#[derive(Debug)]
pub struct Planned {
    pub job: Job,
    pub profile: String,
    pub language: String,
    pub timeout_ms: u64,
}

/// Checks a request against the server's configuration and makes its job.
pub fn plan(
    req: ExecutionRequest,
    cfg: &Config,
    languages: &BTreeMap<String, Language>,
    profiles: &[String],
) -> Result<Planned, Invalid> {
    let Some(lang) = languages.get(&req.language) else {
        return Err(unknown("language", &req.language, languages.keys()));
    };
    let profile = req.profile.unwrap_or_else(|| cfg.default_profile.clone());
    if !profiles.contains(&profile) {
        return Err(unknown("profile", &profile, profiles));
    }
    let (timeout_ms, memory, cpu) = limits(cfg, req.timeout_ms, req.memory_limit, req.cpu_seconds)?;
    let l = &cfg.limits;

    if req.files.len() > MAX_FILES {
        return Err(invalid(
            "files",
            format!("{} files; at most {MAX_FILES}", req.files.len()),
        ));
    }
    let mut files = Vec::with_capacity(req.files.len() + 1);
    let mut seen = std::collections::HashSet::with_capacity(req.files.len() + 1);
    seen.insert(lang.file.clone());
    for (i, f) in req.files.into_iter().enumerate() {
        let field = format!("files[{i}]");
        check_relative_path(&f.path)
            .map_err(|e| invalid(format!("{field}.path"), e.to_string()))?;
        if !seen.insert(f.path.clone()) {
            return Err(invalid(
                format!("{field}.path"),
                format!(
                    "{:?} is given twice (the code itself goes to {:?})",
                    f.path, lang.file
                ),
            ));
        }
        let content = match f.encoding.as_deref() {
            None | Some("utf8") | Some("utf-8") => f.content.into_bytes(),
            Some("base64") => base64::engine::general_purpose::STANDARD
                .decode(f.content.as_bytes())
                .map_err(|e| invalid(format!("{field}.content"), format!("not base64: {e}")))?,
            Some(other) => {
                return Err(invalid(
                    format!("{field}.encoding"),
                    format!("{other:?}: use \"utf8\" or \"base64\""),
                ))
            }
        };
        files.push(JobFile {
            path: f.path,
            content,
            executable: f.executable,
            ..JobFile::default()
        });
    }
    files.push(JobFile {
        path: lang.file.clone(),
        content: req.code.into_bytes(),
        ..JobFile::default()
    });
    let argv = lang.argv(req.args);
    let env = env_of(req.env, "env")?;
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(invalid("args", "contains NUL"));
    }
    let job = Job {
        argv,
        env,
        stdin: req.stdin.unwrap_or_default().into_bytes(),
        files,
        timeout_ms: Some(timeout_ms),
        memory_limit_bytes: Some(memory),
        cpu_seconds: Some(cpu),
        max_file_size: Some(l.max_file_size),
        capture: false,
        capture_limit: None,
    };
    Ok(Planned {
        job,
        profile,
        language: req.language,
        timeout_ms,
    })
}

/// What the API returns for an execution.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExecutionResult {
    pub id: String,
    /// running, completed (the program ran; see exit_code, timed_out, oom_killed), or
    /// failed (the sandbox could not run it, or the server stopped meanwhile).
    pub status: String,
    pub language: String,
    pub profile: String,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Bytes written beyond the limit and dropped.
    pub stdout_dropped_bytes: u64,
    pub stderr_dropped_bytes: u64,
    pub timed_out: bool,
    pub oom_killed: bool,
    pub duration_ms: f64,
    pub cpu_ms: f64,
    pub memory_peak_bytes: Option<u64>,
    pub violations: Vec<Violation>,
    pub error: Option<String>,
    pub created_at_ms: i64,
}

/// A piece of output, for streaming.
#[derive(Debug, Clone)]
pub enum Chunk {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

#[derive(Debug, Default)]
pub struct Captured {
    pub kept: Vec<u8>,
    pub dropped: u64,
}

/// Reads a pipe to its end, keeping the first `limit` bytes and counting the rest: the
/// program is never blocked on a full pipe, however much it prints.
async fn capture(
    mut r: impl AsyncRead + Unpin,
    limit: usize,
    sink: Option<&UnboundedSender<Chunk>>,
    wrap: fn(Vec<u8>) -> Chunk,
) -> Captured {
    let mut c = Captured::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let room = limit.saturating_sub(c.kept.len());
        let keep = n.min(room);
        if keep > 0 {
            c.kept.extend_from_slice(&buf[..keep]);
            if let Some(s) = sink {
                let _ = s.send(wrap(buf[..keep].to_vec()));
            }
        }
        c.dropped += (n - keep) as u64;
    }
    c
}

/// What running a job produced.
pub struct Ran {
    pub report: Result<RunReport, String>,
    pub stdout: Captured,
    pub stderr: Captured,
    /// The working directory after the job, when it asked for it (`Job::capture`); `None`
    /// when the sandbox ended without one (killed at its timeout).
    pub capture: Option<Result<Capture, String>>,
}

/// A working directory read back from a sandbox.
#[derive(Debug)]
pub struct Capture {
    pub files: Vec<JobFile>,
    /// Entries that could not be read (permissions, names that are not UTF-8).
    pub skipped: Vec<String>,
}

impl Ran {
    pub fn failed(error: String) -> Ran {
        Ran {
            report: Err(error),
            stdout: Captured::default(),
            stderr: Captured::default(),
            capture: None,
        }
    }
}

/// Reads the capture a host forwards after its report: a `{"capture":true}` line, then a
/// job frame whose files are the working directory. The frame's size is checked against
/// `limit` before anything is allocated for it.
async fn read_capture(
    r: &mut (impl tokio::io::AsyncBufRead + Unpin),
    limit: u64,
) -> Option<Result<Capture, String>> {
    let mut line = String::new();
    match r.read_line(&mut line).await {
        Ok(n) if n > 0 && line == "{\"capture\":true}\n" => {}
        _ => return None,
    }
    let frame = async {
        let mut len = [0u8; 4];
        r.read_exact(&mut len).await?;
        let hlen = u32::from_le_bytes(len) as usize;
        if hlen > ironcage_sandbox::job::MAX_HEADER {
            return Err(std::io::Error::other("the list of files is too large"));
        }
        let mut bytes = len.to_vec();
        bytes.resize(4 + hlen, 0);
        r.read_exact(&mut bytes[4..]).await?;
        let blobs = ironcage_sandbox::job::blob_len(&bytes[4..]).map_err(std::io::Error::other)?;
        if blobs > limit {
            return Err(std::io::Error::other(format!(
                "/work holds {blobs} bytes, more than the {limit} kept per sandbox"
            )));
        }
        let start = bytes.len();
        bytes.resize(start + blobs as usize, 0);
        r.read_exact(&mut bytes[start..]).await?;
        Ok::<_, std::io::Error>(bytes)
    };
    Some(match frame.await {
        Err(e) => Err(e.to_string()),
        Ok(bytes) => match Job::decode(&bytes) {
            Ok(j) if j.argv.first().map(String::as_str) == Some("capture") => Ok(Capture {
                skipped: j.argv[1..].to_vec(),
                files: j.files,
            }),
            Ok(j) => Err(j.argv.get(1).cloned().unwrap_or_default()),
            Err(e) => Err(format!("reading the working directory: {e}")),
        },
    })
}

/// Sends the job to a ready sandbox and waits for everything: its report and the end of
/// both output streams. If the host outlives `timeout` by a wide margin it is killed (the
/// sandbox dies with it: init has the parent-death signal).
pub async fn run(
    mut warm: Warm,
    job: &Job,
    timeout: Duration,
    output_limit: usize,
    sink: Option<UnboundedSender<Chunk>>,
) -> Ran {
    let frame = job.encode();
    let send = async {
        warm.ctl_write.write_all(&frame).await?;
        warm.ctl_write.flush().await
    };
    if let Err(e) = send.await {
        warm.host.kill();
        return Ran::failed(format!("the sandbox went away before its job: {e}"));
    }
    let wants_capture = job.capture;
    let capture_limit = job
        .capture_limit
        .unwrap_or(ironcage_sandbox::job::MAX_JOB as u64);
    let out = capture(&mut warm.stdout, output_limit, sink.as_ref(), Chunk::Stdout);
    let err = capture(&mut warm.stderr, output_limit, sink.as_ref(), Chunk::Stderr);
    let ctl = &mut warm.ctl_read;
    let report = async {
        let mut line = String::new();
        let report = match ctl.read_line(&mut line).await {
            Ok(0) => Err("the sandbox host exited without a report".to_string()),
            Ok(_) => match serde_json::from_str::<HostMessage>(&line) {
                Ok(HostMessage::Report(r)) => Ok(*r),
                Ok(HostMessage::Error(e)) => Err(e),
                Err(e) => Err(format!("unreadable report from the sandbox host: {e}")),
            },
            Err(e) => Err(format!("reading the sandbox host's report: {e}")),
        };
        let capture = match (&report, wants_capture) {
            (Ok(_), true) => read_capture(ctl, capture_limit).await,
            _ => None,
        };
        (report, capture)
    };
    let all = async { tokio::join!(report, out, err) };
    let grace = timeout + Duration::from_secs(15);
    let ran = match tokio::time::timeout(grace, all).await {
        Ok(((report, capture), stdout, stderr)) => Ran {
            report,
            stdout,
            stderr,
            capture,
        },
        Err(_) => {
            warm.host.kill();
            Ran::failed("the sandbox host did not finish in time and was killed".into())
        }
    };
    // The host sent its report before cleaning up (cgroup removal, init's teardown): it
    // is not waited for (the zygote's children are reaped by the kernel).
    drop(warm.host);
    ran
}

/// The API's result from what ran.
pub fn result_of(
    id: &str,
    planned: &Planned,
    created_at_ms: i64,
    ran: Ran,
    output_limit: usize,
) -> ExecutionResult {
    let text = |c: &Captured| String::from_utf8_lossy(&c.kept).into_owned();
    let truncated = |c: &Captured| c.dropped > 0 || c.kept.len() > output_limit;
    let mut r = ExecutionResult {
        id: id.to_string(),
        status: "failed".into(),
        language: planned.language.clone(),
        profile: planned.profile.clone(),
        exit_code: None,
        signal: None,
        stdout: text(&ran.stdout),
        stderr: text(&ran.stderr),
        stdout_truncated: truncated(&ran.stdout),
        stderr_truncated: truncated(&ran.stderr),
        stdout_dropped_bytes: ran.stdout.dropped,
        stderr_dropped_bytes: ran.stderr.dropped,
        timed_out: false,
        oom_killed: false,
        duration_ms: 0.0,
        cpu_ms: 0.0,
        memory_peak_bytes: None,
        violations: Vec::new(),
        error: None,
        created_at_ms,
    };
    match ran.report {
        Err(e) => r.error = Some(e),
        Ok(rep) => {
            r.status = match rep.outcome {
                Outcome::SetupFailed => "failed",
                _ => "completed",
            }
            .into();
            r.exit_code = rep.exit_code;
            r.signal = rep.signal;
            r.timed_out = rep.outcome == Outcome::Timeout;
            r.oom_killed = rep.outcome == Outcome::OutOfMemory;
            r.duration_ms = rep.wall_time_ms;
            r.cpu_ms = ((rep.cpu_user_ms + rep.cpu_system_ms) * 1000.0).round() / 1000.0;
            r.memory_peak_bytes = rep.peak_memory_bytes;
            r.violations = rep.violations;
            r.error = rep.error;
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> ExecutionRequest {
        serde_json::from_str(json).unwrap()
    }

    fn cfg() -> (Config, BTreeMap<String, Language>, Vec<String>) {
        let c = Config::default();
        let l = c.languages();
        (c, l, vec!["ai-strict".into()])
    }

    #[test]
    fn a_request_becomes_a_job_with_the_servers_defaults() {
        let (c, l, p) = cfg();
        let r = req(
            r#"{"language":"python","code":"print(1)","args":["a"],"stdin":"x",
            "files":[{"path":"d/data.bin","content":"AAE=","encoding":"base64"}]}"#,
        );
        let planned = plan(r, &c, &l, &p).unwrap();
        let j = &planned.job;
        assert_eq!(j.argv, ["/usr/bin/python3", "main.py", "a"]);
        assert_eq!(j.stdin, b"x");
        assert_eq!(j.files[0].content, [0, 1]);
        assert_eq!(j.files[1].path, "main.py");
        assert_eq!(j.timeout_ms, Some(30_000));
        assert_eq!(j.memory_limit_bytes, Some(256 << 20));
        assert_eq!(j.cpu_seconds, Some(30));
        assert_eq!(j.max_file_size, Some(10 << 20));
    }

    #[test]
    fn limits_may_be_lowered_and_raised_only_to_the_maxima() {
        let (c, l, p) = cfg();
        let ok = plan(
            req(r#"{"language":"bash","code":"","timeout_ms":500,"memory_limit":"64M"}"#),
            &c,
            &l,
            &p,
        )
        .unwrap();
        assert_eq!(ok.job.timeout_ms, Some(500));
        assert_eq!(ok.job.memory_limit_bytes, Some(64 << 20));
        for (body, field) in [
            (
                r#"{"language":"bash","code":"","timeout_ms":999999999}"#,
                "timeout_ms",
            ),
            (
                r#"{"language":"bash","code":"","memory_limit":"64G"}"#,
                "memory_limit",
            ),
            (
                r#"{"language":"bash","code":"","cpu_seconds":0}"#,
                "cpu_seconds",
            ),
            (r#"{"language":"cobol","code":""}"#, "language"),
            (
                r#"{"language":"bash","code":"","profile":"nope"}"#,
                "profile",
            ),
        ] {
            let e = plan(req(body), &c, &l, &p).unwrap_err();
            assert_eq!(e.field, field, "{body}: {e}");
        }
        let e = plan(req(r#"{"language":"cobol","code":""}"#), &c, &l, &p).unwrap_err();
        assert!(
            e.message.contains("python") && e.message.contains("bash"),
            "{e}"
        );
    }

    #[test]
    fn file_paths_that_escape_are_refused() {
        let (c, l, p) = cfg();
        for path in ["../x", "/etc/passwd", "a/../../b", "a\u{0}b", "main.py"] {
            let body = serde_json::json!({"language":"python","code":"",
                "files":[{"path": path, "content": "x"}]});
            let e = plan(serde_json::from_value(body).unwrap(), &c, &l, &p).unwrap_err();
            assert_eq!(e.field, "files[0].path", "{path:?}: {e}");
        }
    }
}
