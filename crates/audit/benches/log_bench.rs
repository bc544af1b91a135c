//! Audit log speed: appends per second (one event per durable append, and batched),
//! verification throughput and proof generation on a 1,000,000-entry log. Prints one
//! `name value unit` line per figure (bench/audit.sh adds peers and ratios).
//!
//! `cargo bench -p ironcage-audit --bench log_bench` (IRONCAGE_BENCH_ENTRIES to resize).

use ironcage_audit::entry::Event;
use ironcage_audit::log::AuditLog;
use ironcage_audit::note::{Checkpoint, SigningKey};
use ironcage_audit::verify::{self, CheckpointInput, Options};
use std::time::Instant;

fn event(i: u64) -> Event {
    // Shaped like a run.end entry (about 330 bytes stored).
    Event::new(
        "run.end",
        Some("5f3c1a9e0b7d4c2a8e6f1b3d"),
        serde_json::json!({
            "outcome": "exited", "exit_code": 0, "signal": null, "ironcage_exit_code": 0,
            "error": null, "wall_time_us": 15_000 + i % 997,
            "violations": {"syscall": i % 3, "filesystem": 0, "network": 0, "not_listed": 0},
        }),
    )
}

fn line(name: &str, value: f64, unit: &str) {
    println!("{name} {value:.1} {unit}");
}

fn main() {
    let n: u64 = std::env::var("IRONCAGE_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::var_os("IRONCAGE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("ironcage-audit-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = SigningKey::generate("bench").unwrap();
    let signer = || Some(SigningKey::parse(&key.to_text()).unwrap());

    // Unbatched: every append is one durable call (write + fdatasync + signed checkpoint).
    {
        let path = dir.join("unbatched.log");
        let mut log = AuditLog::open_file(&path, signer()).unwrap();
        let count = 3000;
        let t = Instant::now();
        for i in 0..count {
            log.append(&[event(i)]).unwrap();
        }
        line(
            "append_unbatched_signed",
            count as f64 / t.elapsed().as_secs_f64(),
            "appends/s",
        );
        let mut log = AuditLog::open_file(&dir.join("unsigned.log"), None).unwrap();
        let t = Instant::now();
        for i in 0..count {
            log.append(&[event(i)]).unwrap();
        }
        line(
            "append_unbatched_unsigned",
            count as f64 / t.elapsed().as_secs_f64(),
            "appends/s",
        );
    }

    // Batched: 1,000 events per durable call, building the big log.
    let path = dir.join("big.log");
    let mut log = AuditLog::open_file(&path, signer()).unwrap();
    let batch = 1000u64;
    let t = Instant::now();
    let mut i = 0;
    let mut events: Vec<Event> = (0..batch).map(event).collect();
    while i < n {
        let k = batch.min(n - i);
        events.truncate(k as usize);
        for (j, e) in events.iter_mut().enumerate() {
            *e = event(i + j as u64);
        }
        log.append(&events).unwrap();
        i += k;
    }
    line(
        "append_batched_1000",
        n as f64 / t.elapsed().as_secs_f64(),
        "appends/s",
    );
    let size = log.size().unwrap();
    let bytes = std::fs::metadata(&path).unwrap().len();
    line("log_entries", size as f64, "entries");
    line("log_bytes", bytes as f64, "bytes");

    // Verify from scratch (entries only, with the stored checkpoint). Cold cache is not
    // attempted; the log was just written and sits in the page cache.
    let reader = AuditLog::open_file_read(&path).unwrap();
    let note = reader.stored_checkpoint().unwrap().unwrap();
    let t = Instant::now();
    let v = verify::verify(
        reader.store(),
        &Options {
            keys: &[key.verifier()],
            checkpoints: vec![CheckpointInput {
                label: "stored".into(),
                note: note.clone(),
            }],
        },
    )
    .unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(v.size, size);
    line("verify", size as f64 / secs, "entries/s");
    line("verify_seconds", secs, "s");

    // Proofs at full size: inclusion of spread-out entries, consistency from spread-out
    // older sizes (generation only); then read + prove + check against the signed root.
    let cp = Checkpoint::open(&note, &key.verifier()).unwrap();
    let probes = 2000u64;
    let t = Instant::now();
    for p in 0..probes {
        let seq = (p * 7919 * 104_729) % size;
        let proof = reader.inclusion_proof(seq, size).unwrap();
        std::hint::black_box(proof);
    }
    line(
        "inclusion_proof",
        t.elapsed().as_secs_f64() * 1e6 / probes as f64,
        "us",
    );
    let t = Instant::now();
    for p in 0..probes {
        let old = 1 + (p * 104_729) % (size - 1);
        std::hint::black_box(reader.consistency_proof(old, size).unwrap());
    }
    line(
        "consistency_proof",
        t.elapsed().as_secs_f64() * 1e6 / probes as f64,
        "us",
    );
    let t = Instant::now();
    for p in 0..probes {
        let seq = (p * 7919) % size;
        let entry = reader.entry(seq).unwrap();
        let leaf = ironcage_audit::merkle::leaf_hash(&entry);
        let proof = reader.inclusion_proof(seq, size).unwrap();
        ironcage_audit::merkle::verify_inclusion(seq, size, &leaf, &proof, &cp.root).unwrap();
    }
    line(
        "prove_entry_end_to_end",
        t.elapsed().as_secs_f64() * 1e6 / probes as f64,
        "us",
    );
    if std::env::var_os("IRONCAGE_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("kept {}", dir.display());
    }
}
