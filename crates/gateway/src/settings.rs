//! The gateway's own settings file (`llm.yaml`; the `llm:` section of `ironcage serve`'s
//! config): upstream URLs, an updated price table, circuit-breaker tuning. What a run may
//! spend and which data it may send are the policy's business, not this file's.

use crate::provider::Provider;
use ironcage_guard::breaker::BreakerConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Base URL per provider (`openai: http://host/v1`, `anthropic: http://host`).
    #[serde(default)]
    pub upstreams: BTreeMap<String, String>,
    /// A price file extending and overriding the shipped table.
    #[serde(default)]
    pub prices: Option<PathBuf>,
    #[serde(default)]
    pub breaker: BreakerSettings,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BreakerSettings {
    #[serde(default = "d30")]
    pub window_seconds: u64,
    #[serde(default = "d10")]
    pub min_requests: u32,
    /// Opens when at least this percentage of the window's requests failed.
    #[serde(default = "d50")]
    pub failure_percent: u32,
    #[serde(default = "d30")]
    pub cooldown_seconds: u64,
    #[serde(default = "d1")]
    pub half_open_probes: u32,
}

fn d30() -> u64 {
    30
}
fn d10() -> u32 {
    10
}
fn d50() -> u32 {
    50
}
fn d1() -> u32 {
    1
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            window_seconds: 30,
            min_requests: 10,
            failure_percent: 50,
            cooldown_seconds: 30,
            half_open_probes: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{origin}:{line}:{column}: {message}")]
    Invalid {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Bad(String),
}

impl Settings {
    /// Reads a settings file; a missing file means defaults.
    pub fn load(path: &Path) -> Result<Settings, SettingsError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
            Err(source) => {
                return Err(SettingsError::Read {
                    path: path.into(),
                    source,
                })
            }
        };
        let s: Settings = serde_norway::from_str(&text).map_err(|e| {
            let (line, column, message) =
                ironcage_policy::yaml_error(&text, &e, |l, c, m| (l, c, m));
            SettingsError::Invalid {
                origin: path.display().to_string(),
                line,
                column,
                message,
            }
        })?;
        s.check()
            .map_err(|m| SettingsError::Bad(format!("{}: {m}", path.display())))?;
        Ok(s)
    }

    /// Checks names and ranges (the upstream URLs themselves are checked by the gateway).
    pub fn check(&self) -> Result<(), String> {
        for name in self.upstreams.keys() {
            if Provider::from_name(name).is_none() {
                return Err(format!(
                    "upstreams: unknown provider `{name}` (known: openai, anthropic)"
                ));
            }
        }
        let b = &self.breaker;
        if !(1..=100).contains(&b.failure_percent) {
            return Err("breaker.failure_percent: must be 1-100".into());
        }
        if b.window_seconds == 0 || b.cooldown_seconds == 0 || b.half_open_probes == 0 {
            return Err(
                "breaker: window_seconds, cooldown_seconds and half_open_probes must be > 0".into(),
            );
        }
        Ok(())
    }

    pub fn breaker_config(&self) -> BreakerConfig {
        let b = &self.breaker;
        BreakerConfig {
            window: Duration::from_secs(b.window_seconds),
            min_requests: b.min_requests,
            failure_permille: b.failure_percent * 10,
            cooldown: Duration::from_secs(b.cooldown_seconds),
            half_open_probes: b.half_open_probes,
            ..BreakerConfig::default()
        }
    }

    /// `--llm-upstream openai=URL` on top of the file.
    pub fn set_upstream(&mut self, spec: &str) -> Result<(), String> {
        let (name, url) = spec
            .split_once('=')
            .ok_or_else(|| format!("--llm-upstream `{spec}`: expected PROVIDER=URL"))?;
        if Provider::from_name(name).is_none() {
            return Err(format!(
                "--llm-upstream: unknown provider `{name}` (known: openai, anthropic)"
            ));
        }
        self.upstreams.insert(name.to_string(), url.to_string());
        Ok(())
    }

    pub fn upstream_map(&self) -> std::collections::HashMap<Provider, String> {
        self.upstreams
            .iter()
            .filter_map(|(k, v)| Provider::from_name(k).map(|p| (p, v.clone())))
            .collect()
    }
}

/// The policy's `llm.pii` as detector rules (kinds it does not name keep the defaults).
pub fn pii_rules(llm: &ironcage_policy::Llm) -> Result<ironcage_guard::pii::Rules, String> {
    use ironcage_guard::pii::{Action, Kind, Rules};
    let mut rules = Rules::default();
    for (kind, action) in &llm.pii {
        let k: Kind = kind.parse().map_err(|e| format!("llm.pii: {e}"))?;
        rules.set(
            k,
            match action {
                ironcage_policy::PiiAction::Allow => Action::Allow,
                ironcage_policy::PiiAction::Redact => Action::Redact,
                ironcage_policy::PiiAction::Block => Action::Block,
            },
        );
    }
    Ok(rules)
}

/// The provider keys in an encrypted secret store (`ironcage secret set openai ...`); no
/// store means no keys (a keyless upstream, or providers answering 401).
pub fn load_credentials(
    store_path: &Path,
    master_key_path: &Path,
) -> Result<std::collections::HashMap<Provider, zeroize::Zeroizing<String>>, String> {
    let mut out = std::collections::HashMap::new();
    if !store_path.exists() {
        return Ok(out);
    }
    let key = ironcage_guard::secrets::MasterKey::from_env_or_file(master_key_path, false)
        .map_err(|e| format!("secret store {}: {e}", store_path.display()))?;
    let store =
        ironcage_guard::secrets::SecretStore::open(store_path, key).map_err(|e| e.to_string())?;
    for p in Provider::ALL {
        if let Some(v) = store.get(p.name()).map_err(|e| e.to_string())? {
            out.insert(p, v);
        }
    }
    Ok(out)
}
