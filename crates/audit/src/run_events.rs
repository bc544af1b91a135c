//! The audit events one `ironcage run` emits, chosen by the policy's `audit.detail_level`:
//!
//! | event               | when                                   | detail level |
//! |---------------------|----------------------------------------|--------------|
//! | `run.start`         | before the sandbox starts (durable)    | always       |
//! | `run.refused`       | the policy cannot be enforced here     | always       |
//! | `run.end`           | after it ends: outcome, violation counts | always     |
//! | `violation.syscall` | one per denied system call             | `syscall`    |
//! | `violation.filesystem` | one per refused write               | `filesystem` |
//! | `violation.network` | one per refused connect/bind           | `network`    |
//! | `run.resources`     | CPU, peak memory, limits hit           | `resource`   |
//!
//! `filesystem` also adds the bind list to `run.start`, `process` the working directory and
//! the names (never the values) of the environment variables. Command lines are scrubbed
//! (`--token X` and credential-shaped words), like every string of every entry.

use crate::entry::Event;
use ironcage_policy::DetailLevel;
use ironcage_policy::Policy;
use ironcage_sandbox::report::{RunReport, Violation};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A fresh run id: 24 hex digits, random.
pub fn new_run_id() -> String {
    let mut b = [0u8; 12];
    let _ = getrandom::fill(&mut b);
    crate::note::hex(&b)
}

/// SHA-256 of the policy's canonical JSON: which exact policy a run was under.
pub fn policy_digest(policy: &Policy) -> String {
    let v = serde_json::to_value(policy).unwrap_or(Value::Null);
    crate::note::hex(&Sha256::digest(crate::canonical::to_vec(&v)))
}

pub struct StartInfo<'a> {
    pub run_id: &'a str,
    pub policy: &'a Policy,
    pub argv: &'a [String],
    pub host_uid: u32,
    pub sandbox_uid: u32,
    pub rootless: bool,
    pub best_effort: bool,
    pub unenforced: Vec<String>,
    pub floor_lifted: &'a [String],
    /// (host path, sandbox path, writable)
    pub binds: Vec<(String, String, bool)>,
    pub cwd: String,
    pub env_names: Vec<String>,
}

fn argv(argv: &[String], counts: &mut crate::scrub::Counts) -> Value {
    json!(crate::scrub::scrub_argv(argv, counts))
}

pub fn run_start(s: &StartInfo<'_>) -> Event {
    let levels = &s.policy.audit.detail_level;
    let mut counts = crate::scrub::Counts::new();
    let mut f = json!({
        "policy": s.policy.name,
        "policy_sha256": policy_digest(s.policy),
        "command": argv(s.argv, &mut counts),
        "host_uid": s.host_uid,
        "sandbox_uid": s.sandbox_uid,
        "rootless": s.rootless,
        "best_effort": s.best_effort,
        "unenforced": s.unenforced,
        "floor_lifted": s.floor_lifted,
        "detail_level": levels,
    });
    if levels.contains(&DetailLevel::Filesystem) {
        f["binds"] = s
            .binds
            .iter()
            .map(|(h, t, w)| json!({"host": h, "sandbox": t, "writable": w}))
            .collect();
    }
    if levels.contains(&DetailLevel::Process) {
        f["cwd"] = json!(s.cwd);
        f["env_names"] = json!(s.env_names);
    }
    let mut ev = Event::new("run.start", Some(s.run_id), f);
    ev.redacted = counts;
    ev
}

pub fn run_refused(run_id: &str, policy: &Policy, command: &[String], reason: &str) -> Event {
    let mut counts = crate::scrub::Counts::new();
    let command = argv(command, &mut counts);
    let mut ev = Event::new(
        "run.refused",
        Some(run_id),
        json!({
            "policy": policy.name,
            "policy_sha256": policy_digest(policy),
            "command": command,
            "reason": reason,
        }),
    );
    ev.redacted = counts;
    ev
}

/// A run that failed to set up (no report): its end.
pub fn run_failed(run_id: &str, error: &str, ironcage_exit_code: i32) -> Event {
    Event::new(
        "run.end",
        Some(run_id),
        json!({"outcome": "setup_failed", "error": error, "ironcage_exit_code": ironcage_exit_code}),
    )
}

fn us(ms: f64) -> u64 {
    (ms * 1000.0).round().max(0.0) as u64
}

/// `run.end` and the detail events for a finished run, in one batch.
pub fn run_end(report: &RunReport, levels: &[DetailLevel]) -> Vec<Event> {
    let id = Some(report.run_id.as_str());
    let (mut sys, mut fs, mut net) = (0u64, 0u64, 0u64);
    let mut details = Vec::new();
    for v in &report.violations {
        match v {
            Violation::Syscall {
                syscall,
                nr,
                count,
                floor,
            } => {
                sys += count;
                if levels.contains(&DetailLevel::Syscall) {
                    details.push(Event::new(
                        "violation.syscall",
                        id,
                        json!({"syscall": syscall, "nr": nr, "count": count, "floor": floor}),
                    ));
                }
            }
            Violation::Path {
                syscall,
                path,
                count,
                reason,
            } => {
                fs += count;
                if levels.contains(&DetailLevel::Filesystem) {
                    details.push(Event::new(
                        "violation.filesystem",
                        id,
                        json!({"syscall": syscall, "path": path, "count": count, "reason": reason}),
                    ));
                }
            }
            Violation::Network {
                syscall,
                address,
                port,
                count,
                reason,
            } => {
                net += count;
                if levels.contains(&DetailLevel::Network) {
                    details.push(Event::new(
                        "violation.network",
                        id,
                        json!({"syscall": syscall, "address": address, "port": port, "count": count, "reason": reason}),
                    ));
                }
            }
        }
    }
    let mut events = vec![Event::new(
        "run.end",
        id,
        json!({
            "outcome": report.outcome,
            "exit_code": report.exit_code,
            "signal": report.signal,
            "ironcage_exit_code": report.ironcage_exit_code,
            "error": report.error,
            "wall_time_us": us(report.wall_time_ms),
            "violations": {"syscall": sys, "filesystem": fs, "network": net, "not_listed": report.violations_not_listed},
        }),
    )];
    events.extend(details);
    if levels.contains(&DetailLevel::Resource) {
        let l = &report.limits;
        events.push(Event::new(
            "run.resources",
            id,
            json!({
                "cpu_user_us": us(report.cpu_user_ms),
                "cpu_system_us": us(report.cpu_system_ms),
                "peak_memory_bytes": report.peak_memory_bytes,
                "memory_limit_bytes": l.memory.limit,
                "oom_kills": l.oom_kills,
                "pids_limit": l.pids.limit,
                "pids_refused_forks": l.pids_refused_forks,
                "cpu_quota_us_per_100ms": l.cpu_quota_us_per_100ms,
                "cpu_throttled_periods": l.cpu_throttled_periods,
                "timeout_s": l.timeout.limit,
                "timed_out": l.timeout.hit,
                "file_size_limit_hit": l.file_size.hit,
                "cgroup_version": report.cgroup_version,
            }),
        ));
    }
    events
}
