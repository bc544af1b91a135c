//! Iron Cage policies: the YAML format, its validation, and where profiles are found.
//!
//! This crate decides what a policy *means*; it never touches the kernel. Everything it
//! returns has been validated: a `Policy` in hand is internally consistent, and every
//! error names the file, line, column and field at fault.

#![forbid(unsafe_code)]

mod model;
mod syscall_table;
pub mod syscalls;
pub mod units;

pub use model::*;
pub use syscalls::Syscall;

use std::fmt;
use std::path::{Path, PathBuf};

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The text parsed badly or failed validation at a known place.
    #[error("{origin}:{line}:{column}: {message}")]
    Invalid {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("cannot read policy file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no profile named `{name}` (searched: built-ins, {searched}). Known profiles: {known}. Hint: pass a file with --policy FILE")]
    NotFound {
        name: String,
        searched: String,
        known: String,
    },
}

/// Where a policy came from, for messages and reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    BuiltIn(&'static str),
    File(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::BuiltIn(name) => write!(f, "<built-in {name}>"),
            Origin::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A policy plus where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub policy: Policy,
    pub origin: Origin,
}

pub const BUILT_INS: &[(&str, &str)] = &[
    ("ai-strict", include_str!("../profiles/ai-strict.yaml")),
    ("ai-dev-safe", include_str!("../profiles/ai-dev-safe.yaml")),
];

/// The same profiles as JSON, transcoded by build.rs (fast to load on every run).
const BUILT_INS_JSON: &[(&str, &str)] = &[
    (
        "ai-strict",
        include_str!(concat!(env!("OUT_DIR"), "/ai-strict.json")),
    ),
    (
        "ai-dev-safe",
        include_str!(concat!(env!("OUT_DIR"), "/ai-dev-safe.json")),
    ),
];

/// Loads a built-in profile from its pre-transcoded JSON, validated like any policy.
fn load_built_in(name: &'static str) -> Result<Policy, PolicyError> {
    let origin = Origin::BuiltIn(name);
    let json = BUILT_INS_JSON
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, j)| *j);
    let yaml = BUILT_INS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, y)| *y)
        .unwrap_or_default();
    match json.map(serde_json::from_str::<Policy>) {
        Some(Ok(policy)) => {
            validate(&policy, yaml).map_err(|(field, needle, message)| {
                let (line, column) = locate(yaml, field, needle.as_deref());
                PolicyError::Invalid {
                    origin: origin.to_string(),
                    line,
                    column,
                    message: format!("{field}: {message}"),
                }
            })?;
            Ok(policy)
        }
        // Only reachable if the two encodings disagree; the YAML path reports locations.
        _ => parse(yaml, &origin),
    }
}

/// Parses and validates policy text. `origin` is used in error messages.
pub fn parse(text: &str, origin: &Origin) -> Result<Policy, PolicyError> {
    let at = |line: usize, column: usize, message: String| PolicyError::Invalid {
        origin: origin.to_string(),
        line,
        column,
        message,
    };
    check_shape(text).map_err(|(line, message)| at(line, 1, message))?;
    let policy: Policy = serde_norway::from_str(text).map_err(|e| {
        let (line, column, msg) = yaml_error(text, &e, |l, c, m| refine(text, l, c, m));
        at(line, column, msg)
    })?;
    validate(&policy, text).map_err(|(field, needle, message)| {
        let (line, column) = locate(text, field, needle.as_deref());
        at(line, column, format!("{field}: {message}"))
    })?;
    Ok(policy)
}

/// A YAML parse error as (line, column, message), the way every Iron Cage file reports one
/// (policies, price tables, gateway settings): serde_norway's trailing " at line L column
/// C" taken out of the message, `refine` given the chance to point at the offending value,
/// and a line indented with a tab named as such.
pub fn yaml_error(
    text: &str,
    e: &serde_norway::Error,
    refine: impl FnOnce(usize, usize, String) -> (usize, usize, String),
) -> (usize, usize, String) {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((1, 1));
    let msg = e.to_string();
    let msg = match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    let (line, column, mut msg) = refine(line, column, msg);
    if text
        .lines()
        .nth(line.saturating_sub(1))
        .is_some_and(|l| l.trim_start_matches(' ').starts_with('\t'))
    {
        msg.push_str(" (this line is indented with a tab; YAML indents with spaces)");
    }
    (line, column, msg)
}

/// Largest policy accepted: a policy is a page of settings.
pub const MAX_POLICY_BYTES: usize = 64 * 1024;

/// Rejects an oversized policy before the YAML parser runs. (The parser itself bounds
/// alias expansion and nesting depth; with at most 64 KiB of input that keeps a crafted
/// file cheap.)
fn check_shape(text: &str) -> Result<(), (usize, String)> {
    if text.len() > MAX_POLICY_BYTES {
        return Err((
            1,
            format!(
                "policy is {} bytes; the limit is {MAX_POLICY_BYTES}",
                text.len()
            ),
        ));
    }
    Ok(())
}

/// Reads a regular file of at most MAX_POLICY_BYTES (+1, so "too big" can be told), never
/// blocking on a FIFO or reading a huge (sparse) file to the end.
fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_nonblock())
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut text = String::new();
    file.take(MAX_POLICY_BYTES as u64 + 1)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// O_NONBLOCK, so opening a FIFO does not wait for a writer (0o4000 on Linux).
const fn libc_o_nonblock() -> i32 {
    0o4000
}

/// Lexical normalisation of an absolute path ("." and ".." removed, no symlinks resolved).
pub fn normalize_path(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(x) => out.push(x),
            _ => {}
        }
    }
    out
}

/// Loads a policy file from a path.
pub fn load_file(path: &Path) -> Result<Loaded, PolicyError> {
    let text = read_bounded(path).map_err(|source| PolicyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let origin = Origin::File(path.to_path_buf());
    Ok(Loaded {
        policy: parse(&text, &origin)?,
        origin,
    })
}

/// Directories searched for `NAME.yaml` after the built-ins, in order.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("policies")];
    if let Some(cfg) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        dirs.push(PathBuf::from(cfg).join("ironcage/policies"));
    } else if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        dirs.push(PathBuf::from(home).join(".config/ironcage/policies"));
    }
    dirs.push(PathBuf::from("/etc/ironcage/policies"));
    dirs
}

/// Finds a profile by name: built-ins first (so `ai-strict` always means the shipped
/// profile), then `./policies/`, the user's config dir, and `/etc/ironcage/policies`.
pub fn find_profile(name: &str) -> Result<Loaded, PolicyError> {
    if let Some((n, _)) = BUILT_INS.iter().find(|(n, _)| *n == name) {
        return Ok(Loaded {
            policy: load_built_in(n)?,
            origin: Origin::BuiltIn(n),
        });
    }
    let valid_name = !name.is_empty() && !name.contains('/') && !name.starts_with('.');
    if valid_name {
        for dir in search_dirs() {
            for ext in ["yaml", "yml"] {
                let path = dir.join(format!("{name}.{ext}"));
                if path.is_file() {
                    return load_file(&path);
                }
            }
        }
    }
    Err(PolicyError::NotFound {
        name: name.to_string(),
        searched: search_dirs()
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        known: list_profiles()
            .into_iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Every profile that can be found by name: (name, origin). Shadowed names are listed once.
pub fn list_profiles() -> Vec<(String, Origin)> {
    let mut out: Vec<(String, Origin)> = BUILT_INS
        .iter()
        .map(|(n, _)| (n.to_string(), Origin::BuiltIn(n)))
        .collect();
    for dir in search_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut found: Vec<(String, Origin)> = entries
            .flatten()
            .filter_map(|e| {
                let path = e.path();
                let ext = path.extension()?.to_str()?;
                if ext != "yaml" && ext != "yml" {
                    return None;
                }
                let name = path.file_stem()?.to_str()?.to_string();
                Some((name, Origin::File(path)))
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, origin) in found {
            if !out.iter().any(|(n, _)| *n == name) {
                out.push((name, origin));
            }
        }
    }
    out
}

/// A domain pattern as the egress proxy takes it: `host.name` or `*.host.name`, ASCII
/// (write internationalised names in their `xn--` form), no ports or paths.
pub fn check_domain_pattern(d: &str) -> Result<(), String> {
    let host = d.strip_prefix("*.").unwrap_or(d);
    if host.is_empty() || host.len() > 253 {
        return Err("needs a host name (1-253 characters)".into());
    }
    if !host.is_ascii() {
        return Err("write internationalised names in their ASCII (xn--) form".into());
    }
    for label in host.trim_end_matches('.').split('.') {
        if label.is_empty()
            || label.len() > 63
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(
                "not a host name (letters, digits, `-`, `_` and dots; `*.` only as a prefix)"
                    .into(),
            );
        }
    }
    Ok(())
}

/// `1`, `1.00`, `0.5`: a non-negative decimal without sign or exponent.
fn is_decimal(s: &str) -> bool {
    let s = s.strip_prefix('$').unwrap_or(s);
    let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
    !int.is_empty()
        && int.len() <= 12
        && !frac.is_empty()
        && frac.len() <= 12
        && int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
}

/// Longest session a policy may ask for.
pub const MAX_TIMEOUT_SECONDS: u64 = 365 * 24 * 3600;

/// A validation failure: (field path, text to locate in the source, message).
type Invalid = (&'static str, Option<String>, String);

fn validate(p: &Policy, _text: &str) -> Result<(), Invalid> {
    let fs = &p.filesystem;
    for b in &fs.immutable_paths {
        let needle = Some(b.host_path.display().to_string());
        if !b.host_path.is_absolute() {
            return Err((
                "filesystem.immutable_paths.host_path",
                needle,
                format!("`{}` must be absolute", b.host_path.display()),
            ));
        }
        if !b.optional && std::fs::metadata(&b.host_path).is_err() {
            return Err((
                "filesystem.immutable_paths.host_path",
                needle,
                format!(
                    "`{}` does not exist on this host (mark the entry `optional: true` to skip it when absent)",
                    b.host_path.display()
                ),
            ));
        }
    }
    let all_host = fs
        .immutable_paths
        .iter()
        .chain(&fs.output_paths)
        .map(|b| &b.host_path)
        .chain(p.audit.log_path.iter());
    for h in all_host {
        if h.as_os_str().as_encoded_bytes().contains(&0) {
            return Err((
                "filesystem",
                None,
                "a path must not contain a NUL byte".into(),
            ));
        }
    }
    for b in &fs.output_paths {
        if !b.host_path.is_absolute() {
            return Err((
                "filesystem.output_paths.host_path",
                Some(b.host_path.display().to_string()),
                format!("`{}` must be absolute", b.host_path.display()),
            ));
        }
    }
    // Every sandbox path is mounted once; "/" is the sandbox's own tmpfs root.
    let mut seen: Vec<&SandboxPath> = Vec::new();
    let all = fs
        .immutable_paths
        .iter()
        .map(|b| ("filesystem.immutable_paths.sandbox_path", &b.sandbox_path))
        .chain(
            fs.scratch_paths
                .iter()
                .map(|s| ("filesystem.scratch_paths", s)),
        )
        .chain(
            fs.output_paths
                .iter()
                .map(|b| ("filesystem.output_paths.sandbox_path", &b.sandbox_path)),
        );
    for (field, sp) in all {
        let shown = sp.0.display().to_string();
        if sp.0 == Path::new("/") {
            return Err((
                field,
                Some(shown),
                "`/` cannot be a mount target; the sandbox root is a private tmpfs".into(),
            ));
        }
        for reserved in ["/proc", "/dev"] {
            if sp.0.starts_with(reserved) {
                return Err((
                    field,
                    Some(shown),
                    format!("`{reserved}` is provided by the sandbox and cannot be replaced"),
                ));
            }
        }
        if seen.contains(&sp) {
            return Err((
                field,
                Some(shown.clone()),
                format!("`{shown}` is mounted twice"),
            ));
        }
        seen.push(sp);
    }
    if let Some(wd) = &fs.working_dir {
        let inside = seen.iter().any(|m| wd.0.starts_with(&m.0));
        if !inside {
            return Err((
                "filesystem.working_dir",
                Some(wd.0.display().to_string()),
                format!(
                    "`{}` is not inside any immutable, scratch or output path",
                    wd.0.display()
                ),
            ));
        }
    }

    let sc = &p.syscalls;
    for s in &sc.allow {
        if sc.deny.contains(s) {
            return Err((
                "syscalls.deny",
                Some(s.name.clone()),
                format!("`{}` is both allowed and denied", s.name),
            ));
        }
        if let Some(why) = syscalls::floor_reason(&s.name) {
            if !sc.unsafe_lift_floor.contains(s) {
                return Err((
                    "syscalls.allow",
                    Some(s.name.clone()),
                    format!(
                        "`{}` is in the always-on floor ({why}); it stays denied. To lift it anyway, \
                         also list it under syscalls.unsafe_lift_floor",
                        s.name
                    ),
                ));
            }
        }
    }
    for s in &sc.unsafe_lift_floor {
        if syscalls::floor_reason(&s.name).is_none() {
            return Err((
                "syscalls.unsafe_lift_floor",
                Some(s.name.clone()),
                format!(
                    "`{}` is not in the floor, so there is nothing to lift",
                    s.name
                ),
            ));
        }
    }
    if !sc.default_deny && !sc.allow.is_empty() {
        return Err(("syscalls.allow", None, "an allow list has no effect when default_deny is false (everything not denied is allowed); list denials under syscalls.deny".into()));
    }
    if sc.default_deny && !sc.deny.is_empty() {
        // Harmless and common (the seed format does it): explicit denials inside an
        // allow-list policy. Nothing to check beyond the contradiction above.
    }

    let r = &p.resources;
    if let Some(c) = r.cpu_shares {
        if !(0.01..=1024.0).contains(&c) {
            return Err((
                "resources.cpu_shares",
                Some(c.to_string()),
                format!("{c} must be a positive fraction of one CPU, e.g. 0.5 or 2"),
            ));
        }
    }
    if r.pids_limit.is_some_and(|n| n < 2) {
        return Err((
            "resources.pids_limit",
            None,
            "must be at least 2 (the sandbox's init and the command)".into(),
        ));
    }
    if r.session_timeout_seconds
        .is_some_and(|t| t == 0 || t > MAX_TIMEOUT_SECONDS)
    {
        return Err((
            "resources.session_timeout_seconds",
            None,
            format!("must be between 1 and {MAX_TIMEOUT_SECONDS} (a year)"),
        ));
    }
    if !p.capabilities.default_drop {
        return Err((
            "capabilities.default_drop",
            None,
            "false is not supported: every capability is dropped except those listed under add"
                .into(),
        ));
    }
    if let Some(m) = r.memory_limit_bytes {
        if m.0 < 4 << 20 {
            return Err((
                "resources.memory_limit_bytes",
                None,
                format!("{m} is too small to start a process (minimum 4M)"),
            ));
        }
    }
    if let Some(n) = r.max_open_files {
        if !(16..=1 << 20).contains(&n) {
            return Err((
                "resources.max_open_files",
                None,
                format!("{n} must be between 16 and 1048576"),
            ));
        }
    }

    let n = &p.network;
    if n.mode == NetworkMode::Isolated && !n.allow_outgoing.is_empty() {
        return Err(("network.allow_outgoing", None, "outgoing ports have no effect when network.isolated is true (only loopback exists); set isolated: false (or mode: proxy, where they are the ports the proxy may reach)".into()));
    }
    if n.isolated && n.allow_udp {
        return Err((
            "network.allow_udp",
            None,
            "has no effect when network.isolated is true".into(),
        ));
    }
    let proxy = n.mode == NetworkMode::Proxy;
    for (field, list) in [
        ("network.allow_domains", &n.allow_domains),
        ("network.deny_domains", &n.deny_domains),
    ] {
        if !list.is_empty() && !proxy {
            return Err((
                field,
                None,
                "only has an effect with network.mode: proxy".into(),
            ));
        }
        for d in list {
            if let Err(why) = check_domain_pattern(d) {
                return Err((field, Some(d.clone()), format!("`{d}`: {why}")));
            }
        }
    }
    let llm = &p.llm;
    if llm.enabled && !n.isolated {
        return Err((
            "llm.enabled",
            None,
            "the gateway needs the sandbox's own network namespace (network.mode isolated or proxy): on the host network the agent could reach providers directly".into(),
        ));
    }
    if !is_decimal(&llm.budget_usd) {
        return Err((
            "llm.budget_usd",
            Some(llm.budget_usd.clone()),
            format!(
                "`{}` is not an amount in dollars (like \"1.00\")",
                llm.budget_usd
            ),
        ));
    }
    for kind in llm.pii.keys() {
        if !PII_KINDS.contains(&kind.as_str()) {
            return Err((
                "llm.pii",
                Some(kind.clone()),
                format!("unknown kind `{kind}`; known: {}", PII_KINDS.join(", ")),
            ));
        }
    }
    if p.audit.enabled {
        if let Some(path) = &p.audit.log_path {
            if !path.is_absolute() {
                return Err((
                    "audit.log_path",
                    Some(path.display().to_string()),
                    "must be an absolute path".into(),
                ));
            }
        }
    }
    for name in p.environment.pass.iter().chain(p.environment.set.keys()) {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err((
                "environment",
                Some(name.clone()),
                format!("`{name}` is not a valid variable name"),
            ));
        }
    }
    Ok(())
}

/// serde reports a bad scalar inside a mapping or sequence at the start of its parent.
/// When the message quotes the offending value (`like this`), point at the value itself
/// and, for a mapping entry, name its key in the field path.
fn refine(text: &str, line: usize, column: usize, msg: String) -> (usize, usize, String) {
    // Structural errors already point at the right place and quote a field name, not a value.
    if [
        "missing field",
        "unknown field",
        "duplicate",
        "unknown variant",
    ]
    .iter()
    .any(|k| msg.contains(k))
    {
        return (line, column, msg);
    }
    let quoted = msg
        .split('`')
        .nth(1)
        .filter(|q| !q.is_empty())
        .map(str::to_string);
    let Some(value) = quoted else {
        return (line, column, msg);
    };
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines
        .iter()
        .enumerate()
        .skip(line.saturating_sub(1))
        .take(200)
    {
        let skip = if i + 1 == line {
            column.saturating_sub(1)
        } else {
            0
        };
        let Some(rest) = l.get(skip..) else { continue };
        let Some(pos) = rest.find(value.as_str()) else {
            continue;
        };
        let col = skip + pos;
        let mut msg = msg;
        let before = l[..col]
            .trim_end_matches(['"', '\''])
            .trim()
            .trim_start_matches("- ");
        if let Some(key) = before
            .strip_suffix(':')
            .map(str::trim)
            .filter(|k| !k.contains([' ', ':', '{']))
        {
            if let Some((path, rest)) = msg.split_once(": ") {
                if !path.contains(' ') && !path.ends_with(key) {
                    msg = format!("{path}.{key}: {rest}");
                }
            }
        }
        return (i + 1, col + 1, msg);
    }
    (line, column, msg)
}

/// Where `needle` occurs in `line` as a whole value: not inside a longer word (so `out`
/// is not found inside `output_paths:`).
fn find_value(line: &str, needle: &str) -> Option<usize> {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut from = 0;
    while let Some(pos) = line[from..].find(needle) {
        let at = from + pos;
        let before = line[..at].chars().next_back();
        let after = line[at + needle.len()..].chars().next();
        if !word(before) && !word(after) {
            return Some(at);
        }
        from = at + needle.len().max(1);
    }
    None
}

/// Finds a line and column for a validation error: the first occurrence of `needle` after
/// the line that opens the field's top-level section, else that section line itself.
fn locate(text: &str, field: &str, needle: Option<&str>) -> (usize, usize) {
    let section = field.split('.').next().unwrap_or(field);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim_end().starts_with(&format!("{section}:")))
        .unwrap_or(0);
    // Narrow to the sub-key (`deny:` in `syscalls.deny`) when the section has one.
    let sub = field.split('.').nth(1).and_then(|key| {
        let pat = format!("{key}:");
        lines
            .iter()
            .enumerate()
            .skip(start + 1)
            .find(|(_, l)| l.trim_start().starts_with(&pat))
            .map(|(i, _)| i)
    });
    if let Some(needle) = needle {
        let from = sub.unwrap_or(start);
        for (i, line) in lines.iter().enumerate().skip(from) {
            let top_level = !line.starts_with([' ', '\t', '-', '#']) && !line.trim().is_empty();
            if i > from && top_level {
                break; // the next top-level section
            }
            if let Some(col) = find_value(line, needle) {
                return (i + 1, col + 1);
            }
        }
    }
    (sub.unwrap_or(start) + 1, 1)
}

#[cfg(test)]
mod tests;
