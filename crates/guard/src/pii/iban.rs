//! IBANs: two country letters, two check digits, then the BBAN, compact or in groups of 4
//! separated by single spaces. The length must be the country's exact IBAN length
//! (python-stdnum `iban.dat`) and the whole must pass ISO 7064 mod 97-10.
//!
//! Taking exactly the country's length, not the longest run, is what keeps a number written
//! after a spaced IBAN (`DE89 3704 0044 0532 0130 00 12`) from failing it.

use super::text::{clear_after, clear_before};

/// Longest IBAN of any country (Malta, 31) rounded up to the standard's 34.
const MAX_LEN: usize = 34;

/// IBAN length by country; `None` for countries not in the list.
fn country_len(c: [u8; 2]) -> Option<usize> {
    Some(match &c {
        b"AT" => 20,
        b"BE" => 16,
        b"BG" => 22,
        b"HR" => 21,
        b"CY" => 28,
        b"CZ" => 24,
        b"DK" => 18,
        b"EE" => 20,
        b"FI" => 18,
        b"FR" => 27,
        b"DE" => 22,
        b"GR" => 27,
        b"HU" => 28,
        b"IE" => 22,
        b"IT" => 27,
        b"LV" => 21,
        b"LT" => 20,
        b"LU" => 20,
        b"MT" => 31,
        b"NL" => 18,
        b"PL" => 28,
        b"PT" => 25,
        b"RO" => 24,
        b"SK" => 24,
        b"SI" => 19,
        b"ES" => 24,
        b"SE" => 24,
        b"IS" => 26,
        b"LI" => 21,
        b"NO" => 15,
        b"GB" => 22,
        b"CH" => 21,
        b"AD" => 24,
        b"MC" => 27,
        b"SM" => 27,
        b"VA" => 22,
        b"GI" => 23,
        b"TR" => 26,
        b"UA" => 29,
        b"BR" => 29,
        _ => return None,
    })
}

/// End of the IBAN whose check digits start at `p` (the country code is `p-2..p`).
pub(super) fn at(t: &[u8], p: usize) -> Option<usize> {
    if p < 2 {
        return None;
    }
    let len = country_len([t[p - 2], t[p - 1]])?;
    if !clear_before(t, p - 2) {
        return None;
    }
    if !t.get(p + 1).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let mut buf = [0u8; MAX_LEN];
    let mut n = 0;
    let mut pos = p - 2;
    // None until the first group boundary tells whether the IBAN is written in groups.
    let mut spaced: Option<bool> = None;
    while n < len {
        if n > 0 && n % 4 == 0 {
            let space = t.get(pos) == Some(&b' ');
            match spaced {
                None => spaced = Some(space),
                Some(s) if s != space => return None,
                Some(_) => {}
            }
            if space {
                pos += 1;
            }
        }
        let b = *t.get(pos)?;
        if !(b.is_ascii_uppercase() || b.is_ascii_digit()) {
            return None;
        }
        buf[n] = b;
        n += 1;
        pos += 1;
    }
    (clear_after(t, pos) && mod97(&buf[..len]) == 1).then_some(pos)
}

/// ISO 7064 mod 97-10 of the IBAN with its first four characters moved to the end and
/// letters read as 10..35.
fn mod97(iban: &[u8]) -> u32 {
    let (head, rest) = iban.split_at(4);
    rest.iter().chain(head).fold(0u32, |r, &c| {
        if c.is_ascii_digit() {
            (r * 10 + u32::from(c - b'0')) % 97
        } else {
            (r * 100 + u32::from(c - b'A') + 10) % 97
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iban(s: &str) -> Option<&str> {
        at(s.as_bytes(), 2).map(|e| &s[..e])
    }

    #[test]
    fn valid_compact_and_spaced() {
        for ok in [
            "DE89370400440532013000",
            "DE89 3704 0044 0532 0130 00",
            "GB29 NWBK 6016 1331 9268 19",
            "NL91ABNA0417164300",
            "FR14 2004 1010 0505 0001 3M02 606",
            "NO9386011117947",
            "MT84 MALT 0110 0001 2345 MTLC AST0 01S",
        ] {
            assert_eq!(iban(ok), Some(ok), "{ok}");
        }
    }

    #[test]
    fn checksum_length_and_shape_failures() {
        for bad in [
            "DE89370400440532013001",  // last digit changed
            "DE8937040044053201300",   // one short
            "DE893704004405320130001", // glued to more digits
            "DE89 3704 0044 05320130 00",
            "DE89 3704 0044 0532 0130 00x",
            "XX89370400440532013000", // no such country
        ] {
            assert_eq!(iban(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_number_after_a_spaced_iban_does_not_fail_it() {
        assert_eq!(
            iban("DE89 3704 0044 0532 0130 00 12"),
            Some("DE89 3704 0044 0532 0130 00")
        );
    }
}
