//! Execution-service latency and throughput: `print(1)` in python through the HTTP API vs
//! the same program run bare, at concurrency 1 and 8, plus peers measured in the same run
//! (a cold `ironcage run`, and `bwrap` when installed). Run with `bash bench/serve.sh`.
//!
//! Each client thread keeps one HTTP connection open (as an SDK would). Latency is measured
//! per request from send to full response; throughput is completed requests per second
//! while all threads run.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PY: &str = "/usr/bin/python3";

struct Stats {
    p50: f64,
    p99: f64,
    per_sec: f64,
}

fn stats(mut lat: Vec<Duration>, elapsed: Duration) -> Stats {
    lat.sort();
    let q = |p: f64| {
        lat[((lat.len() as f64 * p).ceil() as usize).saturating_sub(1)].as_secs_f64() * 1000.0
    };
    Stats {
        p50: q(0.50),
        p99: q(0.99),
        per_sec: lat.len() as f64 / elapsed.as_secs_f64(),
    }
}

/// Runs `op` `per_thread` times on each of `threads` threads after a few warm-up calls:
/// (latencies, completed per second).
fn measure(threads: usize, per_thread: usize, op: &(dyn Fn() + Sync)) -> (Vec<Duration>, f64) {
    for _ in 0..3 {
        op();
    }
    let start = Instant::now();
    let lat: Vec<Duration> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    (0..per_thread)
                        .map(|_| {
                            let t = Instant::now();
                            op();
                            t.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let rate = lat.len() as f64 / start.elapsed().as_secs_f64();
    (lat, rate)
}

fn run_quiet(argv: &[&str]) {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .expect("spawn");
    assert_eq!(
        out.stdout,
        b"1\n",
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn main() {
    let bin = env!("CARGO_BIN_EXE_ironcage");
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let pool: usize = std::env::var("BENCH_POOL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("serve.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: 127.0.0.1:0\ndata_dir: {}\npool:\n  size: {pool}\n  max_running: 16\n",
            data.display()
        ),
    )
    .unwrap();
    let key = Command::new(bin)
        .args([
            "key",
            "create",
            "--name",
            "bench",
            "--max-concurrent",
            "64",
            "--rate-limit",
            "1000000",
            "--config",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(key.status.success());
    let key = String::from_utf8(key.stdout).unwrap().trim().to_string();
    let mut server = Command::new(bin)
        .args(["serve", "--log-level", "warn", "--config"])
        .arg(&cfg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let addr = loop {
        let l = lines.next().expect("server output").unwrap();
        if let Some(rest) = l.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let url = format!("http://{addr}/v1/executions");
    // Wait for the warm pool.
    let ready = format!("http://{addr}/ready");
    while ureq::get(&ready).call().is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = r#"{"language":"python","code":"print(1)"}"#;
    thread_local! {
        static AGENT: ureq::Agent = ureq::AgentBuilder::new().max_idle_connections(1).build();
    }
    let api = || {
        AGENT.with(|a| {
            let r: serde_json::Value = a
                .post(&url)
                .set("Authorization", &format!("Bearer {key}"))
                .send_string(body)
                .expect("request")
                .into_json()
                .unwrap();
            assert_eq!(r["stdout"], "1\n", "{r}");
        })
    };
    let bare = || run_quiet(&[PY, "-c", "print(1)"]);
    let cold = || {
        run_quiet(&[
            bin,
            "run",
            "--profile",
            "ai-strict",
            "--no-tty",
            "--",
            PY,
            "-c",
            "print(1)",
        ])
    };
    let has_bwrap = Command::new("bwrap").arg("--version").output().is_ok();
    let bwrap = || {
        run_quiet(&[
            "bwrap",
            "--ro-bind",
            "/usr",
            "/usr",
            "--symlink",
            "usr/lib",
            "/lib",
            "--symlink",
            "usr/lib64",
            "/lib64",
            "--symlink",
            "usr/bin",
            "/bin",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--unshare-all",
            "--die-with-parent",
            "--",
            PY,
            "-c",
            "print(1)",
        ])
    };

    println!("print(1) in python: latency p50 / p99 (ms), throughput (runs/s); n={n} per row");
    println!("{:<34} {:>8} {:>8} {:>9}", "", "p50", "p99", "per sec");
    let mut rows = Vec::new();
    for c in [1usize, 8] {
        // Rounds, each running bare, the API and the peers back to back, so slow drift of
        // this (virtual) machine hits all of them alike; latencies are pooled over rounds,
        // throughput is the median round's.
        let rounds = 3;
        let per = (n / c / rounds).max(1);
        let mut all: Vec<Vec<(Vec<Duration>, f64)>> = vec![Vec::new(); 4];
        for _ in 0..rounds {
            let ops: [(&(dyn Fn() + Sync), usize, bool); 4] = [
                (&bare, per, true),
                (&api, per, true),
                (&cold, (per / 4).max(3), true),
                (&bwrap, per, has_bwrap),
            ];
            for (i, (op, count, on)) in ops.into_iter().enumerate() {
                if on {
                    all[i].push(measure(c, count, op));
                }
            }
        }
        let pooled = |runs: &[(Vec<Duration>, f64)]| -> Option<Stats> {
            if runs.is_empty() {
                return None;
            }
            let lat: Vec<Duration> = runs.iter().flat_map(|(l, _)| l.clone()).collect();
            let mut rates: Vec<f64> = runs.iter().map(|(_, r)| *r).collect();
            rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let mut s = stats(lat, Duration::from_secs(1));
            s.per_sec = rates[rates.len() / 2];
            Some(s)
        };
        let b = pooled(&all[0]).unwrap();
        let a = pooled(&all[1]).unwrap();
        for (name, s) in [
            (format!("bare python3, c={c}"), Some(&b)),
            (format!("ironcage serve API, c={c}"), Some(&a)),
            (
                format!("ironcage run (cold sandbox), c={c}"),
                pooled(&all[2]).as_ref(),
            ),
            (
                format!("bwrap (cold sandbox), c={c}"),
                pooled(&all[3]).as_ref(),
            ),
        ] {
            if let Some(s) = s {
                println!(
                    "{name:<34} {:>8.2} {:>8.2} {:>9.1}",
                    s.p50, s.p99, s.per_sec
                );
            }
        }
        rows.push((c, b, a));
    }
    println!();
    for (c, b, a) in &rows {
        println!(
            "c={c}: API p50 overhead {:+.2} ms, p99 overhead {:+.2} ms; throughput {:.0}% of bare",
            a.p50 - b.p50,
            a.p99 - b.p99,
            a.per_sec / b.per_sec * 100.0
        );
    }
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
}
