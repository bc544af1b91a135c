//! The service's configuration: defaults, then a YAML config file, then environment
//! variables, then flags (each overriding the one before). Documented in docs/serve.md.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// serde_norway's message names the line, column and field.
    #[error("config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}={value:?}: {reason}")]
    Env {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port to listen on.
    pub listen: String,
    /// Where the SQLite database, the audit log and its key live.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://...`; default: SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// error, warn, info, debug.
    pub log_level: String,
    /// The key signing the audit log (default DATA_DIR/audit.key). Instances sharing a
    /// store must share it: each append checks the last checkpoint was signed by it.
    pub audit_key: Option<PathBuf>,
    /// Names this instance in the store (executions it was running when it died are marked
    /// failed when it starts again). Default: host name and listen address.
    pub node: Option<String>,
    pub pool: PoolConfig,
    pub limits: LimitsConfig,
    /// The profile used when a request names none.
    pub default_profile: String,
    /// Profiles requests may name; empty: every profile `ironcage profile list` shows.
    pub profiles: Vec<String>,
    /// Languages besides (or replacing) the built-in python, bash, sh and node.
    pub languages: BTreeMap<String, Language>,
    pub keys: KeyDefaults,
    pub sandboxes: SandboxConfig,
    /// Finished executions are kept this long (0: forever).
    pub execution_retention_hours: u64,
    /// The LLM gateway under /llm/openai/v1 and /llm/anthropic/v1 (docs/gateway.md).
    pub llm: LlmConfig,
}

/// The gateway as the service mounts it: API keys authenticate, each key (and each agent
/// a key names in `x-ironcage-agent`) has a budget, optionally reset every period.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    pub enabled: bool,
    /// Base URL per provider (`openai: https://api.openai.com/v1`, `anthropic: ...`).
    pub upstreams: BTreeMap<String, String>,
    /// A price file extending the shipped table.
    pub prices: Option<PathBuf>,
    pub breaker: ironcage_gateway::settings::BreakerSettings,
    /// Spending limit per API key, in dollars ("10.00"); none: unlimited.
    pub key_budget_usd: Option<String>,
    /// Spending limit per agent (per key and `x-ironcage-agent` name); none: unlimited.
    pub agent_budget_usd: Option<String>,
    /// Spending limit of one execution (or sandbox command) calling the gateway from its
    /// sandbox with the virtual key it is given.
    pub execution_budget_usd: Option<String>,
    /// `never`, `hourly`, `daily`, `monthly`: when spending starts again from zero.
    pub budget_period: String,
    /// The profile whose `llm` section (PII rules, unpriced models) applies; default:
    /// `default_profile`.
    pub profile: Option<String>,
    /// The encrypted secret store holding the provider keys (`ironcage secret set`), and
    /// its master key file; default: the same as `ironcage secret` uses.
    pub secrets_file: Option<PathBuf>,
    pub master_key_file: Option<PathBuf>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            enabled: true,
            upstreams: BTreeMap::new(),
            prices: None,
            breaker: Default::default(),
            key_budget_usd: None,
            agent_budget_usd: None,
            execution_budget_usd: Some("1.00".into()),
            budget_period: "never".into(),
            profile: None,
            secrets_file: None,
            master_key_file: None,
        }
    }
}

/// Long-lived sandboxes (`/v1/sandboxes`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// Idle time after which a sandbox is removed, unless its creation asks otherwise.
    pub default_ttl_seconds: u64,
    pub max_ttl_seconds: u64,
    /// A sandbox's files, all together, at most (a command leaving more is not saved).
    pub max_workspace_bytes: u64,
    /// Sandboxes one key may have at once.
    pub max_per_key: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            default_ttl_seconds: 600,
            max_ttl_seconds: 86_400,
            max_workspace_bytes: 64 << 20,
            max_per_key: 16,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Idle sandboxes kept ready per warmed profile.
    pub size: usize,
    /// Profiles warmed at start (others get a pool on first use). Default: the default one.
    pub warm_profiles: Vec<String>,
    /// Executions running at once on this instance; more wait in line.
    pub max_running: usize,
    /// How long a request waits for a free slot before 503 + Retry-After.
    pub queue_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub default_timeout_ms: u64,
    pub max_timeout_ms: u64,
    pub default_memory_bytes: u64,
    pub max_memory_bytes: u64,
    pub default_cpu_seconds: u64,
    pub max_cpu_seconds: u64,
    /// Largest file an execution may write (RLIMIT_FSIZE).
    pub max_file_size: u64,
    pub pids_limit: u32,
    /// Size of the /work scratch file system.
    pub scratch_size: u64,
    /// stdout and stderr are each kept up to this many bytes; the rest is counted and
    /// dropped, and the result says `stdout_truncated`/`stderr_truncated`.
    pub output_limit_bytes: usize,
    /// Request bodies larger than this get 413.
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Language {
    /// The command; `{file}` is replaced by the code's file name. Request `args` follow.
    pub command: Vec<String>,
    /// File the code is written to, in /work.
    pub file: String,
}

impl Language {
    /// The command line that runs the code file, with the request's arguments after it.
    pub fn argv(&self, args: Vec<String>) -> Vec<String> {
        let mut argv: Vec<String> = self
            .command
            .iter()
            .map(|a| a.replace("{file}", &self.file))
            .collect();
        argv.extend(args);
        argv
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KeyDefaults {
    /// Requests per minute per key (token bucket, per instance).
    pub rate_limit_per_minute: u32,
    /// Executions running at once per key (per instance).
    pub max_concurrent: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8000".into(),
            data_dir: default_data_dir(),
            database_url: None,
            log_level: "info".into(),
            audit_key: None,
            node: None,
            pool: PoolConfig::default(),
            limits: LimitsConfig::default(),
            default_profile: "ai-strict".into(),
            profiles: Vec::new(),
            languages: BTreeMap::new(),
            keys: KeyDefaults::default(),
            sandboxes: SandboxConfig::default(),
            execution_retention_hours: 168,
            llm: LlmConfig::default(),
        }
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        PoolConfig {
            size: 4,
            warm_profiles: Vec::new(),
            max_running: (cores * 4).max(8),
            queue_timeout_ms: 10_000,
        }
    }
}

/// As in the product's execution-service documents: 30 s of CPU, 256 MB, 10 MB files.
impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            default_timeout_ms: 30_000,
            max_timeout_ms: 300_000,
            default_memory_bytes: 256 << 20,
            max_memory_bytes: 2 << 30,
            default_cpu_seconds: 30,
            max_cpu_seconds: 300,
            max_file_size: 10 << 20,
            pids_limit: 128,
            scratch_size: 256 << 20,
            output_limit_bytes: 1 << 20,
            max_body_bytes: 16 << 20,
        }
    }
}

impl Default for KeyDefaults {
    fn default() -> Self {
        KeyDefaults {
            rate_limit_per_minute: 6000,
            max_concurrent: 16,
        }
    }
}

/// Root keeps its data in /var/lib/ironcage; others in ~/.local/share/ironcage.
pub fn default_data_dir() -> PathBuf {
    if ironcage_sandbox::sys::geteuid() == 0 {
        return PathBuf::from("/var/lib/ironcage");
    }
    match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d).join("ironcage"),
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".local/share/ironcage"),
    }
}

/// Flags of `ironcage serve` that override everything else.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub port: Option<u16>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub pool_size: Option<usize>,
    pub log_level: Option<String>,
}

impl Config {
    /// Defaults <- file <- environment <- flags.
    pub fn load(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        flags: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut c = match file {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = env("API_PORT") {
            let port = v.parse::<u16>().map_err(|e| ConfigError::Env {
                name: "API_PORT",
                value: v.clone(),
                reason: e.to_string(),
            })?;
            c.set_port(port);
        }
        if let Some(v) = env("LOG_LEVEL") {
            c.log_level = v;
        }
        if let Some(v) = env("POOL_SIZE") {
            c.pool.size = v
                .parse()
                .map_err(|e: std::num::ParseIntError| ConfigError::Env {
                    name: "POOL_SIZE",
                    value: v.clone(),
                    reason: e.to_string(),
                })?;
        }
        if let Some(v) = env("DATABASE_URL").filter(|v| !v.is_empty()) {
            c.database_url = Some(v);
        }
        if let Some(v) = env("IRONCAGE_DATA_DIR").filter(|v| !v.is_empty()) {
            c.data_dir = PathBuf::from(v);
        }
        if let Some(l) = &flags.listen {
            c.listen.clone_from(l);
        }
        if let Some(p) = flags.port {
            c.set_port(p);
        }
        if let Some(d) = &flags.data_dir {
            c.data_dir.clone_from(d);
        }
        if let Some(u) = &flags.database_url {
            c.database_url = Some(u.clone());
        }
        if let Some(s) = flags.pool_size {
            c.pool.size = s;
        }
        if let Some(l) = &flags.log_level {
            c.log_level.clone_from(l);
        }
        c.check()?;
        Ok(c)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_norway::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    fn set_port(&mut self, port: u16) {
        let host = match self.listen.rsplit_once(':') {
            Some((h, _)) => h.to_string(),
            None => "127.0.0.1".into(),
        };
        self.listen = format!("{host}:{port}");
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(format!(
                "listen address {:?} is not IP:PORT (e.g. 127.0.0.1:8000)",
                self.listen
            ));
        }
        if !matches!(
            self.log_level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            return bad(format!(
                "log level {:?}: use error, warn, info, debug or trace",
                self.log_level
            ));
        }
        let l = &self.limits;
        for (name, d, m) in [
            ("timeout_ms", l.default_timeout_ms, l.max_timeout_ms),
            ("memory_bytes", l.default_memory_bytes, l.max_memory_bytes),
            ("cpu_seconds", l.default_cpu_seconds, l.max_cpu_seconds),
        ] {
            if d == 0 || d > m {
                return bad(format!(
                    "limits: default_{name} ({d}) must be above 0 and at most max_{name} ({m})"
                ));
            }
        }
        if self.pool.max_running == 0 {
            return bad("pool.max_running must be at least 1".into());
        }
        for (name, lang) in &self.languages {
            if lang.command.is_empty() {
                return bad(format!("languages.{name}.command is empty"));
            }
            if ironcage_sandbox::job::check_relative_path(&lang.file).is_err() {
                return bad(format!(
                    "languages.{name}.file {:?} must be a relative file name",
                    lang.file
                ));
            }
        }
        Ok(())
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("ironcage.db").display()))
    }

    pub fn node(&self) -> String {
        self.node.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "localhost".into());
            format!("{host}:{}", self.listen)
        })
    }

    /// The languages requests may use: built-ins whose interpreter exists on this host,
    /// then the config file's (which may replace a built-in).
    pub fn languages(&self) -> BTreeMap<String, Language> {
        let mut out = BTreeMap::new();
        let builtin = [
            ("python", "/usr/bin/python3", "main.py"),
            ("bash", "/bin/bash", "main.sh"),
            ("sh", "/bin/sh", "main.sh"),
            ("node", "/usr/bin/node", "main.js"),
        ];
        for (name, interp, file) in builtin {
            if Path::new(interp).exists() {
                out.insert(
                    name.to_string(),
                    Language {
                        command: vec![interp.into(), "{file}".into()],
                        file: file.into(),
                    },
                );
            }
        }
        for (name, lang) in &self.languages {
            out.insert(name.clone(), lang.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn precedence_is_defaults_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(
            &f,
            "listen: 0.0.0.0:9000\npool:\n  size: 2\nlog_level: warn\nlimits:\n  max_timeout_ms: 60000\n",
        )
        .unwrap();
        let c = Config::load(Some(&f), &env_of(&[]), &Overrides::default()).unwrap();
        assert_eq!((c.listen.as_str(), c.pool.size), ("0.0.0.0:9000", 2));
        assert_eq!(c.limits.max_timeout_ms, 60000);
        assert_eq!(c.limits.default_memory_bytes, 256 << 20);

        let env = env_of(&[
            ("API_PORT", "9100"),
            ("POOL_SIZE", "7"),
            ("LOG_LEVEL", "debug"),
        ]);
        let c = Config::load(Some(&f), &env, &Overrides::default()).unwrap();
        assert_eq!((c.listen.as_str(), c.pool.size), ("0.0.0.0:9100", 7));
        assert_eq!(c.log_level, "debug");

        let flags = Overrides {
            port: Some(9200),
            pool_size: Some(1),
            ..Overrides::default()
        };
        let c = Config::load(Some(&f), &env, &flags).unwrap();
        assert_eq!((c.listen.as_str(), c.pool.size), ("0.0.0.0:9200", 1));
    }

    #[test]
    fn bad_files_and_values_name_the_place() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(&f, "listen: 127.0.0.1:1\npool:\n  sise: 2\n").unwrap();
        let e = Config::load(Some(&f), &env_of(&[]), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c.yaml") && e.contains("sise") && e.contains("line 3"),
            "{e}"
        );

        let e = Config::load(
            None,
            &env_of(&[("API_PORT", "eighty")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("API_PORT") && e.contains("eighty"), "{e}");

        std::fs::write(&f, "limits:\n  default_timeout_ms: 999999999\n").unwrap();
        let e = Config::load(Some(&f), &env_of(&[]), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("default_timeout_ms"), "{e}");
    }
}
