//! Phone numbers, in the three shapes prompts carry:
//!
//! - international: `+` (or `00`) and a country code, groups separated by ` `, `-`, `.` or
//!   one pair of parentheses (`+44 (0)20 7946 0958`), 8-15 digits in all (E.164 allows at
//!   most 15); `+1` numbers are exactly 11 digits;
//! - North American: `(212) 555-0100`, `212-555-0100`, `1-800-555-0199`, `212.555.0100`,
//!   area and exchange starting 2-9; ten bare digits only after a word like "phone";
//! - national with a trunk `0`: `020 7946 0958`, `01 23 45 67 89`, `0151-1234-5678`,
//!   10-12 digits with one separator kind.
//!
//! Slash dates, timestamps, page ranges, order numbers and hex dumps fail these shapes (the
//! rules follow libphonenumber's matcher: balanced brackets, no digits glued to letters).

use super::numbers::ends_number;
use super::text::{clear_before, digits_end, word_before_is};

/// Most digits a phone number has (E.164).
const MAX_DIGITS: usize = 15;

/// Words after which ten bare digits are a phone number rather than an id.
const PHONE_WORDS: &[&str] = &[
    "phone",
    "telephone",
    "tel",
    "call",
    "mobile",
    "cell",
    "cellphone",
    "fax",
    "sms",
    "whatsapp",
    "ph",
    "mob",
    "landline",
];

/// Digit groups of a phone-like cluster, with the text between them as separators.
struct Groups {
    starts: [usize; MAX_DIGITS],
    ends: [usize; MAX_DIGITS],
    n: usize,
    digits: usize,
    /// Index of the group inside the one pair of parentheses, if any.
    paren: Option<usize>,
    /// More digits followed than any phone has; the groups read are a prefix.
    overflow: bool,
    /// A parenthesis was left open.
    unclosed: bool,
}

impl Groups {
    /// Reads groups from the digit at `first`; `open` if a `(` comes right before it.
    fn parse(t: &[u8], first: usize, open: bool) -> Groups {
        let mut g = Groups {
            starts: [0; MAX_DIGITS],
            ends: [0; MAX_DIGITS],
            n: 0,
            digits: 0,
            paren: None,
            overflow: false,
            unclosed: false,
        };
        let mut open = open;
        let mut used_paren = open;
        let mut pos = first;
        loop {
            let end = digits_end(t, pos);
            if g.digits + (end - pos) > MAX_DIGITS {
                g.overflow = true;
                break;
            }
            if open {
                g.paren = Some(g.n);
            }
            g.starts[g.n] = pos;
            g.ends[g.n] = end;
            g.n += 1;
            g.digits += end - pos;
            // A separator: an optional `)`, an optional space, dash or dot, an optional `(`.
            let mut q = end;
            let mut closing = false;
            if open && t.get(q) == Some(&b')') {
                q += 1;
                closing = true;
            }
            if matches!(t.get(q), Some(b' ' | b'-' | b'.')) {
                q += 1;
            } else if g.n == 1 && t.get(q) == Some(&b'/') {
                // Only `030/12345678`: more slashes make a date.
                q += 1;
            }
            let mut opening = false;
            if !used_paren && !closing && t.get(q) == Some(&b'(') {
                q += 1;
                opening = true;
            }
            if q == end || !t.get(q).is_some_and(u8::is_ascii_digit) {
                break;
            }
            if closing {
                open = false;
            }
            if opening {
                open = true;
                used_paren = true;
            }
            pos = q;
        }
        g.unclosed = open;
        g
    }

    fn len(&self, i: usize) -> usize {
        self.ends[i] - self.starts[i]
    }

    fn sep<'t>(&self, t: &'t [u8], i: usize) -> &'t [u8] {
        &t[self.ends[i - 1]..self.starts[i]]
    }

    fn end(&self) -> usize {
        self.ends[self.n - 1]
    }
}

/// `(start, end)` of the phone number around the digit run `p..run_end`.
pub(super) fn at(t: &[u8], p: usize, run_end: usize) -> Option<(usize, usize)> {
    let prev = if p > 0 { t[p - 1] } else { 0 };
    if prev == b'+' {
        let start = p - 1;
        let g = Groups::parse(t, p, false);
        let end = international(&g, t, 0)?;
        return (lead_ok(t, start) && ends_number(t, end)).then_some((start, end));
    }
    // Without `+` or `(`, a phone's first group is `1` (North America), an area code, a
    // trunk `0…`, or ten or more bare digits.
    let len = run_end - p;
    let first_ok = (len == 1 && t[p] == b'1')
        || (len == 3 && nxx(t[p]))
        || (len >= 2 && t[p] == b'0')
        || len >= 10;
    if prev != b'(' && !first_ok {
        return None;
    }
    if prev == b'(' {
        let g = Groups::parse(t, p, true);
        if !g.unclosed {
            return national(t, p - 1, p, run_end, &g);
        }
        // `(212-555-0100)`: the parentheses are prose around the number.
    }
    national(t, p, p, run_end, &Groups::parse(t, p, false))
}

/// A number without `+`: `00CC …`, North American, or with a trunk `0`.
fn national(
    t: &[u8],
    start: usize,
    p: usize,
    run_end: usize,
    g: &Groups,
) -> Option<(usize, usize)> {
    if !lead_ok(t, start) {
        return None;
    }
    let end = if t[p..run_end].starts_with(b"00") && run_end - p > 2 && start == p {
        international(g, t, 2)?
    } else if let Some(end) = north_american(g, t, start) {
        end
    } else if trunk(g, t) {
        g.end()
    } else {
        return None;
    };
    ends_number(t, end).then_some((start, end))
}

/// Not glued to a word, and not an order or ticket number (`#212-555-0100`).
fn lead_ok(t: &[u8], start: usize) -> bool {
    clear_before(t, start) && !(start > 0 && matches!(t[start - 1], b'#' | b'+' | b'$'))
}

/// `+CC …` or `00CC …` (`skip` is 2 for the `00`): the end of the number.
fn international(g: &Groups, t: &[u8], skip: usize) -> Option<usize> {
    if g.overflow || g.unclosed {
        return None;
    }
    let cc = t[g.starts[0] + skip];
    if cc == b'0' {
        return None;
    }
    if cc == b'1' {
        // North America: exactly 1 + ten digits; later groups are something else.
        let mut digits = 0;
        for i in 0..g.n {
            digits += g.len(i);
            if digits - skip == 11 && g.paren.is_none_or(|k| k <= i) {
                return Some(g.ends[i]);
            }
        }
        return None;
    }
    (8..=MAX_DIGITS)
        .contains(&(g.digits - skip))
        .then_some(g.end())
}

/// `(212) 555-0100`, `212-555-0100`, `1 212 555 0100`, or ten bare digits after a phone
/// word: the end of the number.
fn north_american(g: &Groups, t: &[u8], start: usize) -> Option<usize> {
    if g.unclosed {
        return None;
    }
    let lead_one = g.n > 1 && g.len(0) == 1 && t[g.starts[0]] == b'1';
    let i = usize::from(lead_one);
    if g.n - i == 1 {
        // Bare digits: an id unless a word before says it is a phone.
        let s = g.starts[i];
        let bare = (g.len(i) == 10 && nxx(t[s]) && nxx(t[s + 3]))
            || (g.len(i) == 11 && t[s] == b'1' && nxx(t[s + 1]) && nxx(t[s + 4]));
        return (bare && g.paren.is_none() && word_before_is(t, start, PHONE_WORDS))
            .then_some(g.ends[i]);
    }
    if g.n < i + 3 || g.len(i) != 3 || g.len(i + 1) != 3 || g.len(i + 2) != 4 {
        return None;
    }
    if !nxx(t[g.starts[i]]) || !nxx(t[g.starts[i + 1]]) {
        return None;
    }
    let (sep1, sep2) = (g.sep(t, i + 1), g.sep(t, i + 2));
    if !matches!(sep2, b" " | b"-" | b".") {
        return None;
    }
    match g.paren {
        Some(k) if k == i => {
            if !matches!(sep1, b")" | b") " | b")-") {
                return None;
            }
        }
        Some(_) => return None,
        None => {
            if sep1 != sep2 {
                return None;
            }
        }
    }
    if g.n > i + 3 && g.sep(t, i + 3) == sep2 && g.len(i + 3) >= 3 {
        // `212 555 0100 2024`: a row of numbers, not a phone followed by something (a list
        // marker such as `2)` is fine).
        return None;
    }
    Some(g.ends[i + 2])
}

/// Area codes and exchanges start with 2-9.
fn nxx(d: u8) -> bool {
    (b'2'..=b'9').contains(&d)
}

/// `020 7946 0958`, `(020) 7946 0958`, `06-12-34-56-78`, `030/12345678`, `09-7625400`: a
/// trunk `0`, 10-12 digits (or 9 in two groups), groups of 2-8 digits (the first of 2-5), one
/// separator kind.
fn trunk(g: &Groups, t: &[u8]) -> bool {
    // Nine digits only as two groups with a long subscriber part (`09-7625400`, Israel;
    // `02 1234567`, Italy): shorter groupings of nine digits are anything.
    let nine = g.digits == 9 && g.n == 2 && g.len(1) >= 6;
    if g.overflow || g.unclosed || g.n < 2 || !((10..=12).contains(&g.digits) || nine) {
        return false;
    }
    let s = g.starts[0];
    if t[s] != b'0' || t[s + 1] == b'0' || !(2..=5).contains(&g.len(0)) {
        return false;
    }
    // `01 02 03 04 05 06 07 08`: a trunk number does not start inside a longer row.
    if s >= 2 && matches!(t[s - 1], b' ' | b'-' | b'.') && t[s - 2].is_ascii_digit() {
        return false;
    }
    if (1..g.n).any(|i| !(2..=8).contains(&g.len(i))) {
        return false;
    }
    let mut seps = (1..g.n).map(|i| g.sep(t, i));
    let first = seps.next().unwrap_or_default();
    let rest = if g.paren == Some(0) {
        match first {
            b")" | b") " => b" ".as_slice(),
            _ => return false,
        }
    } else if g.paren.is_some() {
        return false;
    } else {
        first
    };
    let slash = rest == b"/" && g.n == 2 && g.len(0) >= 3;
    (slash || matches!(rest, b" " | b"-" | b".")) && seps.all(|s| s == rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(s: &str) -> Option<&str> {
        let t = s.as_bytes();
        let p = t.iter().position(u8::is_ascii_digit)?;
        at(t, p, digits_end(t, p)).map(|(a, b)| &s[a..b])
    }

    #[test]
    fn shapes() {
        for (text, want) in [
            ("+1 212 555 0100", "+1 212 555 0100"),
            ("+1 (212) 555-0100", "+1 (212) 555-0100"),
            ("+12125550100", "+12125550100"),
            ("+44 20 7946 0958", "+44 20 7946 0958"),
            ("+44 (0)20 7946 0958", "+44 (0)20 7946 0958"),
            ("+49 30 12345678.", "+49 30 12345678"),
            ("+33 1 23 45 67 89", "+33 1 23 45 67 89"),
            ("+81-3-1234-5678", "+81-3-1234-5678"),
            ("0044 20 7946 0958", "0044 20 7946 0958"),
            ("(212) 555-0100", "(212) 555-0100"),
            ("212-555-0100", "212-555-0100"),
            ("212.555.0100", "212.555.0100"),
            ("1-800-555-0199", "1-800-555-0199"),
            ("1 (800) 555-0199", "1 (800) 555-0199"),
            ("212-555-0100 2 times", "212-555-0100"),
            ("020 7946 0958", "020 7946 0958"),
            ("(020) 7946 0958", "(020) 7946 0958"),
            ("01 23 45 67 89", "01 23 45 67 89"),
            ("0151-1234-5678", "0151-1234-5678"),
            ("Tel.: 030/12345678", "030/12345678"),
            ("My Israeli number is 09-7625400", "09-7625400"),
            ("a) 415 555 2671 2) 415", "415 555 2671"),
            ("phone: 2125550100", "2125550100"),
            ("+1 212 555 0100 2024", "+1 212 555 0100"),
            ("(212-555-0100)", "212-555-0100"),
            ("212-555-0100 1234 5678 9012", "212-555-0100"),
        ] {
            assert_eq!(phone(text), Some(want), "{text}");
        }
    }

    #[test]
    fn not_phones() {
        for bad in [
            "2125550100", // bare digits without a phone word
            "order 2125550100",
            "#212-555-0100",
            "212-555-0100x",
            "212 555 0100 2024",
            "123-456-7890",  // area starts with 1
            "212-055-0100",  // exchange starts with 0
            "212-555 0100",  // mixed separators
            "(212 555-0100", // unbalanced
            "2024-05-12 10:30",
            "05/12/2024",
            "01/02/2024",
            "01-02-2024",
            "05 12 34",
            "020/1234/5678",
            "pages 212-255",
            "+123",
            "+0 123 456 789",
            "00 01 02 03 04 05 06 07",
            "01 02 03 04 05 06 07 08",
            "1.2.3.4",
            "x+12125550100",
            "+1 212 555 010",
            "+12345678901234567890",
            "(12345678901234567890)",
            "012345678901234567890",
        ] {
            assert_eq!(phone(bad), None, "{bad}");
        }
    }
}
