//! The policy document: the seed format ("Creating Custom Policies") plus Iron Cage's
//! documented additions (docs/policy.md). Every struct rejects unknown fields, and every
//! value type validates itself while parsing so errors carry a line and column.

use crate::syscalls::Syscall;
use crate::units::{Port, Rate, Size};
use serde::{de, Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub filesystem: Filesystem,
    #[serde(default)]
    pub syscalls: Syscalls,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub capabilities: Capabilities,
    #[serde(default)]
    pub network: Network,
    /// Addition: the LLM gateway for this sandbox.
    #[serde(default)]
    pub llm: Llm,
    #[serde(default)]
    pub audit: Audit,
    /// Addition: which host environment variables reach the sandbox.
    #[serde(default)]
    pub environment: Environment,
    /// Addition: what to do when the host cannot enforce part of the policy.
    #[serde(default)]
    pub enforcement: Enforcement,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Filesystem {
    #[serde(default)]
    pub immutable_paths: Vec<Bind>,
    #[serde(default)]
    pub scratch_paths: Vec<SandboxPath>,
    #[serde(default)]
    pub output_paths: Vec<Bind>,
    #[serde(default)]
    pub working_dir: Option<SandboxPath>,
    /// Addition: size of each scratch tmpfs (default 256M).
    #[serde(default = "default_scratch_size")]
    pub scratch_size: Size,
}

impl Default for Filesystem {
    fn default() -> Self {
        Filesystem {
            immutable_paths: Vec::new(),
            scratch_paths: Vec::new(),
            output_paths: Vec::new(),
            working_dir: None,
            scratch_size: default_scratch_size(),
        }
    }
}

fn default_scratch_size() -> Size {
    Size(256 << 20)
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Bind {
    pub host_path: PathBuf,
    pub sandbox_path: SandboxPath,
    /// Addition: skip the bind instead of failing when host_path does not exist
    /// (lets one profile serve hosts with and without, say, /lib64).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

/// An absolute path inside the sandbox, normalised, without `..`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SandboxPath(pub PathBuf);

impl<'de> Deserialize<'de> for SandboxPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        sandbox_path(&text)
            .map(SandboxPath)
            .map_err(de::Error::custom)
    }
}

fn sandbox_path(text: &str) -> Result<PathBuf, String> {
    if text.contains('\0') {
        return Err("a path must not contain a NUL byte".into());
    }
    if !text.starts_with('/') {
        return Err(format!("sandbox path `{text}` must be absolute"));
    }
    let mut out = PathBuf::from("/");
    for part in text.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." {
            return Err(format!("sandbox path `{text}` must not contain `..`"));
        }
        out.push(part);
    }
    Ok(out)
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Syscalls {
    /// Allow-list mode unless the policy says otherwise, whether or not the section exists.
    #[serde(default = "yes")]
    pub default_deny: bool,
    #[serde(default)]
    pub allow: Vec<Syscall>,
    #[serde(default)]
    pub deny: Vec<Syscall>,
    /// Addition: in allow-list mode, also allow the runtime baseline (see `syscalls::BASELINE`).
    #[serde(default = "yes")]
    pub baseline: bool,
    /// Addition, deliberately loud: floor entries this policy lifts. Every run prints a
    /// warning and the report records it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsafe_lift_floor: Vec<Syscall>,
}

impl Default for Syscalls {
    fn default() -> Self {
        Syscalls {
            default_deny: true,
            allow: Vec::new(),
            deny: Vec::new(),
            baseline: true,
            unsafe_lift_floor: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Fraction of one CPU, e.g. 0.5 (enforced as a CFS quota).
    #[serde(default)]
    pub cpu_shares: Option<f64>,
    #[serde(default)]
    pub memory_limit_bytes: Option<Size>,
    #[serde(default)]
    pub pids_limit: Option<u32>,
    /// Read and write bandwidth per block device.
    #[serde(default)]
    pub block_io_limit: Option<Rate>,
    #[serde(default)]
    pub session_timeout_seconds: Option<u64>,
    /// Addition: RLIMIT_FSIZE (default 1G).
    #[serde(default)]
    pub max_file_size: Option<Size>,
    /// Addition: RLIMIT_NOFILE (default 1024).
    #[serde(default)]
    pub max_open_files: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    #[serde(default = "yes")]
    pub default_drop: bool,
    #[serde(default)]
    pub add: Vec<Capability>,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            default_drop: true,
            add: Vec::new(),
        }
    }
}

/// A capability name such as CAP_NET_BIND_SERVICE, with its number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub struct Capability {
    pub name: String,
    pub index: u8,
}

impl From<Capability> for String {
    fn from(c: Capability) -> String {
        c.name
    }
}

/// Capability names in kernel order (index = capability number).
pub const CAPABILITY_NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Capabilities a policy may add. Each only has meaning inside the sandbox's own
/// namespaces; the rest (SYS_ADMIN, SYS_PTRACE, ...) would undo the isolation.
pub const ADDABLE_CAPABILITIES: &[&str] = &[
    "CAP_NET_BIND_SERVICE",
    "CAP_CHOWN",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_DAC_OVERRIDE",
    "CAP_SETUID",
    "CAP_SETGID",
    "CAP_KILL",
];

impl<'de> Deserialize<'de> for Capability {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let name = raw.trim().to_ascii_uppercase();
        let name = if name.starts_with("CAP_") {
            name
        } else {
            format!("CAP_{name}")
        };
        let index = CAPABILITY_NAMES
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| de::Error::custom(format!("unknown capability `{raw}`")))?;
        if !ADDABLE_CAPABILITIES.contains(&name.as_str()) {
            return Err(de::Error::custom(format!(
                "capability `{name}` cannot be granted to a sandbox (it would undo the \
                 isolation); grantable: {}",
                ADDABLE_CAPABILITIES.join(", ")
            )));
        }
        Ok(Capability {
            name,
            index: index as u8,
        })
    }
}

/// How the sandbox reaches the network. The seed's `isolated: true|false` still works;
/// `mode` is the addition that also names the egress proxy.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// Own network namespace with loopback only (`isolated: true`).
    Isolated,
    /// The host's network, TCP ports limited by Landlock (`isolated: false`).
    Host,
    /// Own network namespace with loopback only, plus a listener inside that reaches Iron
    /// Cage's egress proxy on the host: HTTP(S) to `allow_domains`, nothing else.
    Proxy,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(try_from = "RawNetwork")]
pub struct Network {
    /// True in modes `isolated` and `proxy` (the sandbox has its own network namespace).
    pub isolated: bool,
    pub mode: NetworkMode,
    /// TCP ports the sandbox may connect to (only when not isolated).
    pub allow_outgoing: Vec<Port>,
    /// TCP ports the sandbox may bind and listen on.
    pub allow_incoming: Vec<Port>,
    /// Addition: allow UDP sockets on the host network. Landlock cannot filter UDP by
    /// port, so this is all-or-nothing and off by default.
    pub allow_udp: bool,
    /// Mode `proxy`: domains the proxy lets through (`example.com`, `*.example.com`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_domains: Vec<String>,
    /// Mode `proxy`: domains refused even when an allow entry matches.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny_domains: Vec<String>,
}

/// The network section as written: `isolated` and `mode` may both appear, and must agree.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    #[serde(default)]
    isolated: Option<bool>,
    #[serde(default)]
    mode: Option<NetworkMode>,
    #[serde(default)]
    allow_outgoing: Vec<Port>,
    #[serde(default)]
    allow_incoming: Vec<Port>,
    #[serde(default)]
    allow_udp: bool,
    #[serde(default)]
    allow_domains: Vec<String>,
    #[serde(default)]
    deny_domains: Vec<String>,
}

impl TryFrom<RawNetwork> for Network {
    type Error = String;
    fn try_from(r: RawNetwork) -> Result<Self, String> {
        let mode = match (r.mode, r.isolated) {
            (Some(m), None) => m,
            (None, Some(false)) => NetworkMode::Host,
            (None, Some(true) | None) => NetworkMode::Isolated,
            (Some(NetworkMode::Host), Some(false)) => NetworkMode::Host,
            (Some(m @ (NetworkMode::Isolated | NetworkMode::Proxy)), Some(true)) => m,
            (Some(m), Some(i)) => {
                return Err(format!(
                    "network.isolated: {i} contradicts network.mode: {}; keep one of them",
                    serde_json::to_value(m)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default()
                ))
            }
        };
        Ok(Network {
            isolated: mode != NetworkMode::Host,
            mode,
            allow_outgoing: r.allow_outgoing,
            allow_incoming: r.allow_incoming,
            allow_udp: r.allow_udp,
            allow_domains: r.allow_domains,
            deny_domains: r.deny_domains,
        })
    }
}

impl Default for Network {
    fn default() -> Self {
        Network {
            isolated: true,
            mode: NetworkMode::Isolated,
            allow_outgoing: Vec::new(),
            allow_incoming: Vec::new(),
            allow_udp: false,
            allow_domains: Vec::new(),
            deny_domains: Vec::new(),
        }
    }
}

/// Addition: the LLM gateway `ironcage run` hosts for the sandbox (OpenAI- and
/// Anthropic-compatible, on 127.0.0.1 inside the sandbox's network namespace). Provider
/// keys stay outside; the sandbox gets a per-run virtual key.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Llm {
    #[serde(default)]
    pub enabled: bool,
    /// Spending limit for one run, in US dollars as a decimal string ("1.00").
    #[serde(default = "default_llm_budget")]
    pub budget_usd: String,
    /// What to do with each kind of personal data or secret found in prompts:
    /// `allow`, `redact` or `block`. Kinds not listed use the gateway's defaults.
    #[serde(default)]
    pub pii: BTreeMap<String, PiiAction>,
    /// Also scan (and redact) responses.
    #[serde(default)]
    pub pii_responses: bool,
    /// Models missing from the price table: refused (default), since their cost cannot be
    /// reserved against the budget.
    #[serde(default)]
    pub allow_unpriced_models: bool,
}

pub const DEFAULT_LLM_BUDGET_USD: &str = "1.00";

fn default_llm_budget() -> String {
    DEFAULT_LLM_BUDGET_USD.to_string()
}

impl Default for Llm {
    fn default() -> Self {
        Llm {
            enabled: false,
            budget_usd: default_llm_budget(),
            pii: BTreeMap::new(),
            pii_responses: false,
            allow_unpriced_models: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PiiAction {
    Allow,
    Redact,
    Block,
}

/// Kinds of personal data and secrets the gateway detects (names as in `llm.pii`).
pub const PII_KINDS: [&str; 9] = [
    "email",
    "phone",
    "credit_card",
    "us_ssn",
    "iban",
    "ip_address",
    "api_key",
    "private_key",
    "jwt",
];

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub log_path: Option<PathBuf>,
    #[serde(default)]
    pub detail_level: Vec<DetailLevel>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum DetailLevel {
    Syscall,
    Filesystem,
    Resource,
    Network,
    Process,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// Host variables passed through by name when they are set.
    #[serde(default)]
    pub pass: Vec<String>,
    /// Variables set to fixed values.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    /// Refuse to run when any requested mechanism cannot be enforced.
    #[default]
    Strict,
    /// Run anyway, warn, and list what was not enforced in the report.
    BestEffort,
}
