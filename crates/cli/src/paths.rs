//! Default locations of the audit log and its signing key (documented in docs/audit.md).

use std::path::PathBuf;

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn home() -> PathBuf {
    env_path("HOME").unwrap_or_else(|| "/tmp".into())
}

/// `$IRONCAGE_AUDIT_LOG`, else `/var/log/ironcage/audit.log` for root, else
/// `$XDG_STATE_HOME/ironcage/audit.log` (`~/.local/state/...`).
pub fn default_audit_log(is_root: bool) -> PathBuf {
    if let Some(p) = env_path("IRONCAGE_AUDIT_LOG") {
        return p;
    }
    if is_root {
        return "/var/log/ironcage/audit.log".into();
    }
    env_path("XDG_STATE_HOME")
        .unwrap_or_else(|| home().join(".local/state"))
        .join("ironcage/audit.log")
}

/// `$IRONCAGE_AUDIT_KEY`, else `/etc/ironcage/audit.key` for root, else
/// `$XDG_CONFIG_HOME/ironcage/audit.key` (`~/.config/...`). The public half is `<key>.pub`.
pub fn default_audit_key(is_root: bool) -> PathBuf {
    if let Some(p) = env_path("IRONCAGE_AUDIT_KEY") {
        return p;
    }
    if is_root {
        return "/etc/ironcage/audit.key".into();
    }
    env_path("XDG_CONFIG_HOME")
        .unwrap_or_else(|| home().join(".config"))
        .join("ironcage/audit.key")
}

pub fn is_root() -> bool {
    ironcage_sandbox::sys::geteuid() == 0
}
