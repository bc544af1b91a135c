//! Payment card numbers: 13-19 digits, contiguous or in groups (4-4-4-4, 4-4-4-4-3, Amex
//! 4-6-5, Diners 4-6-4) with one separator kind, an issuer (IIN) range that allows that
//! length, and a valid Luhn check digit.
//!
//! A grouped number may be followed by another group that is not part of it (`4111 1111
//! 1111 1111 12/25`, an expiry date), so shorter prefixes of the groups are tried too. A run
//! of more than five groups is a table or a tracking number, not a card, and no card starts
//! inside it; a card right after another card (`4012… 4012 8888 8888 1881`) does.

use super::numbers::ends_number;
use super::text::digits_end;

/// Most groups a grouped card number has (4-4-4-4-3).
const MAX_GROUPS: usize = 5;

/// Longest card number with separators (4-4-4-4-3 and four separators).
const MAX_WRITTEN: usize = 23;

/// End of the card number whose first digit run is `p..run_end`.
pub(super) fn at(t: &[u8], p: usize, run_end: usize) -> Option<usize> {
    let end = at_unchecked(t, p, run_end)?;
    // A grouped number starts at its first group: `9400 1000 0000 0000 0000 00` must not
    // yield a card from its second group on, unless what comes before is a card itself.
    let inside = run_end - p == 4 && p >= 2 && t[p - 1] == b' ' && t[p - 2].is_ascii_digit();
    if inside {
        // Allowed only if some digit run in the written length of one card before it starts
        // a card that ends right at this run's separator.
        let floor = (p - 1).saturating_sub(MAX_WRITTEN);
        let card_before = (floor..p - 1).any(|i| {
            t[i].is_ascii_digit()
                && (i == 0 || !t[i - 1].is_ascii_digit())
                && at_unchecked(t, i, digits_end(t, i)) == Some(p - 1)
        });
        if !card_before {
            return None;
        }
    }
    Some(end)
}

fn at_unchecked(t: &[u8], p: usize, run_end: usize) -> Option<usize> {
    let len = run_end - p;
    if len >= 13 {
        return (len <= 19 && ends_number(t, run_end) && valid(&t[p..run_end])).then_some(run_end);
    }
    if len != 4 {
        return None;
    }
    let sep = *t.get(run_end)?;
    if sep != b' ' && sep != b'-' {
        return None;
    }
    // Group ends, the first one included.
    let mut ends = [0usize; MAX_GROUPS];
    ends[0] = run_end;
    let mut n = 1;
    let mut pos = run_end;
    while t.get(pos) == Some(&sep) && t.get(pos + 1).is_some_and(u8::is_ascii_digit) {
        if n == MAX_GROUPS {
            return None;
        }
        pos = digits_end(t, pos + 1);
        ends[n] = pos;
        n += 1;
    }
    if n < 3 {
        return None;
    }
    // All groups must end cleanly; a prefix is followed by one more group, which is fine.
    let all_end = ends_number(t, pos);
    let mut digits = [0u8; 19];
    for k in (3..=n).rev() {
        let ends = &ends[..k];
        if (k == n && !all_end) || !grouped_like_a_card(p, ends) {
            continue;
        }
        let mut count = 0;
        let mut start = p;
        for &end in ends {
            digits[count..count + end - start].copy_from_slice(&t[start..end]);
            count += end - start;
            start = end + 1;
        }
        if valid(&digits[..count]) {
            return Some(ends[k - 1]);
        }
    }
    None
}

/// Groups of 4 with a last group of 1-4, or Amex/Diners 4-6-5 and 4-6-4; 13-19 digits.
fn grouped_like_a_card(p: usize, ends: &[usize]) -> bool {
    let mut lens = [0usize; MAX_GROUPS];
    let mut start = p;
    for (i, &end) in ends.iter().enumerate() {
        lens[i] = end - start;
        start = end + 1;
    }
    let lens = &lens[..ends.len()];
    let total: usize = lens.iter().sum();
    if !(13..=19).contains(&total) {
        return false;
    }
    let (last, head) = lens.split_last().unwrap_or((&0, &[]));
    let fours = head.iter().all(|&l| l == 4) && (1..=4).contains(last);
    fours || lens == [4, 6, 5] || lens == [4, 6, 4]
}

/// Issuer range allows this length, and the Luhn check passes. `digits` are ASCII digits.
pub(super) fn valid(digits: &[u8]) -> bool {
    issuer_allows(digits) && luhn(digits)
}

fn prefix(digits: &[u8], n: usize) -> u32 {
    digits[..n]
        .iter()
        .fold(0, |acc, d| acc * 10 + u32::from(d - b'0'))
}

/// ISO/IEC 7812 issuer ranges of the brands that matter (Presidio's list plus the
/// Mastercard 2-series it misses), each with the lengths it issues.
fn issuer_allows(d: &[u8]) -> bool {
    let len = d.len();
    let (p2, p3, p4, p6) = (prefix(d, 2), prefix(d, 3), prefix(d, 4), prefix(d, 6));
    let visa = d[0] == b'4' && matches!(len, 13 | 16 | 19);
    let mastercard = ((51..=55).contains(&p2) || (2221..=2720).contains(&p4)) && len == 16;
    let amex = (p2 == 34 || p2 == 37) && len == 15;
    let discover =
        (p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || (622126..=622925).contains(&p6))
            && (16..=19).contains(&len);
    let jcb = (3528..=3589).contains(&p4) && (16..=19).contains(&len);
    let diners = ((300..=305).contains(&p3) || p3 == 309 || p2 == 36 || p2 == 38 || p2 == 39)
        && (len == 14 || len == 16);
    // Maestro and Dankort from 16 digits (their 12-15 digit numbers look like any id), Mir.
    let maestro = (matches!(p4, 5018 | 5019 | 5020 | 5038 | 5893 | 6304 | 6759)
        || (6761..=6763).contains(&p4))
        && (16..=19).contains(&len);
    let mir = (2200..=2204).contains(&p4) && (16..=19).contains(&len);
    visa || mastercard || amex || discover || jcb || diners || maestro || mir
}

/// The Luhn (mod 10) check over ASCII digits.
pub(super) fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d - b'0');
            if i % 2 == 1 {
                let dd = d * 2;
                if dd > 9 {
                    dd - 9
                } else {
                    dd
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(s: &str) -> Option<&str> {
        let t = s.as_bytes();
        let p = t.iter().position(u8::is_ascii_digit)?;
        at(t, p, digits_end(t, p)).map(|e| &s[p..e])
    }

    #[test]
    fn brands_and_groupings() {
        for ok in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "4222222222222",
            "5555 5555 5555 4444",
            "2223 0031 2200 3222",
            "3782 822463 10005",
            "371449635398431",
            "6011 1111 1111 1117",
            "3530 1113 3330 0000",
            "3056 930902 5904",
            "36227206271667",
            "6221 2600 0000 0000",
            "6759649826438453",
            "5019717010103742",
        ] {
            assert_eq!(card(ok), Some(ok), "{ok}");
        }
    }

    #[test]
    fn luhn_iin_and_shape_failures() {
        for bad in [
            "4111111111111112",              // Luhn
            "1234567812345670",              // Luhn ok, no issuer starts with 1
            "9400 1000 0000 0000 0000 00",   // USPS tracking: six groups
            "4111 1111 1111 1111 1111 1111", // six groups
            "41111 1111 1111 1111",          // first group of 5
            "4111 1111-1111 1111",           // mixed separators
            "4111111111111111abc",           // glued
            "41111111111111111111",          // 20 digits
            "3782 822463 10006",             // Amex with a bad check digit
            "5105105105105100.5",            // a decimal
        ] {
            assert_eq!(card(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_trailing_group_is_not_part_of_the_number() {
        assert_eq!(
            card("4111 1111 1111 1111 12/25"),
            Some("4111 1111 1111 1111")
        );
    }
}
