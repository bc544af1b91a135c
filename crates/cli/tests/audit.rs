//! `ironcage audit` end to end on real logs on disk: what runs record, and attacks on the
//! log (edit, delete, swap, truncate, rewrite, forged checkpoints) that `verify` must catch
//! naming the first bad entry. Proofs and bundles are checked with the library's RFC 9162
//! verifiers (themselves tested against published vectors).

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `ironcage ARGS` as `mode` with extra environment (kept across setpriv's reset).
fn ic(mode: Mode, env: &[(&str, &Path)]) -> Command {
    let mut c = as_mode(mode, "/usr/bin/env");
    for (k, v) in env {
        c.arg(format!("{k}={}", v.display()));
    }
    c.arg(binary());
    c
}

struct Log {
    dir: Scratch,
    log: PathBuf,
    key: PathBuf,
}

impl Log {
    fn new() -> Log {
        let dir = Scratch::new();
        let log = dir.path.join("logs/audit.log");
        let key = dir.path.join("keys/audit.key");
        Log { dir, log, key }
    }

    fn env(&self) -> Vec<(&'static str, &Path)> {
        vec![
            ("IRONCAGE_AUDIT_LOG", &self.log),
            ("IRONCAGE_AUDIT_KEY", &self.key),
        ]
    }

    fn cmd(&self, mode: Mode, args: &[&str]) -> (i32, String, String) {
        let mut c = ic(mode, &self.env());
        c.args(args);
        spawn(c, None)
    }

    fn audit(&self, mode: Mode, args: &[&str]) -> (i32, String, String) {
        let mut a = vec!["audit", "--log"];
        let log = self.log.to_str().unwrap().to_string();
        a.push(&log);
        a.extend_from_slice(args);
        self.cmd(mode, &a)
    }

    fn entries(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn pubkey(&self) -> PathBuf {
        let mut p = self.key.as_os_str().to_owned();
        p.push(".pub");
        p.into()
    }
}

both_modes! {
    fn runs_are_recorded_with_their_violations_and_no_secrets(mode: Mode) {
        let l = Log::new();
        let report = l.dir.path.join("report.json");
        let policy = policy(&l.dir, &[&format!(
            "audit:\n  enabled: true\n  log_path: {}\n  detail_level: [syscall, filesystem, network, resource, process]\n",
            l.log.display()
        )]);
        let (code, _, err) = l.cmd(mode, &[
            "run", "--policy", policy.to_str().unwrap(), "--report", report.to_str().unwrap(), "--",
            "/usr/bin/python3", "-c",
            "import os, ctypes\ntry: os.mkdir('/etc/evil')\nexcept OSError: pass\nctypes.CDLL(None).unshare(0x20000)\nprint('done')",
            "--password", "hunter2", "alice@example.com",
        ]);
        assert_eq!(code, 0, "{err}");
        let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        let run_id = report["run_id"].as_str().unwrap();
        let entries = l.entries();
        let kinds: Vec<&str> = entries.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds[..3], ["log.init", "run.start", "run.end"], "{kinds:?}");
        assert!(kinds.contains(&"violation.syscall") && kinds.contains(&"violation.filesystem") && kinds.contains(&"run.resources"), "{kinds:?}");
        for e in &entries[1..] {
            assert_eq!(e["run"], run_id, "{e}");
        }
        let sys = entries.iter().find(|e| e["type"] == "violation.syscall").unwrap();
        assert_eq!(sys["fields"]["syscall"], "unshare", "{sys}");
        let fs = entries.iter().find(|e| e["type"] == "violation.filesystem").unwrap();
        assert_eq!(fs["fields"]["path"], "/etc/evil", "{fs}");
        assert_eq!(entries[2]["fields"]["violations"]["syscall"], 1, "{}", entries[2]);
        // The command is on record, its secrets are not; their types and counts are.
        let raw = std::fs::read_to_string(&l.log).unwrap();
        assert!(!raw.contains("hunter2") && !raw.contains("alice@example.com"), "{raw}");
        assert_eq!(entries[1]["redacted"]["secret"], 1, "{}", entries[1]);
        assert_eq!(entries[1]["redacted"]["email"], 1, "{}", entries[1]);
        assert!(entries[1]["fields"]["env_names"].is_array());
        // The key was made on first use, private to its owner.
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::metadata(&l.key).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.uid(), if mode == Mode::Root { 0 } else { test_user().1 });
        let (code, out, err) = l.audit(mode, &["verify"]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("OK:") && out.contains("signature, origin and root"), "{out}");
        let (code, out, _) = l.audit(mode, &["tail", "-n", "50"]);
        assert_eq!(code, 0);
        assert!(out.contains("violation.syscall") && out.contains("unshare"), "{out}");
    }
}

#[test]
fn a_refused_run_is_recorded() {
    // `nobody` has no cgroup delegated, so a policy with a memory limit is refused for it
    // (exit 120, naming the fix); the refusal is an audit event like any run.
    let l = Log::new();
    let policy = policy(
        &l.dir,
        &[&format!(
            "audit:\n  enabled: true\n  log_path: {}\n",
            l.log.display()
        )],
    );
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--reset-env",
        "/usr/bin/env",
    ])
    .arg(format!("IRONCAGE_AUDIT_KEY={}", l.key.display()))
    .arg(binary())
    .args([
        "run",
        "--policy",
        policy.to_str().unwrap(),
        "--",
        "/bin/true",
        "--api-key",
        "k-123",
    ])
    .current_dir("/tmp");
    let (code, _, err) = spawn(c, None);
    assert_eq!(code, 120, "{err}");
    assert!(err.contains("cgroup delegate"), "{err}");
    let entries = l.entries();
    let refused = entries
        .iter()
        .find(|e| e["type"] == "run.refused")
        .unwrap_or_else(|| panic!("{entries:?}"));
    assert!(
        refused["fields"]["reason"]
            .as_str()
            .unwrap()
            .contains("cgroups"),
        "{refused}"
    );
    assert_eq!(
        refused["fields"]["command"][2], "[REDACTED:secret]",
        "{refused}"
    );
    assert!(
        !entries.iter().any(|e| e["type"] == "run.start"),
        "a refused run never started"
    );
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--reset-env",
    ])
    .arg(binary())
    .args([
        "audit",
        "--log",
        l.log.to_str().unwrap(),
        "verify",
        "--key",
        l.pubkey().to_str().unwrap(),
    ])
    .current_dir("/tmp");
    let (code, out, err) = spawn(c, None);
    assert_eq!(code, 0, "{out}{err}");
}

/// A log of 6 runs (19 entries) with a saved checkpoint, made by real `ironcage run`s.
fn sample_log() -> (Log, PathBuf) {
    let l = Log::new();
    for _ in 0..6 {
        let (code, _, err) = l.cmd(
            Mode::Root,
            &["run", "--profile", "ai-strict", "--", "/bin/true"],
        );
        assert_eq!(code, 0, "{err}");
    }
    let cp = l.dir.path.join("saved.checkpoint");
    let (code, _, err) = l.audit(Mode::Root, &["checkpoint", "--out", cp.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(l.entries().len(), 19);
    (l, cp)
}

fn lines(l: &Log) -> Vec<String> {
    std::fs::read_to_string(&l.log)
        .unwrap()
        .lines()
        .map(|s| format!("{s}\n"))
        .collect()
}

fn write_lines(l: &Log, lines: &[String]) {
    std::fs::write(&l.log, lines.concat()).unwrap();
}

/// Runs verify (with the saved checkpoint) and returns its failure message.
fn verify_fails(l: &Log, cp: &Path) -> String {
    let (code, out, err) = l.audit(
        Mode::Root,
        &["verify", "--checkpoint", cp.to_str().unwrap()],
    );
    assert_eq!(code, 1, "verify must fail (exit 1): {out}{err}");
    assert!(err.contains("FAILED"), "{err}");
    err
}

#[test]
fn tamper_edit_an_entry() {
    let (l, cp) = sample_log();
    let mut ls = lines(&l);
    ls[5] = ls[5].replace("\"exited\"", "\"signald\"");
    assert!(ls[5].contains("signald"));
    write_lines(&l, &ls);
    let err = verify_fails(&l, &cp);
    assert!(err.contains("entry 5 was modified"), "{err}");
}

#[test]
fn tamper_flip_a_byte_breaking_the_json() {
    let (l, cp) = sample_log();
    let mut bytes = std::fs::read(&l.log).unwrap();
    let at = lines(&l)[..7].iter().map(|s| s.len()).sum::<usize>() + 3;
    bytes[at] = b'}';
    std::fs::write(&l.log, bytes).unwrap();
    let err = verify_fails(&l, &cp);
    assert!(err.contains("entry 7") && err.contains("damaged"), "{err}");
}

#[test]
fn tamper_delete_an_entry() {
    let (l, cp) = sample_log();
    let mut ls = lines(&l);
    ls.remove(8);
    write_lines(&l, &ls);
    let err = verify_fails(&l, &cp);
    assert!(err.contains("entry 8 is missing"), "{err}");
}

#[test]
fn tamper_swap_two_entries() {
    let (l, cp) = sample_log();
    let mut ls = lines(&l);
    ls.swap(9, 10);
    write_lines(&l, &ls);
    let err = verify_fails(&l, &cp);
    assert!(
        err.contains("out of order") && err.contains("entry 9"),
        "{err}"
    );
}

#[test]
fn tamper_truncate_entries_and_index() {
    let (l, cp) = sample_log();
    // A careful attacker truncates the log, its index and its stored checkpoint; the
    // checkpoint the auditor saved still covers 19 entries.
    let ls = lines(&l);
    write_lines(&l, &ls[..16]);
    for ext in ["idx", "tree", "checkpoint"] {
        let _ = std::fs::remove_file(format!("{}.{ext}", l.log.display()));
    }
    let err = verify_fails(&l, &cp);
    assert!(
        err.contains("truncated") && err.contains("entries 16..18 are missing"),
        "{err}"
    );
    // Without the saved checkpoint the shortened log is self-consistent; consistency
    // against the saved one fails too.
    let (code, _, err) = l.audit(
        Mode::Root,
        &[
            "consistency",
            "--from",
            cp.to_str().unwrap(),
            "--key",
            l.pubkey().to_str().unwrap(),
            "--to",
            cp.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1, "{err}");
}

#[test]
fn tamper_truncate_bytes_of_the_last_entry() {
    let (l, cp) = sample_log();
    let len = std::fs::metadata(&l.log).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&l.log)
        .unwrap();
    f.set_len(len - 40).unwrap();
    // It looks like a torn append, but the saved checkpoint covers entry 18.
    let err = verify_fails(&l, &cp);
    assert!(
        err.contains("truncated") && err.contains("entries 18..18"),
        "{err}"
    );
}

#[test]
fn tamper_edit_the_last_entry() {
    let (l, _) = sample_log();
    // No later entry links to it; the index written when it was appended still names it.
    let mut ls = lines(&l);
    ls[18] = ls[18].replace("\"timed_out\":false", "\"timed_out\":true");
    assert!(ls[18].contains("\"timed_out\":true"), "{}", ls[18]);
    write_lines(&l, &ls);
    let (code, _, err) = l.audit(Mode::Root, &["verify"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the first entry that differs from the index is 18"),
        "{err}"
    );
    // The next run refuses to build on it (and to sign it).
    let (code, _, err) = l.cmd(Mode::Root, &["run", "--", "/bin/true"]);
    assert_eq!(code, 120, "{err}");
    assert!(
        err.contains("was tampered with") && err.contains("entry 18"),
        "{err}"
    );
    // Without any checkpoint, verify says it cannot vouch for the log.
    let _ = std::fs::remove_file(format!("{}.checkpoint", l.log.display()));
    let (code, _, err) = l.audit(Mode::Root, &["verify"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no signed checkpoint"), "{err}");
}

#[test]
fn tamper_rewrite_history_consistently() {
    let (l, cp) = sample_log();
    // The strongest attack without the key: change entry 4, re-link every later entry,
    // rebuild the index from the rewritten log. Only the signed checkpoint catches it.
    let script = r#"
import hashlib, json, sys
path = sys.argv[1]
lines = open(path, 'rb').read().split(b'\n')[:-1]
out, prev = [], None
for i, raw in enumerate(lines):
    e = json.loads(raw)
    if i == 4:
        e['fields']['command'] = ['/bin/false']
    if prev is not None:
        e['prev'] = prev
    b = json.dumps(e, separators=(',', ':'), sort_keys=True, ensure_ascii=False).encode()
    prev = hashlib.sha256(b'\x00' + b).hexdigest()
    out.append(b)
open(path, 'wb').write(b'\n'.join(out) + b'\n')
"#;
    let st = Command::new("/usr/bin/python3")
        .args(["-c", script, l.log.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    for ext in ["idx", "tree"] {
        std::fs::remove_file(format!("{}.{ext}", l.log.display())).unwrap();
    }
    // The next run rebuilds the index from the rewritten entries, finds that they do not
    // hash to the last signed checkpoint, and refuses to run (or sign anything).
    let (code, _, err) = l.cmd(Mode::Root, &["run", "--", "/bin/true"]);
    assert_eq!(code, 120, "{err}");
    assert!(
        err.contains("no longer match the last signed checkpoint"),
        "{err}"
    );
    let err = verify_fails(&l, &cp);
    assert!(
        err.contains("does not match the log") && err.contains("19 entries"),
        "{err}"
    );
}

#[test]
fn tamper_forged_checkpoints() {
    let (l, cp) = sample_log();
    let text = std::fs::read_to_string(&cp).unwrap();
    // Claiming more entries than were signed.
    let forged = l.dir.path.join("forged");
    std::fs::write(&forged, text.replacen("\n19\n", "\n18\n", 1)).unwrap();
    let err = verify_fails(&l, &forged);
    assert!(err.contains("forged or altered"), "{err}");
    // Signed, but by another key.
    let other = Log::new();
    assert_eq!(other.cmd(Mode::Root, &["run", "--", "/bin/true"]).0, 0);
    let theirs = other.dir.path.join("theirs");
    assert_eq!(
        other
            .audit(
                Mode::Root,
                &["checkpoint", "--out", theirs.to_str().unwrap()]
            )
            .0,
        0
    );
    let err = verify_fails(&l, &theirs);
    assert!(err.contains("not signed by"), "{err}");
    // And the prove command refuses a forged checkpoint too.
    let (code, _, err) = l.audit(
        Mode::Root,
        &["prove", "3", "--checkpoint", forged.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{err}");
}

#[test]
fn proofs_round_trip() {
    let (l, cp) = sample_log();
    let old = ironcage_audit::note::Checkpoint::parse_body(&std::fs::read_to_string(&cp).unwrap())
        .unwrap();
    for _ in 0..3 {
        assert_eq!(l.cmd(Mode::Root, &["run", "--", "/bin/true"]).0, 0);
    }
    for seq in 0..19u64 {
        let (code, out, err) = l.audit(
            Mode::Root,
            &[
                "prove",
                &seq.to_string(),
                "--checkpoint",
                cp.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "{err}");
        let p: Value = serde_json::from_str(&out).unwrap();
        let hash = |s: &Value| -> [u8; 32] {
            ironcage_audit::note::unhex(s.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        };
        let proof: Vec<[u8; 32]> = p["proof"].as_array().unwrap().iter().map(hash).collect();
        let leaf = ironcage_audit::merkle::leaf_hash(p["entry"].as_str().unwrap().as_bytes());
        assert_eq!(leaf, hash(&p["leaf_hash"]));
        ironcage_audit::merkle::verify_inclusion(seq, 19, &leaf, &proof, &old.root).unwrap();
        assert!(
            ironcage_audit::merkle::verify_inclusion(seq, 19, &[0; 32], &proof, &old.root).is_err()
        );
    }
    // The log grew by 9 entries: consistent with the saved checkpoint.
    let (code, out, err) = l.audit(Mode::Root, &["consistency", "--from", cp.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let c: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (c["old_size"].as_u64(), c["new_size"].as_u64()),
        (Some(19), Some(28))
    );
    let hash = |s: &Value| -> [u8; 32] {
        ironcage_audit::note::unhex(s.as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    };
    let proof: Vec<[u8; 32]> = c["proof"].as_array().unwrap().iter().map(hash).collect();
    ironcage_audit::merkle::verify_consistency(19, 28, &old.root, &hash(&c["new_root"]), &proof)
        .unwrap();
}

#[test]
fn bundle_verifies_offline_with_only_the_public_key() {
    let (l, _) = sample_log();
    let all = l.dir.path.join("all.json");
    let one = l.dir.path.join("one.json");
    assert_eq!(
        l.audit(Mode::Root, &["export", "--out", all.to_str().unwrap()])
            .0,
        0
    );
    let run_id = l.entries()[4]["run"].as_str().unwrap().to_string();
    assert_eq!(
        l.audit(
            Mode::Root,
            &["export", "--run", &run_id, "--out", one.to_str().unwrap()]
        )
        .0,
        0
    );
    // An auditor elsewhere: another user, an empty directory, no log, no private key.
    let away = Scratch::new();
    for (from, name) in [
        (&all, "all.json"),
        (&one, "one.json"),
        (&l.pubkey(), "log.pub"),
    ] {
        std::fs::copy(from, away.path.join(name)).unwrap();
    }
    let check = |name: &str| {
        let mut c = as_mode(Mode::User, binary());
        c.current_dir(&away.path)
            .args(["audit", "verify-bundle", name, "--key", "log.pub"]);
        spawn(c, None)
    };
    let (code, out, err) = check("all.json");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("19 entries") && out.contains("root recomputed"),
        "{out}"
    );
    let (code, out, err) = check("one.json");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("3 entries") && out.contains("inclusion proofs"),
        "{out}"
    );
    // A bundle edited after export fails, naming the entry.
    for name in ["all.json", "one.json"] {
        let p = away.path.join(name);
        let mut b: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        // Still canonical JSON, one field more: only the hashes can tell.
        let s = b["entries"][1]["entry"]
            .as_str()
            .unwrap()
            .replace("\"v\":1}", "\"v\":1,\"x\":0}");
        b["entries"][1]["entry"] = Value::String(s);
        std::fs::write(&p, serde_json::to_string(&b).unwrap()).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        let (code, _, err) = check(name);
        assert_eq!(code, 1, "{name}: {err}");
        assert!(
            err.contains("FAILED") && err.contains(&format!("entry {}", b["entries"][1]["seq"]))
                || err.contains("do not hash to the signed root"),
            "{err}"
        );
    }
    // The wrong key proves nothing.
    let other = Log::new();
    assert_eq!(other.cmd(Mode::Root, &["run", "--", "/bin/true"]).0, 0);
    std::fs::copy(other.pubkey(), away.path.join("log.pub")).unwrap();
    std::fs::copy(&all, away.path.join("all2.json")).unwrap();
    let (code, _, err) = check("all2.json");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not signed by"), "{err}");
}

#[test]
fn concurrent_runs_share_one_log() {
    let l = Log::new();
    let children: Vec<_> = (0..8)
        .map(|_| {
            let mut script = Command::new("bash");
            script.arg("-c").arg(format!(
                "for i in 1 2 3 4 5; do {} || exit 1; done",
                std::iter::once("env".to_string())
                    .chain(l.env().iter().map(|(k, v)| format!("{k}={}", v.display())))
                    .chain([
                        binary().display().to_string(),
                        "run".into(),
                        "--".into(),
                        "/bin/true".into()
                    ])
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
            script.spawn().unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let entries = l.entries();
    assert_eq!(entries.len(), 1 + 8 * 5 * 3);
    let (code, out, err) = l.audit(Mode::Root, &["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    // Every run has its start before its end.
    let mut started = std::collections::HashSet::new();
    for e in &entries {
        match e["type"].as_str().unwrap() {
            "run.start" => assert!(started.insert(e["run"].as_str().unwrap().to_string())),
            "run.end" => assert!(started.contains(e["run"].as_str().unwrap())),
            _ => {}
        }
    }
}

#[test]
fn tail_follow_prints_new_entries_and_ends_with_its_reader() {
    use std::io::{BufRead, BufReader};
    let (l, _) = sample_log();
    let mut c = ic(Mode::Root, &l.env());
    c.args([
        "audit",
        "--log",
        l.log.to_str().unwrap(),
        "tail",
        "-n",
        "1",
        "--follow",
    ])
    .stdout(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.starts_with("#18 "), "{first}");
    assert_eq!(
        l.cmd(Mode::Root, &["run", "--", "/bin/echo", "followed"]).0,
        0
    );
    let mut next = String::new();
    out.read_line(&mut next).unwrap();
    assert!(
        next.starts_with("#19 ")
            && next.contains("run.start")
            && next.contains("/bin/echo followed"),
        "{next}"
    );
    // The reader goes away: the next entries find a closed pipe and tail ends by itself.
    drop(out);
    assert_eq!(l.cmd(Mode::Root, &["run", "--", "/bin/true"]).0, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tail --follow kept running without a reader"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

both_modes! {
    fn built_in_profiles_record_to_the_default_log(mode: Mode) {
        // No paths given anywhere: root's log is /var/log/ironcage/audit.log, a user's is
        // ~/.local/state/ironcage/audit.log, each with its own key.
        let marker = format!("default-log-{}", unique());
        let mut c = ironcage(mode);
        c.args(["run", "--profile", "ai-strict", "--", "/bin/echo", &marker]);
        let (code, out, err) = spawn(c, None);
        assert_eq!((code, out.trim()), (0, marker.as_str()), "{err}");
        let mut c = ironcage(mode);
        c.args(["audit", "tail", "-n", "200"]);
        let (code, out, err) = spawn(c, None);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&marker), "{out}");
        let mut c = ironcage(mode);
        c.args(["audit", "verify"]);
        let (code, out, err) = spawn(c, None);
        assert_eq!(code, 0, "{out}{err}");
        let home = if mode == Mode::Root { "/var/log/ironcage/audit.log".to_string() } else { format!("/home/{}/.local/state/ironcage/audit.log", test_user().0) };
        assert!(out.contains(&home), "{out}");
    }
}

both_modes! {
    fn the_sandbox_never_gets_its_own_record(mode: Mode) {
        let l = Log::new();
        let out = l.dir.path.join("logs");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        // A writable bind over the log's directory: the sandbox could rewrite the log.
        let bind = format!("{}:/out", out.display());
        let (code, _, err) = l.cmd(mode, &["run", "--rw", &bind, "--", "/bin/true"]);
        assert_eq!(code, 120, "{err}");
        assert!(err.contains("contains the audit log"), "{err}");
        // A read-only bind over the key: harmless for root's sandboxes (uid 65534 cannot
        // read a 0600 root key), refused rootless (the sandbox runs as the key's owner).
        assert_eq!(l.cmd(mode, &["run", "--", "/bin/true"]).0, 0); // creates the key
        let keys = format!("{}:/keys", l.key.parent().unwrap().display());
        let (code, _, err) = l.cmd(mode, &["run", "--ro", &keys, "--", "/bin/cat", "/keys/audit.key"]);
        match mode {
            Mode::Root => {
                assert_eq!(code, 1, "the key must be unreadable: {err}");
                assert!(err.contains("Permission denied"), "{err}");
            }
            Mode::User => {
                assert_eq!(code, 120, "{err}");
                assert!(err.contains("contains the audit signing key"), "{err}");
            }
        }
        // The refusals are on record, and the log is intact.
        let refused = l.entries().iter().filter(|e| e["type"] == "run.refused").count();
        assert_eq!(refused, if mode == Mode::Root { 1 } else { 2 });
        assert_eq!(l.audit(mode, &["verify"]).0, 0);
    }
}

/// The sandbox fills the disk the log is on: its run is still recorded to the end (the log
/// keeps disk space reserved ahead of its appends).
#[test]
fn filling_the_disk_does_not_erase_the_record() {
    let l = Log::new();
    let fs = l.dir.path.join("small");
    std::fs::create_dir_all(&fs).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m,mode=0777", "tmpfs"])
        .arg(&fs)
        .status()
        .unwrap();
    assert!(st.success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(fs.clone());
    let log = fs.join("log/audit.log");
    let work = fs.join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::set_permissions(&work, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let policy = policy(
        &l.dir,
        &[&format!(
            "audit:\n  enabled: true\n  log_path: {}\n  detail_level: [syscall, filesystem]\n",
            log.display()
        )],
    );
    let mut c = ic(Mode::Root, &[("IRONCAGE_AUDIT_KEY", &l.key)]);
    c.args(["run", "--policy", policy.to_str().unwrap(), "--rw"])
        .arg(format!("{}:/out", work.display()))
        .args(["--", "/usr/bin/python3", "-c",
            "import os\nfor i in range(200):\n    try: os.mkdir(f'/etc/evil{i}')\n    except OSError: pass\nfd = os.open('/out/fill', os.O_WRONLY | os.O_CREAT)\nfor n in (65536, 4096, 512, 1):\n    try:\n        while True: os.write(fd, b'x' * n)\n    except OSError as e: err = e\nraise err"]);
    let (code, _, err) = spawn(c, None);
    assert!(
        err.contains("No space left on device"),
        "the sandbox must have filled the disk: {err}"
    );
    assert_eq!(code, 1, "{err}");
    let text = std::fs::read_to_string(&log).unwrap();
    let kinds: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    // 200 violation entries (~50 KB) after the disk was full to the last byte.
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "violation.filesystem")
            .count(),
        200,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"run.end".to_string()), "{kinds:?}");
    let mut c = ic(Mode::Root, &[("IRONCAGE_AUDIT_KEY", &l.key)]);
    c.args(["audit", "--log", log.to_str().unwrap(), "verify"]);
    let (code, out, err) = spawn(c, None);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn export_signs_nothing_that_does_not_verify() {
    let (l, _) = sample_log();
    // Change one hex digit of entry 6's run id (same length: the index still fits).
    let mut ls = lines(&l);
    let run = serde_json::from_str::<Value>(&ls[6]).unwrap()["run"]
        .as_str()
        .unwrap()
        .to_string();
    let flipped: String = run
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 0 {
                if c == 'a' {
                    'b'
                } else {
                    'a'
                }
            } else {
                c
            }
        })
        .collect();
    ls[6] = ls[6].replace(&run, &flipped);
    write_lines(&l, &ls);
    let out = l.dir.path.join("b.json");
    let (code, _, err) = l.audit(
        Mode::Root,
        &["export", "--run", &run, "--out", out.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("not exporting: the log does not verify") && err.contains("entry 6"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn tail_escapes_what_the_sandbox_chose() {
    let l = Log::new();
    let policy = policy(
        &l.dir,
        &[&format!(
            "audit:\n  enabled: true\n  log_path: {}\n  detail_level: [filesystem]\n",
            l.log.display()
        )],
    );
    let (code, _, err) = l.cmd(Mode::Root, &["run", "--policy", policy.to_str().unwrap(), "--", "/usr/bin/python3", "-c",
        "import os\nfor p in ['/etc/x\\n#99 2026 run.end run=FAKE exited', '/etc/\\x1b[1A\\x1b[2Kgone']:\n    try: os.mkdir(p)\n    except OSError: pass"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = l.audit(Mode::Root, &["tail", "-n", "50"]);
    assert_eq!(code, 0);
    assert!(
        !out.contains('\x1b'),
        "raw escape reached the terminal: {out:?}"
    );
    assert!(
        !out.lines().any(|line| line.starts_with("#99")),
        "a forged line: {out}"
    );
    assert!(
        out.contains("\\n#99") && out.contains("\\u{1b}[1A"),
        "{out}"
    );
}
