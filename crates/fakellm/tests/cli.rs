//! The two binaries end to end: fakellm's startup line, keep-alive and signal handling;
//! llmload's report against a real fakellm.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::Fake;
use serde_json::Value;

/// Reads one HTTP/1.1 response with a `content-length` from `reader`; returns (status, body).
fn read_response(reader: &mut BufReader<TcpStream>) -> (u16, String) {
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

#[test]
fn keeps_connections_alive() {
    let fake = Fake::start(&[]);
    let stream = TcpStream::connect(&fake.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    for _ in 0..3 {
        write!(
            writer,
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let (status, body) = read_response(&mut reader);
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "echo: hi");
    }
    write!(writer, "GET /_fake/requests HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let (status, body) = read_response(&mut reader);
    assert_eq!(status, 200);
    let log: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        log.as_array().unwrap().len(),
        3,
        "control requests are not logged"
    );
}

#[test]
fn exits_cleanly_on_sigterm() {
    let mut fake = Fake::start(&[]);
    let pid = fake.child.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success());
    let status = fake.child.wait().unwrap();
    assert!(status.success(), "fakellm exited with {status} on SIGTERM");
}

#[test]
fn bad_listen_address_exits_2_with_the_cause() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_fakellm"))
        .args(["--listen", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("fakellm: listen on"), "{stderr}");
}

fn llmload(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_llmload"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "llmload failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn llmload_measures_a_fixed_rate() {
    let fake = Fake::start(&["--require-key", "sk-load"]);
    let url = format!("{}/v1/chat/completions", fake.url());
    let body = r#"{"model":"fake-gpt","messages":[{"role":"user","content":"hello"}]}"#;
    let r = llmload(&[
        "--url",
        &url,
        "--body",
        body,
        "-H",
        "Authorization: Bearer sk-load",
        "--rate",
        "200",
        "--duration",
        "1",
        "--warmup",
        "0.25",
    ]);
    assert_eq!(r["sent"], 200, "{r}");
    assert_eq!(r["ok"], 200, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    let achieved = r["rate_achieved"].as_f64().unwrap();
    // The schedule spans 1 s; a loaded machine may stretch the last completions.
    assert!((100.0..=205.0).contains(&achieved), "{r}");
    let (p50, p99, max) = (
        r["p50_us"].as_u64().unwrap(),
        r["p99_us"].as_u64().unwrap(),
        r["max_us"].as_u64().unwrap(),
    );
    assert!(p50 > 0 && p50 <= p99 && p99 <= max, "{r}");
    // 250 requests, mostly one at a time: keep-alive connections are reused (without reuse
    // there would be 250).
    assert!(r["connections_opened"].as_u64().unwrap() < 125, "{r}");
}

#[test]
fn llmload_counts_non_2xx_as_errors() {
    let fake = Fake::start(&["--require-key", "sk-load"]);
    let url = format!("{}/v1/chat/completions", fake.url());
    let body = r#"{"model":"fake-gpt","messages":[{"role":"user","content":"hello"}]}"#;
    let r = llmload(&[
        "--url",
        &url,
        "--body",
        body,
        "-H",
        "Authorization: Bearer wrong",
        "--rate",
        "100",
        "--duration",
        "0.5",
        "--warmup",
        "0",
    ]);
    assert_eq!(r["sent"], 50, "{r}");
    assert_eq!(r["ok"], 0, "{r}");
    assert_eq!(r["errors"], 50, "{r}");
    assert_eq!(r["error_sample"], "HTTP 401 Unauthorized", "{r}");
}

#[test]
fn llmload_waits_for_the_last_byte_of_a_stream() {
    let fake = Fake::start(&[]);
    let url = format!("{}/v1/chat/completions", fake.url());
    // 5 chunks 20 ms apart: at least 6 gaps (role chunk, 5 words, finish, [DONE] => 7 steps).
    let body = r#"{"model":"fake-gpt","stream":true,"messages":[{"role":"user","content":"x [[fake:chunks=5]] [[fake:delay_ms=20]]"}]}"#;
    let r = llmload(&[
        "--url",
        &url,
        "--body",
        body,
        "--rate",
        "20",
        "--duration",
        "0.5",
        "--warmup",
        "0",
    ]);
    assert_eq!(r["ok"], 10, "{r}");
    assert!(r["p50_us"].as_u64().unwrap() >= 120_000, "{r}");
    assert!(r["ttfb_p50_us"].as_u64().unwrap() < 100_000, "{r}");
}
