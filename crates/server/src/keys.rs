//! API keys: 256 random bits shown once, stored as a SHA-256 hash; per-key rate and
//! concurrency limits enforced in memory on each instance.

use crate::store::{now_ms, ApiKey, Store, StoreError};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Every key starts with this, so scanners (and people) can tell what leaked.
pub const PREFIX: &str = "ick_";

pub fn hash(secret: &str) -> String {
    let d = Sha256::digest(secret.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("the kernel's random source");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub struct Created {
    pub key: ApiKey,
    /// The secret: printed once, never stored.
    pub secret: String,
}

pub async fn create(
    store: &Store,
    name: &str,
    rate_limit_per_minute: Option<u32>,
    max_concurrent: Option<u32>,
) -> Result<Created, StoreError> {
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(StoreError::Data(
            "key name must be 1-128 printable characters".into(),
        ));
    }
    let secret = format!("{PREFIX}{}", random_b64(32));
    let key = ApiKey {
        id: format!("key_{}", random_b64(9)),
        name: name.to_string(),
        prefix: secret[..PREFIX.len() + 6].to_string(),
        created_ms: now_ms(),
        revoked_ms: None,
        rate_limit_per_minute: rate_limit_per_minute.map(i64::from),
        max_concurrent: max_concurrent.map(i64::from),
    };
    store.insert_key(&key, &hash(&secret)).await?;
    Ok(Created { key, secret })
}

/// Token buckets (requests per minute) and running-execution counts, per key id.
#[derive(Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
    running: Mutex<HashMap<String, u32>>,
}

impl Limiter {
    /// Takes a token; `Err(seconds)` says when the next one is due.
    pub fn take(&self, key_id: &str, per_minute: u32) -> Result<(), u64> {
        let cap = f64::from(per_minute.max(1));
        let rate = cap / 60.0;
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = b.entry(key_id.to_string()).or_insert((cap, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(cap);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    /// Counts a running execution for the key, unless it already has `max`.
    pub fn start(self: &Arc<Self>, key_id: &str, max: u32) -> Option<RunningGuard> {
        let mut r = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let n = r.entry(key_id.to_string()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(RunningGuard {
            limiter: Arc::clone(self),
            key_id: key_id.to_string(),
        })
    }
}

pub struct RunningGuard {
    limiter: Arc<Limiter>,
    key_id: String,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        let mut r = self
            .limiter
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = r.get_mut(&self.key_id) {
            *n = n.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_its_capacity_then_refuses_with_a_retry_time() {
        let l = Limiter::default();
        for _ in 0..5 {
            l.take("k", 5).unwrap();
        }
        let wait = l.take("k", 5).unwrap_err();
        assert!((1..=12).contains(&wait), "{wait}");
        l.take("other", 5).unwrap();
    }

    #[test]
    fn concurrency_guard_counts_and_releases() {
        let l = Arc::new(Limiter::default());
        let a = l.start("k", 2).unwrap();
        let _b = l.start("k", 2).unwrap();
        assert!(l.start("k", 2).is_none());
        drop(a);
        assert!(l.start("k", 2).is_some());
    }
}
