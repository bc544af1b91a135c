//! US Social Security numbers: `AAA-GG-SSSS` with one delimiter kind (`-`, space or `.`).
//! An undelimited 9-digit run is not taken: without the shape it is any id.
//!
//! Never issued, so never PII: area 000, 666 and 900-999 (ITINs and unused), group 00,
//! serial 0000. Also dropped: numbers known from advertising and documentation
//! (078-05-1120 from a 1938 wallet insert, 123-45-6789, 987-65-4320..4329), which are
//! sample data wherever they appear.

use super::numbers::ends_number;

/// End of the SSN whose area is the digit run `p..run_end`.
pub(super) fn at(t: &[u8], p: usize, run_end: usize) -> Option<usize> {
    if run_end - p != 3 {
        return None;
    }
    let s = t.get(p..p + 11)?;
    let sep = s[3];
    let shaped = matches!(sep, b'-' | b' ' | b'.')
        && s[6] == sep
        && s[4..6].iter().all(u8::is_ascii_digit)
        && s[7..11].iter().all(u8::is_ascii_digit);
    if !shaped || !ends_number(t, p + 11) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| {
        s[r].iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    let (area, group, serial) = (num(0..3), num(4..6), num(7..11));
    let issued = area != 0 && area != 666 && area < 900 && group != 0 && serial != 0;
    let sample = (area, group, serial) == (78, 5, 1120)
        || (area, group, serial) == (123, 45, 6789)
        || (area == 987 && group == 65 && (4320..=4329).contains(&serial));
    (issued && !sample).then_some(p + 11)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssn(s: &str) -> bool {
        at(s.as_bytes(), 0, 3).is_some()
    }

    #[test]
    fn shapes() {
        assert!(ssn("536-22-1234"));
        assert!(ssn("536 22 1234"));
        assert!(ssn("536.22.1234"));
        assert!(ssn("536-22-1234."));
        assert!(!ssn("536-22 1234"), "mixed delimiters");
        assert!(!ssn("536-221-234"));
        assert!(!ssn("536-22-12345"));
        assert!(!ssn("536-22-1234x"));
        assert!(!ssn("536-22-1234-5"));
    }

    #[test]
    fn never_issued_and_sample_numbers() {
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "987-65-4321",
            "536-00-1234",
            "536-22-0000",
            "078-05-1120",
            "123-45-6789",
        ] {
            assert!(!ssn(bad), "{bad}");
        }
        assert!(ssn("899-12-3456"));
    }
}
