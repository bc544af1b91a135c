//! PEM private keys: `-----BEGIN <label>PRIVATE KEY-----` (RSA, EC, DSA, OPENSSH,
//! ENCRYPTED, PKCS#8 with no label, PGP's `PRIVATE KEY BLOCK`) through the matching END
//! line. A key pasted without its END line (a truncated prompt) runs to the end of its
//! base64 body. Public keys and certificates are not secrets and are not matched.
//!
//! Bare DER in base64 (`MII…` without armour) is not detected: certificates and public keys
//! start the same way.

use memchr::memmem;

/// How far to look for the END line: a 4096-bit RSA key is about 3.3 KiB, PGP blocks more.
const MAX_BLOCK: usize = 64 * 1024;

/// Longest label between `-----BEGIN` and its closing dashes.
const MAX_LABEL: usize = 100;

/// Fewest bytes between the armour lines of a key worth reporting.
const MIN_BODY: usize = 16;

/// Where the next `-----END` is, remembered across the BEGIN lines of one scan so that
/// text full of BEGIN lines without END lines is searched once, not once per BEGIN.
#[derive(Debug, Default)]
pub(super) struct Ends {
    /// The search covered `searched_from..`, and found the first END at `found`.
    searched_from: Option<usize>,
    found: Option<usize>,
}

impl Ends {
    /// Offset of the first `-----END` at or after `from`. Calls must not go backwards.
    fn next(&mut self, t: &[u8], from: usize) -> Option<usize> {
        let stale = match (self.searched_from, self.found) {
            (Some(origin), _) if from < origin => true,
            (Some(_), Some(at)) => at < from,
            (Some(_), None) => false,
            (None, _) => true,
        };
        if stale {
            self.searched_from = Some(from);
            self.found = memmem::find(&t[from..], b"-----END").map(|k| from + k);
        }
        self.found
    }
}

/// End of the private key whose `-----BEGIN` starts at `s`.
pub(super) fn at(t: &[u8], s: usize, ends: &mut Ends) -> Option<usize> {
    let label_start = s + b"-----BEGIN".len();
    let window = &t[label_start..t.len().min(label_start + MAX_LABEL + 5)];
    let close = memmem::find(window, b"-----")?;
    let label = &window[..close];
    let label_chars = label
        .iter()
        .all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || matches!(b, b' ' | b'_' | b'-'));
    if !label_chars || !(label.ends_with(b"PRIVATE KEY") || label.ends_with(b"PRIVATE KEY BLOCK")) {
        return None;
    }
    let body = label_start + close + 5;
    let limit = t.len().min(body + MAX_BLOCK);
    // An armour line with nothing in it (a question about the error message) is no key.
    if let Some(end_line) = ends.next(t, body).filter(|&e| e < limit) {
        if end_line - body < MIN_BODY {
            return None;
        }
        let after = end_line + b"-----END".len();
        let line = &t[after..t.len().min(after + MAX_LABEL + 5)];
        return Some(match memmem::find(line, b"-----") {
            Some(c) => after + c + 5,
            None => after,
        });
    }
    let end = base64_body_end(t, body, limit);
    (end > body).then_some(end)
}

/// End of the base64 lines from `i`: chunks of base64 separated by line breaks (real or
/// JSON-escaped) or spaces, where a chunk shorter than 16 characters without padding is prose
/// that follows the key, not part of it.
fn base64_body_end(t: &[u8], i: usize, limit: usize) -> usize {
    let mut end = i;
    let mut pos = i;
    loop {
        while pos < limit {
            match t[pos] {
                b' ' | b'\t' | b'\r' | b'\n' => pos += 1,
                b'\\' if matches!(t.get(pos + 1), Some(b'n' | b'r')) => pos += 2,
                _ => break,
            }
        }
        let chunk_end = pos
            + t[pos..limit]
                .iter()
                .take_while(|&&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
                .count();
        let chunk = &t[pos..chunk_end];
        if chunk.is_empty() || (chunk.len() < 16 && !chunk.contains(&b'=')) {
            return end;
        }
        end = chunk_end;
        pos = chunk_end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Option<&str> {
        let s0 = s.find("-----BEGIN")?;
        at(s.as_bytes(), s0, &mut Ends::default()).map(|e| &s[s0..e])
    }

    const BODY: &str = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\nVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n";

    #[test]
    fn blocks_through_the_end_line() {
        for label in [
            "RSA PRIVATE KEY",
            "EC PRIVATE KEY",
            "PRIVATE KEY",
            "ENCRYPTED PRIVATE KEY",
            "OPENSSH PRIVATE KEY",
            "PGP PRIVATE KEY BLOCK",
        ] {
            let block = format!("-----BEGIN {label}-----\n{BODY}-----END {label}-----");
            assert_eq!(key(&format!("key:\n{block}\nthanks")), Some(block.as_str()));
        }
    }

    #[test]
    fn public_material_is_not_a_secret() {
        for label in [
            "PUBLIC KEY",
            "CERTIFICATE",
            "RSA PUBLIC KEY",
            "PGP PUBLIC KEY BLOCK",
        ] {
            assert_eq!(
                key(&format!(
                    "-----BEGIN {label}-----\n{BODY}-----END {label}-----"
                )),
                None
            );
        }
    }

    #[test]
    fn armour_without_a_body_is_not_a_key() {
        assert_eq!(
            key("Why does ssh print -----BEGIN OPENSSH PRIVATE KEY----- and stop?"),
            None
        );
        assert_eq!(
            key("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----"),
            None
        );
    }

    #[test]
    fn the_end_line_search_is_shared_and_moves_forward() {
        let t = b"-----END x -----END y";
        let mut ends = Ends::default();
        assert_eq!(ends.next(t, 0), Some(0));
        assert_eq!(ends.next(t, 0), Some(0));
        assert_eq!(ends.next(t, 1), Some(11));
        assert_eq!(ends.next(t, 12), None);
        assert_eq!(ends.next(t, 20), None);
        assert_eq!(ends.next(t, 3), Some(11), "going back searches again");
    }

    #[test]
    fn truncated_keys_run_to_the_end_of_the_base64() {
        let text = format!("-----BEGIN RSA PRIVATE KEY-----\n{BODY}and the rest is prose");
        let want = format!("-----BEGIN RSA PRIVATE KEY-----\n{}", BODY.trim_end());
        assert_eq!(key(&text), Some(want.as_str()));
        let escaped = r"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n";
        assert_eq!(
            key(&format!("{escaped}\", \"x\": 1")),
            Some(escaped.trim_end_matches(r"\n"))
        );
    }
}
