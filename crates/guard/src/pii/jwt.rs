//! JSON Web Tokens (RFC 7519, compact JWS): `header.payload.signature`, each part base64url.
//! Both the header and the payload are JSON objects, so both start `ey`; the header must
//! decode to a JSON object with an `"alg"` member (RFC 7515 4.1.1). That check is what
//! separates a token from any other base64 of JSON. An unsecured token (`alg: none`) ends
//! with the second dot, which is then part of it.

use super::text::clear_after;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;

/// base64url as JWTs use it: no padding, but tolerate padding and loose trailing bits from
/// hand-made tokens.
const LENIENT_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// A header longer than this is not one (real headers are under 200 characters).
const MAX_HEADER: usize = 2048;

fn b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn run(t: &[u8], i: usize) -> usize {
    i + t[i..].iter().take_while(|&&b| b64url(b)).count()
}

/// End of the JWT whose header starts (`eyJ`) at `s`.
pub(super) fn at(t: &[u8], s: usize) -> Option<usize> {
    // Bounded, so a megabyte of base64 after `eyJ` is not walked to its end.
    let header_end = s + t[s..]
        .iter()
        .take(MAX_HEADER + 1)
        .take_while(|&&b| b64url(b))
        .count();
    if !(19..=MAX_HEADER).contains(&(header_end - s)) || t.get(header_end) != Some(&b'.') {
        return None;
    }
    let payload = header_end + 1;
    let payload_end = run(t, payload);
    if payload_end - payload < 19
        || !t[payload..].starts_with(b"ey")
        || t.get(payload_end) != Some(&b'.')
    {
        return None;
    }
    let sig = payload_end + 1;
    let mut end = run(t, sig);
    if end == sig {
        // Unsecured: the token is `header.payload.`
        end = sig;
    } else {
        end += t[end..].iter().take(2).take_while(|&&b| b == b'=').count();
    }
    (clear_after(t, end) && header_has_alg(&t[s..header_end])).then_some(end)
}

fn header_has_alg(header: &[u8]) -> bool {
    let Ok(json) = LENIENT_URL_SAFE.decode(header) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&json)
        .is_ok_and(|m| m.contains_key("alg"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    fn jwt(s: &str) -> Option<&str> {
        at(s.as_bytes(), 0).map(|e| &s[..e])
    }

    #[test]
    fn signed_and_unsecured() {
        let h = b64(r#"{"alg":"HS256","typ":"JWT"}"#);
        let p = b64(r#"{"sub":"1234567890","name":"Jane","iat":1516239022}"#);
        let signed = format!("{h}.{p}.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c");
        assert_eq!(jwt(&format!("{signed}. Next")), Some(signed.as_str()));
        let none = format!("{}.{p}.", b64(r#"{"alg":"none"}"#));
        assert_eq!(jwt(&format!("{none} x")), Some(none.as_str()));
    }

    #[test]
    fn base64_json_that_is_not_a_token() {
        let p = b64(r#"{"sub":"1234567890","name":"Jane"}"#);
        let no_alg = format!("{}.{p}.c2lnbmF0dXJl", b64(r#"{"typ":"JWT","kid":"k1"}"#));
        assert_eq!(jwt(&no_alg), None);
        let array = format!("{}.{p}.c2lnbmF0dXJl", b64(r#"["alg","HS256"]"#));
        assert_eq!(jwt(&array), None);
        let h = b64(r#"{"alg":"HS256","typ":"JWT"}"#);
        assert_eq!(jwt(&format!("{h}.{p}")), None, "two parts");
        assert_eq!(
            jwt(&format!("{h}.{p}.sig_glued€")),
            Some(format!("{h}.{p}.sig_glued").as_str())
        );
    }
}
