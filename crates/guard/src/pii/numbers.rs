//! The digit-run pass: one walk over the text's digit runs that hands each run to the numeric
//! detectors, most specific first (IBAN, IPv4, SSN, payment card, phone). The first detector
//! that accepts a run claims it, and the walk resumes after the claimed span.
//!
//! Also owns the two boundary rules every numeric detector shares, so that `3.14159…`,
//! `v1.2.3.4.5`, `1,234,567` or the `0100` of `555-0100` never start a fresh number.

use super::text::{clear_after, clear_before, digits_end, next_digit};
use super::{card, iban, ip, phone, ssn, Finding, Kind};

pub(super) fn find(t: &[u8], out: &mut Vec<Finding>) {
    let mut i = 0;
    while let Some(p) = next_digit(t, i) {
        let run_end = digits_end(t, p);
        i = run_end;
        if let Some(f) = at_run(t, p, run_end) {
            i = i.max(f.end);
            out.push(f);
        }
    }
}

fn at_run(t: &[u8], p: usize, run_end: usize) -> Option<Finding> {
    let found = |kind, start, end| Some(Finding { kind, start, end });
    let len = run_end - p;
    let prev = if p > 0 { t[p - 1] } else { 0 };
    // An IBAN's check digits follow its country letters, so it is the one number that
    // starts glued to a word.
    if prev.is_ascii_uppercase() {
        if let Some(end) = iban::at(t, p) {
            return found(Kind::Iban, p - 2, end);
        }
    }
    // Cheap shape tests on the bytes around the run decide which detectors can match at
    // all; in digit-heavy text most runs are rejected here. Every remaining detector needs
    // a separator after the first run, ten or more digits, or a `+` or `(` before them.
    let next = t.get(run_end).copied().unwrap_or(0);
    if len < 10 && !matches!(next, b'.' | b'-' | b' ' | b'/') && prev != b'+' && prev != b'(' {
        return None;
    }
    if !starts_number(t, p, run_end) {
        // `192.168.1.100-192.168.1.200`: the end of an address range.
        if prev == b'-' && ip::ends_range(t, p - 1) {
            return ip::v4_at(t, p).map(|end| Finding {
                kind: Kind::IpAddress,
                start: p,
                end,
            });
        }
        return None;
    }
    let after = t.get(run_end + 1).copied().unwrap_or(0);
    let sep_digit = |seps: &[u8]| seps.contains(&next) && after.is_ascii_digit();
    if len <= 3 && sep_digit(b".") {
        if let Some(end) = ip::v4_at(t, p) {
            return found(Kind::IpAddress, p, end);
        }
    }
    if len == 3 && sep_digit(b"- .") {
        if let Some(end) = ssn::at(t, p, run_end) {
            return found(Kind::UsSsn, p, end);
        }
    }
    if len >= 13 || (len == 4 && sep_digit(b" -")) {
        if let Some(end) = card::at(t, p, run_end) {
            return found(Kind::CreditCard, p, end);
        }
    }
    let grouped =
        matches!(next, b' ' | b'-' | b'.' | b'/') && (after.is_ascii_digit() || after == b'(');
    if prev == b'+' || prev == b'(' || grouped || len >= 10 {
        if let Some((start, end)) = phone::at(t, p, run_end) {
            return found(Kind::Phone, start, end);
        }
    }
    None
}

/// Whether a number may start at the digit run `p..run_end`: not glued to a word, and not
/// the continuation of a number before it.
pub(super) fn starts_number(t: &[u8], p: usize, run_end: usize) -> bool {
    if !clear_before(t, p) {
        return false;
    }
    if p < 2 {
        return true;
    }
    let (sep, before) = (t[p - 1], t[p - 2]);
    match sep {
        // `3.14159`, `v1.2.3.4.5`, `12/25`, `555-0100`, `ID-4111…`, `a3f-…` (UUID groups).
        b'.' | b'-' | b'/' => !before.is_ascii_alphanumeric(),
        // A thousands group; a longer run after a comma is a CSV field.
        b',' => !(before.is_ascii_digit() && run_end - p == 3),
        _ => true,
    }
}

/// Whether a number may end at `e`: not glued to a word, and not continued by another
/// number (`.5`, `-2`, `/25`).
pub(super) fn ends_number(t: &[u8], e: usize) -> bool {
    clear_after(t, e)
        && !(e + 1 < t.len() && matches!(t[e], b'.' | b'-' | b'/') && t[e + 1].is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starts(t: &str, p: usize) -> bool {
        let t = t.as_bytes();
        starts_number(t, p, digits_end(t, p))
    }

    #[test]
    fn continuations_do_not_start_numbers() {
        assert!(starts("x 4111", 2));
        assert!(!starts("3.14159", 2));
        assert!(!starts("v1.2.3.4.5", 3));
        assert!(!starts("1,234,567", 2));
        assert!(starts("a,4111111111111111", 2), "a CSV field");
        assert!(!starts("555-0100", 4));
        assert!(!starts("card4111", 4));
        assert!(starts(r"\n4111", 2), "after a JSON escape");
    }

    #[test]
    fn continued_numbers_do_not_end() {
        assert!(ends_number(b"12 ", 2));
        assert!(ends_number(b"12.", 2));
        assert!(!ends_number(b"12.5", 2));
        assert!(!ends_number(b"12/25", 2));
        assert!(!ends_number(b"12ab", 2));
        assert!(ends_number(b"12", 2));
    }
}
