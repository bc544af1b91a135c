//! Human-friendly quantities in policies: sizes ("2G"), rates ("100MBps") and ports ("443").
//!
//! Each type validates while it is deserialized, so a bad value is reported by the YAML
//! parser with the line and column of the value itself.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A byte count. Suffixes K, M, G, T are powers of 1024; "KB", "KiB", "k" are accepted
/// spellings of the same thing. A bare integer is bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

/// Bytes per second, written like a size followed by "ps" or "/s": "100MBps", "10M/s".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate(pub u64);

/// A TCP/UDP port number, 1..=65535, written as a string or an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port(pub u16);

pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits_end);
    if num.is_empty() {
        return Err(format!(
            "`{text}` is not a size: expected a number such as 512M or 2G"
        ));
    }
    let shift = match suffix.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        other => {
            return Err(format!(
                "`{text}`: unknown size unit `{other}` (use K, M, G or T, powers of 1024)"
            ))
        }
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size: `{num}` is not a number"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 / 2.0 {
        return Err(format!(
            "`{text}` is out of range (must be at least 1 byte)"
        ));
    }
    Ok(bytes as u64)
}

pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    if t.trim_end_matches("ps")
        .trim_end_matches("/s")
        .ends_with('b')
    {
        return Err(format!(
            "`{text}`: a lowercase b means bits; write bytes per second with B, e.g. 100MBps"
        ));
    }
    let body = if let Some(b) = lower.strip_suffix("ps") {
        &t[..b.len()]
    } else if let Some(b) = lower.strip_suffix("/s") {
        &t[..b.len()]
    } else {
        return Err(format!(
            "`{text}` is not a rate: write bytes per second such as 100MBps or 10M/s"
        ));
    };
    parse_size(body).map_err(|e| format!("`{text}` is not a rate: {e}"))
}

pub fn parse_port(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Ok(p) => Err(format!("port {p} is out of range 1-65535")),
        Err(_) => Err(format!("`{text}` is not a port number (1-65535)")),
    }
}

/// Accepts either a YAML string or a YAML number and hands back its text.
#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrNum {
    S(String),
    U(u64),
    F(f64),
}

impl StrOrNum {
    fn text(self) -> String {
        match self {
            StrOrNum::S(s) => s,
            StrOrNum::U(u) => u.to_string(),
            StrOrNum::F(f) => f.to_string(),
        }
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = StrOrNum::deserialize(d)?.text();
        parse_size(&text).map(Size).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = StrOrNum::deserialize(d)?.text();
        parse_rate(&text).map(Rate).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = StrOrNum::deserialize(d)?.text();
        parse_port(&text).map(Port).map_err(de::Error::custom)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ps", Size(self.0)))
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
            if self.0 >= 1 << shift && self.0.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert!(parse_size("2X").unwrap_err().contains("unknown size unit"));
        assert!(parse_size("G").is_err());
        assert!(parse_size("0").is_err());
        assert_eq!(Size(2 << 30).to_string(), "2G");
        assert_eq!(Size(1000).to_string(), "1000");
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("100MBps"), Ok(100 << 20));
        assert_eq!(parse_rate("10M/s"), Ok(10 << 20));
        assert!(parse_rate("100MB").is_err());
        assert!(parse_rate("fastps").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port("443"), Ok(443));
        assert!(parse_port("0").is_err());
        assert!(parse_port("70000").is_err());
        assert!(parse_port("https").is_err());
    }
}
