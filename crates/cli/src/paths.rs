//! Default locations of the audit log and its signing key (documented in docs/audit.md).

use std::path::{Path, PathBuf};

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// $HOME, else the home directory /etc/passwd gives our uid; never a shared directory
/// like /tmp (anyone could plant files where we keep a key).
fn home() -> Result<PathBuf, String> {
    if let Some(h) = env_path("HOME") {
        return Ok(h);
    }
    let uid = ironcage_sandbox::sys::geteuid().to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 5 && f[2] == uid && !f[5].is_empty())
        .map(|f| PathBuf::from(f[5]))
        .ok_or_else(|| "HOME is not set and /etc/passwd has no home directory for us: set IRONCAGE_AUDIT_LOG and IRONCAGE_AUDIT_KEY".to_string())
}

/// `$IRONCAGE_AUDIT_LOG`, else `/var/log/ironcage/audit.log` for root, else
/// `$XDG_STATE_HOME/ironcage/audit.log` (`~/.local/state/...`).
pub fn default_audit_log(is_root: bool) -> Result<PathBuf, String> {
    if let Some(p) = env_path("IRONCAGE_AUDIT_LOG") {
        return Ok(p);
    }
    if is_root {
        return Ok("/var/log/ironcage/audit.log".into());
    }
    let state = match env_path("XDG_STATE_HOME") {
        Some(s) => s,
        None => home()?.join(".local/state"),
    };
    Ok(state.join("ironcage/audit.log"))
}

/// `$IRONCAGE_AUDIT_KEY`, else `/etc/ironcage/audit.key` for root, else
/// `$XDG_CONFIG_HOME/ironcage/audit.key` (`~/.config/...`). The public half is `<key>.pub`.
pub fn default_audit_key(is_root: bool) -> Result<PathBuf, String> {
    if let Some(p) = env_path("IRONCAGE_AUDIT_KEY") {
        return Ok(p);
    }
    if is_root {
        return Ok("/etc/ironcage/audit.key".into());
    }
    let config = match env_path("XDG_CONFIG_HOME") {
        Some(c) => c,
        None => home()?.join(".config"),
    };
    Ok(config.join("ironcage/audit.key"))
}

pub fn is_root() -> bool {
    ironcage_sandbox::sys::geteuid() == 0
}

/// A path's real location: symlinks resolved, or (when it does not exist yet) its
/// directory's, so either side of a comparison may be reached through a link.
fn real(p: &Path) -> PathBuf {
    if let Ok(r) = std::fs::canonicalize(p) {
        return r;
    }
    match (
        p.parent().and_then(|d| std::fs::canonicalize(d).ok()),
        p.file_name(),
    ) {
        (Some(d), Some(f)) => d.join(f),
        _ => p.to_path_buf(),
    }
}

/// The first bind of the plan whose host side contains `path` (only writable binds when
/// `writable_only`): (the bind's host directory, the path), both as real locations.
pub fn bind_containing(
    plan: &ironcage_sandbox::plan::Plan,
    path: &Path,
    writable_only: bool,
) -> Option<(PathBuf, PathBuf)> {
    use ironcage_sandbox::plan::MountStep;
    let path = real(path);
    plan.mounts.iter().find_map(|m| {
        let host = match m {
            MountStep::BindWritable { host, .. } => host,
            MountStep::BindReadOnly { host, .. } if !writable_only => host,
            _ => return None,
        };
        let host = real(host);
        path.starts_with(&host).then(|| (host, path.clone()))
    })
}
