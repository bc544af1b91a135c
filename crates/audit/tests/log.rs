//! The file log end to end through the library: appends, proofs against signed
//! checkpoints, verification; crash (SIGKILL mid-append) and concurrency (8 processes)
//! tests run this test binary itself as the writer processes.

use ironcage_audit::entry::Event;
use ironcage_audit::log::AuditLog;
use ironcage_audit::merkle;
use ironcage_audit::note::{Checkpoint, SigningKey};
use ironcage_audit::verify::{self, CheckpointInput, Options};
use std::path::Path;
use std::process::{Command, Stdio};

fn ev(i: u64) -> Event {
    Event::new(
        "test.event",
        Some("run-1"),
        serde_json::json!({"i": i, "pad": "x".repeat((i % 50) as usize)}),
    )
}

fn verify_file(path: &Path, key: &SigningKey) -> Result<verify::Verified, verify::VerifyError> {
    let log = AuditLog::open_file_read(path).unwrap();
    let checkpoints = log
        .stored_checkpoint()
        .unwrap()
        .map(|note| CheckpointInput {
            label: "stored".into(),
            note,
        })
        .into_iter()
        .collect();
    verify::verify(
        log.store(),
        &Options {
            keys: &[key.verifier()],
            checkpoints,
        },
    )
}

#[test]
fn append_prove_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/audit.log");
    let key = SigningKey::generate("test").unwrap();
    let mut log =
        AuditLog::open_file(&path, Some(SigningKey::parse(&key.to_text()).unwrap())).unwrap();
    let mut checkpoints = Vec::new();
    let mut i = 0;
    for batch in [1usize, 2, 3, 10, 1, 50] {
        let events: Vec<Event> = (0..batch)
            .map(|_| {
                i += 1;
                ev(i)
            })
            .collect();
        let a = log.append(&events).unwrap();
        assert_eq!(a.size, i + 1, "entry 0 is the log's own init entry");
        assert_eq!(a.first_seq, a.size - batch as u64);
        checkpoints.push(log.stored_checkpoint().unwrap().unwrap());
    }
    let size = log.size().unwrap();
    let v = verify_file(&path, &key).unwrap();
    assert_eq!(v.size, size);
    // Every entry is provably in every checkpoint that covers it, and every checkpoint
    // is consistent with every later one.
    let cps: Vec<Checkpoint> = checkpoints
        .iter()
        .map(|n| Checkpoint::open(n, &key.verifier()).unwrap())
        .collect();
    for cp in &cps {
        assert_eq!(log.root(cp.size).unwrap(), cp.root);
        for seq in 0..cp.size {
            let leaf = merkle::leaf_hash(&log.entry(seq).unwrap());
            let proof = log.inclusion_proof(seq, cp.size).unwrap();
            merkle::verify_inclusion(seq, cp.size, &leaf, &proof, &cp.root).unwrap();
        }
        for later in &cps {
            if later.size >= cp.size {
                let proof = log.consistency_proof(cp.size, later.size).unwrap();
                merkle::verify_consistency(cp.size, later.size, &cp.root, &later.root, &proof)
                    .unwrap();
            }
        }
    }
    // Reopening continues the same chain.
    drop(log);
    let mut log = AuditLog::open_file(&path, Some(key)).unwrap();
    log.append(&[ev(1000)]).unwrap();
    assert_eq!(log.size().unwrap(), size + 1);
}

/// A writer process for the crash and concurrency tests (which run this test binary with
/// `--ignored --exact writer_child`): appends `IRONCAGE_TEST_COUNT` events and prints the
/// sequence number of each acknowledged one.
#[test]
#[ignore = "a helper process, started by other tests"]
fn writer_child() {
    let Ok(path) = std::env::var("IRONCAGE_TEST_LOG") else {
        return;
    };
    let count: u64 = std::env::var("IRONCAGE_TEST_COUNT")
        .unwrap()
        .parse()
        .unwrap();
    let who = std::env::var("IRONCAGE_TEST_WHO").unwrap();
    let key = SigningKey::parse(&std::env::var("IRONCAGE_TEST_KEY").unwrap()).unwrap();
    let mut log = AuditLog::open_file(Path::new(&path), Some(key)).unwrap();
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let batch: u64 = std::env::var("IRONCAGE_TEST_BATCH")
        .map(|b| b.parse().unwrap())
        .unwrap_or(1);
    let mut i = 0;
    while i < count {
        let events: Vec<Event> = (i..i + batch)
            .map(|j| {
                Event::new(
                    "test.write",
                    Some(&who),
                    serde_json::json!({"i": j, "who": who, "pad": "p".repeat(200)}),
                )
            })
            .collect();
        let a = log.append(&events).unwrap();
        for j in 0..batch {
            writeln!(out, "{} {who} {}", a.first_seq + j, i + j).unwrap();
        }
        out.flush().unwrap();
        i += batch;
    }
}

fn spawn_writer(path: &Path, key: &SigningKey, who: &str, count: u64) -> std::process::Child {
    spawn_batch_writer(path, key, who, count, 1)
}

fn spawn_batch_writer(
    path: &Path,
    key: &SigningKey,
    who: &str,
    count: u64,
    batch: u64,
) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .env("IRONCAGE_TEST_BATCH", batch.to_string())
        .args([
            "--ignored",
            "--exact",
            "writer_child",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env("IRONCAGE_TEST_LOG", path)
        .env("IRONCAGE_TEST_COUNT", count.to_string())
        .env("IRONCAGE_TEST_WHO", who)
        .env("IRONCAGE_TEST_KEY", key.to_text())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// (seq, who, i) for every acknowledged append a writer printed.
fn acknowledged(out: &[u8]) -> Vec<(u64, String, u64)> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| {
            let mut p = l.split(' ');
            Some((
                p.next()?.parse().ok()?,
                p.next()?.to_string(),
                p.next()?.parse().ok()?,
            ))
        })
        .collect()
}

fn assert_acknowledged_present(path: &Path, acks: &[(u64, String, u64)]) {
    let log = AuditLog::open_file_read(path).unwrap();
    for (seq, who, i) in acks {
        let e: serde_json::Value = serde_json::from_slice(&log.entry(*seq).unwrap()).unwrap();
        assert_eq!(e["fields"]["who"], who.as_str(), "entry {seq}: {e}");
        assert_eq!(e["fields"]["i"], *i, "entry {seq}: {e}");
    }
}

#[test]
fn eight_processes_append_1000_entries_each() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let key = SigningKey::generate("test").unwrap();
    let writers: Vec<_> = (0..8)
        .map(|w| spawn_writer(&path, &key, &format!("w{w}"), 1000))
        .collect();
    let mut acks = Vec::new();
    for w in writers {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success());
        acks.extend(acknowledged(&out.stdout));
    }
    assert_eq!(acks.len(), 8000);
    let mut seqs: Vec<u64> = acks.iter().map(|a| a.0).collect();
    seqs.sort();
    seqs.dedup();
    assert_eq!(
        seqs.len(),
        8000,
        "two appends were given the same sequence number"
    );
    let v = verify_file(&path, &key).unwrap();
    assert_eq!(v.size, 8001);
    assert_acknowledged_present(&path, &acks);
    // Each writer's entries are in its own order.
    for w in 0..8 {
        let who = format!("w{w}");
        let mine: Vec<u64> = acks.iter().filter(|a| a.1 == who).map(|a| a.0).collect();
        assert!(mine.windows(2).all(|p| p[0] < p[1]));
    }
}

#[test]
fn sigkill_mid_append_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let key = SigningKey::generate("test").unwrap();
    let mut acks = Vec::new();
    let mut repairs_seen = 0;
    for round in 0..20u64 {
        // One writer appends one entry per call; two append 200 per call (~60 KB writes,
        // which a SIGKILL can cut in the middle).
        let writers: Vec<_> = (0..3)
            .map(|w| {
                let batch = if w == 0 { 1 } else { 200 };
                spawn_batch_writer(&path, &key, &format!("r{round}w{w}"), 1_000_000, batch)
            })
            .collect();
        // Read each writer's acknowledgements as they come; kill them all once each has
        // acknowledged something (however slow this build is), a moment later.
        let (tx, rx) = std::sync::mpsc::channel::<usize>();
        let mut readers = Vec::new();
        let mut children = Vec::new();
        for (w, mut child) in writers.into_iter().enumerate() {
            let out = child.stdout.take().unwrap();
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                use std::io::BufRead;
                let mut lines = Vec::new();
                for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    // (The test harness prints lines of its own.)
                    if lines.is_empty() && !acknowledged(line.as_bytes()).is_empty() {
                        let _ = tx.send(w);
                    }
                    if !acknowledged(line.as_bytes()).is_empty() {
                        lines.push(line);
                    }
                }
                lines
            }));
            children.push(child);
        }
        let mut started = std::collections::HashSet::new();
        while started.len() < 3 {
            match rx.recv_timeout(std::time::Duration::from_secs(30)) {
                Ok(w) => {
                    started.insert(w);
                }
                Err(_) => panic!("round {round}: a writer acknowledged nothing in 30 s"),
            }
        }
        std::thread::sleep(std::time::Duration::from_millis((round * 7) % 30));
        for c in &mut children {
            let _ = c.kill(); // SIGKILL
        }
        for c in &mut children {
            let _ = c.wait();
        }
        for r in readers {
            acks.extend(acknowledged(r.join().unwrap().join("\n").as_bytes()));
        }
        // The next append repairs whatever the kill left, and records it.
        let mut log =
            AuditLog::open_file(&path, Some(SigningKey::parse(&key.to_text()).unwrap())).unwrap();
        repairs_seen += log.append(&[ev(round)]).unwrap().repairs.len();
        verify_file(&path, &key).unwrap_or_else(|e| panic!("round {round}: {e}"));
    }
    assert!(
        acks.len() >= 60,
        "writers acknowledged too little to mean anything: {}",
        acks.len()
    );
    assert_acknowledged_present(&path, &acks);
    eprintln!(
        "{} acknowledged appends survived 60 SIGKILLs; {repairs_seen} repairs",
        acks.len()
    );
}

#[test]
fn torn_tail_is_repaired_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let key = SigningKey::generate("test").unwrap();
    let mut log =
        AuditLog::open_file(&path, Some(SigningKey::parse(&key.to_text()).unwrap())).unwrap();
    log.append(&[ev(1), ev(2)]).unwrap();
    let before = std::fs::read(&path).unwrap();
    drop(log);
    // What a writer killed inside write(2) leaves: the first part of an entry.
    let third = {
        let mut tmp = AuditLog::new(Box::new(ironcage_audit::store::MemStore::new()), None);
        tmp.append(&[ev(1), ev(2), ev(3)]).unwrap();
        tmp.entry(3).unwrap()
    };
    let mut torn = before.clone();
    torn.extend_from_slice(&third[..third.len() / 2]);
    std::fs::write(&path, &torn).unwrap();
    // A reader sees it and says so, without touching the log.
    let v = verify_file(&path, &key).unwrap();
    assert!(
        v.warnings.iter().any(|w| w.contains("incomplete entry")),
        "{:?}",
        v.warnings
    );
    assert_eq!(std::fs::read(&path).unwrap(), torn);
    // The next writer removes it, records that in the log (entry 3), and carries on.
    let mut log =
        AuditLog::open_file(&path, Some(SigningKey::parse(&key.to_text()).unwrap())).unwrap();
    let a = log.append(&[ev(3)]).unwrap();
    assert!(
        a.repairs
            .iter()
            .any(|r| r.contains("append cut short after entry 2")),
        "{:?}",
        a.repairs
    );
    assert_eq!(a.first_seq, 4);
    let repair: serde_json::Value = serde_json::from_slice(&log.entry(3).unwrap()).unwrap();
    assert_eq!(repair["type"], "log.repair", "{repair}");
    assert!(std::fs::read(&path).unwrap().starts_with(&before));
    let v = verify_file(&path, &key).unwrap();
    assert!(
        v.warnings
            .iter()
            .any(|w| w.contains("entry 3: the log was repaired")),
        "{:?}",
        v.warnings
    );
}

#[test]
fn a_legacy_json_lines_log_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let legacy =
        "{\"version\":1,\"kind\":\"run\",\"time_unix_ms\":1,\"host_uid\":0,\"detail\":{}}\n";
    std::fs::write(&path, legacy).unwrap();
    let mut log = AuditLog::open_file(&path, None).unwrap();
    let repairs = log.take_repairs();
    assert!(
        repairs.iter().any(|r| r.contains("JSON-lines format")),
        "{repairs:?}"
    );
    log.append(&[ev(1)]).unwrap();
    let moved: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("audit.log.legacy-")
        })
        .collect();
    assert_eq!(moved.len(), 1);
    assert_eq!(std::fs::read_to_string(moved[0].path()).unwrap(), legacy);
    assert_eq!(log.size().unwrap(), 2);
}

#[test]
fn a_torn_checkpoint_write_leaves_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let key = SigningKey::generate("test").unwrap();
    let mut log = AuditLog::open_file(&path, Some(key.clone())).unwrap();
    let cp_path = dir.path().join("audit.log.checkpoint");
    log.append(&[ev(1)]).unwrap(); // size 2: slot 0
    let after_first = std::fs::read(&cp_path).unwrap();
    log.append(&[ev(2)]).unwrap(); // size 3: slot 1, then slot 0 cleared
    let after_second = std::fs::read(&cp_path).unwrap();
    assert!(
        after_second[..4096].iter().all(|&b| b == 0),
        "the older checkpoint is cleared"
    );
    // A power failure in the middle of writing slot 1 (before slot 0 was cleared): slot 0
    // still holds size 2, slot 1 is half written.
    let mut torn = after_first.clone();
    torn[4096..].copy_from_slice(&after_second[4096..]);
    for b in &mut torn[4096 + 40..4096 + 120] {
        *b = b'#';
    }
    std::fs::write(&cp_path, &torn).unwrap();
    let note = log.stored_checkpoint().unwrap().unwrap();
    assert_eq!(Checkpoint::open(&note, &key.verifier()).unwrap().size, 2);
    verify_file(&path, &key).unwrap();
    // The next append builds on the good one (size 2), re-reads entry 2 from the log
    // (recording that it signs it now), and replaces both slots.
    let a = log.append(&[ev(3)]).unwrap();
    assert!(
        a.repairs
            .iter()
            .any(|r| r.contains("entries 2..2 were not covered")),
        "{:?}",
        a.repairs
    );
    let note = log.stored_checkpoint().unwrap().unwrap();
    assert_eq!(Checkpoint::open(&note, &key.verifier()).unwrap().size, 5);
    verify_file(&path, &key).unwrap();
}

#[test]
fn a_run_without_an_end_is_pointed_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let key = SigningKey::generate("test").unwrap();
    let mut log =
        AuditLog::open_file(&path, Some(SigningKey::parse(&key.to_text()).unwrap())).unwrap();
    log.append(&[Event::new(
        "run.start",
        Some("finished"),
        serde_json::json!({}),
    )])
    .unwrap();
    log.append(&[Event::new(
        "run.start",
        Some("killed"),
        serde_json::json!({}),
    )])
    .unwrap();
    log.append(&[Event::new(
        "run.end",
        Some("finished"),
        serde_json::json!({}),
    )])
    .unwrap();
    let v = verify_file(&path, &key).unwrap();
    assert!(
        v.warnings
            .iter()
            .any(|w| w.contains("1 run(s) started but have no run.end")
                && w.contains("killed (entry 2)")),
        "{:?}",
        v.warnings
    );
}

// --- Attacks by someone who can write the log's files but has no key: the next honest
// append must refuse to build on (and sign) what they did. ---

fn sample(dir: &Path) -> (std::path::PathBuf, SigningKey) {
    let path = dir.join("audit.log");
    let key = SigningKey::generate("test").unwrap();
    let mut log = AuditLog::open_file(&path, Some(key.clone())).unwrap();
    for i in 0..4 {
        log.append(&[ev(i), ev(i + 100)]).unwrap();
    }
    (path, key)
}

/// Rewrites the log with `edit` applied to each entry, re-linking every entry to the
/// one before (canonical bytes, correct hashes): a forgery only a signature can catch.
fn rewrite(path: &Path, edit: impl Fn(u64, &mut serde_json::Value) -> bool) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    let mut prev = [0u8; 32];
    let mut seq = 0u64;
    for line in text.lines() {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        if !edit(v["seq"].as_u64().unwrap(), &mut v) {
            continue;
        }
        v["seq"] = seq.into();
        if seq > 0 {
            v["prev"] = ironcage_audit::note::hex(&prev).into();
        }
        let bytes = ironcage_audit::canonical::to_vec(&v);
        prev = merkle::leaf_hash(&bytes);
        out.extend_from_slice(&bytes);
        out.push(b'\n');
        seq += 1;
    }
    std::fs::write(path, out).unwrap();
}

fn remove_index(path: &Path) {
    for ext in ["idx", "tree"] {
        std::fs::remove_file(format!("{}.{ext}", path.display())).unwrap();
    }
}

fn next_append(
    path: &Path,
    key: &SigningKey,
) -> Result<ironcage_audit::log::Appended, ironcage_audit::LogError> {
    AuditLog::open_file(path, Some(key.clone()))?.append(&[ev(999)])
}

#[test]
fn an_honest_append_never_signs_rewritten_history() {
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = sample(dir.path());
    rewrite(&path, |seq, v| {
        if seq == 3 {
            v["fields"]["i"] = 12345.into();
        }
        true
    });
    remove_index(&path);
    let before = std::fs::read(&path).unwrap();
    let err = next_append(&path, &key).unwrap_err();
    assert!(err.is_tampering(), "{err}");
    assert!(
        err.to_string()
            .contains("no longer match the last signed checkpoint"),
        "{err}"
    );
    // Nothing appended, nothing signed.
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let e = verify_file(&path, &key).unwrap_err().to_string();
    assert!(e.contains("does not match the log"), "{e}");
}

#[test]
fn an_honest_append_never_signs_a_tampered_tree_index() {
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = sample(dir.path());
    // Change the stored tree's node over entries 0..7, which the next root is built from
    // (the leaves stay honest), as someone would to get a forged history signed.
    let tree_path = format!("{}.tree", path.display());
    let mut tree = std::fs::read(&tree_path).unwrap();
    let pos = ironcage_audit::store::node_pos(3, 0) as usize;
    tree[pos * 32] ^= 1;
    std::fs::write(&tree_path, tree).unwrap();
    let err = AuditLog::open_file(&path, Some(key.clone()))
        .unwrap()
        .checkpoint_now()
        .unwrap_err();
    assert!(err.is_tampering(), "{err}");
    // Rebuilding the index from the (honest) log lets appends go on.
    remove_index(&path);
    let a = next_append(&path, &key).unwrap();
    assert!(
        a.repairs
            .iter()
            .any(|r| r.contains("built the missing index")),
        "{:?}",
        a.repairs
    );
    verify_file(&path, &key).unwrap();
}

#[test]
fn truncation_is_refused_not_repaired() {
    for cut in ["whole entries", "the last newline", "into the last entry"] {
        let dir = tempfile::tempdir().unwrap();
        let (path, key) = sample(dir.path());
        let data = std::fs::read(&path).unwrap();
        let keep = match cut {
            "whole entries" => {
                data.iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'\n')
                    .nth(4)
                    .unwrap()
                    .0
                    + 1
            }
            "the last newline" => data.len() - 1,
            _ => data.len() - 20,
        };
        std::fs::write(&path, &data[..keep]).unwrap();
        let err = next_append(&path, &key).unwrap_err();
        assert!(err.is_tampering(), "{cut}: {err}");
        assert!(err.to_string().contains("removed"), "{cut}: {err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            &data[..keep],
            "{cut}: the evidence must stay"
        );
        // Even with the index files gone, the signed checkpoint still says how long it was.
        remove_index(&path);
        let err = next_append(&path, &key).unwrap_err();
        assert!(err.is_tampering(), "{cut}, index removed: {err}");
    }
}

#[test]
fn an_edited_last_entry_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = sample(dir.path());
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen("\"i\":103", "\"i\":999", 1);
    assert_ne!(text, edited);
    std::fs::write(&path, edited).unwrap();
    let err = next_append(&path, &key).unwrap_err();
    assert!(
        err.to_string().contains("entry 8 no longer matches"),
        "{err}"
    );
}

#[test]
fn entries_appended_without_the_key_are_signed_only_on_record() {
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = sample(dir.path());
    // Someone appends a well-formed, correctly linked entry (no key needed for that).
    let mut keyless = AuditLog::open_file(&path, None).unwrap();
    keyless
        .append(&[Event::new(
            "run.start",
            Some("forged"),
            serde_json::json!({"command": ["make", "test"]}),
        )])
        .unwrap();
    let v = verify_file(&path, &key).unwrap();
    assert!(
        v.warnings
            .iter()
            .any(|w| w.contains("entries 9..9 are not covered")),
        "{:?}",
        v.warnings
    );
    // The next signing append records that it signs entries it did not see appended.
    let a = next_append(&path, &key).unwrap();
    assert!(
        a.repairs
            .iter()
            .any(|r| r.contains("entries 9..9 were not covered")),
        "{:?}",
        a.repairs
    );
    let v = verify_file(&path, &key).unwrap();
    assert!(
        v.warnings
            .iter()
            .any(|w| w.contains("entry 10: the log was repaired") && w.contains("9..9")),
        "{:?}",
        v.warnings
    );
}

#[test]
fn a_legacy_looking_first_line_does_not_move_the_log_away() {
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = sample(dir.path());
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[0] = "{\"detail\":{},\"kind\":\"x\"}";
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let _ = next_append(&path, &key);
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains("\"kind\":\"x\""),
        "the evidence stays where it was"
    );
    assert!(!std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains("legacy")));
    assert!(verify_file(&path, &key).is_err());
}

#[test]
fn a_second_verify_on_the_same_store_sees_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = sample(dir.path());
    let log = AuditLog::open_file_read(&path).unwrap();
    let opts = || Options {
        keys: std::slice::from_ref(&key)
            .iter()
            .map(|k| k.verifier())
            .collect::<Vec<_>>()
            .leak(),
        checkpoints: vec![CheckpointInput {
            label: "stored".into(),
            note: log.stored_checkpoint().unwrap().unwrap(),
        }],
    };
    assert_eq!(verify::verify(log.store(), &opts()).unwrap().size, 9);
    assert_eq!(verify::verify(log.store(), &opts()).unwrap().size, 9);
}

#[test]
fn a_copy_without_index_files_reads_and_proves() {
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = sample(dir.path());
    remove_index(&path);
    let log = AuditLog::open_file_read(&path).unwrap();
    assert_eq!(log.size().unwrap(), 9);
    let cp = Checkpoint::open(&log.stored_checkpoint().unwrap().unwrap(), &key.verifier()).unwrap();
    let leaf = merkle::leaf_hash(&log.entry(5).unwrap());
    merkle::verify_inclusion(
        5,
        cp.size,
        &leaf,
        &log.inclusion_proof(5, cp.size).unwrap(),
        &cp.root,
    )
    .unwrap();
    verify_file(&path, &key).unwrap();
}

#[test]
fn entries_durable_but_not_indexed_are_indexed_and_recorded() {
    // What a writer killed between its fdatasync and its index update leaves behind.
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = sample(dir.path());
    let idx = format!("{}.idx", path.display());
    let tree = format!("{}.tree", path.display());
    let (idx_before, tree_before) = (std::fs::read(&idx).unwrap(), std::fs::read(&tree).unwrap());
    let mut log = AuditLog::open_file(&path, Some(key.clone())).unwrap();
    log.append(&[ev(7), ev(8)]).unwrap();
    std::fs::write(&idx, idx_before).unwrap();
    std::fs::write(&tree, tree_before).unwrap();
    let a = next_append(&path, &key).unwrap();
    assert!(
        a.repairs
            .iter()
            .any(|r| r
                .contains("indexed entries 9..10 that a writer made durable but did not index")),
        "{:?}",
        a.repairs
    );
    verify_file(&path, &key).unwrap();
}

#[test]
fn an_emptied_log_is_refused_not_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = sample(dir.path());
    std::fs::write(&path, b"").unwrap();
    remove_index(&path);
    let err = next_append(&path, &key).unwrap_err();
    assert!(err.to_string().contains("the log was emptied"), "{err}");
    // The signed checkpoint is still there for verify to show what was lost.
    assert!(std::fs::read(format!("{}.checkpoint", path.display()))
        .unwrap()
        .iter()
        .any(|&b| b != 0));
}

#[test]
fn a_last_entry_edited_with_its_index_leaf_is_refused() {
    // 10 entries: the last leaf sits under a stored parent node, which is what the next
    // root is built from; the leaf itself must still be checked against the signed root.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let key = SigningKey::generate("test").unwrap();
    let mut log = AuditLog::open_file(&path, Some(key.clone())).unwrap();
    for i in 0..9 {
        log.append(&[ev(i)]).unwrap();
    }
    assert_eq!(log.size().unwrap(), 10);
    let text = std::fs::read_to_string(&path).unwrap();
    let last = text.lines().last().unwrap();
    let forged = last.replacen("\"i\":8", "\"i\":7", 1);
    assert_ne!(last, forged);
    std::fs::write(&path, text.replacen(last, &forged, 1)).unwrap();
    let tree_path = format!("{}.tree", path.display());
    let mut tree = std::fs::read(&tree_path).unwrap();
    let pos = ironcage_audit::store::node_pos(0, 9) as usize;
    tree[pos * 32..pos * 32 + 32].copy_from_slice(&merkle::leaf_hash(forged.as_bytes()));
    std::fs::write(&tree_path, tree).unwrap();
    let err = next_append(&path, &key).unwrap_err();
    assert!(
        err.to_string()
            .contains("entry 9 is not the entry the last signed checkpoint covers"),
        "{err}"
    );
}

#[test]
fn an_entry_0_without_a_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = sample(dir.path());
    rewrite(&path, |seq, v| {
        if seq == 0 {
            v["fields"].as_object_mut().unwrap().remove("origin");
        }
        true
    });
    remove_index(&path);
    let err = next_append(&path, &key).unwrap_err();
    assert!(
        err.to_string()
            .contains("entry 0 is not a log.init entry naming the log"),
        "{err}"
    );
}

#[test]
fn a_renamed_log_is_refused() {
    // Rewrite history, give entry 0 another name so no checkpoint "is for this log",
    // rebuild the index: the checkpoint this key signed for the old name still stops it.
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = sample(dir.path());
    rewrite(&path, |seq, v| {
        if seq == 0 {
            v["fields"]["origin"] = "elsewhere/ironcage-audit/000000000000".into();
        }
        seq != 3
    });
    remove_index(&path);
    let err = next_append(&path, &key).unwrap_err();
    assert!(
        err.to_string()
            .contains("signed by this key for another log"),
        "{err}"
    );
}

#[test]
fn a_log_without_its_checkpoint_is_signed_only_by_decision() {
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = sample(dir.path());
    let cp = format!("{}.checkpoint", path.display());
    std::fs::remove_file(&cp).unwrap();
    let err = next_append(&path, &key).unwrap_err();
    assert!(
        err.to_string().contains("audit checkpoint --adopt"),
        "{err}"
    );
    let mut log = AuditLog::open_file(&path, Some(key.clone())).unwrap();
    assert!(log.checkpoint_now().is_err());
    let a = log.checkpoint_adopting().unwrap();
    assert!(
        a.repairs
            .iter()
            .any(|r| r.contains("an operator chose to sign")),
        "{:?}",
        a.repairs
    );
    next_append(&path, &key).unwrap();
    let v = verify_file(&path, &key).unwrap();
    assert!(
        v.warnings
            .iter()
            .any(|w| w.contains("an operator chose to sign")),
        "{:?}",
        v.warnings
    );
}

#[test]
fn a_sparse_giant_index_is_refused_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = sample(dir.path());
    let idx = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("{}.idx", path.display()))
        .unwrap();
    idx.set_len(1 << 40).unwrap(); // 1 TiB of holes
    let started = std::time::Instant::now();
    let err = next_append(&path, &key).unwrap_err();
    assert!(err.to_string().contains("larger than a log"), "{err}");
    // Readers fall back to an index built from the log.
    let log = AuditLog::open_file_read(&path).unwrap();
    assert_eq!(log.size().unwrap(), 9);
    verify_file(&path, &key).unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}
