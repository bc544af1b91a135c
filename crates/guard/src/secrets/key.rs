//! The master key: 32 bytes from `IRONCAGE_MASTER_KEY` or from a key file that only its
//! owner can read. Never printed, never put in an error, wiped from memory on drop.

use super::fsutil::{self, read_bounded};
use super::SecretError;
use base64::Engine as _;
use std::fmt;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Environment variable that holds the master key (64 hex characters, or 32 bytes in
/// standard base64 with or without padding). Set but empty counts as unset, like a shell's
/// `IRONCAGE_MASTER_KEY=` meaning "no value".
pub const MASTER_KEY_ENV: &str = "IRONCAGE_MASTER_KEY";

/// Master key length in bytes (XChaCha20-Poly1305 key).
pub const KEY_LEN: usize = 32;

/// Where a master key came from, named in messages so a decryption failure says which key
/// was tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env,
    File(PathBuf),
    /// Built from bytes by the program itself (tests, key rotation tools).
    Bytes,
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Env => write!(f, "${MASTER_KEY_ENV}"),
            KeySource::File(p) => write!(f, "key file {}", p.display()),
            KeySource::Bytes => f.write_str("key given by the program"),
        }
    }
}

/// The key that encrypts every secret in a store.
pub struct MasterKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    source: KeySource,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// `$IRONCAGE_MASTER_KEY` if set, else the key file at `path` (see
    /// [`MasterKey::from_file`]). A set but malformed variable is an error, never a reason
    /// to fall back to the file: a typo must not silently pick another key.
    pub fn from_env_or_file(path: &Path, create: bool) -> Result<MasterKey, SecretError> {
        let env = match std::env::var(MASTER_KEY_ENV) {
            Ok(v) => Some(Zeroizing::new(v)),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(SecretError::BadMasterKey {
                    origin: KeySource::Env.to_string(),
                    reason: "it is not valid UTF-8",
                })
            }
        };
        MasterKey::resolve(env.as_deref().map(String::as_str), path, create)
    }

    /// [`MasterKey::from_env_or_file`] with the variable's value passed in (for tests and
    /// callers that read configuration elsewhere).
    pub fn resolve(
        env_value: Option<&str>,
        path: &Path,
        create: bool,
    ) -> Result<MasterKey, SecretError> {
        match env_value.filter(|v| !v.trim().is_empty()) {
            Some(v) => MasterKey::parse(v, KeySource::Env),
            None => MasterKey::from_file(path, create),
        }
    }

    /// Decodes 64 hex characters or standard base64 (padded or not) of exactly 32 bytes.
    pub fn parse(text: &str, source: KeySource) -> Result<MasterKey, SecretError> {
        let bad = |reason| SecretError::BadMasterKey {
            origin: source.to_string(),
            reason,
        };
        let t = text.trim();
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        if t.len() == 2 * KEY_LEN && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            for (i, pair) in t.as_bytes().chunks_exact(2).enumerate() {
                bytes[i] = (hex_val(pair[0]) << 4) | hex_val(pair[1]);
            }
        } else {
            let engine = if t.ends_with('=') {
                &base64::engine::general_purpose::STANDARD
            } else {
                &base64::engine::general_purpose::STANDARD_NO_PAD
            };
            let decoded = Zeroizing::new(
                engine
                    .decode(t)
                    .map_err(|_| bad("expected 64 hex characters or base64 of 32 bytes"))?,
            );
            if decoded.len() != KEY_LEN {
                return Err(bad("it must decode to exactly 32 bytes"));
            }
            bytes.copy_from_slice(&decoded);
        }
        Ok(MasterKey { bytes, source })
    }

    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> MasterKey {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        k.copy_from_slice(&bytes);
        MasterKey {
            bytes: k,
            source: KeySource::Bytes,
        }
    }

    /// A fresh random key.
    pub fn generate() -> Result<MasterKey, SecretError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        fsutil::random(&mut bytes[..])?;
        Ok(MasterKey {
            bytes,
            source: KeySource::Bytes,
        })
    }

    /// Reads the key file at `path`, which must be a regular file owned by the current
    /// user with no group or other permission bits (0600 or 0400). With `create`, a
    /// missing file is made (and its directory, 0700): a new random key written as hex,
    /// mode 0600, fsynced with its directory before it appears under its name, so neither
    /// a concurrent reader nor a crash can see it empty; if another process creates it
    /// first, that key is read and used instead.
    pub fn from_file(path: &Path, create: bool) -> Result<MasterKey, SecretError> {
        match std::fs::metadata(path) {
            Ok(_) => read_key_file(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !create {
                    return Err(SecretError::NoMasterKey {
                        path: path.to_path_buf(),
                    });
                }
                create_key_file(path)
            }
            Err(source) => Err(SecretError::Io {
                op: "inspect key file",
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    pub(super) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }
}

fn hex_val(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10, // only called on ASCII hex digits
    }
}

/// Ownership and permission rule for a key file, kept apart from I/O so it is tested for
/// owners a test cannot create.
pub(super) fn check_key_file(
    path: &Path,
    is_file: bool,
    mode: u32,
    owner: u32,
    me: u32,
) -> Result<(), SecretError> {
    if !is_file {
        return Err(SecretError::KeyFileNotRegular {
            path: path.to_path_buf(),
        });
    }
    if owner != me {
        return Err(SecretError::KeyFileOwner {
            path: path.to_path_buf(),
            owner,
            me,
        });
    }
    if mode & 0o077 != 0 {
        return Err(SecretError::KeyFileMode {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

fn read_key_file(path: &Path) -> Result<MasterKey, SecretError> {
    let io = |op| {
        let path = path.to_path_buf();
        move |source| SecretError::Io { op, path, source }
    };
    // Checked again on the opened file below; this first look only avoids opening a FIFO
    // (which would block) or a device.
    let pre = std::fs::metadata(path).map_err(io("inspect key file"))?;
    if !pre.is_file() {
        return Err(SecretError::KeyFileNotRegular {
            path: path.to_path_buf(),
        });
    }
    let file = std::fs::File::open(path).map_err(io("open key file"))?;
    // The checks that matter are on the file actually opened, so a swap between the look
    // above and the open cannot slip past them.
    let meta = file.metadata().map_err(io("inspect key file"))?;
    let me = rustix::process::geteuid().as_raw();
    check_key_file(path, meta.is_file(), meta.mode(), meta.uid(), me)?;
    let text = Zeroizing::new(read_bounded(file, 1024).map_err(io("read key file"))?);
    let text = std::str::from_utf8(&text).map_err(|_| SecretError::BadMasterKey {
        origin: KeySource::File(path.to_path_buf()).to_string(),
        reason: "it is not text (expected 64 hex characters)",
    })?;
    MasterKey::parse(text, KeySource::File(path.to_path_buf()))
}

fn create_key_file(path: &Path) -> Result<MasterKey, SecretError> {
    let io = |op| {
        let path = path.to_path_buf();
        move |source| SecretError::Io { op, path, source }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fsutil::create_private_dir(dir).map_err(io("create key file directory"))?;
    }
    let key = MasterKey::generate()?;
    let mut text = Zeroizing::new(String::with_capacity(2 * KEY_LEN + 1));
    for b in key.bytes.iter() {
        text.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        text.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
    }
    text.push('\n');
    // Someone else may create it at the same moment: theirs, if it lands first, is the key
    // the store gets written with, so read it back instead of ours.
    if !fsutil::create_complete(path, text.as_bytes())? {
        return read_key_file(path);
    }
    Ok(MasterKey {
        bytes: key.bytes,
        source: KeySource::File(path.to_path_buf()),
    })
}
