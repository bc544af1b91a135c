//! The encrypted secret store attacked the way a local adversary or an unlucky operator
//! would: wrong keys, edited files, swapped entries, loose permissions, racing writers.

use ironcage_guard::secrets::{KeySource, MasterKey, SecretError, SecretStore, MASTER_KEY_ENV};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use zeroize::Zeroizing;

const OPENAI: &str = "sk-proj-THIS-IS-THE-PLAINTEXT-0123456789";
const ANTHROPIC: &str = "sk-ant-api03-ANOTHER-PLAINTEXT-abcdef";

fn z(s: &str) -> Zeroizing<String> {
    Zeroizing::new(s.to_string())
}

fn key(byte: u8) -> MasterKey {
    MasterKey::from_bytes([byte; 32])
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn store_path(&self) -> PathBuf {
        self.dir.path().join("state/secrets.json")
    }
    fn key_path(&self) -> PathBuf {
        self.dir.path().join("config/master.key")
    }
    fn store(&self, k: MasterKey) -> SecretStore {
        SecretStore::open(self.store_path(), k).unwrap()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.store_path()).unwrap()).unwrap()
    }
    fn write_json(&self, v: &serde_json::Value) {
        std::fs::write(self.store_path(), serde_json::to_vec(v).unwrap()).unwrap();
    }
    /// Every byte under the fixture directory, file by file.
    fn all_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(p: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            for e in std::fs::read_dir(p).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    walk(&e.path(), out);
                } else {
                    out.push((e.path(), std::fs::read(e.path()).unwrap()));
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), &mut out);
        out
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn round_trip_list_update_remove() {
    let f = Fixture::new();
    let s = f.store(key(1));
    assert_eq!(s.get("openai").unwrap(), None);
    assert!(s.list().unwrap().is_empty());
    s.set("openai", z(OPENAI)).unwrap();
    s.set("anthropic", z(ANTHROPIC)).unwrap();
    assert_eq!(
        s.get("openai").unwrap().as_deref().map(String::as_str),
        Some(OPENAI)
    );
    assert_eq!(
        s.get("anthropic").unwrap().as_deref().map(String::as_str),
        Some(ANTHROPIC)
    );
    let list = s.list().unwrap();
    let names: Vec<&str> = list.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["anthropic", "openai"]);
    let before = list[1].clone();
    assert!(before.created > 0 && before.updated >= before.created);
    s.set("openai", z("sk-rotated")).unwrap();
    assert_eq!(s.get("openai").unwrap().unwrap().as_str(), "sk-rotated");
    let after = s
        .list()
        .unwrap()
        .into_iter()
        .find(|i| i.name == "openai")
        .unwrap();
    assert_eq!(
        after.created, before.created,
        "rotation keeps the creation time"
    );
    assert_eq!(s.verify().unwrap(), 2);
    assert!(s.remove("openai").unwrap());
    assert!(!s.remove("openai").unwrap());
    assert_eq!(s.get("openai").unwrap(), None);
    // A second handle (another process) sees the same store.
    let again = f.store(key(1));
    assert_eq!(again.get("anthropic").unwrap().unwrap().as_str(), ANTHROPIC);
}

#[test]
fn files_and_directories_are_private() {
    let f = Fixture::new();
    let s = f.store(key(1));
    s.set("openai", z(OPENAI)).unwrap();
    assert_eq!(mode(&f.store_path()), 0o600);
    assert_eq!(mode(f.store_path().parent().unwrap()), 0o700);
    let mut lock = f.store_path().into_os_string();
    lock.push(".lock");
    assert_eq!(mode(Path::new(&lock)), 0o600);
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(f.store_path().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn no_file_ever_contains_a_plaintext() {
    let f = Fixture::new();
    let k = MasterKey::from_file(&f.key_path(), true).unwrap();
    let s = SecretStore::open(f.store_path(), k).unwrap();
    s.set("openai", z(OPENAI)).unwrap();
    s.set("anthropic", z(ANTHROPIC)).unwrap();
    s.set("openai", z(OPENAI)).unwrap();
    s.remove("anthropic").unwrap();
    let files = f.all_files();
    assert!(files.len() >= 3, "{files:?}");
    for (path, bytes) in files {
        for secret in [OPENAI, ANTHROPIC] {
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "{} holds a plaintext",
                path.display()
            );
            // Nor a recognisable piece of one.
            assert!(
                !contains(&bytes, &secret.as_bytes()[8..24]),
                "{}",
                path.display()
            );
        }
    }
}

#[test]
fn nonces_are_fresh_for_every_write() {
    let f = Fixture::new();
    let s = f.store(key(1));
    s.set("a", z(OPENAI)).unwrap();
    let first = f.json()["entries"]["a"].clone();
    s.set("a", z(OPENAI)).unwrap();
    let second = f.json()["entries"]["a"].clone();
    assert_ne!(first["nonce"], second["nonce"]);
    assert_ne!(first["ciphertext"], second["ciphertext"]);
    s.set("b", z(OPENAI)).unwrap();
    assert_ne!(f.json()["entries"]["b"]["ciphertext"], second["ciphertext"]);
}

#[test]
fn the_wrong_master_key_is_refused_with_file_and_entry_named() {
    let f = Fixture::new();
    f.store(key(1)).set("openai", z(OPENAI)).unwrap();
    let wrong = f.store(key(2));
    let e = wrong.get("openai").unwrap_err();
    assert!(matches!(e, SecretError::Decrypt { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("`openai`"), "{msg}");
    assert!(msg.contains(&f.store_path().display().to_string()), "{msg}");
    assert!(msg.contains("wrong master key"), "{msg}");
    assert!(!msg.contains(OPENAI));
    assert!(matches!(wrong.verify(), Err(SecretError::Decrypt { .. })));
    // Listing needs no decryption and still works.
    assert_eq!(wrong.list().unwrap().len(), 1);
}

#[test]
fn a_wrong_key_cannot_add_to_a_store_it_cannot_open() {
    let f = Fixture::new();
    f.store(key(1)).set("openai", z(OPENAI)).unwrap();
    let wrong = f.store(key(2));
    let e = wrong.set("anthropic", z(ANTHROPIC)).unwrap_err();
    assert!(
        matches!(&e, SecretError::Decrypt { name, .. } if name == "openai"),
        "{e:?}"
    );
    assert_eq!(
        f.store(key(1)).list().unwrap().len(),
        1,
        "nothing was added"
    );
    // Replacing the only entry is allowed: nothing else depends on the old key.
    wrong.set("openai", z("sk-new")).unwrap();
    assert_eq!(wrong.get("openai").unwrap().unwrap().as_str(), "sk-new");
}

#[test]
fn tampered_ciphertext_and_nonce_are_refused() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let f = Fixture::new();
    let s = f.store(key(1));
    s.set("openai", z(OPENAI)).unwrap();
    let original = f.json();
    for field in ["ciphertext", "nonce"] {
        for flip in [0usize, 5, usize::MAX] {
            let mut v = original.clone();
            let mut bytes = b64
                .decode(v["entries"]["openai"][field].as_str().unwrap())
                .unwrap();
            let i = flip.min(bytes.len() - 1);
            bytes[i] ^= 0x01;
            v["entries"]["openai"][field] = b64.encode(&bytes).into();
            f.write_json(&v);
            let e = s.get("openai").unwrap_err();
            assert!(
                matches!(e, SecretError::Decrypt { .. }),
                "{field}[{i}]: {e:?}"
            );
        }
    }
    // Truncated ciphertext (shorter than the tag) and a short nonce.
    let mut v = original.clone();
    v["entries"]["openai"]["ciphertext"] = b64.encode([1u8, 2, 3]).into();
    f.write_json(&v);
    assert!(matches!(s.get("openai"), Err(SecretError::Decrypt { .. })));
    let mut v = original.clone();
    v["entries"]["openai"]["nonce"] = b64.encode([0u8; 12]).into();
    f.write_json(&v);
    let e = s.get("openai").unwrap_err();
    assert!(matches!(e, SecretError::Corrupt { .. }), "{e:?}");
    assert!(e.to_string().contains("nonce is not 24 bytes"), "{e}");
    let mut v = original;
    v["entries"]["openai"]["ciphertext"] = "!!!not base64".into();
    f.write_json(&v);
    assert!(matches!(s.get("openai"), Err(SecretError::Corrupt { .. })));
}

#[test]
fn entries_swapped_between_names_are_refused() {
    let f = Fixture::new();
    let s = f.store(key(1));
    s.set("openai", z(OPENAI)).unwrap();
    s.set("anthropic", z(ANTHROPIC)).unwrap();
    let mut v = f.json();
    let a = v["entries"]["openai"].clone();
    v["entries"]["openai"] = v["entries"]["anthropic"].clone();
    v["entries"]["anthropic"] = a;
    f.write_json(&v);
    for name in ["openai", "anthropic"] {
        let e = s.get(name).unwrap_err();
        assert!(
            matches!(&e, SecretError::Decrypt { name: n, .. } if n == name),
            "{e:?}"
        );
    }
    // Copying an entry under a new name does not work either.
    let mut v = f.json();
    v["entries"]["evil"] = v["entries"]["openai"].clone();
    f.write_json(&v);
    assert!(matches!(s.get("evil"), Err(SecretError::Decrypt { .. })));
}

#[test]
fn a_damaged_or_future_store_is_reported_by_open() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.store_path().parent().unwrap()).unwrap();
    for (text, want) in [
        ("not json", "not JSON"),
        ("{\"format\":\"something-else\",\"version\":1,\"entries\":{}}", "`format`"),
        ("{\"format\":\"ironcage-secrets\",\"entries\":{}}", "no `version`"),
        ("{\"format\":\"ironcage-secrets\",\"version\":1,\"entries\":{},\"extra\":1}", "unknown field"),
        (
            "{\"format\":\"ironcage-secrets\",\"version\":1,\"entries\":{\"Bad Name\":{\"created\":0,\"updated\":0,\"nonce\":\"\",\"ciphertext\":\"\"}}}",
            "not a valid secret name",
        ),
    ] {
        std::fs::write(f.store_path(), text).unwrap();
        let e = SecretStore::open(f.store_path(), key(1)).unwrap_err();
        assert!(matches!(e, SecretError::Corrupt { .. }), "{text}: {e:?}");
        let msg = e.to_string();
        assert!(msg.contains(want) && msg.contains("secrets.json"), "{text}: {msg}");
    }
    std::fs::write(
        f.store_path(),
        "{\"format\":\"ironcage-secrets\",\"version\":7,\"entries\":{},\"new\":true}",
    )
    .unwrap();
    let e = SecretStore::open(f.store_path(), key(1)).unwrap_err();
    assert!(
        matches!(e, SecretError::UnsupportedVersion { version: 7, .. }),
        "{e:?}"
    );
}

#[test]
fn names_and_values_are_validated_without_echoing_values() {
    let f = Fixture::new();
    let s = f.store(key(1));
    for bad in ["", "OpenAI", "../../etc/passwd", "a b", &"n".repeat(65)] {
        let e = s.set(bad, z(OPENAI)).unwrap_err();
        assert!(matches!(e, SecretError::InvalidName { .. }), "{bad}: {e:?}");
        assert!(!e.to_string().contains(OPENAI));
        assert!(matches!(s.get(bad), Err(SecretError::InvalidName { .. })));
        assert!(matches!(
            s.remove(bad),
            Err(SecretError::InvalidName { .. })
        ));
    }
    let e = s.set("x", z("")).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
    let big = "k".repeat(64 * 1024 + 1);
    let e = s.set("x", z(&big)).unwrap_err();
    assert!(
        e.to_string().contains("64 KiB") && e.to_string().len() < 200,
        "{e}"
    );
    assert!(!f.store_path().exists(), "nothing was written");
}

#[test]
fn debug_output_never_shows_keys_or_values() {
    let f = Fixture::new();
    let k = MasterKey::parse(&"ab".repeat(32), KeySource::Env).unwrap();
    let dbg = format!("{k:?}");
    assert!(
        !dbg.to_lowercase().contains("abab") && !dbg.contains("171"),
        "{dbg}"
    );
    let s = SecretStore::open(f.store_path(), k).unwrap();
    s.set("openai", z(OPENAI)).unwrap();
    let dbg = format!("{s:?}");
    assert!(!dbg.contains("abab") && !dbg.contains(OPENAI), "{dbg}");
    let list = format!("{:?}", s.list().unwrap());
    assert!(!list.contains(OPENAI) && !list.contains("len"), "{list}");
}

#[test]
fn concurrent_writers_lose_no_entry() {
    let f = Arc::new(Fixture::new());
    let threads = 8;
    let per_thread = 12;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (f, barrier) = (f.clone(), barrier.clone());
            std::thread::spawn(move || {
                // Each thread has its own store handle, as separate processes would.
                let s = f.store(key(1));
                barrier.wait();
                for i in 0..per_thread {
                    s.set(&format!("t{t}-{i}"), z(&format!("value-{t}-{i}")))
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let s = f.store(key(1));
    assert_eq!(s.list().unwrap().len(), threads * per_thread);
    assert_eq!(s.get("t3-7").unwrap().unwrap().as_str(), "value-3-7");
    assert_eq!(s.verify().unwrap(), threads * per_thread);
}

#[test]
fn key_file_is_created_private_once_and_reused() {
    let f = Fixture::new();
    let e = MasterKey::from_file(&f.key_path(), false).unwrap_err();
    assert!(matches!(e, SecretError::NoMasterKey { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains(MASTER_KEY_ENV) && msg.contains("master.key") && msg.contains("Hint"),
        "{msg}"
    );
    assert!(!f.key_path().exists(), "create=false must not create");

    let k1 = MasterKey::from_file(&f.key_path(), true).unwrap();
    assert_eq!(k1.source(), &KeySource::File(f.key_path()));
    assert_eq!(mode(&f.key_path()), 0o600);
    assert_eq!(mode(f.key_path().parent().unwrap()), 0o700);
    let text = std::fs::read_to_string(f.key_path()).unwrap();
    assert_eq!(text.trim().len(), 64);
    assert!(text.trim().bytes().all(|b| b.is_ascii_hexdigit()));
    // The same key comes back, with or without create.
    SecretStore::open(f.store_path(), k1)
        .unwrap()
        .set("openai", z(OPENAI))
        .unwrap();
    for create in [false, true] {
        let k = MasterKey::from_file(&f.key_path(), create).unwrap();
        let got = SecretStore::open(f.store_path(), k)
            .unwrap()
            .get("openai")
            .unwrap();
        assert_eq!(got.unwrap().as_str(), OPENAI);
    }
}

#[test]
fn concurrent_key_creation_yields_one_key() {
    let f = Arc::new(Fixture::new());
    let barrier = Arc::new(Barrier::new(6));
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let (f, barrier) = (f.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let k = MasterKey::from_file(&f.key_path(), true).unwrap();
                let s = SecretStore::open(f.store_path(), k).unwrap();
                s.set(&format!("s{i}"), z("v")).unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let k = MasterKey::from_file(&f.key_path(), false).unwrap();
    assert_eq!(
        SecretStore::open(f.store_path(), k)
            .unwrap()
            .verify()
            .unwrap(),
        6
    );
}

#[test]
fn a_key_file_readable_by_others_is_refused_with_the_fix() {
    let f = Fixture::new();
    MasterKey::from_file(&f.key_path(), true).unwrap();
    for m in [0o644, 0o640, 0o604, 0o660] {
        std::fs::set_permissions(f.key_path(), std::fs::Permissions::from_mode(m)).unwrap();
        let e = MasterKey::from_file(&f.key_path(), true).unwrap_err();
        assert!(matches!(e, SecretError::KeyFileMode { .. }), "{m:o}: {e:?}");
        let msg = e.to_string();
        assert!(msg.contains(&format!("{m:04o}")), "{msg}");
        assert!(
            msg.contains(&format!("chmod 600 {}", f.key_path().display())),
            "{msg}"
        );
    }
    std::fs::set_permissions(f.key_path(), std::fs::Permissions::from_mode(0o400)).unwrap();
    assert!(
        MasterKey::from_file(&f.key_path(), false).is_ok(),
        "read-only for the owner is fine"
    );
}

#[test]
fn a_key_file_owned_by_someone_else_is_refused() {
    let me = rustix::process::geteuid().as_raw();
    let (path, _guard) = if me == 0 {
        // Root can make a file that belongs to someone else.
        let f = Fixture::new();
        MasterKey::from_file(&f.key_path(), true).unwrap();
        std::os::unix::fs::chown(f.key_path(), Some(65_534), None).unwrap();
        (f.key_path(), Some(f))
    } else {
        // Anyone else can point at a root-owned file.
        (PathBuf::from("/etc/passwd"), None)
    };
    let e = MasterKey::from_file(&path, false).unwrap_err();
    assert!(
        matches!(e, SecretError::KeyFileOwner { me: m, .. } if m == me),
        "{e:?}"
    );
    assert!(e.to_string().contains("not by you"), "{e}");
}

#[test]
fn a_key_path_that_is_not_a_file_is_refused() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.key_path()).unwrap();
    let e = MasterKey::from_file(&f.key_path(), true).unwrap_err();
    assert!(matches!(e, SecretError::KeyFileNotRegular { .. }), "{e:?}");
}

#[test]
fn malformed_key_files_are_refused_without_echoing_them() {
    let f = Fixture::new();
    MasterKey::from_file(&f.key_path(), true).unwrap();
    for text in [
        "short",
        &"zz".repeat(32),
        &"ab".repeat(31),
        &"ab".repeat(33),
    ] {
        std::fs::write(f.key_path(), text).unwrap();
        let e = MasterKey::from_file(&f.key_path(), false).unwrap_err();
        assert!(
            matches!(e, SecretError::BadMasterKey { .. }),
            "{text}: {e:?}"
        );
        assert!(!e.to_string().contains(text), "{e}");
        assert!(e.to_string().contains("master.key"), "{e}");
    }
    std::fs::write(f.key_path(), vec![b'a'; 4096]).unwrap();
    let e = MasterKey::from_file(&f.key_path(), false).unwrap_err();
    assert!(matches!(e, SecretError::Io { .. }), "{e:?}");
}

#[test]
fn the_environment_wins_over_the_file_and_accepts_hex_or_base64() {
    use base64::Engine as _;
    let f = Fixture::new();
    let hex = "0f".repeat(32);
    let k = MasterKey::resolve(Some(&hex), &f.key_path(), true).unwrap();
    assert_eq!(k.source(), &KeySource::Env);
    assert!(
        !f.key_path().exists(),
        "an env key never creates a key file"
    );
    SecretStore::open(f.store_path(), k)
        .unwrap()
        .set("openai", z(OPENAI))
        .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode([0x0f; 32]);
    for text in [
        hex.to_uppercase(),
        format!("  {hex}\n"),
        b64.clone(),
        b64.trim_end_matches('=').to_string(),
    ] {
        let k = MasterKey::resolve(Some(&text), &f.key_path(), false).unwrap();
        let s = SecretStore::open(f.store_path(), k).unwrap();
        assert_eq!(s.get("openai").unwrap().unwrap().as_str(), OPENAI, "{text}");
    }
    // A set but broken variable is an error, not a silent fall back to the file.
    MasterKey::from_file(&f.key_path(), true).unwrap();
    for text in ["hunter2-not-a-key", &"0f".repeat(16), "%%%%"] {
        let e = MasterKey::resolve(Some(text), &f.key_path(), false).unwrap_err();
        assert!(matches!(e, SecretError::BadMasterKey { .. }), "{e:?}");
        assert!(e.to_string().contains(MASTER_KEY_ENV), "{e}");
        assert!(!e.to_string().contains(text), "{e}");
    }
    // Empty means unset: the file is used.
    let k = MasterKey::resolve(Some(""), &f.key_path(), false).unwrap();
    assert_eq!(k.source(), &KeySource::File(f.key_path()));
}

#[test]
fn a_generated_key_round_trips() {
    let f = Fixture::new();
    let s = SecretStore::open(f.store_path(), MasterKey::generate().unwrap()).unwrap();
    s.set("x", z("y")).unwrap();
    assert_eq!(s.get("x").unwrap().unwrap().as_str(), "y");
    assert!(!s.remove("zzz").unwrap());
    let fresh = Fixture::new();
    let s = fresh.store(key(3));
    assert!(
        !s.remove("x").unwrap(),
        "removing from a store that does not exist yet"
    );
    assert!(!fresh.store_path().exists());
}
