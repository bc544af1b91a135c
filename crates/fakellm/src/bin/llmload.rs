//! `llmload`: an open-loop HTTP/1.1 load generator. Sends one request at fixed intervals for
//! `--warmup` then `--duration` seconds, measures each latency from its scheduled send time to
//! the last byte of the response, and prints one JSON line of results. Exit 0 when the run
//! completed (even with errors: they are in the report), 2 when it could not run.
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use ironcage_fakellm::load::{self, Config};

/// Open-loop HTTP/1.1 load generator (latency from the scheduled send time).
#[derive(Parser, Debug)]
#[command(name = "llmload", version)]
struct Args {
    /// Target URL, `http://HOST:PORT/PATH`.
    #[arg(long)]
    url: String,
    /// HTTP method.
    #[arg(long, default_value = "POST")]
    method: String,
    /// Request body (sent as is); `content-type: application/json` is added unless a
    /// content-type header is given.
    #[arg(long, conflicts_with = "body_file")]
    body: Option<String>,
    /// Read the request body from this file.
    #[arg(long, value_name = "PATH")]
    body_file: Option<PathBuf>,
    /// Extra header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Requests per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring (not counted).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Most connections open at once (keep-alive pool size).
    #[arg(long, default_value_t = 256)]
    connections: usize,
    /// Per-request timeout in seconds, from the scheduled time.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("llmload: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let body = match (&args.body, &args.body_file) {
        (Some(b), _) => Bytes::from(b.clone()),
        (None, Some(path)) => Bytes::from(
            std::fs::read(path).with_context(|| format!("read --body-file {}", path.display()))?,
        ),
        (None, None) => Bytes::new(),
    };
    let mut headers = args
        .headers
        .iter()
        .map(|h| load::parse_header(h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !body.is_empty()
        && !headers
            .iter()
            .any(|(n, _)| n == hyper::header::CONTENT_TYPE)
    {
        headers.push((
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        ));
    }
    if !(args.timeout > 0.0 && args.timeout.is_finite()) {
        anyhow::bail!("--timeout must be a positive number of seconds");
    }
    let config = Config {
        target: load::parse_url(&args.url)?,
        method: hyper::Method::from_bytes(args.method.as_bytes())
            .with_context(|| format!("bad --method {:?}", args.method))?,
        headers,
        body,
        rate: args.rate,
        duration: args.duration,
        warmup: args.warmup,
        connections: args.connections,
        timeout: Duration::from_secs_f64(args.timeout),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    let report = runtime.block_on(load::run(config))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(&report)?)
        .and_then(|()| out.flush())
        .context("print the report")?;
    Ok(())
}
