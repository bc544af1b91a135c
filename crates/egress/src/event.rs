//! What the proxy reports about each request. Only the method, host and port are ever
//! recorded: paths, query strings, headers and bodies may carry secrets and are never put
//! into an event.

use serde::{Deserialize, Serialize};

/// One decision or outcome, handed to the proxy's `on_event` callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The destination passed the rules and the address guard; a connection is attempted.
    Allowed {
        method: String,
        host: String,
        port: u16,
    },
    /// The destination was refused (a violation); the client got `403 Forbidden`.
    Denied {
        method: String,
        host: String,
        port: u16,
        reason: String,
    },
    /// The destination was allowed but could not be reached (resolution or connection
    /// failed, timed out); the client got `502`/`504`.
    Failed {
        method: String,
        host: String,
        port: u16,
        error: String,
    },
    /// A connection was answered before any destination was known: unparsable or
    /// oversized request, header timeout, unsupported form, too many connections. `reason`
    /// is fixed text of ours, never taken from the request.
    Rejected { status: u16, reason: String },
}
