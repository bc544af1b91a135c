//! The proxy server: accepts on the sandbox's listener, one task per connection, and for each
//! request decides (rules, then resolution, then the address guard), reports an [`Event`],
//! and either answers itself (403/4xx/5xx) or connects out and relays. It never resolves a
//! name twice and never records more of a request than method, host and port.

use crate::chunked::{ChunkError, ChunkedScanner};
use crate::event::Event;
use crate::host::Host;
use crate::http::{self, BadRequest, Framing, RequestHead, Target};
use crate::net::{Connect, Resolve, SystemConnector, SystemResolver};
use crate::rules::{DenyReason, Rules, Verdict};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{timeout, timeout_at, Instant};

/// Buffer for relaying bodies.
const RELAY_BUF: usize = 16 * 1024;
/// Largest response head accepted from upstream.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// After answering with an error, how long unread client data is drained so closing does
/// not reset the connection before the client has read the answer.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// Resource limits of one proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus headers; more answers 431.
    pub max_head_bytes: usize,
    /// Time from accepting a connection to a complete request head; then 408.
    pub head_timeout: Duration,
    /// Time to resolve and connect to a destination; then 504.
    pub connect_timeout: Duration,
    /// Connections handled at once; more are answered 503 and closed.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 16 * 1024,
            head_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            max_connections: 256,
        }
    }
}

/// The egress proxy of one sandbox.
pub struct Proxy {
    rules: Arc<Rules>,
    on_event: Arc<dyn Fn(Event) + Send + Sync>,
    resolver: Arc<dyn Resolve>,
    connector: Arc<dyn Connect>,
    limits: Limits,
}

impl Proxy {
    /// A proxy enforcing `rules`, with the system resolver and connector and default
    /// [`Limits`]. `on_event` is called from the connection tasks for every decision and
    /// failure: it must be quick (hand the event to a channel) and must not panic.
    pub fn new(
        rules: impl Into<Arc<Rules>>,
        on_event: impl Fn(Event) + Send + Sync + 'static,
    ) -> Proxy {
        Proxy {
            rules: rules.into(),
            on_event: Arc::new(on_event),
            resolver: Arc::new(SystemResolver),
            connector: Arc::new(SystemConnector),
            limits: Limits::default(),
        }
    }

    /// Replaces the event callback given to [`Proxy::new`].
    pub fn with_on_event(mut self, on_event: impl Fn(Event) + Send + Sync + 'static) -> Proxy {
        self.on_event = Arc::new(on_event);
        self
    }

    /// Replaces name resolution (tests map names to chosen addresses).
    pub fn with_resolver(mut self, resolver: impl Resolve + 'static) -> Proxy {
        self.resolver = Arc::new(resolver);
        self
    }

    /// Replaces connecting (tests map screened addresses to local servers).
    pub fn with_connector(mut self, connector: impl Connect + 'static) -> Proxy {
        self.connector = Arc::new(connector);
        self
    }

    pub fn with_limits(mut self, limits: Limits) -> Proxy {
        self.limits = limits;
        self
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Serves on `listener` until `shutdown` completes; then stops accepting, ends every
    /// open connection and tunnel, and returns. A listener received as a file descriptor
    /// from the sandbox's namespace becomes a `TcpListener` with
    /// `std::net::TcpListener::set_nonblocking(true)` and `TcpListener::from_std`.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let max = self.limits.max_connections;
        let shared = Arc::new(Shared {
            rules: self.rules,
            on_event: self.on_event,
            resolver: self.resolver,
            connector: self.connector,
            limits: self.limits,
        });
        let permits = Arc::new(Semaphore::new(max));
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                // Reap finished connections so the set does not grow.
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => match Arc::clone(&permits).try_acquire_owned() {
                        Ok(permit) => {
                            let shared = Arc::clone(&shared);
                            tasks.spawn(async move {
                                handle(&shared, stream).await;
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            let bad = BadRequest::Overloaded;
                            shared.reject(bad);
                            // A fresh socket's send buffer is empty: this never blocks.
                            let _ = stream.try_write(&http::simple_response(bad.status(), &bad.to_string()));
                        }
                    },
                    // EMFILE and the like: back off instead of spinning on accept.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                },
            }
        }
        drop(listener);
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

/// What every connection task shares.
struct Shared {
    rules: Arc<Rules>,
    on_event: Arc<dyn Fn(Event) + Send + Sync>,
    resolver: Arc<dyn Resolve>,
    connector: Arc<dyn Connect>,
    limits: Limits,
}

impl Shared {
    fn emit(&self, e: Event) {
        (self.on_event)(e);
    }

    fn reject(&self, bad: BadRequest) {
        self.emit(Event::Rejected {
            status: bad.status(),
            reason: bad.to_string(),
        });
    }
}

/// One client connection: one request, then close.
async fn handle(sh: &Shared, mut client: TcpStream) {
    let _ = client.set_nodelay(true);
    let (head, leftover) = match read_head(&mut client, &sh.limits).await {
        Ok(Some(h)) => h,
        Ok(None) => return,
        Err(bad) => {
            sh.reject(bad);
            answer(&mut client, bad.status(), &bad.to_string()).await;
            return;
        }
    };
    match head.target.clone() {
        Target::Connect { host, port } => {
            let Some(upstream) = open(sh, &mut client, &head.method, &host, port).await else {
                return;
            };
            tunnel(client, upstream, &leftover).await;
        }
        Target::Forward { host, port, path } => {
            let framing = match http::request_framing(&head.headers) {
                Ok(f) => f,
                Err(bad) => {
                    sh.reject(bad);
                    answer(&mut client, bad.status(), &bad.to_string()).await;
                    return;
                }
            };
            let Some(upstream) = open(sh, &mut client, &head.method, &host, port).await else {
                return;
            };
            let out = http::forward_head(&head, &host, port, &path, framing);
            let req = Forwarded {
                head: &head,
                framing,
                out_head: out,
                leftover,
                host: &host,
                port,
            };
            forward(sh, client, upstream, req).await;
        }
    }
}

/// Reads the request head. `Ok(None)`: the client went away before sending one. The
/// returned bytes are what followed the head (start of a body or tunnel data).
async fn read_head(
    client: &mut TcpStream,
    limits: &Limits,
) -> Result<Option<(RequestHead, Vec<u8>)>, BadRequest> {
    let deadline = Instant::now() + limits.head_timeout;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 4096];
    loop {
        let n = match timeout_at(deadline, client.read(&mut chunk)).await {
            Err(_) => return Err(BadRequest::Timeout),
            Ok(Err(_) | Ok(0)) => return Ok(None),
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        let window = buf.get(..limits.max_head_bytes).unwrap_or(&buf);
        match http::parse_request(window)? {
            Some((head, len)) => {
                let rest = buf.get(len..).unwrap_or_default().to_vec();
                return Ok(Some((head, rest)));
            }
            None if buf.len() >= limits.max_head_bytes => return Err(BadRequest::TooLarge),
            None => {}
        }
    }
}

/// Writes a complete answer of the proxy's own, then closes politely.
async fn answer(client: &mut TcpStream, status: u16, text: &str) {
    let response = http::simple_response(status, text);
    let _ = timeout(LINGER, client.write_all(&response)).await;
    linger(client).await;
}

/// Sends FIN, then drains what the client still sends for a bounded time: closing with
/// unread data would reset the connection and could destroy the answer in flight.
async fn linger(client: &mut TcpStream) {
    let _ = timeout(LINGER, client.shutdown()).await;
    let drain = async {
        let mut sink = vec![0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = timeout(LINGER, drain).await;
}

/// Decides on a destination and connects to it, reporting the outcome. On refusal or
/// failure the client has been answered and `None` is returned.
async fn open(
    sh: &Shared,
    client: &mut TcpStream,
    method: &str,
    host: &Host,
    port: u16,
) -> Option<TcpStream> {
    match connect_to(sh, method, host, port).await {
        Ok(s) => Some(s),
        Err((status, text, event)) => {
            sh.emit(event);
            answer(client, status, &text).await;
            None
        }
    }
}

/// [`open`]'s decision and connection; a refusal or failure is the status and text to
/// answer with, and the event to report.
async fn connect_to(
    sh: &Shared,
    method: &str,
    host: &Host,
    port: u16,
) -> Result<TcpStream, (u16, String, Event)> {
    let name = host.to_string();
    let deny = |reason: DenyReason| {
        let text = format!(
            "ironcage egress: {}:{port} refused: {reason}",
            host.authority_form()
        );
        let event = Event::Denied {
            method: method.to_string(),
            host: name.clone(),
            port,
            reason: reason.to_string(),
        };
        (403, text, event)
    };
    let fail = |status: u16, error: String| {
        let text = format!("ironcage egress: {name}:{port}: {error}");
        let event = Event::Failed {
            method: method.to_string(),
            host: name.clone(),
            port,
            error,
        };
        (status, text, event)
    };
    let exact = match sh.rules.check_host(host, port) {
        Verdict::Allow { exact } => exact,
        Verdict::Deny { reason } => return Err(deny(reason)),
    };
    let addrs = match host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(n) => match timeout(sh.limits.connect_timeout, sh.resolver.resolve(n)).await {
            Ok(Ok(a)) if !a.is_empty() => a,
            Err(_) => return Err(fail(504, "timed out resolving the host".into())),
            Ok(Err(e)) => return Err(fail(502, format!("could not resolve the host: {e}"))),
            Ok(Ok(_)) => return Err(fail(502, "the host has no addresses".into())),
        },
    };
    let addrs = sh.rules.screen_addresses(exact, &addrs).map_err(deny)?;
    sh.emit(Event::Allowed {
        method: method.to_string(),
        host: name.clone(),
        port,
    });
    match timeout(sh.limits.connect_timeout, connect_any(sh, &addrs, port)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Err(_) => Err(fail(504, "timed out connecting".into())),
        Ok(Err(e)) => Err(fail(502, format!("could not connect: {e}"))),
    }
}

/// Tries the screened addresses in order; the first connection wins.
async fn connect_any(sh: &Shared, addrs: &[IpAddr], port: u16) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
    for &ip in addrs {
        match sh.connector.connect(SocketAddr::new(ip, port)).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// CONNECT: confirm, then splice both ways until both sides have closed.
async fn tunnel(mut client: TcpStream, mut upstream: TcpStream, leftover: &[u8]) {
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    if !leftover.is_empty() && upstream.write_all(leftover).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// A forwarded request ready to go upstream.
struct Forwarded<'a> {
    head: &'a RequestHead,
    framing: Framing,
    out_head: Vec<u8>,
    leftover: Vec<u8>,
    host: &'a Host,
    port: u16,
}

/// Where relaying a body broke: reading its source, writing its destination, or its
/// chunked framing. Mid-stream failures only end the connection (the client sees it close),
/// so the OS error is not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RelayError {
    Read,
    Write,
    Chunk,
}

/// How relaying a response ended badly.
enum Down {
    /// Before any final response head reached the client: it has been answered 502.
    NoResponse(String),
    /// Midway; nothing more can be said to the client.
    Broken,
}

/// Plain HTTP: the request (head, then body) goes up while responses come down, at the same
/// time, so `Expect: 100-continue` and early answers from the server work.
async fn forward(sh: &Shared, mut client: TcpStream, mut upstream: TcpStream, req: Forwarded<'_>) {
    let head_request = req.head.method == "HEAD";
    let outcome = {
        let (mut cr, mut cw) = client.split();
        let (mut ur, mut uw) = upstream.split();
        let up = async {
            uw.write_all(&req.out_head)
                .await
                .map_err(|_| RelayError::Write)?;
            relay_body(req.framing, &req.leftover, &mut cr, &mut uw).await
        };
        let down = relay_response(&mut ur, &mut cw, head_request, req.head.version);
        tokio::pin!(up);
        tokio::pin!(down);
        let mut up_done = false;
        loop {
            tokio::select! {
                r = &mut up, if !up_done => match r {
                    // The server may answer without reading everything (413, 401, ...).
                    Ok(()) | Err(RelayError::Write) => up_done = true,
                    // The client went away or sent a broken body: nothing to finish.
                    Err(RelayError::Read | RelayError::Chunk) => return,
                },
                r = &mut down => break r,
            }
        }
    };
    if let Err(Down::NoResponse(error)) = outcome {
        sh.emit(Event::Failed {
            method: req.head.method.clone(),
            host: req.host.to_string(),
            port: req.port,
            error,
        });
    }
    drop(upstream);
    linger(&mut client).await;
}

/// Relays interim (1xx) responses and then the final one, head rewritten, body framed.
async fn relay_response<R, W>(
    ur: &mut R,
    cw: &mut W,
    head_request: bool,
    client_version: u8,
) -> Result<(), Down>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(4096);
    loop {
        let parsed = read_response_head(ur, &mut buf).await;
        let (resp, framing, len) = match parsed {
            Ok((resp, len)) if resp.status != 101 => {
                match http::response_framing(head_request, &resp) {
                    Ok(framing) => (resp, framing, len),
                    Err(e) => return Err(bad_gateway(cw, e.to_string()).await),
                }
            }
            Ok(_) => {
                let e = "the server switched protocols, which was not asked for".to_string();
                return Err(bad_gateway(cw, e).await);
            }
            Err(e) => return Err(bad_gateway(cw, e).await),
        };
        let head = http::client_response_head(&resp);
        let rest = buf.get(len..).unwrap_or_default().to_vec();
        if resp.status < 200 {
            // HTTP/1.0 clients know no interim responses.
            if client_version >= 1 && cw.write_all(&head).await.is_err() {
                return Err(Down::Broken);
            }
            buf = rest;
            continue;
        }
        if cw.write_all(&head).await.is_err() {
            return Err(Down::Broken);
        }
        return relay_body(framing, &rest, ur, cw)
            .await
            .map_err(|_| Down::Broken);
    }
}

async fn bad_gateway<W: AsyncWrite + Unpin>(cw: &mut W, error: String) -> Down {
    let text = format!("ironcage egress: bad response from upstream: {error}");
    let _ = cw.write_all(&http::simple_response(502, &text)).await;
    Down::NoResponse(error)
}

/// Reads until `buf` starts with a complete response head.
async fn read_response_head<R: AsyncRead + Unpin>(
    ur: &mut R,
    buf: &mut Vec<u8>,
) -> Result<(http::ResponseHead, usize), String> {
    let mut chunk = vec![0u8; 4096];
    loop {
        match http::parse_response(buf) {
            Ok(Some(parsed)) => return Ok(parsed),
            Ok(None) if buf.len() >= MAX_RESPONSE_HEAD => {
                return Err("response head too large".to_string())
            }
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        match ur.read(&mut chunk).await {
            Ok(0) => return Err("the server closed without a response".to_string()),
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) => return Err(format!("reading the response: {e}")),
        }
    }
}

/// Relays one body framed as `framing`: first from `prefix` (bytes already read), then from
/// `r`. Bytes past the end of the body are not relayed.
async fn relay_body<R, W>(
    framing: Framing,
    prefix: &[u8],
    r: &mut R,
    w: &mut W,
) -> Result<(), RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; RELAY_BUF];
    match framing {
        Framing::None => {}
        Framing::Length(total) => {
            let first = prefix
                .len()
                .min(usize::try_from(total).unwrap_or(usize::MAX));
            w.write_all(prefix.get(..first).unwrap_or_default())
                .await
                .map_err(|_| RelayError::Write)?;
            let mut left = total - first as u64;
            while left > 0 {
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = r
                    .read(&mut buf[..want])
                    .await
                    .map_err(|_| RelayError::Read)?;
                if n == 0 {
                    return Err(RelayError::Read);
                }
                w.write_all(&buf[..n])
                    .await
                    .map_err(|_| RelayError::Write)?;
                left -= n as u64;
            }
        }
        Framing::Chunked => {
            let mut scanner = ChunkedScanner::default();
            let mut pending = prefix;
            loop {
                let end = scanner
                    .feed(pending)
                    .map_err(|_: ChunkError| RelayError::Chunk)?;
                let part = pending
                    .get(..end.unwrap_or(pending.len()))
                    .unwrap_or_default();
                w.write_all(part).await.map_err(|_| RelayError::Write)?;
                if end.is_some() {
                    break;
                }
                let n = r.read(&mut buf).await.map_err(|_| RelayError::Read)?;
                if n == 0 {
                    return Err(RelayError::Read);
                }
                pending = &buf[..n];
            }
        }
        Framing::UntilClose => {
            w.write_all(prefix).await.map_err(|_| RelayError::Write)?;
            loop {
                let n = r.read(&mut buf).await.map_err(|_| RelayError::Read)?;
                if n == 0 {
                    break;
                }
                w.write_all(&buf[..n])
                    .await
                    .map_err(|_| RelayError::Write)?;
            }
        }
    }
    w.flush().await.map_err(|_| RelayError::Write)
}
