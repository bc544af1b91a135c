//! Who is calling: virtual keys (one per `ironcage run`) or whatever the embedding service
//! accepts (`ironcage serve`'s API keys), mapped to the budget scopes the call is charged to.

use std::future::Future;
use std::pin::Pin;

/// The caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Names the caller in audit entries (never the key itself).
    pub label: String,
    /// Budget scopes charged, all of which must have room (e.g. `run:ID`, `key:ID`,
    /// `agent:KEY/NAME`).
    pub scopes: Vec<String>,
}

pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Option<Caller>> + Send + 'a>>;

/// Decides whether a presented key may use the gateway. `agent` is the optional
/// `x-ironcage-agent` header (a budget sub-scope the caller chooses for itself).
pub trait Authorize: Send + Sync {
    fn authorize<'a>(&'a self, key: &'a str, agent: Option<&'a str>) -> AuthFuture<'a>;
}

/// A virtual key: random, made for one run, worthless anywhere else.
pub struct VirtualKey {
    key: zeroize::Zeroizing<String>,
    caller: Caller,
}

pub const VIRTUAL_KEY_PREFIX: &str = "icv_";

impl VirtualKey {
    pub fn generate(caller: Caller) -> std::io::Result<VirtualKey> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut key = String::from(VIRTUAL_KEY_PREFIX);
        for b in raw {
            key.push_str(&format!("{b:02x}"));
        }
        Ok(VirtualKey {
            key: zeroize::Zeroizing::new(key),
            caller,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Authorize for VirtualKey {
    fn authorize<'a>(&'a self, key: &'a str, agent: Option<&'a str>) -> AuthFuture<'a> {
        let ok = constant_time_eq(key.as_bytes(), self.key.as_bytes());
        let mut caller = self.caller.clone();
        if let (true, Some(a)) = (ok, agent) {
            caller.label = format!("{}/{}", caller.label, a);
        }
        Box::pin(async move { ok.then_some(caller) })
    }
}

/// Compares without an early exit, so timing does not reveal a key's prefix.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
