//! An encrypted store for provider API keys (`ironcage secret set openai ...`).
//!
//! Owns the store file and its encryption. It must never reveal a value except through
//! [`SecretStore::get`]: `Debug` impls, errors and [`SecretStore::list`] carry names and
//! times only, nothing derived from a value (no hash, no length, no prefix), since even a
//! fingerprint lets someone confirm a guessed key.
//!
//! File format (JSON, version 1, mode 0600):
//!
//! ```json
//! {"format": "ironcage-secrets", "version": 1,
//!  "entries": {"openai": {"created": 1700000000, "updated": 1700000000,
//!                         "nonce": "<base64, 24 bytes>", "ciphertext": "<base64>"}}}
//! ```
//!
//! Each value is sealed with XChaCha20-Poly1305 under the master key, with a fresh random
//! 24-byte nonce per write (large enough that random nonces never repeat in practice) and
//! `"ironcage-secrets v1\0" + name` as associated data, so an entry moved to another name
//! fails authentication instead of handing one provider's key to another. Times are not
//! authenticated: they are informational.
//!
//! Writers serialize on an exclusive `flock` of `<store>.lock` and replace the file
//! atomically; readers need no lock.

#![forbid(unsafe_code)]

mod fsutil;
mod key;

pub use key::{KeySource, MasterKey, KEY_LEN, MASTER_KEY_ENV};

use base64::Engine as _;
use chacha20poly1305::aead::AeadInOut as _;
use chacha20poly1305::{KeyInit as _, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use zeroize::{Zeroize as _, Zeroizing};

/// Value of the `format` field.
const FORMAT: &str = "ironcage-secrets";
/// The only store version this build reads and writes.
pub const STORE_VERSION: u32 = 1;
/// Prefix of the associated data; the version is in it so a future format cannot be fed
/// old ciphertexts under new rules.
const AAD_PREFIX: &[u8] = b"ironcage-secrets v1\0";
/// A secret is an API key or token, not a file.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Largest store file read.
const MAX_STORE_BYTES: u64 = 16 * 1024 * 1024;
const NONCE_LEN: usize = 24;

/// Why a secret-store operation failed. No variant holds a secret value or key material.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no master key: ${} is not set and key file {} does not exist. Hint: `ironcage secret set` creates the key file, or set {} to 64 hex characters (e.g. from `openssl rand -hex 32`)", MASTER_KEY_ENV, path.display(), MASTER_KEY_ENV)]
    NoMasterKey { path: PathBuf },
    #[error("master key from {origin} is unusable: {reason}")]
    BadMasterKey {
        origin: String,
        reason: &'static str,
    },
    #[error("key file {} is not a regular file; refusing to use it", path.display())]
    KeyFileNotRegular { path: PathBuf },
    #[error("key file {} is owned by uid {owner}, not by you (uid {me}); refusing to use it. Hint: use your own key file, or `chown {me} {}` if you trust it", path.display(), path.display())]
    KeyFileOwner { path: PathBuf, owner: u32, me: u32 },
    #[error("key file {} has mode {mode:04o}: group or others may read it; refusing to use it. Hint: `chmod 600 {}`, and rotate the key if anyone else could have read it", path.display(), path.display())]
    KeyFileMode { path: PathBuf, mode: u32 },
    #[error("cannot use random numbers from the OS: {reason}")]
    Random { reason: String },
    #[error("secret store {} is damaged: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("secret store {} has format version {version}; this build reads version {}. Hint: use the ironcage that wrote it", path.display(), STORE_VERSION)]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error("cannot decrypt secret `{name}` in {}: wrong master key ({key}) or the entry was modified. Hint: check ${} and the key file, or set the secret again", path.display(), MASTER_KEY_ENV)]
    Decrypt {
        path: PathBuf,
        name: String,
        key: String,
    },
    #[error("secret `{name}` in {} is not valid UTF-8 after decryption", path.display())]
    NotUtf8 { path: PathBuf, name: String },
    #[error("`{name}` is not a secret name: use 1 to 64 of a-z, 0-9, `_` and `-` (e.g. `openai`)")]
    InvalidName { name: String },
    #[error("the value for secret `{name}` is {problem}")]
    BadValue { name: String, problem: &'static str },
    #[error("cannot encrypt secret `{name}`")]
    Encrypt { name: String },
}

/// What [`SecretStore::list`] tells about one secret: never anything about its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretInfo {
    pub name: String,
    /// Unix seconds of the first `set`.
    pub created: u64,
    /// Unix seconds of the latest `set`.
    pub updated: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    format: String,
    version: u32,
    entries: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    created: u64,
    updated: u64,
    nonce: String,
    ciphertext: String,
}

/// The encrypted secret store at one path.
pub struct SecretStore {
    path: PathBuf,
    key: MasterKey,
}

impl fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretStore")
            .field("path", &self.path)
            .field("key", &self.key)
            .finish()
    }
}

/// `[a-z0-9_-]{1,64}`: safe in file names, URLs and log lines without quoting.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl SecretStore {
    /// Opens the store at `path` (which need not exist yet: the first `set` creates it and
    /// its directory, mode 0700). An existing file is read once now, so a damaged or
    /// future-version store is reported before anything is attempted.
    pub fn open(path: impl Into<PathBuf>, key: MasterKey) -> Result<SecretStore, SecretError> {
        let store = SecretStore {
            path: path.into(),
            key,
        };
        store.read()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Encrypts and stores `value` under `name`, replacing any previous value (keeping its
    /// `created` time). Refused with [`SecretError::Decrypt`] if the store already holds
    /// other secrets that this master key cannot open.
    pub fn set(&self, name: &str, value: Zeroizing<String>) -> Result<(), SecretError> {
        check_name(name)?;
        if value.is_empty() {
            return Err(SecretError::BadValue {
                name: name.to_string(),
                problem: "empty",
            });
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(SecretError::BadValue {
                name: name.to_string(),
                problem: "larger than 64 KiB",
            });
        }
        let (nonce, ciphertext) = self.seal(name, value.as_bytes())?;
        drop(value);
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fsutil::create_private_dir(dir).map_err(|source| SecretError::Io {
                op: "create directory",
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let _lock = fsutil::WriteLock::acquire(&self.path)?;
        let mut file = self.read()?;
        // One store, one master key: with the wrong key in hand (a mistyped
        // $IRONCAGE_MASTER_KEY), adding an entry would leave a store that no single key
        // opens. One other entry decrypting proves the key is the store's.
        if let Some((other, entry)) = file.entries.iter().find(|(n, _)| n.as_str() != name) {
            drop(self.open_entry(other, entry)?);
        }
        let now = unix_now();
        let created = file.entries.get(name).map_or(now, |e| e.created);
        let b64 = &base64::engine::general_purpose::STANDARD;
        file.entries.insert(
            name.to_string(),
            Entry {
                created,
                updated: now,
                nonce: b64.encode(nonce),
                ciphertext: b64.encode(ciphertext),
            },
        );
        self.write(&file)
    }

    /// The decrypted value of `name`, or `None` if there is no such secret.
    pub fn get(&self, name: &str) -> Result<Option<Zeroizing<String>>, SecretError> {
        check_name(name)?;
        let file = self.read()?;
        match file.entries.get(name) {
            None => Ok(None),
            Some(entry) => self.open_entry(name, entry).map(Some),
        }
    }

    /// Names and times of every secret, by name.
    pub fn list(&self) -> Result<Vec<SecretInfo>, SecretError> {
        Ok(self
            .read()?
            .entries
            .iter()
            .map(|(name, e)| SecretInfo {
                name: name.clone(),
                created: e.created,
                updated: e.updated,
            })
            .collect())
    }

    /// Decrypts every entry (and throws the values away), reporting the first that fails:
    /// for `secret list` to warn that the master key in use is the wrong one.
    pub fn verify(&self) -> Result<usize, SecretError> {
        let file = self.read()?;
        for (name, entry) in &file.entries {
            drop(self.open_entry(name, entry)?);
        }
        Ok(file.entries.len())
    }

    /// Deletes `name`; returns whether it existed.
    pub fn remove(&self, name: &str) -> Result<bool, SecretError> {
        check_name(name)?;
        if !self.path.exists() {
            return Ok(false);
        }
        let _lock = fsutil::WriteLock::acquire(&self.path)?;
        let mut file = self.read()?;
        if file.entries.remove(name).is_none() {
            return Ok(false);
        }
        self.write(&file)?;
        Ok(true)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.key.bytes().into())
    }

    /// Returns (nonce, ciphertext with tag).
    fn seal(
        &self,
        name: &str,
        plaintext: &[u8],
    ) -> Result<([u8; NONCE_LEN], Vec<u8>), SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        fsutil::random(&mut nonce)?;
        // Encrypted in place: the buffer holds plaintext only until the call returns, and
        // the capacity covers the tag so no reallocation leaves a plaintext copy behind.
        let mut buf = Zeroizing::new(Vec::with_capacity(plaintext.len() + 16));
        buf.extend_from_slice(plaintext);
        self.cipher()
            .encrypt_in_place(&XNonce::from(nonce), &aad(name), &mut *buf)
            .map_err(|_| SecretError::Encrypt {
                name: name.to_string(),
            })?;
        Ok((nonce, std::mem::take(&mut *buf)))
    }

    fn open_entry(&self, name: &str, entry: &Entry) -> Result<Zeroizing<String>, SecretError> {
        let b64 = &base64::engine::general_purpose::STANDARD;
        let corrupt = |what: &str| SecretError::Corrupt {
            path: self.path.clone(),
            reason: format!("entry `{name}`: {what}"),
        };
        let nonce = b64
            .decode(&entry.nonce)
            .map_err(|_| corrupt("nonce is not base64"))?;
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| corrupt("nonce is not 24 bytes"))?;
        let mut buf = Zeroizing::new(
            b64.decode(&entry.ciphertext)
                .map_err(|_| corrupt("ciphertext is not base64"))?,
        );
        self.cipher()
            .decrypt_in_place(&XNonce::from(nonce), &aad(name), &mut *buf)
            .map_err(|_| SecretError::Decrypt {
                path: self.path.clone(),
                name: name.to_string(),
                key: self.key.source().to_string(),
            })?;
        match String::from_utf8(std::mem::take(&mut *buf)) {
            Ok(s) => Ok(Zeroizing::new(s)),
            Err(e) => {
                e.into_bytes().zeroize();
                Err(SecretError::NotUtf8 {
                    path: self.path.clone(),
                    name: name.to_string(),
                })
            }
        }
    }

    /// The store's contents; an absent file is an empty store.
    fn read(&self) -> Result<StoreFile, SecretError> {
        let empty = StoreFile {
            format: FORMAT.to_string(),
            version: STORE_VERSION,
            entries: BTreeMap::new(),
        };
        let file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(empty),
            Err(source) => {
                return Err(SecretError::Io {
                    op: "open secret store",
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let bytes =
            fsutil::read_bounded(file, MAX_STORE_BYTES).map_err(|source| SecretError::Io {
                op: "read secret store",
                path: self.path.clone(),
                source,
            })?;
        // Look at the version before the full shape, so a newer store is reported as newer
        // rather than as damaged.
        #[derive(Deserialize)]
        struct Header {
            format: Option<String>,
            version: Option<u32>,
        }
        let corrupt = |reason: String| SecretError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        let header: Header =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("not JSON: {e}")))?;
        if header.format.as_deref() != Some(FORMAT) {
            return Err(corrupt(format!("the `format` field is not \"{FORMAT}\"")));
        }
        match header.version {
            Some(STORE_VERSION) => {}
            Some(version) => {
                return Err(SecretError::UnsupportedVersion {
                    path: self.path.clone(),
                    version,
                })
            }
            None => return Err(corrupt("no `version` field".to_string())),
        }
        let parsed: StoreFile =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if let Some(bad) = parsed.entries.keys().find(|n| !valid_name(n)) {
            return Err(corrupt(format!(
                "entry name `{}` is not a valid secret name",
                bad.escape_debug()
            )));
        }
        Ok(parsed)
    }

    fn write(&self, file: &StoreFile) -> Result<(), SecretError> {
        let mut text = serde_json::to_vec_pretty(file).map_err(|e| SecretError::Corrupt {
            path: self.path.clone(),
            reason: format!("cannot serialize: {e}"),
        })?;
        text.push(b'\n');
        fsutil::write_atomic(&self.path, &text)
    }
}

fn check_name(name: &str) -> Result<(), SecretError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(SecretError::InvalidName {
            name: name
                .chars()
                .take(80)
                .collect::<String>()
                .escape_debug()
                .to_string(),
        })
    }
}

fn aad(name: &str) -> Vec<u8> {
    let mut a = AAD_PREFIX.to_vec();
    a.extend_from_slice(name.as_bytes());
    a
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::key::check_key_file;
    use super::*;

    #[test]
    fn names() {
        for ok in ["openai", "a", "anthropic_prod-2", &"x".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "OpenAI",
            "a b",
            "a/b",
            "../x",
            "é",
            &"x".repeat(65),
            "a\0",
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn key_file_rule_refuses_other_owners_group_bits_and_non_files() {
        let p = Path::new("/k");
        assert!(check_key_file(p, true, 0o100600, 1000, 1000).is_ok());
        assert!(check_key_file(p, true, 0o100400, 1000, 1000).is_ok());
        let e = check_key_file(p, true, 0o100600, 0, 1000).unwrap_err();
        assert!(
            matches!(
                e,
                SecretError::KeyFileOwner {
                    owner: 0,
                    me: 1000,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("uid 0"), "{e}");
        for mode in [0o100640, 0o100604, 0o100660, 0o100601, 0o100610] {
            let e = check_key_file(p, true, mode, 7, 7).unwrap_err();
            assert!(
                matches!(e, SecretError::KeyFileMode { .. }),
                "{mode:o}: {e}"
            );
            assert!(e.to_string().contains("chmod 600 /k"), "{e}");
        }
        assert!(matches!(
            check_key_file(p, false, 0o600, 7, 7),
            Err(SecretError::KeyFileNotRegular { .. })
        ));
    }
}
