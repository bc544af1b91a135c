//! `fakellm`: a fake OpenAI + Anthropic upstream for tests and benchmarks.
//!
//! Prints `{"listen":"HOST:PORT"}` on stdout once it accepts connections, then serves until
//! SIGTERM or SIGINT (exit 0). Exit 2 on a startup error.
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use ironcage_fakellm::reqlog::RequestLog;
use ironcage_fakellm::server::{serve, State};
use tokio::signal::unix::{signal, SignalKind};

/// A fake upstream LLM provider speaking the OpenAI and Anthropic wire formats.
#[derive(Parser, Debug)]
#[command(name = "fakellm", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Answer 401 (in each provider's error shape) to any request whose key is not this one.
    #[arg(long, value_name = "KEY")]
    require_key: Option<String>,
    /// Runtime worker threads (keep it low to leave the cores to what is measured).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build();
    let result = runtime
        .context("start the tokio runtime")
        .and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fakellm: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("read the listening address")?;
    let mut term = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", serde_json::json!({"listen": addr.to_string()}))
            .and_then(|()| out.flush())
            .context("print the listening address")?;
    }
    let state = Arc::new(State {
        require_key: args.require_key,
        log: RequestLog::default(),
    });
    tokio::select! {
        () = serve(listener, state) => {}
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
