//! `ironcage audit ...`: reading, verifying, proving and exporting the audit log.
//! Exit codes: 0 intact / done, 1 the log, a checkpoint, a proof or a bundle does not
//! verify, 2 usage, 125 the log could not be read.

use crate::cli::{AuditArgs, AuditCmd};
use crate::commands::{fail, out};
use crate::paths;
use anyhow::Result;
use ironcage_audit::bundle::{self, Bundle, Select};
use ironcage_audit::merkle;
use ironcage_audit::note::{self, hex, Checkpoint, SigningKey, VerifierKey};
use ironcage_audit::verify::{self, CheckpointInput, VerifyError};
use ironcage_audit::AuditLog;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Verification failed: the log or a proof is not what it claims.
pub const FAILED: i32 = 1;
const IO: i32 = 125;
const USAGE: i32 = 2;

pub fn run(args: AuditArgs) -> Result<i32> {
    let log_path = args
        .log
        .clone()
        .unwrap_or_else(|| paths::default_audit_log(paths::is_root()));
    match args.command {
        AuditCmd::Tail {
            lines,
            follow,
            json,
        } => tail(&log_path, lines, follow, json),
        AuditCmd::Show { seq, json } => show(&log_path, seq, json),
        AuditCmd::Verify {
            checkpoint,
            key,
            json,
        } => verify_cmd(&log_path, &checkpoint, key.as_deref(), json),
        AuditCmd::Checkpoint { key, out } => checkpoint(&log_path, key, out),
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
            let key = signing_key(key)?;
            out!("{}", key.verifier().to_text());
            Ok(0)
        }
    }
}

fn open_read(path: &Path) -> Result<AuditLog> {
    AuditLog::open_file_read(path).map_err(|e| fail(IO, e))
}

fn key_path(key: Option<PathBuf>) -> PathBuf {
    key.unwrap_or_else(|| paths::default_audit_key(paths::is_root()))
}

/// The signing key (created on first use at the default path).
pub fn signing_key(key: Option<PathBuf>) -> Result<SigningKey> {
    let path = key_path(key);
    let (key, created) = note::load_or_create_key(&path).map_err(|e| fail(IO, e))?;
    if created {
        crate::commands::say!(
            "ironcage: created audit signing key {} (public key: {}.pub)",
            path.display(),
            path.display()
        );
    }
    Ok(key)
}

/// The verifier key: given, or the public half of the default key if it exists.
fn verifier(spec: Option<&str>) -> Result<Option<VerifierKey>> {
    match spec {
        Some(s) => Ok(Some(note::load_verifier(s).map_err(|e| fail(USAGE, e))?)),
        None => {
            let path = key_path(None);
            let pub_path = note::public_key_path(&path);
            for p in [&pub_path, &path] {
                if p.exists() {
                    if let Ok(k) = note::load_verifier(&p.to_string_lossy()) {
                        return Ok(Some(k));
                    }
                }
            }
            Ok(None)
        }
    }
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| fail(USAGE, format!("{}: {e}", path.display())))
}

/// Opens a checkpoint note with `key` (required: an unchecked checkpoint proves nothing).
fn open_checkpoint(label: &str, note_text: &str, key: Option<&VerifierKey>) -> Result<Checkpoint> {
    let key = key.ok_or_else(|| {
        fail(
            USAGE,
            "no public key to check the checkpoint with: give --key (the log's .pub file or key text)",
        )
    })?;
    Checkpoint::open(note_text, key).map_err(|e| fail(FAILED, format!("checkpoint {label}: {e}")))
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
        "run.end" => format!(
            "{} exit={} wall={}ms violations={}/{}/{}",
            s(&f["outcome"]),
            s(&f["ironcage_exit_code"]),
            f["wall_time_us"].as_u64().map(|u| u / 1000).unwrap_or(0),
            s(&f["violations"]["syscall"]),
            s(&f["violations"]["filesystem"]),
            s(&f["violations"]["network"]),
        ),
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
        .map(|r| format!(" run={}", &r[..r.len().min(12)]))
        .unwrap_or_default();
    let redacted = e
        .get("redacted")
        .map(|r| format!(" [redacted {r}]"))
        .unwrap_or_default();
    format!(
        "#{:<6} {} {:<20}{run} {body}{redacted}",
        e["seq"],
        e["time"].as_str().unwrap_or(""),
        e["type"].as_str().unwrap_or("")
    )
}

/// Prints entries `from..to`; false when stdout is gone (a closed pipe), so `--follow`
/// ends with its reader.
fn print_entries(log: &AuditLog, from: u64, to: u64, json: bool) -> Result<bool> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let mut open = true;
    log.store()
        .entries(from, to, &mut |_, bytes| {
            let text = if json {
                String::from_utf8_lossy(bytes).into_owned()
            } else {
                match serde_json::from_slice::<Value>(bytes) {
                    Ok(v) => summary(&v),
                    Err(_) => "(unreadable entry: run `ironcage audit verify`)".into(),
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

fn tail(path: &Path, n: u64, follow: bool, json: bool) -> Result<i32> {
    let log = open_read(path)?;
    let mut size = log.size().map_err(|e| fail(IO, e))?;
    let open = print_entries(&log, size.saturating_sub(n), size, json)?;
    if !follow || !open {
        return Ok(0);
    }
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let now = log.size().map_err(|e| fail(IO, e))?;
        if now > size {
            if !print_entries(&log, size, now, json)? {
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
        out!("{}", serde_json::to_string_pretty(&value)?);
        out!("leaf hash: {}", hex(&leaf));
        out!(
            "(SHA-256 of 0x00 followed by the entry's {} bytes as stored)",
            bytes.len()
        );
    }
    Ok(0)
}

fn verify_cmd(path: &Path, checkpoints: &[PathBuf], key: Option<&str>, json: bool) -> Result<i32> {
    let log = open_read(path)?;
    let key = verifier(key)?;
    let mut inputs = Vec::new();
    if let Some(note) = log.stored_checkpoint().map_err(|e| fail(IO, e))? {
        inputs.push(CheckpointInput {
            label: format!("{}.checkpoint (the log's latest)", path.display()),
            note,
        });
    }
    for c in checkpoints {
        inputs.push(CheckpointInput {
            label: c.display().to_string(),
            note: read_text(c)?,
        });
    }
    let started = std::time::Instant::now();
    let result = verify::verify(
        log.store(),
        &verify::Options {
            key: key.as_ref(),
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
        Err(VerifyError::Store(e)) => Err(fail(IO, e)),
    }
}

fn checkpoint(path: &Path, key: Option<PathBuf>, out_file: Option<PathBuf>) -> Result<i32> {
    let explicit = key.is_some();
    let key = match signing_key(key) {
        Ok(k) => k,
        // Someone who may read the log but not use its key (an auditor) gets the latest
        // checkpoint the writers signed.
        Err(e) if !explicit => {
            let log = open_read(path)?;
            let note_text = log
                .stored_checkpoint()
                .map_err(|e| fail(IO, e))?
                .ok_or_else(|| fail(IO, format!("{e:#}; and the log has no stored checkpoint")))?;
            crate::commands::say!(
                "ironcage: cannot sign ({e:#}); this is the log's latest stored checkpoint"
            );
            if let Some(f) = out_file {
                std::fs::write(&f, &note_text)
                    .map_err(|e| fail(IO, format!("{}: {e}", f.display())))?;
            }
            print!("{note_text}");
            return Ok(0);
        }
        Err(e) => return Err(e),
    };
    let mut log = AuditLog::open_file(path, None).map_err(|e| fail(IO, e))?;
    for r in log.take_repairs() {
        crate::commands::say!("ironcage: audit log {}: repaired: {r}", path.display());
    }
    let note_text = log.checkpoint_now(&key).map_err(|e| fail(IO, e))?;
    if let Some(f) = out_file {
        std::fs::write(&f, &note_text).map_err(|e| fail(IO, format!("{}: {e}", f.display())))?;
    }
    print!("{note_text}");
    Ok(0)
}

/// The checkpoint to prove against: a saved one, or the log's latest.
fn target_checkpoint(
    log: &AuditLog,
    file: Option<&Path>,
    key: Option<&VerifierKey>,
) -> Result<(String, Checkpoint)> {
    let (label, text) = match file {
        Some(f) => (f.display().to_string(), read_text(f)?),
        None => (
            "(the log's latest)".to_string(),
            log.stored_checkpoint()
                .map_err(|e| fail(IO, e))?
                .ok_or_else(|| {
                    fail(
                        USAGE,
                        "the log has no checkpoint yet: run `ironcage audit checkpoint`",
                    )
                })?,
        ),
    };
    let cp = open_checkpoint(&label, &text, key)?;
    Ok((text, cp))
}

fn prove(path: &Path, seq: u64, file: Option<&Path>, key: Option<&str>) -> Result<i32> {
    let log = open_read(path)?;
    let key = verifier(key)?;
    let (note_text, cp) = target_checkpoint(&log, file, key.as_ref())?;
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
    let proof = log.inclusion_proof(seq, cp.size).map_err(|e| fail(IO, e))?;
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
    let log = open_read(path)?;
    let key = verifier(key)?;
    let old_text = read_text(from)?;
    let old = open_checkpoint(&from.display().to_string(), &old_text, key.as_ref())?;
    let (_, new) = target_checkpoint(&log, to, key.as_ref())?;
    if old.origin != new.origin {
        return Err(fail(
            FAILED,
            format!(
                "the checkpoints are of different logs (`{}` and `{}`)",
                old.origin, new.origin
            ),
        ));
    }
    if old.size > new.size {
        return Err(fail(
            FAILED,
            format!("the log shrank: {} had {} entries, the newer checkpoint has {} (truncated or rolled back)", from.display(), old.size, new.size),
        ));
    }
    let size = log.size().map_err(|e| fail(IO, e))?;
    if new.size > size {
        return Err(fail(
            FAILED,
            format!("the log was truncated: the checkpoint covers {} entries, the log has {size}; entries {size}..{} are missing", new.size, new.size - 1),
        ));
    }
    let proof = log
        .consistency_proof(old.size, new.size)
        .map_err(|e| fail(IO, e))?;
    merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &proof).map_err(|e| {
        fail(
            FAILED,
            format!("NOT consistent: the log at {} entries does not extend the one at {} entries: {e} (entries before {} were rewritten)", new.size, old.size, old.size),
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
    // Sign a fresh checkpoint when a key is at hand (so the bundle covers everything);
    // otherwise use the latest stored one.
    let explicit_key = key.is_some();
    let signer = match signing_key(key) {
        Ok(k) => Some(k),
        Err(e) if explicit_key => return Err(e),
        Err(_) => None,
    };
    let (log, note_text, vkey) = match &signer {
        Some(k) => {
            let mut log = AuditLog::open_file(path, None).map_err(|e| fail(IO, e))?;
            let note_text = log.checkpoint_now(k).map_err(|e| fail(IO, e))?;
            (log, note_text, Some(k.verifier()))
        }
        None => {
            let log = open_read(path)?;
            let n = log
                .stored_checkpoint()
                .map_err(|e| fail(IO, e))?
                .ok_or_else(|| {
                    fail(
                        USAGE,
                        "no signing key and no stored checkpoint to export against",
                    )
                })?;
            (log, n, verifier(None)?)
        }
    };
    let body = note_text.split("\n\n").next().unwrap_or("");
    let cp = Checkpoint::parse_body(body).map_err(|e| fail(FAILED, e))?;
    let select = match (run, from, to) {
        (Some(r), _, _) => Select::Run(r),
        (None, None, None) => Select::All,
        (None, f, t) => Select::Range(f.unwrap_or(0), t.unwrap_or(u64::MAX)),
    };
    let b =
        bundle::export(&log, &note_text, &cp, vkey.as_ref(), select).map_err(|e| fail(IO, e))?;
    if b.entries.is_empty() {
        return Err(fail(USAGE, "no entries match: nothing to export"));
    }
    let text = serde_json::to_string(&b)?;
    if out_file == Path::new("-") {
        out!("{text}");
    } else {
        std::fs::write(out_file, format!("{text}\n"))
            .map_err(|e| fail(IO, format!("{}: {e}", out_file.display())))?;
        crate::commands::say!(
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
            FAILED,
            format!(
                "{}: not a bundle: {e} (line {}, column {})",
                file.display(),
                e.line(),
                e.column()
            ),
        )
    })?;
    let v = bundle::verify_bundle(&b, &key)
        .map_err(|e| fail(FAILED, format!("FAILED: {}: {e}", file.display())))?;
    out!(
        "OK: {} entries of log `{}` verified against its signed checkpoint ({} entries) with key {}{}",
        v.entries,
        v.origin,
        v.tree_size,
        key.name(),
        if v.complete { " (complete log: root recomputed)" } else { " (inclusion proofs)" }
    );
    Ok(0)
}
