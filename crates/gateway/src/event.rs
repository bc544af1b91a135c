//! What the gateway decided, for the audit log and metrics. Entries carry kinds and counts
//! of personal data, never values, and never keys, prompts or completions.

use crate::provider::{Endpoint, Provider};
use ironcage_guard::money::Usd;
use ironcage_guard::prices::Usage;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Sent upstream and answered (any upstream status).
    Forwarded,
    /// Sent upstream after personal data or secrets were redacted.
    Redacted,
    /// Refused: the prompt holds a kind of data the policy blocks.
    Blocked,
    /// Refused: the reservation would exceed a budget.
    OverBudget,
    /// A stream ended by the gateway when it crossed its budget.
    StoppedOverBudget,
    /// Refused: the upstream's circuit breaker is open.
    BreakerOpen,
    /// The upstream could not be reached or failed mid-way.
    UpstreamFailed,
    /// No or unknown key.
    Unauthorized,
    /// Malformed or unsupported request (bad JSON, unknown endpoint, unpriced model).
    Invalid,
}

impl Decision {
    pub const ALL: [Decision; 9] = [
        Decision::Forwarded,
        Decision::Redacted,
        Decision::Blocked,
        Decision::OverBudget,
        Decision::StoppedOverBudget,
        Decision::BreakerOpen,
        Decision::UpstreamFailed,
        Decision::Unauthorized,
        Decision::Invalid,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Decision::Forwarded => "forwarded",
            Decision::Redacted => "redacted",
            Decision::Blocked => "blocked",
            Decision::OverBudget => "over_budget",
            Decision::StoppedOverBudget => "stopped_over_budget",
            Decision::BreakerOpen => "breaker_open",
            Decision::UpstreamFailed => "upstream_failed",
            Decision::Unauthorized => "unauthorized",
            Decision::Invalid => "invalid",
        }
    }
}

/// One request, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub decision: Decision,
    pub provider: Provider,
    pub endpoint: Option<Endpoint>,
    pub model: Option<String>,
    pub caller: Option<String>,
    pub stream: bool,
    /// Status sent to the client (200 for streams that started).
    pub status: u16,
    pub upstream_status: Option<u16>,
    pub usage: Option<Usage>,
    pub cost_usd: String,
    #[serde(skip)]
    pub cost: Usd,
    /// Why it was refused or failed; never contains request data.
    pub reason: Option<String>,
    /// Personal data found in the prompt (and response): kind -> count.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub pii_redacted: BTreeMap<String, u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pii_blocked: Vec<String>,
    pub client_disconnected: bool,
    pub duration_ms: u64,
    /// Budget scopes charged (for the caller's own accounting; not recorded).
    #[serde(skip)]
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// `llm.request`
    Request(RequestRecord),
    /// `llm.breaker`: a circuit breaker changed state.
    Breaker {
        provider: Provider,
        from: String,
        to: String,
        reason: String,
    },
}

impl Event {
    /// The audit entry this event becomes: its type and its fields (the event itself,
    /// without the tag that the type already says).
    pub fn audit_entry(&self) -> (&'static str, serde_json::Value) {
        let kind = match self {
            Event::Request(_) => "llm.request",
            Event::Breaker { .. } => "llm.breaker",
        };
        let mut fields = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = fields.as_object_mut() {
            o.remove("type");
        }
        (kind, fields)
    }
}

/// Receives every decision (the audit log writer, metrics).
pub type Sink = std::sync::Arc<dyn Fn(Event) + Send + Sync>;
