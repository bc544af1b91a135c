//! Canonical JSON (RFC 8785, JCS): object keys sorted by UTF-16 code units, no insignificant
//! whitespace, ECMAScript number formatting, minimal string escaping. The bytes an entry is
//! stored and hashed as are exactly `to_vec(entry)`, so anyone can re-derive them from the
//! parsed entry and check them.

use serde_json::Value;

pub fn to_vec(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write(v, &mut out);
    out
}

pub fn write(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            // serde_json's map is ordered by UTF-8 bytes, which differs from UTF-16 order
            // only for characters above U+FFFF versus U+E000..U+FFFF; sort only then.
            if keys.iter().any(|k| k.chars().any(|c| c as u32 >= 0xE000)) {
                keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            }
            out.push(b'{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write(&map[k.as_str()], out);
            }
            out.push(b'}');
        }
    }
}

fn write_number(n: &serde_json::Number, out: &mut Vec<u8>) {
    if let Some(i) = n.as_u64() {
        out.extend_from_slice(i.to_string().as_bytes());
    } else if let Some(i) = n.as_i64() {
        out.extend_from_slice(i.to_string().as_bytes());
    } else {
        let f = n.as_f64().unwrap_or(0.0);
        out.extend_from_slice(format_f64(f).as_bytes());
    }
}

/// ECMAScript's Number::toString for finite doubles (JSON has no others): the shortest
/// digits that round-trip; of two equally short candidates equally close to the exact value,
/// the even one (Rust's formatter rounds such ties up, ECMAScript to even); plain notation
/// from 1e-6 up to 1e21, exponent notation outside.
pub fn format_f64(f: f64) -> String {
    if f == 0.0 || !f.is_finite() {
        return "0".into();
    }
    let shortest = format!("{:e}", f.abs());
    let (mant, exp) = shortest.split_once('e').unwrap_or((&shortest, "0"));
    let mut digits: String = mant.chars().filter(|c| *c != '.').collect();
    let mut exp: i32 = exp.parse().unwrap_or(0);
    // A tie: the exact value is the shortest digits' neighbour-midpoint, i.e. its exact
    // expansion is (digits - 1 or digits) followed by 5 and zeros.
    let exact = format!("{:.1100e}", f.abs());
    let exact_digits: String = exact
        .split_once('e')
        .map(|(m, _)| m)
        .unwrap_or(&exact)
        .chars()
        .filter(|c| *c != '.')
        .collect();
    let k = digits.len();
    if exact_digits.len() > k
        && exact_digits.as_bytes()[k] == b'5'
        && exact_digits[k + 1..].bytes().all(|b| b == b'0')
    {
        let low: u128 = exact_digits[..k].parse().unwrap_or(0);
        let even = if low.is_multiple_of(2) { low } else { low + 1 };
        let mut s = even.to_string();
        if s.len() > k {
            // Carried into a new digit (…9 + 1): one more power of ten.
            exp += 1;
            s.truncate(k);
        }
        digits = s;
    }
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let sign = if f < 0.0 { "-" } else { "" };
    format!("{sign}{}", ecma_layout(digits, exp))
}

/// Lays out significant `digits` (d.ddd × 10^exp) as ECMAScript's Number::toString does.
fn ecma_layout(digits: &str, exp: i32) -> String {
    let k = digits.len() as i32;
    let n = exp + 1;
    if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        format!("{}.{}", &digits[..n as usize], &digits[n as usize..])
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let e = n - 1;
        format!(
            "{first}{frac}e{}{}",
            if e >= 0 { "+" } else { "-" },
            e.abs()
        )
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 15) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(v: &Value) -> String {
        String::from_utf8(to_vec(v)).unwrap()
    }

    #[test]
    fn rfc8785_number_examples() {
        // RFC 8785 appendix B: IEEE 754 bit patterns and their canonical text.
        let cases: &[(u64, &str)] = &[
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for &(bits, want) in cases {
            assert_eq!(format_f64(f64::from_bits(bits)), want, "{bits:#x}");
        }
    }

    #[test]
    fn rfc8785_sorting_and_strings() {
        // RFC 8785 section 3.2.3's sorting example (keys in UTF-16 order).
        let v: Value = serde_json::from_str(
            r#"{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One","\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis"}"#,
        )
        .unwrap();
        let keys: Vec<String> = {
            let text = canon(&v);
            let back: Vec<(String, Value)> = text[1..text.len() - 1]
                .split(",\"")
                .map(|kv| {
                    let kv = if kv.starts_with('"') {
                        kv.to_string()
                    } else {
                        format!("\"{kv}")
                    };
                    let (k, _) = kv.split_once("\":").unwrap();
                    (
                        serde_json::from_str(&format!("{k}\"")).unwrap(),
                        Value::Null,
                    )
                })
                .collect();
            back.into_iter().map(|(k, _)| k).collect()
        };
        assert_eq!(
            keys,
            [
                "\r",
                "1",
                "\u{80}",
                "\u{f6}",
                "\u{20ac}",
                "\u{1f600}",
                "\u{fb33}"
            ]
        );
        assert_eq!(
            canon(&json!({"b": [1, "x\u{1}\"\\\n/é"], "a": null, "c": {"z": true, "y": false}})),
            "{\"a\":null,\"b\":[1,\"x\\u0001\\\"\\\\\\n/é\"],\"c\":{\"y\":false,\"z\":true}}"
        );
    }

    /// The fast checker accepts exactly the byte strings that re-encode to themselves.
    #[test]
    fn checker_agrees_with_reencoding() {
        let samples = [
            r#"{"a":1,"b":[true,false,null],"c":{"d":"x\n\u0001é"}}"#,
            r#"{"a":1, "b":2}"#,
            r#"{"b":1,"a":2}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a":01}"#,
            r#"{"a":-0}"#,
            r#"{"a":1.0}"#,
            r#"{"a":1.5}"#,
            r#"{"a":1e5}"#,
            r#"{"a":1e+21}"#,
            r#"{"a":1e21}"#,
            r#"{"a":0.000001}"#,
            r#"{"a":1e-7}"#,
            r#"{"a":18446744073709551615}"#,
            r#"{"a":18446744073709551616}"#,
            r#"{"a":-9223372036854775808}"#,
            r#"{"a":"\/"}"#,
            r#"{"a":"\u0041"}"#,
            r#"{"a":"\u000a"}"#,
            r#"{"a":"\u001F"}"#,
            r#"{"a":"\u001f"}"#,
            r#"{"a":"\t"}"#,
            "{\"a\":\"\t\"}",
            r#"{"\n":1,"a":2}"#,
            r#"{"a":2,"\n":1}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":[]}"#,
            r#"{}"#,
            r#"[1]"#,
            r#"{"a":1}x"#,
            r#"{"a":"unterminated}"#,
            r#"{"\ud83d\ude00":1,"\ufb33":2}"#,
            "{\"\u{1f600}\":1,\"\u{fb33}\":2}",
            "{\"\u{fb33}\":2,\"\u{1f600}\":1}",
        ];
        for text in samples {
            let reencodes = serde_json::from_str::<Value>(text)
                .map(|v| v.is_object() && to_vec(&v) == text.as_bytes())
                .unwrap_or(false);
            let checked = check_object(text.as_bytes(), |_, _| {});
            assert_eq!(checked.is_ok(), reencodes, "{text}: {checked:?}");
        }
    }

    /// Random single-byte mutations of canonical entries: the checker and re-encoding agree.
    #[test]
    fn checker_agrees_with_reencoding_under_mutation() {
        let base = to_vec(&serde_json::json!({
            "fields": {"cmd": ["python3", "-c", "print(1)\n"], "n": -12, "x": 0.25, "ok": true, "none": null},
            "prev": "00ff", "seq": 1042, "time": "2026-11-25T09:18:16.123Z", "type": "run.end", "v": 1
        }));
        let alphabet = b"{}[],:\" 0123456789-+.eEabcdfnrtu\\/\n\t\x01\x7f";
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut b = base.clone();
            for _ in 0..1 + next() % 2 {
                let at = (next() % b.len() as u64) as usize;
                match next() % 3 {
                    0 => b[at] = alphabet[(next() % alphabet.len() as u64) as usize],
                    1 => {
                        b.remove(at);
                    }
                    _ => b.insert(at, alphabet[(next() % alphabet.len() as u64) as usize]),
                }
            }
            let reencodes = serde_json::from_slice::<Value>(&b)
                .map(|v| v.is_object() && to_vec(&v) == b)
                .unwrap_or(false);
            let checked = check_object(&b, |_, _| {});
            assert_eq!(
                checked.is_ok(),
                reencodes,
                "{}: {checked:?}",
                String::from_utf8_lossy(&b)
            );
        }
    }

    #[test]
    fn parse_then_canonicalise_is_stable() {
        let text = r#"{ "seq" : 3, "fields": {"n": -0.5, "big": 18446744073709551615, "neg": -9223372036854775808} }"#;
        let once = to_vec(&serde_json::from_str(text).unwrap());
        let twice = to_vec(&serde_json::from_slice(&once).unwrap());
        assert_eq!(once, twice);
        assert_eq!(
            String::from_utf8(once).unwrap(),
            r#"{"fields":{"big":18446744073709551615,"n":-0.5,"neg":-9223372036854775808},"seq":3}"#
        );
    }
}

/// Why bytes are not canonical JSON (byte offset of the first problem).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not canonical JSON at byte {at}: {what}")]
pub struct NotCanonical {
    pub at: usize,
    pub what: &'static str,
}

/// Checks in one pass, without allocating, that `bytes` are exactly the canonical encoding
/// of a JSON object (what `to_vec` of its parse would give), and calls `top(key, raw
/// value)` for each of its members. `verify` runs this on every entry of a log, so it is
/// written for speed; `tests::checker_agrees_with_reencoding` holds it to `to_vec`.
pub fn check_object<'a>(
    bytes: &'a [u8],
    mut top: impl FnMut(&str, &'a [u8]),
) -> Result<(), NotCanonical> {
    if std::str::from_utf8(bytes).is_err() {
        return Err(NotCanonical {
            at: 0,
            what: "not UTF-8",
        });
    }
    let mut c = Checker { b: bytes, i: 0 };
    if c.peek() != Some(b'{') {
        return Err(c.err("an entry is a JSON object"));
    }
    c.object(&mut |k, v| top(k, v), 0)?;
    if c.i != bytes.len() {
        return Err(c.err("trailing bytes"));
    }
    Ok(())
}

struct Checker<'a> {
    b: &'a [u8],
    i: usize,
}

const MAX_DEPTH: usize = 128;

impl<'a> Checker<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn err(&self, what: &'static str) -> NotCanonical {
        NotCanonical { at: self.i, what }
    }

    fn expect(&mut self, ch: u8, what: &'static str) -> Result<(), NotCanonical> {
        if self.peek() == Some(ch) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(what))
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), NotCanonical> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        match self.peek() {
            Some(b'{') => self.object(&mut |_, _| {}, depth + 1),
            Some(b'[') => {
                self.i += 1;
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.value(depth + 1)?;
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(self.err("expected , or ] (no whitespace)")),
                    }
                }
            }
            Some(b'"') => self.string().map(|_| ()),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.err("expected a value (no whitespace)")),
        }
    }

    fn literal(&mut self, lit: &'static [u8]) -> Result<(), NotCanonical> {
        if self.b[self.i..].starts_with(lit) {
            self.i += lit.len();
            Ok(())
        } else {
            Err(self.err("bad literal"))
        }
    }

    fn object(
        &mut self,
        member: &mut dyn FnMut(&str, &'a [u8]),
        depth: usize,
    ) -> Result<(), NotCanonical> {
        self.expect(b'{', "expected {")?;
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        let mut last: Option<std::borrow::Cow<'a, str>> = None;
        loop {
            let key = self.string()?;
            if let Some(prev) = &last {
                let (prev, key): (&str, &str) = (prev, &key);
                let ordered = if prev.is_ascii() && key.is_ascii() {
                    prev < key
                } else {
                    prev.encode_utf16().cmp(key.encode_utf16()) == std::cmp::Ordering::Less
                };
                if !ordered {
                    return Err(self.err("object keys out of order or repeated"));
                }
            }
            self.expect(b':', "expected : (no whitespace)")?;
            let start = self.i;
            self.value(depth)?;
            member(&key, &self.b[start..self.i]);
            last = Some(key);
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(self.err("expected , or } (no whitespace)")),
            }
        }
    }

    /// A string in canonical escaping; returns its value (borrowed unless it has escapes).
    fn string(&mut self) -> Result<std::borrow::Cow<'a, str>, NotCanonical> {
        self.expect(b'"', "expected a string")?;
        let start = self.i;
        let mut escaped = false;
        loop {
            let Some(&ch) = self.b.get(self.i) else {
                return Err(self.err("unterminated string"));
            };
            match ch {
                b'"' => {
                    let raw = &self.b[start - 1..=self.i];
                    self.i += 1;
                    if escaped {
                        return serde_json::from_slice::<String>(raw)
                            .map(std::borrow::Cow::Owned)
                            .map_err(|_| self.err("bad string"));
                    }
                    // The input is valid UTF-8 and quotes are ASCII: on char boundaries.
                    let s = std::str::from_utf8(&raw[1..raw.len() - 1])
                        .map_err(|_| self.err("not UTF-8"))?;
                    return Ok(std::borrow::Cow::Borrowed(s));
                }
                b'\\' => {
                    escaped = true;
                    let Some(&e) = self.b.get(self.i + 1) else {
                        return Err(self.err("unterminated escape"));
                    };
                    match e {
                        b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                        b'u' => {
                            // Only control characters without a short form, as \u00xx
                            // with lowercase hex.
                            let h = self
                                .b
                                .get(self.i + 2..self.i + 6)
                                .ok_or_else(|| self.err("short \\u escape"))?;
                            let lower_hex =
                                |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
                            if h[0] != b'0' || h[1] != b'0' || !lower_hex(h[2]) || !lower_hex(h[3])
                            {
                                return Err(
                                    self.err("\\u escape of a character that is written as is")
                                );
                            }
                            let v = u8::from_str_radix(
                                std::str::from_utf8(&h[2..]).unwrap_or("ff"),
                                16,
                            )
                            .unwrap_or(0xff);
                            if v >= 0x20 || matches!(v, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                                return Err(self.err("\\u escape where a short escape or the character itself is canonical"));
                            }
                            self.i += 6;
                        }
                        _ => return Err(self.err("escape that canonical JSON never writes")),
                    }
                }
                0..=0x1f => return Err(self.err("unescaped control character")),
                _ => self.i += 1,
            }
        }
    }

    fn number(&mut self) -> Result<(), NotCanonical> {
        let start = self.i;
        while let Some(ch) = self.peek() {
            if ch.is_ascii_digit() || matches!(ch, b'-' | b'+' | b'.' | b'e' | b'E') {
                self.i += 1;
            } else {
                break;
            }
        }
        let text = std::str::from_utf8(&self.b[start..self.i]).unwrap_or("");
        let int = text.strip_prefix('-').unwrap_or(text);
        if !int.is_empty() && int.bytes().all(|c| c.is_ascii_digit()) {
            // Integers: no leading zeros, no -0, and within what the encoder writes.
            if (int.len() > 1 && int.starts_with('0')) || text == "-0" {
                return Err(NotCanonical {
                    at: start,
                    what: "number with a leading zero or -0",
                });
            }
            let fits = if text.starts_with('-') {
                text.parse::<i64>().is_ok()
            } else {
                text.parse::<u64>().is_ok()
            };
            if fits {
                return Ok(());
            }
        }
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() && format_f64(f) == text => Ok(()),
            _ => Err(NotCanonical {
                at: start,
                what: "number not in canonical form",
            }),
        }
    }
}
