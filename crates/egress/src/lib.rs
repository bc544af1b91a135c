//! The egress proxy a sandbox in network mode `proxy` reaches through its only listener.
//!
//! Such a sandbox has its own network namespace with loopback and one listening socket,
//! created inside and handed out; [`Proxy::serve`] runs on it in the supervisor, which
//! connects out from the host's namespace. `HTTP_PROXY`/`HTTPS_PROXY` point at it; programs
//! that ignore them have no network at all.
//!
//! What it owns: the decision about each destination ([`Rules`]), the HTTP/1.x handling of
//! `CONNECT` tunnels and absolute-URI forwarding, and the [`Event`]s it reports. What it
//! must not do: record anything of a request beyond method, host and port, resolve a name
//! twice, or decide on anything but the request target (never the `Host` header).
//!
//! # Rules, precisely
//!
//! * An entry of `network.allow_domains`/`network.deny_domains` is either an exact host
//!   (`api.github.com`, an IP literal `192.0.2.7` or `[2001:db8::1]`) or a wildcard
//!   `*.github.com`, which matches every name ending in `.github.com` at any depth
//!   (`a.github.com`, `a.b.github.com`) but **not the apex** `github.com`: list it too if
//!   wanted. `*` is only allowed as the whole leftmost label; a bare `*` is refused.
//! * Names compare case-insensitively with a trailing dot ignored. Entries must be ASCII:
//!   internationalized names are refused with a hint to write their punycode (`xn--`) form.
//!   No scheme, port or path in an entry.
//! * Deny entries win over allow entries. A host matching no allow entry is refused.
//! * Ports: only 80 and 443 unless [`Rules::with_ports`] says otherwise, for `CONNECT` and
//!   plain HTTP alike.
//! * IP literals as destinations are refused unless that address is listed exactly in
//!   `allow_domains` (IPv4-mapped IPv6 forms count as the IPv4 address). Names that
//!   resolvers would read as numbers (`127.1`, `0x7f000001`) are refused as malformed.
//! * After resolution (once, on the host side), addresses that are not public
//!   ([`is_public`]: unspecified, loopback, RFC 1918, fc00::/7, 100.64/10, link-local
//!   169.254/16 with the cloud metadata address and fe80::/10, multicast, broadcast,
//!   reserved, and IPv6 forms embedding such an IPv4 address) are dropped unless the host
//!   matched an **exact** allow entry, as are addresses listed as IP literals in
//!   `deny_domains`. If none is left the request is refused. So `allow_domains: [localhost]`
//!   reaches a local server, while `*.example.com` resolving to 127.0.0.1 or
//!   169.254.169.254 does not (DNS rebinding, SSRF). The connection goes to an address that
//!   was checked.
//!
//! # What is reported
//!
//! [`Event::Allowed`], [`Event::Denied`] (a violation, with the reason), [`Event::Failed`]
//! (resolution or connection failed) carry the method, host and port only.
//! [`Event::Rejected`] carries a status and a fixed reason of the proxy's own. Paths, query
//! strings, headers and bodies are never recorded: they may carry credentials.
//!
//! # HTTP handling
//!
//! One request per client connection, answered with `Connection: close`. `CONNECT host:port`
//! opens a tunnel after `200 Connection established`. Other methods need an absolute
//! `http://` URI (origin-form is answered 400, `https://` too: that goes through `CONNECT`);
//! the request goes upstream in origin-form with `Host` taken from the URI, hop-by-hop
//! headers (and those named in `Connection`) removed, bodies with `Content-Length` or
//! `chunked` streamed through. Request heads are capped (16 KiB, 431), must arrive within
//! 10 s (408); resolving and connecting time out after 10 s (504); at most 256 connections
//! are served at once (503). See [`Limits`].

#![forbid(unsafe_code)]

mod chunked;
mod event;
mod host;
mod http;
mod net;
mod proxy;
mod rules;

pub use event::Event;
pub use host::{Host, HostError};
pub use net::{BoxFuture, Connect, Resolve, SystemConnector, SystemResolver};
pub use proxy::{Limits, Proxy};
pub use rules::{is_public, DenyReason, Problem, RuleError, Rules, Verdict, DEFAULT_PORTS};
