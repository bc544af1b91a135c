//! The run report: everything a user needs to know about one run, as JSON. Built by the
//! supervisor from what the kernel measured; never from what the sandbox says about itself,
//! except the workload's exit status, which init relays.

use crate::plan::Unenforced;
use serde::{Deserialize, Serialize};

/// Documented exit codes of `ironcage run` (besides the command's own 0-255 and 128+N).
pub mod exit_code {
    /// Bad usage or an invalid policy file.
    pub const USAGE: i32 = 2;
    /// Denied by policy: the host cannot enforce the policy (without --best-effort), or the
    /// policy denies executing the command.
    pub const DENIED: i32 = 120;
    /// Killed: session timeout reached.
    pub const TIMEOUT: i32 = 121;
    /// Killed: out of memory (the memory limit).
    pub const MEMORY: i32 = 122;
    /// The sandbox could not be set up.
    pub const SETUP_FAILED: i32 = 125;
    /// The command exists but could not be executed.
    pub const NOT_EXECUTABLE: i32 = 126;
    /// The command was not found inside the sandbox.
    pub const NOT_FOUND: i32 = 127;
}

pub const REPORT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Exited,
    Signaled,
    Timeout,
    OutOfMemory,
    ExecFailed,
    SetupFailed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LimitHit {
    pub limit: Option<u64>,
    pub hit: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Limits {
    pub memory: LimitHit,
    pub oom_kills: u64,
    pub pids: LimitHit,
    pub pids_refused_forks: u64,
    pub cpu_quota_us_per_100ms: Option<u64>,
    pub cpu_throttled_periods: Option<u64>,
    pub timeout: LimitHit,
    pub file_size: LimitHit,
    pub open_files: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    /// A system call the policy denies; it failed with EPERM.
    Syscall {
        syscall: String,
        nr: i32,
        count: u64,
        floor: bool,
    },
    /// A write (open for writing, creat, mkdir) aimed outside every scratch and output path;
    /// the kernel failed it (EROFS, EACCES or ENOENT). Observed like network attempts.
    Path {
        syscall: String,
        path: String,
        count: u64,
        reason: String,
    },
    /// A connect or bind the network rules refuse (it failed: network namespace or
    /// Landlock). Observed by inspecting the call's arguments before it ran.
    Network {
        syscall: String,
        address: String,
        port: u16,
        count: u64,
        reason: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// Bumped when a field changes meaning or disappears (adding fields does not bump it).
    pub report_version: u32,
    /// The run's id, as in the audit log (`ironcage audit export --run ID`).
    pub run_id: String,
    pub policy: String,
    pub command: Vec<String>,
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    /// What `ironcage run` itself exits with.
    pub ironcage_exit_code: i32,
    pub error: Option<String>,
    pub wall_time_ms: f64,
    pub cpu_user_ms: f64,
    pub cpu_system_ms: f64,
    pub peak_memory_bytes: Option<u64>,
    pub limits: Limits,
    pub violations: Vec<Violation>,
    /// Path and network attempts beyond the 256 distinct entries kept per kind.
    pub violations_not_listed: u64,
    /// Mechanisms the policy asked for that were not enforced (only with --best-effort).
    pub unenforced: Vec<Unenforced>,
    /// Floor entries the policy lifted with unsafe_lift_floor.
    pub floor_lifted: Vec<String>,
    pub sandbox_uid: u32,
    pub cgroup_version: Option<u8>,
    pub landlock_abi: i32,
    pub started_at_unix_ms: u128,
    /// The LLM gateway's account of the run (requests by decision, tokens, cost, budget),
    /// when the policy enables it. Filled in by the caller that hosted the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<serde_json::Value>,
}
