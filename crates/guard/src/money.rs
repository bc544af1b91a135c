//! Money as integers: [`Usd`] counts picodollars (1e-12 USD) in an `i64`.
//!
//! Owns parsing, printing and arithmetic of amounts. It must never use floating point: a
//! budget compared with `f64` sums drifts, and "$0.1 + $0.2" has to equal "$0.3" exactly.
//! Picodollars are fine enough for per-token prices (the cheapest published price, $0.02
//! per 1M tokens, is 20,000 pico per token) and an `i64` still holds $9.2 million, far above
//! any budget one scope should have. Amounts may be negative (a scope whose real usage went
//! past its limit has a negative remainder), but text parsed from configuration may not.

#![forbid(unsafe_code)]

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Picodollars in one dollar.
pub const PICOS_PER_USD: i64 = 1_000_000_000_000;

/// Decimal places of a picodollar; more in a text amount is refused, not rounded.
const DECIMALS: u32 = 12;

/// Why a text amount is not money.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("empty amount: write dollars as a decimal such as \"1.50\"")]
    Empty,
    #[error("`{text}` is negative; amounts here must be zero or more")]
    Negative { text: String },
    #[error("`{text}` is not an amount: {reason}. Write dollars as a decimal such as \"1.50\" or \"$0.000002\"")]
    Invalid { text: String, reason: &'static str },
    #[error("`{text}` has more than 12 decimal places (a picodollar is the smallest unit)")]
    TooPrecise { text: String },
    #[error("`{text}` is too large: the most one amount can hold is $9223372.036854775807")]
    Overflow { text: String },
}

/// An amount of US dollars, exact to the picodollar.
///
/// `Display` rounds to six decimals (`$1.000000`) for people; [`Usd::to_decimal_string`]
/// is exact and is what serde writes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Usd(i64);

impl Usd {
    pub const ZERO: Usd = Usd(0);
    pub const MAX: Usd = Usd(i64::MAX);
    pub const MIN: Usd = Usd(i64::MIN);

    pub const fn from_picos(picos: i64) -> Usd {
        Usd(picos)
    }

    pub const fn picos(self) -> i64 {
        self.0
    }

    /// Whole dollars; `None` if they do not fit.
    pub const fn from_dollars(dollars: i64) -> Option<Usd> {
        match dollars.checked_mul(PICOS_PER_USD) {
            Some(p) => Some(Usd(p)),
            None => None,
        }
    }

    /// Millionths of a dollar (the precision `Display` shows).
    pub const fn from_micros(micros: i64) -> Option<Usd> {
        match micros.checked_mul(1_000_000) {
            Some(p) => Some(Usd(p)),
            None => None,
        }
    }

    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// Parses a non-negative decimal amount: `"1"`, `"1.50"`, `"0.000001"`, `".5"`, `"$2.5"`.
    /// Surrounding whitespace is ignored. Up to 12 decimals are exact; a 13th is an error
    /// rather than a silent rounding, because prices are copied from published tables and a
    /// typo should be loud.
    pub fn parse(text: &str) -> Result<Usd, MoneyError> {
        let t = text.trim();
        if t.starts_with('-') || t.starts_with("$-") {
            return Err(MoneyError::Negative { text: clip(text) });
        }
        Self::parse_unsigned(t, text)
    }

    /// Like [`Usd::parse`] but accepts a leading `-` (for reading back reports).
    pub fn parse_signed(text: &str) -> Result<Usd, MoneyError> {
        let t = text.trim();
        let (negative, rest) = match t.strip_prefix('-') {
            Some(r) => (true, r),
            None => match t.strip_prefix("$-") {
                Some(r) => (true, r),
                None => (false, t),
            },
        };
        let value = Self::parse_unsigned(rest, text)?;
        Ok(if negative { Usd(-value.0) } else { value })
    }

    /// `t` is trimmed and sign-free; `original` is quoted in errors.
    fn parse_unsigned(t: &str, original: &str) -> Result<Usd, MoneyError> {
        let invalid = |reason| MoneyError::Invalid {
            text: clip(original),
            reason,
        };
        let t = t.strip_prefix('$').unwrap_or(t);
        if t.is_empty() {
            return if original.trim().is_empty() {
                Err(MoneyError::Empty)
            } else {
                Err(invalid("no digits"))
            };
        }
        let (whole, frac) = match t.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (t, None),
        };
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) {
            return Err(invalid("only digits and one decimal point are allowed"));
        }
        if let Some(f) = frac {
            if f.is_empty() {
                return Err(invalid("a decimal point must be followed by digits"));
            }
            if !digits(f) {
                return Err(invalid("only digits and one decimal point are allowed"));
            }
        }
        if whole.is_empty() && frac.is_none() {
            return Err(invalid("no digits"));
        }
        let frac = frac.unwrap_or("");
        // Trailing zeros carry no value, so "1.5000000000000" is as exact as "1.5".
        let frac = frac.trim_end_matches('0');
        if frac.len() > DECIMALS as usize {
            return Err(MoneyError::TooPrecise {
                text: clip(original),
            });
        }
        let overflow = || MoneyError::Overflow {
            text: clip(original),
        };
        let mut dollars: i64 = 0;
        for b in whole.bytes() {
            dollars = dollars
                .checked_mul(10)
                .and_then(|d| d.checked_add(i64::from(b - b'0')))
                .ok_or_else(overflow)?;
        }
        let mut picos_frac: i64 = 0;
        for b in frac.bytes() {
            picos_frac = picos_frac * 10 + i64::from(b - b'0');
        }
        picos_frac *= 10i64.pow(DECIMALS - frac.len() as u32);
        dollars
            .checked_mul(PICOS_PER_USD)
            .and_then(|p| p.checked_add(picos_frac))
            .map(Usd)
            .ok_or_else(overflow)
    }

    /// The exact amount as a plain decimal without trailing zeros: `"1"`, `"0.000001"`,
    /// `"-2.5"`. Parses back to the same value.
    pub fn to_decimal_string(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let per = PICOS_PER_USD.unsigned_abs();
        let (whole, frac) = (abs / per, abs % per);
        if frac == 0 {
            return format!("{sign}{whole}");
        }
        let frac = format!("{frac:012}");
        format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
    }

    pub fn checked_add(self, other: Usd) -> Option<Usd> {
        self.0.checked_add(other.0).map(Usd)
    }

    pub fn checked_sub(self, other: Usd) -> Option<Usd> {
        self.0.checked_sub(other.0).map(Usd)
    }

    pub fn saturating_add(self, other: Usd) -> Usd {
        Usd(self.0.saturating_add(other.0))
    }

    pub fn saturating_sub(self, other: Usd) -> Usd {
        Usd(self.0.saturating_sub(other.0))
    }

    /// `self × count` (e.g. a per-request fee times requests); `None` on overflow.
    pub fn checked_mul(self, count: u64) -> Option<Usd> {
        let p = i128::from(self.0) * i128::from(count);
        i64::try_from(p).ok().map(Usd)
    }

    pub fn saturating_mul(self, count: u64) -> Usd {
        self.checked_mul(count)
            .unwrap_or(if self.0 < 0 { Usd::MIN } else { Usd::MAX })
    }

    /// The cost of `tokens` at `self` per one million tokens, rounded up to the next
    /// picodollar (a guard that rounds down could let many tiny requests through for free).
    /// `None` on overflow or for a negative price.
    pub fn checked_per_million(self, tokens: u64) -> Option<Usd> {
        if self.0 < 0 {
            return None;
        }
        let total = i128::from(self.0) * i128::from(tokens);
        i64::try_from(ceil_div(total, 1_000_000)).ok().map(Usd)
    }

    /// Like [`Usd::checked_per_million`], saturating at [`Usd::MAX`] (negative price: zero).
    pub fn saturating_per_million(self, tokens: u64) -> Usd {
        if self.0 < 0 {
            return Usd::ZERO;
        }
        self.checked_per_million(tokens).unwrap_or(Usd::MAX)
    }
}

/// Ceiling division for a non-negative numerator and positive divisor.
pub(crate) fn ceil_div(n: i128, d: i128) -> i128 {
    n / d + i128::from(n % d != 0)
}

/// Error messages quote at most this much of the offending text.
fn clip(text: &str) -> String {
    const MAX: usize = 48;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

impl fmt::Display for Usd {
    /// `$1.234568`: six decimals, the last rounded half away from zero. Display only: the
    /// stored value is never rounded.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const PICOS_PER_MICRO: u64 = 1_000_000;
        let abs = self.0.unsigned_abs();
        let micros =
            abs / PICOS_PER_MICRO + u64::from(abs % PICOS_PER_MICRO >= PICOS_PER_MICRO / 2);
        let sign = if self.0 < 0 && micros > 0 { "-" } else { "" };
        write!(f, "{sign}${}.{:06}", micros / 1_000_000, micros % 1_000_000)
    }
}

impl fmt::Debug for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Usd({})", self.to_decimal_string())
    }
}

impl std::str::FromStr for Usd {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Usd, MoneyError> {
        Usd::parse(s)
    }
}

impl std::iter::Sum for Usd {
    /// Saturating: a sum of real charges never wraps to a small number.
    fn sum<I: Iterator<Item = Usd>>(iter: I) -> Usd {
        iter.fold(Usd::ZERO, Usd::saturating_add)
    }
}

impl Serialize for Usd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_decimal_string())
    }
}

impl<'de> Deserialize<'de> for Usd {
    /// Asks for a string: YAML then hands over a plain scalar exactly as written (`2.50`
    /// stays "2.50"), and JSON needs a quoted decimal. A self-describing format that still
    /// offers a float is refused: by then `0.1` is already 0.1000000000000000055…, and
    /// guessing what the author meant is how money bugs start. Whole-dollar integers are
    /// exact and accepted.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Usd, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Usd;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a dollar amount as a quoted decimal string, such as \"2.50\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Usd, E> {
                Usd::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Usd, E> {
                i64::try_from(v)
                    .ok()
                    .and_then(Usd::from_dollars)
                    .ok_or_else(|| {
                        E::custom(MoneyError::Overflow {
                            text: v.to_string(),
                        })
                    })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Usd, E> {
                if v < 0 {
                    return Err(E::custom(MoneyError::Negative {
                        text: v.to_string(),
                    }));
                }
                Usd::from_dollars(v).ok_or_else(|| {
                    E::custom(MoneyError::Overflow {
                        text: v.to_string(),
                    })
                })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Usd, E> {
                Err(E::custom(format!(
                    "`{v}` is a floating-point number; quote money as a decimal string, e.g. \"{v}\", so it is read exactly"
                )))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_div_rounds_up_only_with_a_remainder() {
        assert_eq!(ceil_div(10, 5), 2);
        assert_eq!(ceil_div(11, 5), 3);
        assert_eq!(ceil_div(0, 5), 0);
    }

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text_on_a_char_boundary() {
        assert_eq!(clip("abc"), "abc");
        let long = "é".repeat(100);
        let c = clip(&long);
        assert!(c.ends_with('…'));
        assert_eq!(c.chars().count(), 49);
    }
}
