//! The open-loop load generator behind `llmload`: requests are scheduled at fixed times
//! (`start + i / rate`) by a plain OS thread, whatever the target does, and each latency is
//! measured from the request's *scheduled* time to the last byte of its response, so a slow
//! target cannot hide its queueing delay (no coordinated omission). Requests that wait for a
//! free connection wait on the clock.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderName, HeaderValue};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};

/// Where requests go: `http://HOST:PORT/PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `HOST:PORT`, also the `Host` header.
    pub authority: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// Parses an `http://` URL (no TLS: the targets are local).
pub fn parse_url(url: &str) -> anyhow::Result<Target> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("only http:// URLs are supported, got {url:?}");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        bail!("no host in {url:?}");
    }
    let authority = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok(Target {
        authority,
        path: path.to_string(),
    })
}

/// Parses a `Name: value` header argument.
pub fn parse_header(arg: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let (name, value) = arg
        .split_once(':')
        .with_context(|| format!("header {arg:?} is not `Name: value`"))?;
    Ok((
        HeaderName::from_bytes(name.trim().as_bytes())
            .with_context(|| format!("bad header name in {arg:?}"))?,
        HeaderValue::from_str(value.trim())
            .with_context(|| format!("bad header value in {arg:?}"))?,
    ))
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub target: Target,
    pub method: hyper::Method,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// Requests per second.
    pub rate: f64,
    /// Seconds measured.
    pub duration: f64,
    /// Seconds sent at the same rate before measuring (not counted).
    pub warmup: f64,
    /// Most connections open at once.
    pub connections: usize,
    /// Per-request limit, from the scheduled time; a request past it counts as an error.
    pub timeout: Duration,
}

/// What one run measured. Latencies are of successful (2xx) measured requests, in
/// microseconds from the scheduled send time.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    /// Successful (2xx) responses per second, from the first scheduled send to the last
    /// successful completion: below the target rate when the target falls behind.
    pub rate_achieved: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Time to the response head, from the scheduled time.
    pub ttfb_p50_us: u64,
    pub ttfb_p99_us: u64,
    /// How late the scheduler thread handed requests over (generator health, not target).
    pub sched_lag_p99_us: u64,
    pub target_rate: f64,
    pub connections_opened: u64,
    /// One error, for the reader (status or I/O error), if any.
    pub error_sample: Option<String>,
}

/// Nearest-rank percentile of sorted values (`q` in 0..=1); 0 for no values.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Outcome {
    measured: bool,
    scheduled: Instant,
    done: Instant,
    lag: Duration,
    result: Result<Duration, String>,
    latency: Duration,
}

struct Pool {
    addr: SocketAddr,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    permits: Semaphore,
    opened: AtomicU64,
}

impl Pool {
    async fn take(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match idle {
                Some(mut sender) => {
                    if sender.ready().await.is_ok() {
                        return Ok(sender);
                    }
                }
                None => return self.connect().await,
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("set TCP_NODELAY: {e}"))?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(sender)
    }

    fn give_back(&self, sender: SendRequest<Full<Bytes>>) {
        if !sender.is_closed() {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(sender);
        }
    }
}

/// Sends one request on a pooled connection; returns the time to the response head.
async fn one_request(cfg: &Config, pool: &Pool, scheduled: Instant) -> Result<Duration, String> {
    let _permit = pool
        .permits
        .acquire()
        .await
        .map_err(|e| format!("pool closed: {e}"))?;
    let mut sender = pool.take().await?;
    let mut req = Request::builder()
        .method(cfg.method.clone())
        .uri(&cfg.target.path)
        .header(hyper::header::HOST, &cfg.target.authority);
    for (name, value) in &cfg.headers {
        req = req.header(name, value);
    }
    let req = req
        .body(Full::new(cfg.body.clone()))
        .map_err(|e| format!("build request: {e}"))?;
    let response = sender
        .send_request(req)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let ttfb = scheduled.elapsed();
    let status = response.status();
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        frame.map_err(|e| format!("read body: {e}"))?;
    }
    pool.give_back(sender);
    if status.is_success() {
        Ok(ttfb)
    } else {
        Err(format!("HTTP {status}"))
    }
}

/// Runs the load and reports. Needs a tokio runtime with the timer and I/O enabled.
pub async fn run(cfg: Config) -> anyhow::Result<Report> {
    if !(cfg.rate > 0.0 && cfg.rate.is_finite()) {
        bail!("--rate must be a positive number");
    }
    if cfg.duration <= 0.0 || cfg.warmup < 0.0 {
        bail!("--duration must be positive and --warmup not negative");
    }
    let addr = tokio::net::lookup_host(&cfg.target.authority)
        .await
        .with_context(|| format!("resolve {}", cfg.target.authority))?
        .next()
        .with_context(|| format!("{} resolves to no address", cfg.target.authority))?;
    let pool = Arc::new(Pool {
        addr,
        idle: Mutex::new(Vec::new()),
        permits: Semaphore::new(cfg.connections.max(1)),
        opened: AtomicU64::new(0),
    });
    let cfg = Arc::new(cfg);
    let warm_n = (cfg.rate * cfg.warmup).round() as u64;
    let total = warm_n + (cfg.rate * cfg.duration).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / cfg.rate);

    // The schedule is kept by an OS thread: its sleeps are precise to tens of microseconds,
    // where tokio's timer rounds up to whole milliseconds.
    let (sched_tx, mut sched_rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let start = Instant::now() + Duration::from_millis(20);
    let scheduler = std::thread::Builder::new()
        .name("llmload-sched".into())
        .spawn(move || {
            for i in 0..total {
                let at = start + interval.mul_f64(i as f64);
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                if sched_tx.send((i, at)).is_err() {
                    return;
                }
            }
        })
        .context("start the scheduler thread")?;

    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Outcome>();
    while let Some((i, scheduled)) = sched_rx.recv().await {
        let lag = scheduled.elapsed();
        let (cfg, pool, out_tx) = (cfg.clone(), pool.clone(), out_tx.clone());
        tokio::spawn(async move {
            let result = match tokio::time::timeout(
                cfg.timeout.saturating_sub(lag),
                one_request(&cfg, &pool, scheduled),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(format!("timeout after {:?}", cfg.timeout)),
            };
            let done = Instant::now();
            let _ = out_tx.send(Outcome {
                measured: i >= warm_n,
                scheduled,
                done,
                lag,
                result,
                latency: done - scheduled,
            });
        });
    }
    drop(out_tx);
    let _ = scheduler.join();

    let mut latencies = Vec::new();
    let mut ttfbs = Vec::new();
    let mut lags = Vec::new();
    let (mut sent, mut errors) = (0u64, 0u64);
    let mut error_sample = None;
    let mut first: Option<Instant> = None;
    let mut last_ok: Option<Instant> = None;
    while let Some(o) = out_rx.recv().await {
        if !o.measured {
            continue;
        }
        sent += 1;
        lags.push(o.lag.as_micros() as u64);
        first = Some(first.map_or(o.scheduled, |f| f.min(o.scheduled)));
        match o.result {
            Ok(ttfb) => {
                last_ok = Some(last_ok.map_or(o.done, |l| l.max(o.done)));
                latencies.push(o.latency.as_micros() as u64);
                ttfbs.push(ttfb.as_micros() as u64);
            }
            Err(e) => {
                errors += 1;
                error_sample.get_or_insert(e);
            }
        }
    }
    latencies.sort_unstable();
    ttfbs.sort_unstable();
    lags.sort_unstable();
    let span = match (first, last_ok) {
        (Some(f), Some(l)) => (l - f).as_secs_f64(),
        _ => 0.0,
    };
    let rate_achieved = if span > 0.0 {
        (latencies.len() as f64 / span * 10.0).round() / 10.0
    } else {
        0.0
    };
    Ok(Report {
        sent,
        ok: latencies.len() as u64,
        errors,
        rate_achieved,
        p50_us: percentile(&latencies, 0.50),
        p90_us: percentile(&latencies, 0.90),
        p99_us: percentile(&latencies, 0.99),
        p999_us: percentile(&latencies, 0.999),
        max_us: latencies.last().copied().unwrap_or(0),
        ttfb_p50_us: percentile(&ttfbs, 0.50),
        ttfb_p99_us: percentile(&ttfbs, 0.99),
        sched_lag_p99_us: percentile(&lags, 0.99),
        target_rate: cfg.rate,
        connections_opened: pool.opened.load(Ordering::Relaxed),
        error_sample,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/v1/chat/completions").unwrap(),
            Target {
                authority: "127.0.0.1:8080".into(),
                path: "/v1/chat/completions".into()
            }
        );
        assert_eq!(
            parse_url("http://localhost").unwrap(),
            Target {
                authority: "localhost:80".into(),
                path: "/".into()
            }
        );
        assert!(parse_url("https://x/").is_err());
        assert!(parse_url("http:///x").is_err());
    }

    #[test]
    fn headers() {
        let (n, v) = parse_header("Authorization: Bearer x y").unwrap();
        assert_eq!(n, "authorization");
        assert_eq!(v, "Bearer x y");
        assert!(parse_header("nocolon").is_err());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.5), 500);
        assert_eq!(percentile(&v, 0.99), 990);
        assert_eq!(percentile(&v, 0.999), 999);
        assert_eq!(percentile(&v, 1.0), 1000);
        assert_eq!(percentile(&[7], 0.5), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
