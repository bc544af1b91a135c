//! HTTP/1.x heads as the proxy needs them: parse a client's request head into a target
//! (CONNECT authority or absolute `http://` URI), decide how its body is framed, write the
//! head that goes upstream (origin-form, `Host` from the URI, no hop-by-hop headers,
//! `Connection: close`), and the same for the response head coming back. Pure: no I/O.

use crate::host::{Host, HostError};

/// Header slots for a request head; more headers than this answer 431.
const MAX_REQUEST_HEADERS: usize = 128;
/// Header slots for a response head.
const MAX_RESPONSE_HEADERS: usize = 256;

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the ones the proxy writes itself.
const REQUEST_DROPPED: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
    "host",
    "content-length",
    "transfer-encoding",
];

const RESPONSE_DROPPED: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// One header as received: the name is a token, the value raw bytes without CR/LF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

/// Where a request wants to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `CONNECT host:port`: a tunnel.
    Connect { host: Host, port: u16 },
    /// `METHOD http://host[:port]/path`: forward, with `path` in origin-form.
    Forward { host: Host, port: u16, path: String },
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub target: Target,
    pub headers: Vec<Header>,
}

/// A request answered by the proxy itself, before any destination is known. Texts are fixed:
/// nothing of the request goes into them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    #[error("malformed request")]
    Malformed,
    #[error("request line and headers too large")]
    TooLarge,
    #[error("timed out waiting for the request headers")]
    Timeout,
    #[error(
        "this is a proxy: the request target must be an absolute http:// URI, or CONNECT host:port"
    )]
    OriginForm,
    #[error("https:// is tunnelled with CONNECT (set HTTPS_PROXY), not forwarded")]
    Https,
    #[error("only http:// URIs are forwarded")]
    Scheme,
    #[error("user:password@ in the request target is not supported")]
    UserInfo,
    #[error("malformed port in the request target")]
    BadPort,
    #[error("malformed host in the request target: {0}")]
    BadHost(HostError),
    #[error("malformed Content-Length")]
    BadContentLength,
    #[error("both Content-Length and Transfer-Encoding")]
    LengthAndChunked,
    #[error("unsupported Transfer-Encoding (only chunked)")]
    UnsupportedTransferEncoding,
    #[error("too many concurrent connections")]
    Overloaded,
}

impl BadRequest {
    pub fn status(self) -> u16 {
        match self {
            BadRequest::TooLarge => 431,
            BadRequest::Timeout => 408,
            BadRequest::UnsupportedTransferEncoding => 501,
            BadRequest::Overloaded => 503,
            _ => 400,
        }
    }
}

/// How a message body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Response only: the body ends when the server closes.
    UntilClose,
}

/// Parses a request head from the start of `buf`. `Ok(None)`: incomplete, read more.
/// `Ok(Some((head, n)))`: the head is the first `n` bytes.
pub fn parse_request(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, BadRequest> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(BadRequest::TooLarge),
        Err(_) => return Err(BadRequest::Malformed),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(BadRequest::Malformed);
    };
    let target = parse_target(method, target)?;
    Ok(Some((
        RequestHead {
            method: method.to_string(),
            version,
            target,
            headers: owned(req.headers),
        },
        n,
    )))
}

fn owned(headers: &[httparse::Header<'_>]) -> Vec<Header> {
    headers
        .iter()
        .map(|h| Header {
            name: h.name.to_string(),
            value: h.value.to_vec(),
        })
        .collect()
}

fn parse_target(method: &str, target: &str) -> Result<Target, BadRequest> {
    if method == "CONNECT" {
        let (host, port) = parse_authority(target, None)?;
        return Ok(Target::Connect { host, port });
    }
    let (scheme, rest) = target.split_once("://").ok_or(BadRequest::OriginForm)?;
    if scheme.eq_ignore_ascii_case("https") {
        return Err(BadRequest::Https);
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(BadRequest::Scheme);
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let path = path.split('#').next().unwrap_or_default();
    let path = match path.as_bytes().first() {
        None => "/".to_string(),
        Some(b'?') => format!("/{path}"),
        Some(_) => path.to_string(),
    };
    let (host, port) = parse_authority(authority, Some(80))?;
    Ok(Target::Forward { host, port, path })
}

/// `host:port`, `[v6]:port`; the port may be left out only when there is a default.
fn parse_authority(a: &str, default_port: Option<u16>) -> Result<(Host, u16), BadRequest> {
    if a.contains('@') {
        return Err(BadRequest::UserInfo);
    }
    let (host, port) = if a.starts_with('[') {
        let close = a.find(']').ok_or(BadRequest::BadHost(HostError::BadIpv6))?;
        let (h, rest) = a.split_at(close + 1);
        match rest.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if rest.is_empty() => (h, None),
            None => return Err(BadRequest::BadPort),
        }
    } else {
        match a.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    let port = match port {
        None | Some("") => default_port.ok_or(BadRequest::BadPort)?,
        Some(p) => parse_port(p).ok_or(BadRequest::BadPort)?,
    };
    let host = Host::parse(host).map_err(BadRequest::BadHost)?;
    Ok((host, port))
}

fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|&n| n != 0)
}

/// Lower-case, trimmed, non-empty items of every header named `name`, comma-split.
fn list_values(headers: &[Header], name: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut seen = false;
    for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)) {
        seen = true;
        let v = std::str::from_utf8(&h.value).ok()?;
        out.extend(
            v.split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty()),
        );
    }
    seen.then_some(out)
}

/// The value of every Content-Length header, which must all agree.
fn content_length(headers: &[Header]) -> Result<Option<u64>, ()> {
    let Some(values) = list_values(headers, "content-length") else {
        // present but not UTF-8, or absent
        return if headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("content-length"))
        {
            Err(())
        } else {
            Ok(None)
        };
    };
    let mut n = None;
    for v in values {
        if v.is_empty() || v.len() > 18 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(());
        }
        let this = v.parse::<u64>().map_err(|_| ())?;
        if n.is_some_and(|m| m != this) {
            return Err(());
        }
        n = Some(this);
    }
    n.map_or(Err(()), |v| Ok(Some(v)))
}

fn has_header(headers: &[Header], name: &str) -> bool {
    headers.iter().any(|h| h.name.eq_ignore_ascii_case(name))
}

/// How a request's body is framed. Both Content-Length and Transfer-Encoding is refused
/// (a smuggling shape); the only transfer coding passed on is `chunked` alone.
pub fn request_framing(headers: &[Header]) -> Result<Framing, BadRequest> {
    if has_header(headers, "transfer-encoding") {
        if has_header(headers, "content-length") {
            return Err(BadRequest::LengthAndChunked);
        }
        return match list_values(headers, "transfer-encoding") {
            Some(v) if v == ["chunked"] => Ok(Framing::Chunked),
            _ => Err(BadRequest::UnsupportedTransferEncoding),
        };
    }
    match content_length(headers) {
        Ok(Some(0)) | Ok(None) => Ok(Framing::None),
        Ok(Some(n)) => Ok(Framing::Length(n)),
        Err(()) => Err(BadRequest::BadContentLength),
    }
}

/// Names listed in the Connection headers: hop-by-hop too.
fn connection_listed(headers: &[Header]) -> Vec<String> {
    list_values(headers, "connection").unwrap_or_default()
}

fn kept<'a>(
    headers: &'a [Header],
    dropped: &'a [&str],
    extra: &'a [String],
) -> impl Iterator<Item = &'a Header> + 'a {
    headers.iter().filter(move |h| {
        let n = h.name.to_ascii_lowercase();
        !dropped.contains(&n.as_str()) && !extra.contains(&n)
    })
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The head sent upstream for a forwarded request.
pub fn forward_head(
    req: &RequestHead,
    host: &Host,
    port: u16,
    path: &str,
    framing: Framing,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(format!("{} {} HTTP/1.{}\r\n", req.method, path, req.version).as_bytes());
    let authority = match port {
        80 => host.authority_form(),
        p => format!("{}:{p}", host.authority_form()),
    };
    push_header(&mut out, "Host", authority.as_bytes());
    let listed = connection_listed(&req.headers);
    for h in kept(&req.headers, REQUEST_DROPPED, &listed) {
        push_header(&mut out, &h.name, &h.value);
    }
    match framing {
        Framing::Length(n) => push_header(&mut out, "Content-Length", n.to_string().as_bytes()),
        Framing::Chunked => push_header(&mut out, "Transfer-Encoding", b"chunked"),
        Framing::None | Framing::UntilClose => {}
    }
    push_header(&mut out, "Connection", b"close");
    out.extend_from_slice(b"\r\n");
    out
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub version: u8,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<Header>,
}

/// The upstream's response head is not HTTP/1.x or cannot be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed response from upstream")]
pub struct BadResponse;

/// Parses a response head; like [`parse_request`].
pub fn parse_response(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, BadResponse> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(BadResponse),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Err(BadResponse);
    };
    Ok(Some((
        ResponseHead {
            version,
            status,
            reason: resp.reason.unwrap_or_default().to_string(),
            headers: owned(resp.headers),
        },
        n,
    )))
}

/// How a response's body is framed (RFC 9112 §6.3). `head_request`: the request was HEAD.
pub fn response_framing(head_request: bool, resp: &ResponseHead) -> Result<Framing, BadResponse> {
    if head_request || (100..200).contains(&resp.status) || resp.status == 204 || resp.status == 304
    {
        return Ok(Framing::None);
    }
    if has_header(&resp.headers, "transfer-encoding") {
        let codings = list_values(&resp.headers, "transfer-encoding").ok_or(BadResponse)?;
        return Ok(match codings.last().map(String::as_str) {
            Some("chunked") => Framing::Chunked,
            _ => Framing::UntilClose,
        });
    }
    match content_length(&resp.headers) {
        Ok(Some(n)) => Ok(Framing::Length(n)),
        Ok(None) => Ok(Framing::UntilClose),
        Err(()) => Err(BadResponse),
    }
}

/// The head sent to the client for an upstream response: hop-by-hop headers dropped,
/// Content-Length dropped when Transfer-Encoding decides, and for a final response
/// `Connection: close` (one request per client connection).
pub fn client_response_head(resp: &ResponseHead) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(
        format!(
            "HTTP/1.{} {} {}\r\n",
            resp.version, resp.status, resp.reason
        )
        .as_bytes(),
    );
    let mut listed = connection_listed(&resp.headers);
    if has_header(&resp.headers, "transfer-encoding") {
        listed.push("content-length".to_string());
    }
    for h in kept(&resp.headers, RESPONSE_DROPPED, &listed) {
        push_header(&mut out, &h.name, &h.value);
    }
    if resp.status >= 200 {
        push_header(&mut out, "Connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A complete response written by the proxy itself: plain text, `Connection: close`.
pub fn simple_response(status: u16, text: &str) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let body = format!("{text}\n");
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> Result<Option<(RequestHead, usize)>, BadRequest> {
        parse_request(s.as_bytes())
    }

    fn head(s: &str) -> RequestHead {
        req(s).unwrap().unwrap().0
    }

    fn name(s: &str) -> Host {
        Host::Name(s.to_string())
    }

    #[test]
    fn connect_target() {
        let h = head("CONNECT Api.Example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(
            h.target,
            Target::Connect {
                host: name("api.example.com"),
                port: 443
            }
        );
        let h = head("CONNECT [::1]:8443 HTTP/1.1\r\n\r\n");
        assert_eq!(
            h.target,
            Target::Connect {
                host: Host::Ip("::1".parse().unwrap()),
                port: 8443
            }
        );
        assert_eq!(
            req("CONNECT example.com HTTP/1.1\r\n\r\n"),
            Err(BadRequest::BadPort)
        );
        assert_eq!(
            req("CONNECT example.com:0 HTTP/1.1\r\n\r\n"),
            Err(BadRequest::BadPort)
        );
        assert_eq!(
            req("CONNECT example.com:99999 HTTP/1.1\r\n\r\n"),
            Err(BadRequest::BadPort)
        );
        assert_eq!(
            req("CONNECT example.com:+1 HTTP/1.1\r\n\r\n"),
            Err(BadRequest::BadPort)
        );
        assert_eq!(
            req("CONNECT a:b:1 HTTP/1.1\r\n\r\n"),
            Err(BadRequest::BadPort)
        );
        assert_eq!(
            req("CONNECT u@example.com:443 HTTP/1.1\r\n\r\n"),
            Err(BadRequest::UserInfo)
        );
    }

    #[test]
    fn absolute_targets() {
        let t = |s: &str| head(&format!("GET {s} HTTP/1.1\r\n\r\n")).target;
        let fwd = |h: &str, port, path: &str| Target::Forward {
            host: name(h),
            port,
            path: path.to_string(),
        };
        assert_eq!(t("http://example.com"), fwd("example.com", 80, "/"));
        assert_eq!(
            t("HTTP://Example.com:8080/a/b?x=1#frag"),
            fwd("example.com", 8080, "/a/b?x=1")
        );
        assert_eq!(t("http://example.com?q"), fwd("example.com", 80, "/?q"));
        assert_eq!(t("http://example.com:/x"), fwd("example.com", 80, "/x"));
        let bad = |s: &str| req(&format!("GET {s} HTTP/1.1\r\n\r\n")).unwrap_err();
        assert_eq!(bad("/index.html"), BadRequest::OriginForm);
        assert_eq!(bad("*"), BadRequest::OriginForm);
        assert_eq!(bad("https://example.com/"), BadRequest::Https);
        assert_eq!(bad("ftp://example.com/"), BadRequest::Scheme);
        assert_eq!(bad("http://user:pw@example.com/"), BadRequest::UserInfo);
        assert_eq!(bad("http:///x"), BadRequest::BadHost(HostError::Empty));
        assert_eq!(
            bad("http://%6cocalhost/"),
            BadRequest::BadHost(HostError::BadChar)
        );
    }

    #[test]
    fn incomplete_garbage_and_too_many_headers() {
        assert_eq!(
            req("GET http://example.com/ HTTP/1.1\r\nA: b\r\n"),
            Ok(None)
        );
        assert_eq!(
            req("\x00\x01\x02 garbage\r\n\r\n"),
            Err(BadRequest::Malformed)
        );
        assert_eq!(
            req("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Err(BadRequest::Malformed)
        );
        let many = format!(
            "GET http://a.com/ HTTP/1.1\r\n{}\r\n",
            "A: b\r\n".repeat(200)
        );
        assert_eq!(req(&many), Err(BadRequest::TooLarge));
    }

    fn hdrs(list: &[(&str, &str)]) -> Vec<Header> {
        list.iter()
            .map(|(n, v)| Header {
                name: n.to_string(),
                value: v.as_bytes().to_vec(),
            })
            .collect()
    }

    #[test]
    fn request_bodies() {
        let f = |l: &[(&str, &str)]| request_framing(&hdrs(l));
        assert_eq!(f(&[]), Ok(Framing::None));
        assert_eq!(f(&[("Content-Length", "0")]), Ok(Framing::None));
        assert_eq!(f(&[("content-length", "12")]), Ok(Framing::Length(12)));
        assert_eq!(
            f(&[("Content-Length", "12"), ("Content-Length", "12")]),
            Ok(Framing::Length(12))
        );
        assert_eq!(
            f(&[("Content-Length", "12, 13")]),
            Err(BadRequest::BadContentLength)
        );
        assert_eq!(
            f(&[("Content-Length", "-1")]),
            Err(BadRequest::BadContentLength)
        );
        assert_eq!(
            f(&[("Content-Length", "")]),
            Err(BadRequest::BadContentLength)
        );
        assert_eq!(f(&[("Transfer-Encoding", "Chunked")]), Ok(Framing::Chunked));
        assert_eq!(
            f(&[("Transfer-Encoding", "gzip, chunked")]),
            Err(BadRequest::UnsupportedTransferEncoding)
        );
        assert_eq!(
            f(&[("Transfer-Encoding", "chunked"), ("Content-Length", "3")]),
            Err(BadRequest::LengthAndChunked)
        );
    }

    #[test]
    fn forwarded_head_is_origin_form_with_uri_host() {
        let raw = "POST http://good.example:8080/p?token=1 HTTP/1.1\r\nHost: evil.example\r\n\
                   Proxy-Authorization: Basic x\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\
                   Keep-Alive: 5\r\nTE: trailers\r\nUpgrade: websocket\r\nProxy-Connection: keep-alive\r\n\
                   Accept: */*\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n";
        let h = head(raw);
        let Target::Forward { host, port, path } = &h.target else {
            panic!("not forward")
        };
        let framing = request_framing(&h.headers).unwrap();
        let out = String::from_utf8(forward_head(&h, host, *port, path, framing)).unwrap();
        assert_eq!(
            out,
            "POST /p?token=1 HTTP/1.1\r\nHost: good.example:8080\r\nAccept: */*\r\n\
             Content-Length: 3\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn responses() {
        let raw = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n\
                    Transfer-Encoding: chunked\r\nContent-Length: 9\r\nSet-Cookie: a\r\n\r\nBODY";
        let (r, n) = parse_response(raw).unwrap().unwrap();
        assert_eq!(n, raw.len() - 4);
        assert_eq!(response_framing(false, &r), Ok(Framing::Chunked));
        assert_eq!(response_framing(true, &r), Ok(Framing::None));
        assert_eq!(
            String::from_utf8(client_response_head(&r)).unwrap(),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a\r\nConnection: close\r\n\r\n"
        );
        let frame =
            |s: &str| response_framing(false, &parse_response(s.as_bytes()).unwrap().unwrap().0);
        assert_eq!(
            frame("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
            Ok(Framing::Length(5))
        );
        assert_eq!(frame("HTTP/1.0 200 OK\r\n\r\n"), Ok(Framing::UntilClose));
        assert_eq!(frame("HTTP/1.1 204 No Content\r\n\r\n"), Ok(Framing::None));
        assert_eq!(frame("HTTP/1.1 100 Continue\r\n\r\n"), Ok(Framing::None));
        assert_eq!(
            frame("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            Err(BadResponse)
        );
        assert_eq!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n"), Err(BadResponse));
    }

    #[test]
    fn simple_responses_are_complete() {
        let r = String::from_utf8(simple_response(403, "no")).unwrap();
        assert_eq!(
            r,
            "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\nConnection: close\r\n\r\nno\n"
        );
    }
}
