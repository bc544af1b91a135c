//! The audit log in SQL (SQLite here; the PostgreSQL path runs in crates/cli/tests/serve.rs):
//! every tree shape up to 70 entries verifies from scratch, and edits are refused at the
//! next append or named by verify.

use ironcage_audit::note::SigningKey;
use ironcage_audit::verify::{self, Options};
use ironcage_audit::{AuditLog, Event};
use ironcage_server::audit_store::SqlAuditStore;
use ironcage_server::store::Store;
use serde_json::json;

fn setup() -> (
    tokio::runtime::Runtime,
    tempfile::TempDir,
    Store,
    SigningKey,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let db = rt.block_on(Store::open(&url)).unwrap();
    let key = SigningKey::generate("test-audit@host").unwrap();
    (rt, dir, db, key)
}

fn log(rt: &tokio::runtime::Runtime, db: &Store, key: &SigningKey) -> AuditLog {
    AuditLog::new(
        Box::new(SqlAuditStore::new(db.clone(), rt.handle().clone(), "test")),
        Some(key.clone()),
    )
}

/// The log's own latest checkpoint, which `ironcage audit verify` checks against.
fn latest(l: &AuditLog) -> Vec<verify::CheckpointInput> {
    let note = l.stored_checkpoint().unwrap().expect("a checkpoint");
    vec![verify::CheckpointInput {
        label: "(the log's latest)".into(),
        note,
    }]
}

fn sql(rt: &tokio::runtime::Runtime, db: &Store, q: &str) {
    rt.block_on(sqlx::query(q).execute(db.pool())).unwrap();
}

#[test]
fn every_size_up_to_70_verifies_and_batches_too() {
    let (rt, _dir, db, key) = setup();
    let mut l = log(&rt, &db, &key);
    for i in 0..70 {
        // Single events and, every seventh time, a batch of three.
        let n = if i % 7 == 0 { 3 } else { 1 };
        let events: Vec<Event> = (0..n)
            .map(|j| Event::new("test.event", None, json!({"i": i, "j": j})))
            .collect();
        l.append(&events).unwrap();
        let keys = [key.verifier()];
        let v = verify::verify(
            l.store(),
            &Options {
                keys: &keys,
                checkpoints: latest(&l),
            },
        );
        assert!(v.is_ok(), "after append {i}: {v:?}");
    }
}

#[test]
fn edits_are_refused_at_append_or_named_by_verify() {
    let (rt, _dir, db, key) = setup();
    let mut l = log(&rt, &db, &key);
    for i in 0..12 {
        l.append(&[Event::new("test.event", None, json!({"i": i}))])
            .unwrap();
    }
    // An edit in the middle: appends go on (their checks are O(log n)), verify names it.
    sql(
        &rt,
        &db,
        "UPDATE audit_entries SET entry = CAST(REPLACE(CAST(entry AS TEXT), '\"i\":3', '\"i\":4') AS BLOB) WHERE seq = 4",
    );
    let keys = [key.verifier()];
    let err = verify::verify(
        l.store(),
        &Options {
            keys: &keys,
            checkpoints: latest(&l),
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains('4'), "{err}");
    // The newest entry edited: the next append is refused as tampering.
    sql(
        &rt,
        &db,
        "UPDATE audit_entries SET entry = CAST(REPLACE(CAST(entry AS TEXT), '\"i\":11', '\"i\":99') AS BLOB) WHERE seq = (SELECT MAX(seq) FROM audit_entries)",
    );
    let e = l
        .append(&[Event::new("test.event", None, json!({"i": 12}))])
        .unwrap_err();
    assert!(e.is_tampering(), "{e}");
    // A deleted entry at the end: the head no longer matches the table.
    let (rt2, _d2, db2, key2) = setup();
    let mut l2 = log(&rt2, &db2, &key2);
    for i in 0..5 {
        l2.append(&[Event::new("test.event", None, json!({"i": i}))])
            .unwrap();
    }
    sql(
        &rt2,
        &db2,
        "DELETE FROM audit_entries WHERE seq = (SELECT MAX(seq) FROM audit_entries)",
    );
    let e = l2
        .append(&[Event::new("test.event", None, json!({"i": 5}))])
        .unwrap_err();
    assert!(e.is_tampering(), "{e}");
    // A log signed by another key is not extended.
    let other = SigningKey::generate("other@host").unwrap();
    let (rt3, _d3, db3, key3) = setup();
    log(&rt3, &db3, &key3)
        .append(&[Event::new("test.event", None, json!({}))])
        .unwrap();
    let e = log(&rt3, &db3, &other)
        .append(&[Event::new("test.event", None, json!({}))])
        .unwrap_err();
    assert!(e.is_tampering(), "{e}");
}
