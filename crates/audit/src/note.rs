//! Signed tree heads in the C2SP tlog-checkpoint format, signed as C2SP signed notes with
//! Ed25519, and the key files they use (the `golang.org/x/mod/sumdb/note` text encodings, so
//! Go tooling and witnesses can read our keys and checkpoints).
//!
//! A checkpoint is the note text
//! ```text
//! <origin>\n<tree size>\n<base64 root hash>\n
//! ```
//! followed by a blank line and one line per signature: `— <key name> <base64(key hash || sig)>`.

use crate::merkle::Hash;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, Verifier as _};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

const ALG_ED25519: u8 = 1;
const SIG_PREFIX: &str = "\u{2014} ";

#[derive(Debug, thiserror::Error)]
pub enum NoteError {
    #[error("malformed key: {0}")]
    BadKey(&'static str),
    #[error("malformed signed note: {0}")]
    Malformed(String),
    #[error("checkpoint is not signed by key `{0}`")]
    NotSignedBy(String),
    #[error("signature by key `{0}` does not verify: the checkpoint was forged or altered")]
    BadSignature(String),
    #[error("key file {}: {source}", path.display())]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {}: {reason}", path.display())]
    KeyFileContent { path: PathBuf, reason: String },
}

fn key_hash(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(public);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

/// This host's name, in the characters note key names and origins allow.
pub fn host_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if host.is_empty() {
        "localhost".into()
    } else {
        host
    }
}

/// The name of a new key: host and owner, so keys of different users on one host are
/// told apart in messages (`ironcage-audit-1001@host`; root's is `ironcage-audit@host`).
pub fn default_key_name() -> String {
    let uid = ironcage_sandbox::sys::geteuid();
    if uid == 0 {
        format!("ironcage-audit@{}", host_name())
    } else {
        format!("ironcage-audit-{uid}@{}", host_name())
    }
}

/// An Ed25519 private key with its note key name.
#[derive(Clone)]
pub struct SigningKey {
    name: String,
    key: ed25519_dalek::SigningKey,
}

impl SigningKey {
    pub fn generate(name: &str) -> Result<SigningKey, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::BadKey(
                "key name must be non-empty without spaces or '+'",
            ));
        }
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|_| NoteError::BadKey("no randomness"))?;
        Ok(SigningKey {
            name: name.to_string(),
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    /// Parses `PRIVATE+KEY+<name>+<hash>+<base64(0x01 || seed)>`.
    pub fn parse(text: &str) -> Result<SigningKey, NoteError> {
        let rest = text
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::BadKey("a private key starts with PRIVATE+KEY+"))?;
        let (name, hash, key) = split_key(rest)?;
        let seed: [u8; 32] = key
            .try_into()
            .map_err(|_| NoteError::BadKey("Ed25519 seed must be 32 bytes"))?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        if key_hash(name, key.verifying_key().as_bytes()) != hash {
            return Err(NoteError::BadKey("key hash does not match the key"));
        }
        Ok(SigningKey {
            name: name.to_string(),
            key,
        })
    }

    pub fn to_text(&self) -> String {
        let mut blob = vec![ALG_ED25519];
        blob.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.name,
            hex(&key_hash(&self.name, self.key.verifying_key().as_bytes())),
            B64.encode(blob)
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn verifier(&self) -> VerifierKey {
        let public = self.key.verifying_key();
        VerifierKey {
            name: self.name.clone(),
            hash: key_hash(&self.name, public.as_bytes()),
            key: public,
        }
    }

    /// Signs note text (which must end in a newline) and returns the whole signed note.
    pub fn sign_note(&self, text: &str) -> String {
        debug_assert!(text.ends_with('\n'));
        let sig = self.key.sign(text.as_bytes());
        let mut blob = self.verifier().hash.to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        format!("{text}\n{SIG_PREFIX}{} {}\n", self.name, B64.encode(blob))
    }
}

/// An Ed25519 public key with its note key name: `<name>+<hash>+<base64(0x01 || key)>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    hash: [u8; 4],
    key: ed25519_dalek::VerifyingKey,
}

impl VerifierKey {
    pub fn parse(text: &str) -> Result<VerifierKey, NoteError> {
        let (name, hash, key) = split_key(text.trim())?;
        let public: [u8; 32] = key
            .try_into()
            .map_err(|_| NoteError::BadKey("Ed25519 public key must be 32 bytes"))?;
        if key_hash(name, &public) != hash {
            return Err(NoteError::BadKey("key hash does not match the key"));
        }
        let key = ed25519_dalek::VerifyingKey::from_bytes(&public)
            .map_err(|_| NoteError::BadKey("not a valid Ed25519 public key"))?;
        Ok(VerifierKey {
            name: name.to_string(),
            hash,
            key,
        })
    }

    pub fn to_text(&self) -> String {
        let mut blob = vec![ALG_ED25519];
        blob.extend_from_slice(self.key.as_bytes());
        format!("{}+{}+{}", self.name, hex(&self.hash), B64.encode(blob))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks that `note` carries a valid signature by this key and returns its text.
    /// Signatures by other keys are ignored (a witness may have cosigned).
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let split = note
            .find("\n\n")
            .ok_or_else(|| NoteError::Malformed("no blank line before the signatures".into()))?;
        let text = &note[..split + 1];
        let sigs = &note[split + 2..];
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err(NoteError::Malformed("no signature lines".into()));
        }
        let mut found = false;
        for line in sigs.lines() {
            let rest = line.strip_prefix(SIG_PREFIX).ok_or_else(|| {
                NoteError::Malformed(format!(
                    "signature line does not start with \u{2014}: {line:?}"
                ))
            })?;
            let (name, blob) = rest
                .split_once(' ')
                .ok_or_else(|| NoteError::Malformed(format!("signature line {line:?}")))?;
            let blob = B64
                .decode(blob)
                .map_err(|_| NoteError::Malformed(format!("signature is not base64: {line:?}")))?;
            if name != self.name || blob.len() < 4 || blob[..4] != self.hash {
                continue;
            }
            found = true;
            let sig = ed25519_dalek::Signature::from_slice(&blob[4..])
                .map_err(|_| NoteError::BadSignature(self.name.clone()))?;
            self.key
                .verify(text.as_bytes(), &sig)
                .map_err(|_| NoteError::BadSignature(self.name.clone()))?;
        }
        if !found {
            return Err(NoteError::NotSignedBy(self.name.clone()));
        }
        Ok(text)
    }
}

fn split_key(text: &str) -> Result<(&str, [u8; 4], Vec<u8>), NoteError> {
    let mut parts = text.splitn(3, '+');
    let (Some(name), Some(hash), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(NoteError::BadKey("expected <name>+<hash>+<key>"));
    };
    if !valid_name(name) {
        return Err(NoteError::BadKey("bad key name"));
    }
    let hash = unhex(hash)
        .and_then(|h| <[u8; 4]>::try_from(h).ok())
        .ok_or(NoteError::BadKey("key hash must be 8 hex digits"))?;
    let blob = B64
        .decode(key)
        .map_err(|_| NoteError::BadKey("key is not base64"))?;
    match blob.split_first() {
        Some((&ALG_ED25519, key)) => Ok((name, hash, key.to_vec())),
        _ => Err(NoteError::BadKey(
            "only Ed25519 keys (algorithm 1) are supported",
        )),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// A signed tree head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    pub fn sign(&self, key: &SigningKey) -> String {
        key.sign_note(&self.body())
    }

    /// Parses a checkpoint body (origin, size, root; extension lines are allowed and ignored).
    pub fn parse_body(text: &str) -> Result<Checkpoint, NoteError> {
        let mut lines = text.lines();
        let bad = |what: &str| NoteError::Malformed(format!("checkpoint: {what}"));
        let origin = lines
            .next()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| bad("no origin line"))?;
        let size = lines
            .next()
            .and_then(|l| {
                // Decimal without leading zeros, as the format requires.
                (l == "0" || !l.starts_with('0'))
                    .then(|| l.parse::<u64>().ok())
                    .flatten()
            })
            .ok_or_else(|| bad("second line must be the tree size in decimal"))?;
        let root = lines
            .next()
            .and_then(|l| B64.decode(l).ok())
            .and_then(|r| <Hash>::try_from(r).ok())
            .ok_or_else(|| bad("third line must be the base64 SHA-256 root hash"))?;
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
        })
    }

    /// Parses a signed checkpoint note without checking its signature: whether a file is
    /// a checkpoint at all (its text, then a blank line and signature lines).
    pub fn parse_unverified(note: &str) -> Result<Checkpoint, NoteError> {
        let (body, _) = note
            .split_once("\n\n")
            .ok_or_else(|| NoteError::Malformed("no signature lines".into()))?;
        Checkpoint::parse_body(body)
    }

    /// Verifies the signature with `key` and parses the checkpoint.
    pub fn open(note: &str, key: &VerifierKey) -> Result<Checkpoint, NoteError> {
        Checkpoint::parse_body(key.open(note)?)
    }
}

/// Loads the signing key at `path` (never through a symlink). It must be private to its
/// owner, who must be us: a key others can read signs nothing they could not forge. A
/// missing `<path>.pub` is written again.
pub fn load_key(path: &Path) -> Result<SigningKey, NoteError> {
    use std::os::unix::fs::MetadataExt;
    let bad = |reason: String| NoteError::KeyFileContent {
        path: path.to_path_buf(),
        reason,
    };
    let file = crate::fsutil::open_read(path).map_err(|source| NoteError::KeyFile {
        path: path.to_path_buf(),
        source,
    })?;
    let meta = file.metadata().map_err(|source| NoteError::KeyFile {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.mode() & 0o077 != 0 {
        return Err(bad(format!(
            "mode {:o} lets others read it; `chmod 600 {}` (and consider it leaked)",
            meta.mode() & 0o777,
            path.display()
        )));
    }
    if meta.uid() != ironcage_sandbox::sys::geteuid() {
        return Err(bad(format!("owned by uid {}, not by us", meta.uid())));
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut &file, &mut text).map_err(|_| bad("not UTF-8".into()))?;
    let key = SigningKey::parse(&text).map_err(|e| bad(e.to_string()))?;
    let pub_path = public_key_path(path);
    if !pub_path.exists() {
        let _ = crate::fsutil::write_new_file(
            &pub_path,
            0o644,
            format!("{}\n", key.verifier().to_text()).as_bytes(),
        );
    }
    Ok(key)
}

/// Loads the signing key at `path`, creating a new one (mode 0600, never through a
/// symlink) with its public half at `<path>.pub` when there is none yet.
pub fn load_or_create_key(path: &Path) -> Result<(SigningKey, bool), NoteError> {
    let err = |source| NoteError::KeyFile {
        path: path.to_path_buf(),
        source,
    };
    match load_key(path) {
        Err(NoteError::KeyFile { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            let key = SigningKey::generate(&default_key_name())?;
            // Written under a temporary name and linked into place, so a concurrent first
            // use sees either no key or a whole one, and exactly one key wins.
            let mut tmp = path.as_os_str().to_owned();
            tmp.push(format!(".tmp{}", std::process::id()));
            let tmp = PathBuf::from(tmp);
            let _ = std::fs::remove_file(&tmp);
            crate::fsutil::write_new_file(&tmp, 0o600, format!("{}\n", key.to_text()).as_bytes())
                .map_err(err)?;
            let linked = std::fs::hard_link(&tmp, path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    let pub_path = public_key_path(path);
                    let _ = std::fs::remove_file(&pub_path);
                    crate::fsutil::write_new_file(
                        &pub_path,
                        0o644,
                        format!("{}\n", key.verifier().to_text()).as_bytes(),
                    )
                    .map_err(err)?;
                    Ok((key, true))
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    load_key(path).map(|k| (k, false))
                }
                Err(e) => Err(err(e)),
            }
        }
        other => other.map(|k| (k, false)),
    }
}

/// `<key>.pub`, where the public half of a key file lives.
pub fn public_key_path(key: &Path) -> PathBuf {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// A verifier key from `spec`: the key text itself, or a file holding a public key or a
/// private key (whose public half is used).
pub fn load_verifier(spec: &str) -> Result<VerifierKey, NoteError> {
    if let Ok(k) = VerifierKey::parse(spec) {
        return Ok(k);
    }
    let path = Path::new(spec);
    let text = crate::fsutil::read_nofollow(path).map_err(|source| NoteError::KeyFile {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8_lossy(&text);
    let text = text.trim();
    if text.starts_with("PRIVATE+KEY+") {
        return SigningKey::parse(text).map(|k| k.verifier());
    }
    VerifierKey::parse(text).map_err(|e| NoteError::KeyFileContent {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // golang.org/x/mod/sumdb/note's published example key and signed note.
    const GO_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const GO_SIG: &str = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=";

    #[test]
    fn interoperates_with_go_sumdb_note() {
        let skey = SigningKey::parse(GO_SKEY).unwrap();
        assert_eq!(skey.to_text(), GO_SKEY);
        assert_eq!(skey.verifier().to_text(), GO_VKEY);
        let note = skey.sign_note(GO_TEXT);
        assert_eq!(note, format!("{GO_TEXT}\n\u{2014} PeterNeumann {GO_SIG}\n"));
        let vkey = VerifierKey::parse(GO_VKEY).unwrap();
        assert_eq!(vkey.open(&note).unwrap(), GO_TEXT);
    }

    #[test]
    fn rejects_altered_notes_and_keys() {
        let vkey = VerifierKey::parse(GO_VKEY).unwrap();
        let note = format!("{GO_TEXT}\n\u{2014} PeterNeumann {GO_SIG}\n");
        let altered = note.replace("cryptography", "cryptographY");
        assert!(matches!(
            vkey.open(&altered),
            Err(NoteError::BadSignature(_))
        ));
        let other = SigningKey::generate("PeterNeumann").unwrap();
        let forged = other.sign_note(GO_TEXT);
        assert!(matches!(vkey.open(&forged), Err(NoteError::NotSignedBy(_))));
        assert!(VerifierKey::parse(&GO_VKEY.replace("c74f20a3", "c74f20a4")).is_err());
        assert!(VerifierKey::parse("Peter Neumann+c74f20a3+AAAA").is_err());
        assert!(vkey.open(GO_TEXT).is_err());
    }

    #[test]
    fn checkpoint_round_trip() {
        let key = SigningKey::generate("test-log").unwrap();
        let cp = Checkpoint {
            origin: "example.org/log".into(),
            size: 42,
            root: [7; 32],
        };
        let note = cp.sign(&key);
        assert!(note.starts_with("example.org/log\n42\nBwcH"));
        assert_eq!(Checkpoint::open(&note, &key.verifier()).unwrap(), cp);
        let bumped = note.replacen("\n42\n", "\n43\n", 1);
        assert!(Checkpoint::open(&bumped, &key.verifier()).is_err());
        assert!(Checkpoint::parse_body("o\n042\nAAAA\n").is_err());
    }
}
