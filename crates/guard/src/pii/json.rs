//! The walk behind [`Scanner::apply_json`]: every string value of a JSON document, in place.
//! Object keys are never scanned or changed (they are the protocol's field names), and a
//! value under a skipped key is left alone at any depth. Values are decoded strings, so
//! escapes such as `\n` or `\u00e9` in the wire form cannot glue onto a finding.

use super::{Applied, Counts, Rules, Scanner};
use serde_json::Value;
use std::borrow::Cow;

pub(super) fn walk(
    scanner: &Scanner,
    value: &mut Value,
    rules: &Rules,
    skip_keys: &[&str],
    counts: &mut Counts,
) {
    match value {
        Value::String(s) => {
            let Applied {
                text,
                counts: found,
            } = scanner.apply(s, rules);
            counts.merge(&found);
            if let Cow::Owned(redacted) = text {
                *s = redacted;
            }
        }
        Value::Array(items) => {
            for item in items {
                walk(scanner, item, rules, skip_keys, counts);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                if !skip_keys.contains(&key.as_str()) {
                    walk(scanner, item, rules, skip_keys, counts);
                }
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}
