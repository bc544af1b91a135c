//! End-to-end tests of the egress proxy on real sockets on 127.0.0.1: curl as a real client
//! where it fits, raw TCP clients for CONNECT and malformed input. Names are mapped by a
//! test resolver and "public" test addresses (203.0.113.0/24) by a test connector onto local
//! servers, so wildcard rules and the private-address guard are exercised without DNS.

use ironcage_egress::{BoxFuture, Connect, Event, Limits, Proxy, Rules};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------
// The tests

#[tokio::test]
async fn curl_get_to_exact_localhost_with_the_system_resolver() {
    let origin = Origin::start("o").await;
    let rules = rules(&["localhost"], &[]).with_ports(&[origin.port()]);
    let p = Running::start(Proxy::new(rules, |_| {})).await;
    let out = p
        .curl(&[&format!("http://localhost:{}/hello?x=1", origin.port())])
        .await;
    assert!(out.contains("origin=o"), "{out}");
    assert!(out.contains("target=/hello?x=1"), "{out}");
    assert!(
        out.contains(&format!("host=localhost:{}", origin.port())),
        "{out}"
    );
    assert_eq!(
        p.events(),
        vec![Event::Allowed {
            method: "GET".into(),
            host: "localhost".into(),
            port: origin.port()
        }]
    );
}

#[tokio::test]
async fn curl_post_bodies_content_length_chunked_and_expect_continue() {
    let origin = Origin::start("o").await;
    let net = TestNet::new().name("api.example.com", "203.0.113.10");
    let p = Running::start(net.proxy(rules(&["*.example.com"], &[]).with_ports(&[origin.port()])))
        .await;
    let url = format!("http://api.example.com:{}/post", origin.port());

    let out = p.curl(&["--data-binary", "a=1&b=2", &url]).await;
    assert!(out.contains("te=- len=7 body=a=1&b=2"), "{out}");

    let out = p
        .curl(&[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "chunky body",
            &url,
        ])
        .await;
    assert!(out.contains("te=chunked len=11 body=chunky body"), "{out}");

    // Large enough that curl sends `Expect: 100-continue` and waits for the interim answer.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let file = std::env::temp_dir().join(format!("egress-big-{}", std::process::id()));
    std::fs::write(&file, &big).unwrap();
    let data = format!("@{}", file.display());
    let out = p.curl(&["--data-binary", &data, &url]).await;
    let _ = std::fs::remove_file(&file);
    assert!(
        out.contains(&format!("len={} sum={}", big.len(), sum(&big))),
        "{out}"
    );
    let seen = origin.seen();
    assert!(seen
        .last()
        .unwrap()
        .head
        .to_ascii_lowercase()
        .contains("expect: 100-continue"));
}

#[tokio::test]
async fn wildcard_host_reaches_a_public_address_and_responses_stream_back() {
    let origin = Origin::start("o").await;
    let net = TestNet::new().name("a.b.example.com", "203.0.113.10");
    let p = Running::start(net.proxy(rules(&["*.example.com"], &[]).with_ports(&[origin.port()])))
        .await;
    let base = format!("http://a.b.example.com:{}", origin.port());
    let out = p.curl(&[&format!("{base}/chunked-response")]).await;
    assert_eq!(out, "first chunk|second chunk");
    let out = p.curl(&["-I", &format!("{base}/head")]).await;
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(out.contains("Content-Length: 4242"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("connection: close"),
        "{out}"
    );
    let to: SocketAddr = format!("203.0.113.10:{}", origin.port()).parse().unwrap();
    assert_eq!(net.connected(), vec![to, to]);
}

#[tokio::test]
async fn connect_tunnel_echoes_both_ways_including_early_data() {
    let echo = echo_server().await;
    let net = TestNet::new().name("echo.example.com", "203.0.113.20");
    let p =
        Running::start(net.proxy(rules(&["*.example.com"], &[]).with_ports(&[echo.port()]))).await;

    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let req = format!(
        "CONNECT echo.example.com:{} HTTP/1.1\r\nHost: x\r\n\r\nearly",
        echo.port()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    assert_eq!(head, "HTTP/1.1 200 Connection established\r\n\r\n");
    assert_eq!(read_exact_string(&mut s, 5).await, "early");
    for msg in ["hello", "through the tunnel"] {
        s.write_all(msg.as_bytes()).await.unwrap();
        assert_eq!(read_exact_string(&mut s, msg.len()).await, msg);
    }
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    assert_eq!(
        p.events(),
        vec![Event::Allowed {
            method: "CONNECT".into(),
            host: "echo.example.com".into(),
            port: echo.port()
        }]
    );
}

#[tokio::test]
async fn hosts_not_allowed_get_403_and_a_denied_event() {
    let net = TestNet::new()
        .name("other.net", "203.0.113.30")
        .name("example.com", "203.0.113.31");
    let p = Running::start(net.proxy(rules(&["*.example.com"], &[]))).await;
    let r = p.raw("CONNECT other.net:443 HTTP/1.1\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{r}");
    assert!(r.contains("Connection: close"), "{r}");
    assert!(
        r.contains("other.net:443 refused: not in network.allow_domains"),
        "{r}"
    );
    // the apex is not covered by its wildcard
    let r = p
        .raw("GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
        .await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert_eq!(
        p.events(),
        vec![
            denied("CONNECT", "other.net", 443, "not in network.allow_domains"),
            denied("GET", "example.com", 80, "not in network.allow_domains"),
        ]
    );
    assert!(net.connected().is_empty());
}

#[tokio::test]
async fn deny_overrides_allow() {
    let net = TestNet::new().name("bad.example.com", "203.0.113.40");
    let rules = rules(&["*.example.com", "bad.example.com"], &["bad.example.com"]);
    let p = Running::start(net.proxy(rules)).await;
    let r = p.raw("CONNECT bad.example.com:443 HTTP/1.1\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(
        r.contains("matches network.deny_domains entry \"bad.example.com\""),
        "{r}"
    );
    assert_eq!(
        p.events(),
        vec![denied(
            "CONNECT",
            "bad.example.com",
            443,
            "matches network.deny_domains entry \"bad.example.com\""
        )]
    );
    assert!(net.connected().is_empty());
}

#[tokio::test]
async fn ports_other_than_80_and_443_are_refused() {
    let net = TestNet::new().name("api.example.com", "203.0.113.50");
    let p = Running::start(net.proxy(rules(&["api.example.com"], &[]))).await;
    let r = p.raw("CONNECT api.example.com:22 HTTP/1.1\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(
        r.contains("port 22 is not allowed (allowed ports: 80, 443)"),
        "{r}"
    );
    let r = p
        .raw("GET http://api.example.com:8080/ HTTP/1.1\r\n\r\n")
        .await;
    assert!(r.contains("port 8080 is not allowed"), "{r}");
    assert!(net.connected().is_empty());
}

#[tokio::test]
async fn ip_literals_are_refused_unless_listed_exactly() {
    let origin = Origin::start("o").await;
    let port = origin.port();
    let p = Running::start(Proxy::new(
        rules(&["*.example.com"], &[]).with_ports(&[80, port]),
        |_| {},
    ))
    .await;
    for req in [
        format!("GET http://127.0.0.1:{port}/ HTTP/1.1\r\n\r\n"),
        format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n"),
        format!("CONNECT [::ffff:127.0.0.1]:{port} HTTP/1.1\r\n\r\n"),
        "GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\n\r\n".to_string(),
    ] {
        let r = p.raw(&req).await;
        assert!(r.starts_with("HTTP/1.1 403"), "{req}: {r}");
        assert!(
            r.contains("IP addresses are refused unless listed exactly"),
            "{r}"
        );
    }
    assert!(origin.seen().is_empty());

    let p = Running::start(Proxy::new(
        rules(&["127.0.0.1"], &[]).with_ports(&[port]),
        |_| {},
    ))
    .await;
    let out = p.curl(&[&format!("http://127.0.0.1:{port}/ok")]).await;
    assert!(out.contains("target=/ok"), "{out}");
}

#[tokio::test]
async fn wildcard_names_resolving_to_private_addresses_are_refused() {
    let origin = Origin::start("o").await;
    let port = origin.port();
    let net = TestNet::new()
        .name("evil.example.com", "127.0.0.1")
        .name("meta.example.com", "169.254.169.254")
        .name("mapped.example.com", "::ffff:127.0.0.1")
        .name("lan.example.com", "192.168.1.1")
        .name("six.example.com", "::1")
        .name("exact.example.com", "127.0.0.1");
    let rules = rules(&["*.example.com", "exact.example.com"], &[]).with_ports(&[80, port]);
    let p = Running::start(net.proxy(rules)).await;
    for (host, addr) in [
        ("evil.example.com", "127.0.0.1"),
        ("meta.example.com", "169.254.169.254"),
        ("mapped.example.com", "::ffff:127.0.0.1"),
        ("lan.example.com", "192.168.1.1"),
        ("six.example.com", "::1"),
    ] {
        let r = p
            .raw(&format!("GET http://{host}:{port}/ HTTP/1.1\r\n\r\n"))
            .await;
        assert!(r.starts_with("HTTP/1.1 403"), "{host}: {r}");
        let reason = format!("resolves only to non-public addresses ({addr})");
        assert!(r.contains(&reason), "{host}: {r}");
        let r = p.raw(&format!("CONNECT {host}:80 HTTP/1.1\r\n\r\n")).await;
        assert!(r.starts_with("HTTP/1.1 403"), "{host}: {r}");
    }
    assert!(net.connected().is_empty());
    assert!(origin.seen().is_empty());
    // the same address is reachable through an exact entry
    let r = p
        .raw(&format!(
            "GET http://exact.example.com:{port}/ HTTP/1.1\r\n\r\n"
        ))
        .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(origin.seen().len(), 1);
}

#[tokio::test]
async fn the_host_header_never_chooses_the_destination() {
    let good = Origin::start("good").await;
    let net = TestNet::new()
        .name("good.example.com", "203.0.113.60")
        .name("bad.example.net", "203.0.113.61");
    let rules = rules(&["good.example.com"], &[]).with_ports(&[good.port()]);
    let p = Running::start(net.proxy(rules)).await;
    let port = good.port();
    let r = p
        .raw(&format!(
            "GET http://good.example.com:{port}/ HTTP/1.1\r\nHost: bad.example.net:{port}\r\n\r\n"
        ))
        .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(
        r.contains(&format!("origin=good host=good.example.com:{port} ")),
        "{r}"
    );
    let seen = good.seen();
    assert!(
        !seen[0].head.contains("bad.example.net"),
        "{}",
        seen[0].head
    );

    let r = p
        .raw(&format!(
            "GET http://bad.example.net:{port}/ HTTP/1.1\r\nHost: good.example.com:{port}\r\n\r\n"
        ))
        .await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let good_addr: SocketAddr = format!("203.0.113.60:{port}").parse().unwrap();
    assert_eq!(net.connected(), vec![good_addr]);
    assert_eq!(good.seen().len(), 1);
}

#[tokio::test]
async fn garbage_and_oversized_requests_are_answered_and_the_proxy_goes_on() {
    let origin = Origin::start("o").await;
    let rules = rules(&["localhost"], &[]).with_ports(&[origin.port()]);
    let p = Running::start(Proxy::new(rules, |_| {})).await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"\x00\x01\x02\xff garbage\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (b"GET /relative HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (b"GET https://localhost/ HTTP/1.1\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (b"GET http://u:p@localhost/ HTTP/1.1\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (b"CONNECT localhost HTTP/1.1\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (b"GET http://b\xc3\xbccher.de/ HTTP/1.1\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (
            b"POST http://localhost/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
        (
            b"POST http://localhost/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
            "HTTP/1.1 501",
        ),
        (
            format!("GET http://localhost/ HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000)).into_bytes(),
            "HTTP/1.1 431",
        ),
        (
            format!("GET http://localhost/{} HTTP/1.1\r\n\r\n", "a".repeat(40_000)).into_bytes(),
            "HTTP/1.1 431",
        ),
        (
            format!("GET http://localhost/ HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(300)).into_bytes(),
            "HTTP/1.1 431",
        ),
    ];
    for (req, want) in &cases {
        let r = p.raw_bytes(req).await;
        assert!(
            r.starts_with(want),
            "{:?} -> {r}",
            String::from_utf8_lossy(&req[..req.len().min(60)])
        );
        assert!(r.contains("Connection: close"), "{r}");
    }
    // Pseudo-random binary noise of many sizes: answered or closed, never a crash.
    let mut x: u32 = 12345;
    for len in [1usize, 7, 100, 4000, 17_000, 70_000] {
        let noise: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        let r = p.raw_bytes(&noise).await;
        assert!(r.is_empty() || r.starts_with("HTTP/1.1 4"), "{r}");
    }
    // A client that connects and goes away at once.
    drop(TcpStream::connect(p.addr).await.unwrap());
    let out = p
        .curl(&[&format!("http://localhost:{}/still-here", origin.port())])
        .await;
    assert!(out.contains("target=/still-here"), "{out}");
}

#[tokio::test]
async fn a_silent_client_gets_408() {
    let limits = Limits {
        head_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let p =
        Running::start(Proxy::new(rules(&["localhost"], &[]), |_| {}).with_limits(limits)).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET http://localhost/ HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut r = Vec::new();
    s.read_to_end(&mut r).await.unwrap();
    let r = String::from_utf8_lossy(&r);
    assert!(r.starts_with("HTTP/1.1 408 Request Timeout"), "{r}");
    assert_eq!(
        p.events(),
        vec![Event::Rejected {
            status: 408,
            reason: "timed out waiting for the request headers".into()
        }]
    );
}

#[tokio::test]
async fn events_never_contain_paths_queries_headers_or_bodies() {
    let origin = Origin::start("o").await;
    let echo = echo_server().await;
    let net = TestNet::new()
        .name("ok.example.com", "203.0.113.70")
        .name("no.example.net", "203.0.113.71")
        .name("down.example.com", "203.0.113.72");
    let port = origin.port();
    let closed = closed_port().await;
    let rules = rules(&["*.example.com"], &[]).with_ports(&[port, echo.port(), closed]);
    let p = Running::start(net.proxy(rules)).await;
    let secret_headers = "Authorization: Bearer SECRET-H\r\nCookie: s=SECRET-C\r\nProxy-Authorization: Basic SECRET-P\r\n";
    let reqs = [
        format!("GET http://ok.example.com:{port}/SECRET-PATH?token=SECRET-Q HTTP/1.1\r\n{secret_headers}\r\n"),
        format!("POST http://ok.example.com:{port}/x HTTP/1.1\r\nContent-Length: 13\r\n\r\nSECRET-BODY!!"),
        format!("GET http://no.example.net:{port}/SECRET-PATH?token=SECRET-Q HTTP/1.1\r\n{secret_headers}\r\n"),
        format!("GET http://down.example.com:{closed}/SECRET-PATH?token=SECRET-Q HTTP/1.1\r\n\r\n"),
        format!("GET /SECRET-PATH?token=SECRET-Q HTTP/1.1\r\n{secret_headers}\r\n"),
        format!("GET http://u:SECRET-U@ok.example.com:{port}/ HTTP/1.1\r\n\r\n"),
        format!("GET http://ok.example.com:{port}/ HTTP/1.1\r\nX: {}SECRET\r\n\r\n", "a".repeat(20_000)),
        "SECRET-GARBAGE\r\n\r\n".to_string(),
    ];
    for req in &reqs {
        p.raw(req).await;
    }
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let req = format!(
        "CONNECT ok.example.com:{} HTTP/1.1\r\n{secret_headers}\r\n",
        echo.port()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    read_head(&mut s).await;
    s.write_all(b"SECRET-TUNNEL").await.unwrap();
    read_exact_string(&mut s, 13).await;
    drop(s);

    // End-to-end headers go on to the server; the proxy's own credentials do not.
    let first = &origin.seen()[0].head;
    assert!(
        first.contains("Bearer SECRET-H") && !first.contains("Basic SECRET-P"),
        "{first}"
    );

    let events = p.events();
    assert!(events.len() >= reqs.len(), "{events:?}");
    assert!(
        events.iter().any(|e| matches!(e, Event::Failed { .. })),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| matches!(e, Event::Denied { .. })),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| matches!(e, Event::Rejected { .. })),
        "{events:?}"
    );
    for e in &events {
        let json = serde_json::to_string(e).unwrap();
        assert!(!json.contains("SECRET"), "{json}");
        assert!(!format!("{e:?}").contains("SECRET"), "{e:?}");
    }
}

#[tokio::test]
async fn unreachable_destination_is_502_and_a_failed_event() {
    let closed = closed_port().await;
    let net = TestNet::new().name("down.example.com", "203.0.113.80");
    let p = Running::start(net.proxy(rules(&["*.example.com"], &[]).with_ports(&[closed]))).await;
    let r = p
        .raw(&format!(
            "CONNECT down.example.com:{closed} HTTP/1.1\r\n\r\n"
        ))
        .await;
    assert!(r.starts_with("HTTP/1.1 502 Bad Gateway"), "{r}");
    let r = p
        .raw(&format!(
            "GET http://nxdomain.example.com:{closed}/ HTTP/1.1\r\n\r\n"
        ))
        .await;
    assert!(r.starts_with("HTTP/1.1 502 Bad Gateway"), "{r}");
    let ev = p.events();
    assert!(
        matches!(&ev[0], Event::Allowed { host, .. } if host == "down.example.com"),
        "{ev:?}"
    );
    assert!(
        matches!(&ev[1], Event::Failed { host, error, .. } if host == "down.example.com" && error.contains("could not connect")),
        "{ev:?}"
    );
    assert!(
        matches!(&ev[2], Event::Failed { host, error, .. } if host == "nxdomain.example.com" && error.contains("could not resolve")),
        "{ev:?}"
    );
}

#[tokio::test]
async fn connections_over_the_limit_get_503() {
    let echo = echo_server().await;
    let net = TestNet::new().name("echo.example.com", "203.0.113.90");
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let proxy = net
        .proxy(rules(&["echo.example.com"], &[]).with_ports(&[echo.port()]))
        .with_limits(limits);
    let p = Running::start(proxy).await;
    let mut tunnel = TcpStream::connect(p.addr).await.unwrap();
    let req = format!("CONNECT echo.example.com:{} HTTP/1.1\r\n\r\n", echo.port());
    tunnel.write_all(req.as_bytes()).await.unwrap();
    assert!(read_head(&mut tunnel).await.starts_with("HTTP/1.1 200"));
    let r = p.raw("CONNECT echo.example.com:1 HTTP/1.1\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 503 Service Unavailable"), "{r}");
    assert!(p.events().contains(&Event::Rejected {
        status: 503,
        reason: "too many concurrent connections".into()
    }));
    // the tunnel is unaffected
    tunnel.write_all(b"still").await.unwrap();
    assert_eq!(read_exact_string(&mut tunnel, 5).await, "still");
}

#[tokio::test]
async fn shutdown_stops_accepting_and_ends_open_tunnels() {
    let echo = echo_server().await;
    let net = TestNet::new().name("echo.example.com", "203.0.113.100");
    let mut p =
        Running::start(net.proxy(rules(&["echo.example.com"], &[]).with_ports(&[echo.port()])))
            .await;
    let mut tunnel = TcpStream::connect(p.addr).await.unwrap();
    let req = format!("CONNECT echo.example.com:{} HTTP/1.1\r\n\r\n", echo.port());
    tunnel.write_all(req.as_bytes()).await.unwrap();
    assert!(read_head(&mut tunnel).await.starts_with("HTTP/1.1 200"));
    tunnel.write_all(b"ping").await.unwrap();
    assert_eq!(read_exact_string(&mut tunnel, 4).await, "ping");

    p.stop.take().unwrap().send(()).unwrap();
    p.task.take().unwrap().await.unwrap();
    let mut rest = Vec::new();
    let _ = tunnel.read_to_end(&mut rest).await;
    assert!(rest.is_empty());
    assert!(TcpStream::connect(p.addr).await.is_err());
}

// ---------------------------------------------------------------------------------------
// Helpers

fn rules(allow: &[&str], deny: &[&str]) -> Rules {
    let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Rules::new(&v(allow), &v(deny)).unwrap()
}

fn denied(method: &str, host: &str, port: u16, reason: &str) -> Event {
    Event::Denied {
        method: method.into(),
        host: host.into(),
        port,
        reason: reason.into(),
    }
}

fn sum(b: &[u8]) -> u64 {
    b.iter().map(|&x| u64::from(x)).sum()
}

/// A proxy serving on 127.0.0.1, recording its events.
struct Running {
    addr: SocketAddr,
    events: Arc<Mutex<Vec<Event>>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    async fn start(proxy: Proxy) -> Running {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        let proxy = proxy.with_on_event(move |e| sink.lock().unwrap().push(e));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(proxy.serve(listener, async move {
            let _ = stopped.await;
        }));
        Running {
            addr,
            events,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Sends raw bytes, returns everything the proxy answers until it closes.
    async fn raw_bytes(&self, req: &[u8]) -> String {
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        // The proxy may answer and close before reading everything: a failed write is fine.
        let _ = s.write_all(req).await;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn raw(&self, req: &str) -> String {
        self.raw_bytes(req.as_bytes()).await
    }

    /// Runs curl through the proxy; returns stdout, panics with stderr on failure.
    async fn curl(&self, args: &[&str]) -> String {
        let out = tokio::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "60",
                "-x",
                &format!("http://{}", self.addr),
            ])
            .args(args)
            .env_remove("no_proxy")
            .env_remove("NO_PROXY")
            .output()
            .await
            .expect("curl must be installed (apt-get install curl)");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "curl {args:?}: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Names to addresses, and every "public" test address to the same port on 127.0.0.1; it
/// records where the proxy connected (the address before mapping).
#[derive(Clone, Default)]
struct TestNet {
    names: HashMap<String, Vec<IpAddr>>,
    connected: Arc<Mutex<Vec<SocketAddr>>>,
}

impl TestNet {
    fn new() -> TestNet {
        TestNet::default()
    }

    fn name(mut self, name: &str, addr: &str) -> TestNet {
        self.names
            .insert(name.to_string(), vec![addr.parse().unwrap()]);
        self
    }

    fn connected(&self) -> Vec<SocketAddr> {
        self.connected.lock().unwrap().clone()
    }

    fn proxy(&self, rules: Rules) -> Proxy {
        let names = self.names.clone();
        Proxy::new(rules, |_| {})
            .with_resolver(move |host: &str| -> io::Result<Vec<IpAddr>> {
                names
                    .get(host)
                    .cloned()
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such test name"))
            })
            .with_connector(self.clone())
    }
}

impl Connect for TestNet {
    fn connect(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<TcpStream>> {
        self.connected.lock().unwrap().push(addr);
        let local = SocketAddr::new([127, 0, 0, 1].into(), addr.port());
        Box::pin(TcpStream::connect(local))
    }
}

/// What a test origin server received.
#[derive(Debug, Clone)]
struct Seen {
    head: String,
}

/// A small HTTP/1.1 origin server. It answers
/// `origin=NAME host=HOST target=TARGET te=TE len=N body=BODY` (`sum=S` for large bodies),
/// a chunked body for targets containing `chunked-response`, and answers
/// `Expect: 100-continue` with an interim response.
struct Origin {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Origin {
    async fn start(name: &'static str) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(origin_conn(s, name, Arc::clone(&log)));
            }
        });
        Origin { addr, seen }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Reads from `s` into `buf` until `buf` holds `n` bytes.
async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>, n: usize) {
    let mut chunk = [0u8; 8192];
    while buf.len() < n {
        let k = s.read(&mut chunk).await.unwrap();
        assert!(k > 0, "origin: early EOF");
        buf.extend_from_slice(&chunk[..k]);
    }
}

/// Reads from `s` into `buf` until `buf[from..]` holds `pat`; returns its position.
async fn fill_until(s: &mut TcpStream, buf: &mut Vec<u8>, from: usize, pat: &[u8]) -> usize {
    loop {
        if let Some(i) = buf[from..].windows(pat.len()).position(|w| w == pat) {
            return from + i;
        }
        let need = buf.len() + 1;
        fill(s, buf, need).await;
    }
}

async fn origin_conn(mut s: TcpStream, name: &str, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    let end = fill_until(&mut s, &mut buf, 0, b"\r\n\r\n").await;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut pos = end + 4;
    let header = |n: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(n).then(|| v.trim().to_string())
        })
    };
    let target = head.split(' ').nth(1).unwrap_or_default().to_string();
    if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.unwrap();
    }
    let te = header("transfer-encoding").unwrap_or_else(|| "-".into());
    let mut body = Vec::new();
    if te == "chunked" {
        loop {
            let eol = fill_until(&mut s, &mut buf, pos, b"\r\n").await;
            let line = String::from_utf8_lossy(&buf[pos..eol]).into_owned();
            let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).unwrap();
            pos = eol + 2;
            if size == 0 {
                fill_until(&mut s, &mut buf, pos, b"\r\n").await;
                break;
            }
            fill(&mut s, &mut buf, pos + size + 2).await;
            body.extend_from_slice(&buf[pos..pos + size]);
            pos += size + 2;
        }
    } else if let Some(n) = header("content-length") {
        let n: usize = n.parse().unwrap();
        fill(&mut s, &mut buf, pos + n).await;
        body.extend_from_slice(&buf[pos..pos + n]);
    }
    seen.lock().unwrap().push(Seen { head: head.clone() });
    if target.contains("chunked-response") {
        let resp = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nc\r\nfirst chunk|\r\nc\r\nsecond chunk\r\n0\r\n\r\n";
        s.write_all(resp.as_bytes()).await.unwrap();
        return;
    }
    if head.starts_with("HEAD ") {
        let resp = "HTTP/1.1 200 OK\r\nContent-Length: 4242\r\nConnection: keep-alive\r\n\r\n";
        s.write_all(resp.as_bytes()).await.unwrap();
        return;
    }
    let shown = if body.len() <= 100 {
        format!("body={}", String::from_utf8_lossy(&body))
    } else {
        format!("sum={}", sum(&body))
    };
    let text = format!(
        "origin={name} host={} target={target} te={te} len={} {shown}",
        header("host").unwrap_or_default(),
        body.len()
    );
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    );
    s.write_all(resp.as_bytes()).await.unwrap();
}

/// A TCP server that echoes what it receives.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A port on 127.0.0.1 nobody listens on.
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

async fn read_head(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while !out.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut b).await.unwrap();
        assert!(n > 0, "EOF in head: {}", String::from_utf8_lossy(&out));
        out.push(b[0]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn read_exact_string(s: &mut TcpStream, n: usize) -> String {
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).await.unwrap();
    String::from_utf8_lossy(&b).into_owned()
}
