//! `ironcage audit ...`: reading, verifying, proving and exporting the audit log.
//! Exit codes: 0 intact / done, 1 the log, a checkpoint, a proof or a bundle does not
//! verify, 2 usage or unusable input (no key to check with, a file that is not a
//! checkpoint), 125 the log could not be read.

use crate::cli::{AuditArgs, AuditCmd};
use crate::commands::{fail, out, say};
use crate::paths;
use anyhow::Result;
use ironcage_audit::bundle::{self, Bundle, Select};
use ironcage_audit::merkle;
use ironcage_audit::note::{self, hex, Checkpoint, SigningKey, VerifierKey};
use ironcage_audit::verify::{self, CheckpointInput, VerifyError};
use ironcage_audit::{AuditLog, LogError};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Verification failed: the log or a proof is not what it claims.
pub const FAILED: i32 = 1;
const IO: i32 = 125;
const USAGE: i32 = 2;

pub fn run(args: AuditArgs) -> Result<i32> {
    let log_path = match args.log.clone() {
        Some(p) => p,
        None => paths::default_audit_log(paths::is_root()).map_err(|e| fail(USAGE, e))?,
    };
    match args.command {
        AuditCmd::Tail {
            lines,
            follow,
            json,
            run,
        } => tail(&log_path, lines, follow, json, run.as_deref()),
        AuditCmd::Show { seq, json } => show(&log_path, seq, json),
        AuditCmd::Verify {
            checkpoint,
            key,
            json,
        } => verify_cmd(&log_path, &checkpoint, &key, json),
        AuditCmd::Checkpoint { key, out, adopt } => checkpoint(&log_path, key, out, adopt),
        AuditCmd::Prove {
            seq,
            checkpoint,
            key,
        } => prove(&log_path, seq, checkpoint.as_deref(), key.as_deref()),
        AuditCmd::Consistency { from, to, key } => {
            consistency(&log_path, &from, to.as_deref(), key.as_deref())
        }
        AuditCmd::Export {
            out,
            run,
            from,
            to,
            key,
        } => export(&log_path, &out, run.as_deref(), from, to, key),
        AuditCmd::VerifyBundle { bundle, key } => verify_bundle(&bundle, &key),
        AuditCmd::PublicKey { key } => {
            let path = key_path(key)?;
            let key = note::load_key(&path).map_err(|e| {
                fail(
                    USAGE,
                    format!("{e} (keys are made by the first `ironcage run` or `ironcage audit checkpoint`)"),
                )
            })?;
            out!("{}", key.verifier().to_text());
            Ok(0)
        }
    }
}

/// Errors of the log: tampering is a verification failure, anything else an I/O one.
fn log_fail(e: LogError) -> anyhow::Error {
    fail(if e.is_tampering() { FAILED } else { IO }, e)
}

/// A log file, or the execution service's log in its database when `--log` is a database
/// URL (`sqlite://PATH`, `postgres://...`).
fn open_any(path: &Path) -> std::result::Result<AuditLog, String> {
    let text = path.to_string_lossy();
    if ironcage_server::audit_store::is_database_url(&text) {
        return ironcage_server::audit_store::open_url(&text, false);
    }
    AuditLog::open_file_read(path).map_err(|e| e.to_string())
}

/// An existing log, to sign (a file, or a database URL).
fn open_signing(path: &Path, key: SigningKey) -> Result<AuditLog> {
    let text = path.to_string_lossy();
    if ironcage_server::audit_store::is_database_url(&text) {
        let mut log =
            ironcage_server::audit_store::open_url(&text, true).map_err(|e| fail(IO, e))?;
        log.set_signer(key);
        return Ok(log);
    }
    AuditLog::open_file_existing(path, Some(key)).map_err(log_fail)
}

fn open_read(path: &Path) -> Result<AuditLog> {
    let text = path.to_string_lossy();
    if ironcage_server::audit_store::is_database_url(&text) {
        return ironcage_server::audit_store::open_url(&text, false).map_err(|e| fail(IO, e));
    }
    AuditLog::open_file_read(path).map_err(log_fail)
}

fn key_path(key: Option<PathBuf>) -> Result<PathBuf> {
    match key {
        Some(k) => Ok(k),
        None => paths::default_audit_key(paths::is_root()).map_err(|e| fail(USAGE, e)),
    }
}

/// The signing key; created on first use at the default path when `create`.
pub fn signing_key(key: Option<PathBuf>, create: bool) -> Result<SigningKey> {
    let path = key_path(key)?;
    if !create {
        return note::load_key(&path).map_err(|e| fail(USAGE, e));
    }
    let (key, created) = note::load_or_create_key(&path).map_err(|e| fail(IO, e))?;
    if created {
        say!(
            "ironcage: created audit signing key {} (public key: {}.pub)",
            path.display(),
            path.display()
        );
    }
    Ok(key)
}

/// Verifier keys: the given ones, or the public half of the default key.
fn verifiers(specs: &[String]) -> Result<Vec<VerifierKey>> {
    if !specs.is_empty() {
        return specs
            .iter()
            .map(|s| note::load_verifier(s).map_err(|e| fail(USAGE, e)))
            .collect();
    }
    // The private key when we can read it (the .pub next to it could have been swapped),
    // else its .pub.
    let path = key_path(None)?;
    if let Ok(k) = note::load_key(&path) {
        return Ok(vec![k.verifier()]);
    }
    let pub_path = note::public_key_path(&path);
    if pub_path.exists() {
        if let Ok(k) = note::load_verifier(&pub_path.to_string_lossy()) {
            return Ok(vec![k]);
        }
    }
    Err(fail(
        USAGE,
        format!(
            "no public key to check signatures with ({}.pub does not exist): give --key with the log's public key (`ironcage audit public-key` where the log is written)",
            path.display()
        ),
    ))
}

fn verifier(spec: Option<&str>) -> Result<VerifierKey> {
    let specs: Vec<String> = spec.into_iter().map(str::to_string).collect();
    Ok(verifiers(&specs)?.remove(0))
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = ironcage_audit::fsutil::read_regular(path)
        .map_err(|e| fail(USAGE, format!("{}: {e}", path.display())))?;
    String::from_utf8(bytes).map_err(|_| fail(USAGE, format!("{}: not UTF-8 text", path.display())))
}

/// Opens a checkpoint note with `key`; the log's origin must match when given.
fn open_checkpoint(
    label: &str,
    text: &str,
    key: &VerifierKey,
    origin: Option<&str>,
) -> Result<Checkpoint> {
    if Checkpoint::parse_unverified(text).is_err() {
        return Err(fail(USAGE, format!("{label} is not a signed checkpoint")));
    }
    let cp = Checkpoint::open(text, key).map_err(|e| {
        fail(
            FAILED,
            format!("checkpoint {label}: {e} (key {})", key.to_text()),
        )
    })?;
    if let Some(o) = origin {
        if cp.origin != o {
            return Err(fail(
                FAILED,
                format!(
                    "checkpoint {label} is for log `{}`, not this log (`{o}`)",
                    cp.origin
                ),
            ));
        }
    }
    Ok(cp)
}

/// A command-line word as a shell would need it (quoted when it has spaces or controls),
/// so a summary stays on one line.
fn shell_word(w: &str) -> String {
    let plain = !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./=:@%+,-[]".contains(c));
    if plain {
        w.to_string()
    } else {
        format!("{w:?}")
    }
}

/// A one-line summary of an entry for humans.
fn summary(e: &Value) -> String {
    let f = &e["fields"];
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let body = match e["type"].as_str().unwrap_or("") {
        "log.init" => format!("log {}", s(&f["origin"])),
        "log.repair" => s(&f["repair"]),
        "run.start" => format!(
            "policy={} {}",
            s(&f["policy"]),
            f["command"]
                .as_array()
                .map(|a| a
                    .iter()
                    .map(|w| shell_word(&s(w)))
                    .collect::<Vec<_>>()
                    .join(" "))
                .unwrap_or_default()
        ),
        "run.end" => format!(
            "{} exit={} wall={}ms violations: syscall={} filesystem={} network={}",
            s(&f["outcome"]),
            s(&f["ironcage_exit_code"]),
            f["wall_time_us"].as_u64().map(|u| u / 1000).unwrap_or(0),
            s(&f["violations"]["syscall"]),
            s(&f["violations"]["filesystem"]),
            s(&f["violations"]["network"]),
        ),
        "run.resources" => {
            let ms = |k: &str| f[k].as_u64().unwrap_or(0) / 1000;
            let mut t = format!(
                "cpu={}ms peak={}KiB",
                ms("cpu_user_us") + ms("cpu_system_us"),
                f["peak_memory_bytes"].as_u64().unwrap_or(0) / 1024
            );
            for (k, label) in [
                ("oom_kills", "oom-kills"),
                ("pids_refused_forks", "refused-forks"),
                ("cpu_throttled_periods", "throttled"),
            ] {
                if f[k].as_u64().unwrap_or(0) > 0 {
                    t.push_str(&format!(" {label}={}", f[k]));
                }
            }
            if f["timed_out"] == true {
                t.push_str(" TIMED-OUT");
            }
            t
        }
        "run.refused" => format!("policy={} {}", s(&f["policy"]), s(&f["reason"])),
        "violation.syscall" => format!("{} x{}", s(&f["syscall"]), s(&f["count"])),
        "violation.filesystem" => {
            format!("{} {} x{}", s(&f["syscall"]), s(&f["path"]), s(&f["count"]))
        }
        "violation.network" => format!(
            "{} {}:{} x{}",
            s(&f["syscall"]),
            s(&f["address"]),
            s(&f["port"]),
            s(&f["count"])
        ),
        _ => {
            let mut t = f.to_string();
            if t.len() > 160 {
                let mut cut = 157;
                while !t.is_char_boundary(cut) {
                    cut -= 1;
                }
                t.truncate(cut);
                t.push_str("...");
            }
            t
        }
    };
    let run = e["run"]
        .as_str()
        .map(|r| format!(" run={}", shell_word(r)))
        .unwrap_or_default();
    let redacted = e
        .get("redacted")
        .map(|r| format!(" [redacted {r}]"))
        .unwrap_or_default();
    printable(&format!(
        "#{:<6} {} {:<20}{run} {body}{redacted}",
        e["seq"],
        e["time"].as_str().unwrap_or(""),
        e["type"].as_str().unwrap_or("")
    ))
}

/// Control characters escaped: entries hold text the sandbox chose (paths it tried to
/// write), which must not forge lines or drive the terminal.
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        // Controls, and the invisible format characters that reorder or hide text.
        let invisible = matches!(c as u32, 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB);
        if c.is_control() || invisible {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Prints entries `from..to` (of run `run`, if given); false when stdout is gone (a closed
/// pipe), so `--follow` ends with its reader.
fn print_entries(
    log: &AuditLog,
    from: u64,
    to: u64,
    json: bool,
    run: Option<&str>,
) -> Result<bool> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let mut open = true;
    log.store()
        .entries(from, to, &mut |_, bytes| {
            let value = serde_json::from_slice::<Value>(bytes).ok();
            if let (Some(r), Some(v)) = (run, &value) {
                if v["run"].as_str() != Some(r) {
                    return Ok(());
                }
            }
            let text = if json {
                String::from_utf8_lossy(bytes).into_owned()
            } else {
                match &value {
                    Some(v) => summary(v),
                    None => "(unreadable entry: run `ironcage audit verify`)".into(),
                }
            };
            if open && writeln!(stdout, "{text}").is_err() {
                open = false;
            }
            Ok(())
        })
        .map_err(|e| fail(IO, e))?;
    Ok(open && stdout.flush().is_ok())
}

fn tail(path: &Path, n: u64, follow: bool, json: bool, run: Option<&str>) -> Result<i32> {
    let log = open_read(path)?;
    let mut size = log.size().map_err(log_fail)?;
    // With --run, the last n entries of that run: look further back.
    let from = if run.is_some() {
        0
    } else {
        size.saturating_sub(n)
    };
    let open = print_entries(&log, from, size, json, run)?;
    if !follow || !open {
        return Ok(0);
    }
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        // A reader's index is a snapshot; reopen to see what writers appended since.
        let log = open_read(path)?;
        let now = log.size().map_err(log_fail)?;
        if now > size {
            if !print_entries(&log, size, now, json, run)? {
                return Ok(0);
            }
            size = now;
        }
    }
}

fn show(path: &Path, seq: u64, json: bool) -> Result<i32> {
    let log = open_read(path)?;
    let bytes = log.entry(seq).map_err(|e| fail(USAGE, e))?;
    let leaf = merkle::leaf_hash(&bytes);
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| fail(FAILED, format!("entry {seq} is damaged: {e}")))?;
    if json {
        out!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"seq": seq, "leaf_hash": hex(&leaf), "entry": value})
            )?
        );
    } else {
        let pretty = serde_json::to_string_pretty(&value)?;
        out!(
            "{}",
            pretty.lines().map(printable).collect::<Vec<_>>().join("\n")
        );
        out!("leaf hash: {}", hex(&leaf));
        out!(
            "(SHA-256 of 0x00 followed by the entry's {} bytes as stored)",
            bytes.len()
        );
    }
    Ok(0)
}

fn verify_cmd(path: &Path, checkpoints: &[PathBuf], keys: &[String], json: bool) -> Result<i32> {
    let report_err = |code: i32, msg: String| -> anyhow::Error {
        if json {
            out!("{}", json!({"intact": false, "error": msg}));
        }
        fail(code, msg)
    };
    let log = open_any(path).map_err(|e| report_err(IO, e))?;
    let keys = verifiers(keys).map_err(|e| report_err(USAGE, format!("{e:#}")))?;
    let mut inputs = Vec::new();
    if let Some(note) = log
        .stored_checkpoint()
        .map_err(|e| report_err(IO, e.to_string()))?
    {
        inputs.push(CheckpointInput {
            label: format!("{}.checkpoint (the log's latest)", path.display()),
            note,
        });
    }
    for c in checkpoints {
        let note = read_text(c).map_err(|e| report_err(USAGE, format!("{e:#}")))?;
        inputs.push(CheckpointInput {
            label: c.display().to_string(),
            note,
        });
    }
    let started = std::time::Instant::now();
    let result = verify::verify(
        log.store(),
        &verify::Options {
            keys: &keys,
            checkpoints: inputs,
        },
    );
    let secs = started.elapsed().as_secs_f64();
    match result {
        Ok(v) => {
            if json {
                out!(
                    "{}",
                    json!({"intact": true, "entries": v.size, "root": hex(&v.root), "origin": v.origin,
                        "checked": v.checked, "warnings": v.warnings, "seconds": secs})
                );
            } else {
                out!(
                    "OK: {} is intact ({} entries, root {})",
                    path.display(),
                    v.size,
                    hex(&v.root)
                );
                for c in &v.checked {
                    out!("  checked: {c}");
                }
                for w in &v.warnings {
                    out!("  warning: {w}");
                }
            }
            Ok(0)
        }
        Err(VerifyError::Tampered { entry, message }) => {
            if json {
                out!(
                    "{}",
                    json!({"intact": false, "first_bad_entry": entry, "error": message})
                );
            }
            Err(fail(
                FAILED,
                format!("FAILED: {}: {message}", path.display()),
            ))
        }
        Err(e @ (VerifyError::NoKey | VerifyError::BadInput { .. })) => {
            Err(report_err(USAGE, e.to_string()))
        }
        Err(VerifyError::Store(e)) => Err(report_err(IO, e.to_string())),
    }
}

/// Tells the user about an append's repairs (recorded in the log) and about anything that
/// went wrong after its entries were durable.
pub fn print_repairs(path: &Path, a: &ironcage_audit::log::Appended) {
    for r in &a.repairs {
        say!(
            "ironcage: audit log {}: repaired (recorded in the log): {r}",
            path.display()
        );
    }
    for w in &a.warnings {
        say!("ironcage: audit log {}: warning: {w}", path.display());
    }
}

fn checkpoint(
    path: &Path,
    key: Option<PathBuf>,
    out_file: Option<PathBuf>,
    adopt: bool,
) -> Result<i32> {
    let explicit = key.is_some();
    let note_text = match signing_key(key, true) {
        Ok(key) => {
            let mut log = open_signing(path, key)?;
            let a = if adopt {
                log.checkpoint_adopting()
            } else {
                log.checkpoint_now()
            }
            .map_err(log_fail)?;
            print_repairs(path, &a);
            a.checkpoint.unwrap_or_default()
        }
        // Someone who may read the log but not use its key (an auditor) gets the latest
        // checkpoint the writers signed.
        Err(e) if !explicit => {
            let log = open_read(path)?;
            let note_text = log
                .stored_checkpoint()
                .map_err(log_fail)?
                .ok_or_else(|| fail(IO, format!("{e:#}; and the log has no stored checkpoint")))?;
            say!("ironcage: cannot sign ({e:#}); this is the log's latest stored checkpoint");
            note_text
        }
        Err(e) => return Err(e),
    };
    if let Some(f) = out_file {
        std::fs::write(&f, &note_text).map_err(|e| fail(IO, format!("{}: {e}", f.display())))?;
    }
    use std::io::Write as _;
    let _ = std::io::stdout().write_all(note_text.as_bytes());
    Ok(0)
}

/// The checkpoint to prove against: a saved one, or the log's latest.
fn target_checkpoint(
    log: &mut AuditLog,
    file: Option<&Path>,
    key: &VerifierKey,
) -> Result<(String, Checkpoint)> {
    let (label, text) = match file {
        Some(f) => (f.display().to_string(), read_text(f)?),
        None => (
            "(the log's latest)".to_string(),
            log.stored_checkpoint().map_err(log_fail)?.ok_or_else(|| {
                fail(
                    USAGE,
                    "the log has no checkpoint yet: run `ironcage audit checkpoint`",
                )
            })?,
        ),
    };
    let origin = log.origin().map_err(log_fail)?;
    let cp = open_checkpoint(&label, &text, key, origin.as_deref())?;
    let size = log.size().map_err(log_fail)?;
    if cp.size > size {
        return Err(fail(
            FAILED,
            format!(
                "checkpoint {label} covers {} entries but the log has {size}: the log was truncated (entries {size}..{} are missing)",
                cp.size,
                cp.size - 1
            ),
        ));
    }
    Ok((text, cp))
}

fn prove(path: &Path, seq: u64, file: Option<&Path>, key: Option<&str>) -> Result<i32> {
    let mut log = open_read(path)?;
    let key = verifier(key)?;
    let (note_text, cp) = target_checkpoint(&mut log, file, &key)?;
    if seq >= cp.size {
        return Err(fail(
            USAGE,
            format!(
                "entry {seq} is not covered by the checkpoint ({} entries): take a newer one",
                cp.size
            ),
        ));
    }
    let bytes = log.entry(seq).map_err(|e| fail(USAGE, e))?;
    let leaf = merkle::leaf_hash(&bytes);
    let proof = log.inclusion_proof(seq, cp.size).map_err(log_fail)?;
    merkle::verify_inclusion(seq, cp.size, &leaf, &proof, &cp.root).map_err(|e| {
        fail(
            FAILED,
            format!(
                "entry {seq} is NOT in the signed tree: {e} (the entry or the log was modified)"
            ),
        )
    })?;
    out!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "seq": seq,
            "leaf_hash": hex(&leaf),
            "tree_size": cp.size,
            "root_hash": hex(&cp.root),
            "proof": proof.iter().map(|h| hex(h)).collect::<Vec<_>>(),
            "entry": String::from_utf8_lossy(&bytes),
            "checkpoint": note_text,
        }))?
    );
    Ok(0)
}

fn consistency(path: &Path, from: &Path, to: Option<&Path>, key: Option<&str>) -> Result<i32> {
    let mut log = open_read(path)?;
    let key = verifier(key)?;
    let origin = log.origin().map_err(log_fail)?;
    let old_text = read_text(from)?;
    let old = open_checkpoint(
        &from.display().to_string(),
        &old_text,
        &key,
        origin.as_deref(),
    )?;
    let size = log.size().map_err(log_fail)?;
    if old.size > size {
        return Err(fail(
            FAILED,
            format!(
                "the log was truncated: {} covers {} entries, the log has {size}; entries {size}..{} are missing",
                from.display(),
                old.size,
                old.size - 1
            ),
        ));
    }
    let (_, new) = target_checkpoint(&mut log, to, &key)?;
    if old.size > new.size {
        return Err(fail(
            FAILED,
            format!(
                "the log shrank: {} had {} entries, the newer checkpoint has {} (truncated or rolled back)",
                from.display(),
                old.size,
                new.size
            ),
        ));
    }
    let proof = log
        .consistency_proof(old.size, new.size)
        .map_err(log_fail)?;
    merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &proof).map_err(|e| {
        fail(
            FAILED,
            format!(
                "NOT consistent: the log at {} entries does not extend the one at {} entries: {e} (entries before {} were rewritten)",
                new.size, old.size, old.size
            ),
        )
    })?;
    out!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "consistent": true,
            "old_size": old.size,
            "old_root": hex(&old.root),
            "new_size": new.size,
            "new_root": hex(&new.root),
            "proof": proof.iter().map(|h| hex(h)).collect::<Vec<_>>(),
        }))?
    );
    Ok(0)
}

fn export(
    path: &Path,
    out_file: &Path,
    run: Option<&str>,
    from: Option<u64>,
    to: Option<u64>,
    key: Option<PathBuf>,
) -> Result<i32> {
    // Sign a fresh checkpoint (and the manifest of a partial bundle) when the key is at
    // hand; otherwise use the latest stored checkpoint (whole-log bundles only).
    let explicit_key = key.is_some();
    let signer = match signing_key(key, false) {
        Ok(k) => Some(k),
        Err(e) if explicit_key => return Err(e),
        Err(_) => None,
    };
    let select = match (run, from, to) {
        (Some(r), _, _) => Select::Run(r),
        (None, None, None) => Select::All,
        (None, f, t) => Select::Range(f.unwrap_or(0), t.unwrap_or(u64::MAX)),
    };
    // Nothing is signed that does not verify in full (the append-time checks cannot see
    // an edit in the middle of the log).
    if let Some(k) = &signer {
        let reader = open_read(path)?;
        let checkpoints = reader
            .stored_checkpoint()
            .map_err(log_fail)?
            .map(|note| CheckpointInput {
                label: "(the log's latest)".into(),
                note,
            })
            .into_iter()
            .collect();
        verify::verify(
            reader.store(),
            &verify::Options {
                keys: &[k.verifier()],
                checkpoints,
            },
        )
        .map_err(|e| {
            fail(
                FAILED,
                format!("not exporting: the log does not verify: {e}"),
            )
        })?;
    }
    let (log, note_text) = match &signer {
        Some(k) => {
            let mut log = open_signing(path, k.clone())?;
            let a = log.checkpoint_now().map_err(log_fail)?;
            print_repairs(path, &a);
            (log, a.checkpoint.unwrap_or_default())
        }
        None => {
            if !matches!(select, Select::All) {
                return Err(fail(
                    USAGE,
                    "a partial bundle needs the signing key (its manifest is signed, so no entry can be left out): give --key",
                ));
            }
            let log = open_read(path)?;
            let n = log.stored_checkpoint().map_err(log_fail)?.ok_or_else(|| {
                fail(
                    USAGE,
                    "no signing key and no stored checkpoint to export against",
                )
            })?;
            (log, n)
        }
    };
    let cp = Checkpoint::parse_unverified(&note_text).map_err(|e| fail(FAILED, e))?;
    let b = bundle::export(&log, &note_text, &cp, signer.as_ref(), select).map_err(log_fail)?;
    if b.entries.is_empty() {
        return Err(fail(USAGE, "no entries match: nothing to export"));
    }
    let text = serde_json::to_string(&b)?;
    if out_file == Path::new("-") {
        out!("{text}");
    } else {
        std::fs::write(out_file, format!("{text}\n"))
            .map_err(|e| fail(IO, format!("{}: {e}", out_file.display())))?;
        say!(
            "ironcage: exported {} entries (tree of {}) to {}",
            b.entries.len(),
            cp.size,
            out_file.display()
        );
    }
    Ok(0)
}

fn verify_bundle(file: &Path, key: &str) -> Result<i32> {
    let key = note::load_verifier(key).map_err(|e| fail(USAGE, e))?;
    let text = read_text(file)?;
    let b: Bundle = serde_json::from_str(&text).map_err(|e| {
        fail(
            USAGE,
            format!("{} is not an audit bundle: {e}", file.display()),
        )
    })?;
    let v = bundle::verify_bundle(&b, &key)
        .map_err(|e| fail(FAILED, format!("FAILED: {}: {e}", file.display())))?;
    out!(
        "OK: {} entries of log `{}` ({}) verified against its signed checkpoint ({} entries) with key {}{}",
        v.entries,
        v.origin,
        v.selection,
        v.tree_size,
        key.to_text(),
        if v.complete {
            " (complete log: root recomputed)"
        } else {
            " (inclusion proofs; the signed manifest lists exactly these entries)"
        }
    );
    Ok(0)
}
