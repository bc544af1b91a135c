//! Byte-level helpers shared by the detectors: word boundaries that understand JSON escapes,
//! the word before a candidate, and a fast search for the next digit.
//!
//! Every detector's span is ASCII, so offsets found with these helpers are char boundaries.

/// `[A-Za-z0-9_]`: a byte that glues onto a value next to it.
pub(super) const fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether a value may start at `i`: the byte before it does not glue onto it. A letter that
/// ends an escape (`\n`, `\t`, `\u00e9`) does not glue: raw JSON bodies put one right before
/// a value ("...\nbob@example.com") that is not part of it.
pub(super) fn clear_before(t: &[u8], i: usize) -> bool {
    i == 0 || !is_word(t[i - 1]) || escape_ends_at(t, i)
}

/// Whether a value may end at `i`: the next byte does not glue onto it.
pub(super) fn clear_after(t: &[u8], i: usize) -> bool {
    i >= t.len() || !is_word(t[i])
}

/// Whether `t[..i]` ends with a backslash escape whose last byte is a letter or hex digit.
pub(super) fn escape_ends_at(t: &[u8], i: usize) -> bool {
    if i >= 2 && matches!(t[i - 1], b'n' | b't' | b'r' | b'b' | b'f') && escaped(t, i - 1) {
        return true;
    }
    i >= 6 && t[i - 5] == b'u' && t[i - 4..i].iter().all(u8::is_ascii_hexdigit) && escaped(t, i - 5)
}

/// Whether the byte at `i` follows an odd number of backslashes (so it is escaped).
fn escaped(t: &[u8], i: usize) -> bool {
    t[..i].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
}

/// The ASCII word (letters only) that ends just before `i`, skipping the separators that sit
/// between a label and its value in prose, YAML and JSON: spaces, quotes, `:`, `=`, `#`.
pub(super) fn word_before(t: &[u8], i: usize) -> &[u8] {
    let mut end = i;
    let mut skipped = 0;
    while end > 0 && skipped < 4 && matches!(t[end - 1], b' ' | b'\t' | b'"' | b'\'' | b':' | b'=')
    {
        end -= 1;
        skipped += 1;
    }
    let mut start = end;
    while start > 0 && end - start < 16 && t[start - 1].is_ascii_alphabetic() {
        start -= 1;
    }
    &t[start..end]
}

/// Whether the word before `i` is one of `words` (ASCII case-insensitive).
pub(super) fn word_before_is(t: &[u8], i: usize, words: &[&str]) -> bool {
    let w = word_before(t, i);
    !w.is_empty() && words.iter().any(|x| x.as_bytes().eq_ignore_ascii_case(w))
}

/// End of the digit run starting at `i`.
pub(super) fn digits_end(t: &[u8], i: usize) -> usize {
    i + t[i..].iter().take_while(|b| b.is_ascii_digit()).count()
}

/// Offset of the first ASCII digit at or after `from`.
///
/// Looks at the next 8 bytes one by one (digit-heavy text), then, since prose has few
/// digits, checks 16 bytes at a time with a branch-free OR that the compiler vectorizes and
/// only looks byte by byte inside a chunk that has one.
pub(super) fn next_digit(t: &[u8], from: usize) -> Option<usize> {
    const CHUNK: usize = 16;
    // In digit-heavy text the next digit is usually a few bytes away.
    let near = t.len().min(from + 8);
    if let Some(p) = t[from.min(near)..near].iter().position(u8::is_ascii_digit) {
        return Some(from + p);
    }
    let mut i = near;
    while i + CHUNK <= t.len() {
        let chunk = &t[i..i + CHUNK];
        let any = chunk
            .iter()
            .fold(false, |acc, &b| acc | (b.wrapping_sub(b'0') < 10));
        if any {
            break;
        }
        i += CHUNK;
    }
    t[i..].iter().position(u8::is_ascii_digit).map(|p| i + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_do_not_glue_but_letters_do() {
        let t = br#"a\nb x\u00e9c q\\nd"#;
        // `b` follows the escape `\n`.
        assert!(clear_before(t, 3));
        // `c` follows `\u00e9`.
        assert!(clear_before(t, 12));
        // `d` follows `\\n`: an escaped backslash, then a plain `n`, which glues.
        assert!(!clear_before(t, 18));
        assert!(clear_before(t, 0));
        assert!(!clear_before(b"ab", 1));
    }

    #[test]
    fn word_before_skips_label_separators() {
        let t = br#""version": "1.2.3.4""#;
        assert_eq!(word_before(t, 12), b"version");
        assert!(word_before_is(b"Version 1.2", 8, &["version"]));
        assert_eq!(word_before(b"1.2", 0), b"");
    }

    #[test]
    fn next_digit_finds_digits_in_and_across_chunks() {
        let mut t = vec![b'a'; 100];
        assert_eq!(next_digit(&t, 0), None);
        for at in [0, 15, 16, 17, 31, 32, 63, 99] {
            t.fill(b'a');
            t[at] = b'7';
            assert_eq!(next_digit(&t, 0), Some(at), "digit at {at}");
            assert_eq!(next_digit(&t, at + 1), None);
        }
    }
}
