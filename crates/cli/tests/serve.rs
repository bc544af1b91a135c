//! `ironcage serve`: the execution service, tested through its HTTP API with a real client,
//! as root and as an unprivileged user, on SQLite and on PostgreSQL.

mod common;
mod serve_common;

use common::*;
use serde_json::{json, Value};
use serve_common::*;
use std::time::Duration;

/// Generates `as_root`, `as_user` (SQLite) and `on_postgres` (root) for one test body.
macro_rules! variants {
    (fn $name:ident($mode:ident: Mode, $db:ident: Db) $body:block) => {
        mod $name {
            use super::*;
            fn body($mode: Mode, $db: Db) $body
            #[test]
            fn as_root() { body(Mode::Root, Db::Sqlite) }
            #[test]
            fn as_user() { body(Mode::User, Db::Sqlite) }
            #[test]
            fn on_postgres() { body(Mode::Root, Db::Postgres) }
        }
    };
}

variants! {
fn runs_each_language_with_stdin_args_files_and_env(mode: Mode, db: Db) {
    let s = Server::start(mode, db);
    let r = s.exec(json!({
        "language": "python",
        "code": "import sys, os\nprint(sys.stdin.read().upper(), sys.argv[1:], open('data/in.txt').read(), os.environ['GREETING'])\nprint(open('blob.bin','rb').read().hex())\nsys.exit(3)",
        "stdin": "from stdin",
        "args": ["a", "b c"],
        "env": {"GREETING": "hi"},
        "files": [
            {"path": "data/in.txt", "content": "file text"},
            {"path": "blob.bin", "content": "AP8=", "encoding": "base64"}
        ]
    }));
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(r["exit_code"], 3, "{r:#}");
    assert_eq!(
        r["stdout"],
        "FROM STDIN ['a', 'b c'] file text hi\n00ff\n",
        "{r:#}"
    );
    assert!(r["id"].as_str().unwrap().starts_with("exe_"));
    assert!(r["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(r["memory_peak_bytes"].as_u64().unwrap() > 0);

    let r = s.exec(json!({"language": "bash", "code": "echo out; echo err >&2; echo \"$0 $1\"", "args": ["x"]}));
    assert_eq!((r["stdout"].as_str().unwrap(), r["stderr"].as_str().unwrap()), ("out\nmain.sh x\n", "err\n"), "{r:#}");
    let mut r = s.exec(json!({"language": "sh", "code": "cat", "stdin": "piped"}));
    assert_eq!(r["stdout"], "piped", "{r:#}");
    if std::path::Path::new("/usr/bin/node").exists() {
        r = s.exec(json!({"language": "node", "code": "console.log(6*7)"}));
        assert_eq!(r["stdout"], "42\n", "{r:#}");
    }
    // History: the same document, persisted.
    let id = r["id"].as_str().unwrap();
    let (status, got) = s.get(&format!("/v1/executions/{id}"));
    assert_eq!(status, 200);
    assert_eq!(got, r);
    let (_, list) = s.get("/v1/executions?limit=2");
    let ids: Vec<&str> = list["executions"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], id, "newest first: {list:#}");
    let (_, failed) = s.get("/v1/executions?status=failed");
    assert_eq!(failed["executions"].as_array().unwrap().len(), 0);
    drop(s);
}
}

variants! {
fn executions_see_nothing_of_each_other_or_the_host(mode: Mode, db: Db) {
    let s = Server::start_with(mode, db, Options { pool_size: 1, ..Options::default() });
    // The first leaves files, a background process and an environment variable behind.
    let first = s.exec(json!({"language": "bash",
        "code": "echo secret > /work/left.txt; echo secret > /tmp/left.txt; (setsid sleep 300 &) ; export LEFT=1; echo done"}));
    assert_eq!(first["stdout"], "done\n", "{first:#}");
    let second = s.exec(json!({"language": "python", "code": r#"
import os
print(sorted(os.listdir('/work')), sorted(os.listdir('/tmp')), 'LEFT' in os.environ)
pids = [p for p in os.listdir('/proc') if p.isdigit()]
cmds = [open(f'/proc/{p}/cmdline','rb').read() for p in pids]
print([c for c in cmds if b'sleep' in c])
for p in ['/etc/shadow', '/root', '/var/lib/ironcage', '/home']:
    print(p, os.path.exists(p))
"#}));
    assert_eq!(
        second["stdout"],
        "['main.py'] [] False\n[]\n/etc/shadow False\n/root False\n/var/lib/ironcage False\n/home False\n",
        "{second:#}"
    );
    // The server's own environment never reaches a sandbox.
    // (Only the gateway's variables join them: its address and the execution's own
    // virtual key.)
    let env = s.exec(json!({"language": "python", "code": "import os; print(sorted(os.environ), os.environ['OPENAI_API_KEY'][:4])"}));
    assert_eq!(
        env["stdout"],
        "['ANTHROPIC_API_KEY', 'ANTHROPIC_BASE_URL', 'HOME', 'LC_CTYPE', 'OPENAI_API_KEY', 'OPENAI_BASE_URL', 'PATH', 'TMPDIR'] icv_\n",
        "{env:#}"
    );
    let home = s.python("import os; print(os.environ['HOME'])");
    assert_eq!(home["stdout"], "/work\n", "{home:#}");
    // The sleeper of the first execution died with its sandbox.
    assert!(host_processes_with("sleep 300").is_empty(), "{:?}", host_processes_with("sleep 300"));
}
}

variants! {
fn attacks_fail_and_are_reported_as_violations(mode: Mode, db: Db) {
    let s = Server::start(mode, db);
    let r = s.python(r#"
import socket, os, ctypes
out = []
try:
    socket.create_connection(('1.1.1.1', 80), timeout=2); out.append('net OPEN')
except OSError as e: out.append('net refused')
try:
    open('/usr/bin/planted', 'w'); out.append('write OPEN')
except OSError as e: out.append('write refused')
libc = ctypes.CDLL(None, use_errno=True)
r = libc.mount(b'none', b'/work', b'tmpfs', 0, None)
out.append('mount ' + ('OPEN' if r == 0 else 'refused'))
print(' '.join(out))
"#);
    assert_eq!(r["stdout"], "net refused write refused mount refused\n", "{r:#}");
    let kinds: Vec<&str> = r["violations"].as_array().unwrap().iter().map(|v| v["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"syscall"), "mount not reported: {r:#}");
    assert!(kinds.contains(&"network"), "connect not reported: {r:#}");
    assert!(kinds.contains(&"path"), "write not reported: {r:#}");
    let mount = r["violations"].as_array().unwrap().iter().find(|v| v["syscall"] == "mount");
    assert!(mount.is_some(), "{r:#}");
    let (_, metrics) = request("GET", &s.url("/metrics"), None, None);
    let text = metrics["text"].as_str().unwrap();
    assert!(text.contains("ironcage_violations_total{kind=\"syscall\"} 1"), "{text}");
    assert!(text.contains("ironcage_violations_total{kind=\"network\"} 1"), "{text}");
}
}

variants! {
fn limits_timeouts_and_bombs_end_one_execution_only(mode: Mode, db: Db) {
    let s = Server::start_with(mode, db, Options { pool_size: 3, ..Options::default() });
    std::thread::scope(|t| {
        // While these misbehave, a well-behaved execution runs and succeeds.
        let memory = t.spawn(|| s.exec(json!({"language": "python", "memory_limit": "64M",
            "code": "x = []\nwhile True: x.append(bytearray(1 << 20))"})));
        let forks = t.spawn(|| s.exec(json!({"language": "bash", "timeout_ms": 3000,
            "code": "bomb() { bomb | bomb & }; bomb; sleep 2; echo survived"})));
        let spin = t.spawn(|| s.exec(json!({"language": "python", "timeout_ms": 700,
            "code": "while True: pass"})));
        std::thread::sleep(Duration::from_millis(300));
        let calm = s.exec(json!({"language": "python", "code": "print(sum(range(1000)))"}));
        assert_eq!(calm["stdout"], "499500\n", "{calm:#}");
        assert_eq!(calm["exit_code"], 0);

        let m = memory.join().unwrap();
        assert_eq!((m["status"].as_str(), m["oom_killed"].as_bool()), (Some("completed"), Some(true)), "{m:#}");
        let f = forks.join().unwrap();
        assert_eq!(f["status"], "completed", "{f:#}");
        let sp = spin.join().unwrap();
        assert_eq!(sp["timed_out"], true, "{sp:#}");
        assert!(sp["duration_ms"].as_f64().unwrap() < 10_000.0, "{sp:#}");
    });
    // CPU seconds (RLIMIT_CPU), separate from the wall clock.
    let cpu = s.exec(json!({"language": "python", "cpu_seconds": 1, "timeout_ms": 20000, "code": "while True: pass"}));
    assert!(matches!(cpu["signal"].as_str(), Some("SIGKILL" | "SIGXCPU")), "{cpu:#}");
    assert_eq!(cpu["timed_out"], false, "{cpu:#}");
    // File size limit: 10 MB by default.
    let big = s.python("f = open('big', 'wb')\ntry:\n    f.write(b'x' * (11 << 20)); f.flush(); print('wrote')\nexcept OSError as e: print('refused', e.errno)");
    assert_eq!(big["stdout"], "refused 27\n", "{big:#}");
    drop(s);
}
}

#[test]
fn output_floods_are_capped_and_the_server_stays_responsive() {
    let s = Server::start_with(
        Mode::Root,
        Db::Sqlite,
        Options {
            output_limit: 4096,
            ..Options::default()
        },
    );
    std::thread::scope(|t| {
        let flood = t.spawn(|| s.exec(json!({"language": "python", "timeout_ms": 60000,
            "code": "import sys\nb = b'y' * (1 << 20)\nfor _ in range(1024): sys.stdout.buffer.write(b)\nsys.stderr.write('e' * 10000)\nprint('end', file=sys.stderr)"})));
        // Meanwhile the server answers.
        for _ in 0..5 {
            let (st, _) = request("GET", &s.url("/health"), None, None);
            assert_eq!(st, 200);
            let r = s.python("print('still here')");
            assert_eq!(r["stdout"], "still here\n");
        }
        let r = flood.join().unwrap();
        assert_eq!(r["exit_code"], 0, "{r:#}");
        assert_eq!(r["stdout"].as_str().unwrap().len(), 4096);
        assert_eq!(r["stdout_truncated"], true);
        assert_eq!(
            r["stdout_dropped_bytes"].as_u64().unwrap(),
            (1u64 << 30) - 4096
        );
        assert_eq!(r["stderr_truncated"], true);
        assert_eq!(r["stderr"].as_str().unwrap().len(), 4096);
    });
}

#[test]
fn streams_output_as_it_happens_then_the_result() {
    let s = Server::start(Mode::Root, Db::Sqlite);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    let resp = agent
        .post(&s.url("/v1/executions?stream=true"))
        .set("Authorization", &format!("Bearer {}", s.key))
        .send_string(&json!({"language": "python",
            "code": "import sys, time\nprint('first', flush=True)\nprint('warn', file=sys.stderr, flush=True)\ntime.sleep(3)\nprint('last')"}).to_string())
        .unwrap();
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(resp.into_reader()));
    let mut events: Vec<(String, Value)> = Vec::new();
    let mut name = String::new();
    let mut checked_running = false;
    while let Some(Ok(line)) = lines.next() {
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(d).unwrap();
            // The first chunk arrives while the program is still sleeping: streamed, not
            // buffered to the end.
            if name == "stdout" && !checked_running {
                let id = events[0].1["id"].as_str().unwrap().to_string();
                let (_, e) = s.get(&format!("/v1/executions/{id}"));
                assert_eq!(e["status"], "running", "{e:#}");
                checked_running = true;
            }
            events.push((name.clone(), v));
            if name == "result" {
                break;
            }
        }
    }
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"started"));
    assert_eq!(names.last(), Some(&"result"));
    let text = |which: &str| -> String {
        events
            .iter()
            .filter(|(n, _)| n == which)
            .map(|(_, v)| v["data"].as_str().unwrap())
            .collect()
    };
    assert_eq!(text("stdout"), "first\nlast\n");
    assert_eq!(text("stderr"), "warn\n");
    let result = &events.last().unwrap().1;
    assert_eq!(result["stdout"], "first\nlast\n");
    assert_eq!(result["exit_code"], 0);
    assert!(checked_running);
}

variants! {
fn keys_are_required_hashed_limited_and_revocable(mode: Mode, db: Db) {
    let s = Server::start(mode, db);
    let body = json!({"language": "sh", "code": "echo ok"}).to_string();
    let url = s.url("/v1/executions");
    let (st, e) = request("POST", &url, None, Some(body.as_bytes()));
    assert_eq!(st, 401, "{e:#}");
    assert_eq!(e["error"]["code"], "unauthorized");
    let (st, _) = request("POST", &url, Some("ick_not-a-key"), Some(body.as_bytes()));
    assert_eq!(st, 401);
    for path in ["/v1/executions", "/v1/languages", "/v1/profiles"] {
        assert_eq!(request("GET", &s.url(path), None, None).0, 401, "{path}");
    }
    // Only the hash is stored: the secret appears nowhere in the data directory.
    if db == Db::Sqlite {
        let data = s.scratch.path.join("data");
        for f in std::fs::read_dir(&data).unwrap().flatten() {
            let bytes = std::fs::read(f.path()).unwrap_or_default();
            assert!(!String::from_utf8_lossy(&bytes).contains(&s.key[4..]), "{:?} holds the key", f.path());
        }
    }
    let (code, list, _) = s.key_cmd(&["list"]);
    assert_eq!(code, 0);
    assert!(list.contains("test") && list.contains("active") && !list.contains(&s.key), "{list}");

    // Per-key rate limit: 429 with Retry-After.
    let limited = s.create_key("limited", &["--rate-limit", "3"]);
    for _ in 0..3 {
        assert_eq!(request("GET", &s.url("/v1/languages"), Some(&limited), None).0, 200);
    }
    let (st, hs, _) = request_full("GET", &s.url("/v1/languages"), Some(&limited), None, &[]);
    assert_eq!(st, 429);
    assert!(hs.iter().any(|(k, v)| k.eq_ignore_ascii_case("retry-after") && v.parse::<u64>().unwrap() >= 1), "{hs:?}");

    // Another key cannot see this key's executions.
    let r = s.exec(json!({"language": "sh", "code": "echo mine"}));
    let other = s.create_key("other", &[]);
    let (st, _) = request("GET", &s.url(&format!("/v1/executions/{}", r["id"].as_str().unwrap())), Some(&other), None);
    assert_eq!(st, 404);
    let (_, l) = request("GET", &s.url("/v1/executions"), Some(&other), None);
    assert_eq!(l["executions"].as_array().unwrap().len(), 0);

    // Revoked while the server runs: refused from then on.
    let (code, _, err) = s.key_cmd(&["revoke", "test"]);
    assert_eq!(code, 0, "{err}");
    let (st, e) = request("POST", &url, Some(&s.key), Some(body.as_bytes()));
    assert_eq!(st, 401, "{e:#}");
    let (code, _, err) = s.key_cmd(&["revoke", "no-such-key"]);
    assert_eq!(code, 2, "{err}");
}
}

#[test]
fn bad_requests_get_clear_errors() {
    let s = Server::start_with(
        Mode::Root,
        Db::Sqlite,
        Options {
            max_body: 4096,
            ..Options::default()
        },
    );
    let url = s.url("/v1/executions");
    let send = |body: &str| request("POST", &url, Some(&s.key), Some(body.as_bytes()));
    let (st, e) = send("{\"language\": \"python\",\n \"code\": }");
    assert_eq!(st, 400, "{e:#}");
    let m = e["error"]["message"].as_str().unwrap();
    assert!(m.contains("line 2"), "{m}");
    let (st, e) = send(r#"{"language": "python", "code": "", "cod": 1}"#);
    assert_eq!(st, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `cod`"),
        "{e:#}"
    );
    let (st, e) = send(r#"{"language": "cobol", "code": ""}"#);
    assert_eq!(st, 400);
    let m = e["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("cobol") && m.contains("python") && m.contains("bash"),
        "{m}"
    );
    for path in ["../etc/x", "/etc/passwd", "a/../../b", "a\u{0}b"] {
        let body =
            json!({"language": "python", "code": "", "files": [{"path": path, "content": "x"}]})
                .to_string();
        let (st, e) = send(&body);
        assert_eq!(st, 400, "{path:?}: {e:#}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("files[0].path"),
            "{e:#}"
        );
    }
    let (st, e) = send(r#"{"language": "python", "code": "", "timeout_ms": 99999999}"#);
    assert_eq!(st, 400);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("maximum"),
        "{e:#}"
    );
    let big = json!({"language": "python", "code": "x".repeat(5000)}).to_string();
    let (st, e) = send(&big);
    assert_eq!(st, 413, "{e:#}");
    assert_eq!(e["error"]["code"], "body_too_large");
    let (st, e) = request("GET", &s.url("/v1/nothing"), Some(&s.key), None);
    assert_eq!((st, e["error"]["code"].as_str()), (404, Some("not_found")));
    let (st, _) = s.get("/v1/executions?limit=0");
    assert_eq!(st, 400);
    // Errors the framework makes (bad query types, wrong method) are JSON too.
    let (st, e) = s.get("/v1/executions?limit=many");
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (400, Some("invalid_request")),
        "{e:#}"
    );
    let (st, e) = request("DELETE", &s.url("/v1/executions"), Some(&s.key), None);
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (405, Some("method_not_allowed")),
        "{e:#}"
    );
    let (st, e) = request("PUT", &s.url("/v1/executions/x"), Some(&s.key), Some(b"{}"));
    assert_eq!(st, 405, "{e:#}");
    assert!(e["error"]["message"].is_string(), "{e:#}");
    // Many files: refused by count, answered at once (no quadratic check).
    let many: Vec<Value> = (0..10_001)
        .map(|i| json!({"path": format!("f{i}"), "content": ""}))
        .collect();
    let body = json!({"language": "sh", "code": "true", "files": many}).to_string();
    let s2 = Server::start_with(Mode::Root, Db::Sqlite, Options::default());
    let (st, e) = request(
        "POST",
        &s2.url("/v1/executions"),
        Some(&s2.key),
        Some(body.as_bytes()),
    );
    assert_eq!(st, 400, "{e:#}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("files"),
        "{e:#}"
    );
    // Lists are summaries: output only by id.
    let r = s.python("print('big output')");
    let (_, l) = s.get("/v1/executions?limit=1");
    assert_eq!(l["executions"][0]["id"], r["id"]);
    assert!(l["executions"][0].get("stdout").is_none(), "{l:#}");
    // A client that never finishes its headers is cut off; others are served meanwhile.
    {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(s.base.trim_start_matches("http://")).unwrap();
        c.write_all(b"POST /v1/executions HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        assert_eq!(request("GET", &s.url("/health"), None, None).0, 200);
        let mut buf = [0u8; 64];
        assert_eq!(c.read(&mut buf).unwrap_or(0), 0, "connection kept open");
    }
    // And the server is still fine.
    assert_eq!(s.python("print(1)")["stdout"], "1\n");
}

#[test]
fn service_endpoints_describe_themselves() {
    let s = Server::start(Mode::Root, Db::Sqlite);
    assert_eq!(
        request("GET", &s.url("/health"), None, None),
        (200, json!({"status": "ok"}))
    );
    // Ready once the pool has filled (it starts filling at start-up).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (st, ready) = loop {
        let (st, ready) = request("GET", &s.url("/ready"), None, None);
        if st == 200 || std::time::Instant::now() > deadline {
            break (st, ready);
        }
        assert_eq!((st, &ready["pool_warm"]), (503, &json!(false)), "{ready:#}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(st, 200, "{ready:#}");
    assert_eq!(
        ready,
        json!({"ready": true, "store": "ok", "pool_warm": true, "audit": true})
    );
    let (_, langs) = s.get("/v1/languages");
    let names: Vec<&str> = langs["languages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    for l in ["bash", "python", "sh"] {
        assert!(names.contains(&l), "{names:?}");
    }
    let (_, profiles) = s.get("/v1/profiles");
    let p = profiles["profiles"].as_array().unwrap();
    assert!(
        p.iter()
            .any(|p| p["name"] == "ai-strict" && p["default"] == true),
        "{profiles:#}"
    );
    let (st, doc) = request("GET", &s.url("/openapi.json"), None, None);
    assert_eq!(st, 200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{doc:#}"
    );
    for path in [
        "/v1/executions",
        "/v1/executions/{id}",
        "/v1/languages",
        "/v1/profiles",
        "/health",
        "/ready",
        "/metrics",
        "/v1/sandboxes",
        "/v1/sandboxes/{id}",
        "/v1/sandboxes/{id}/commands",
        "/v1/sandboxes/{id}/files",
        "/v1/sandboxes/{id}/files/{path}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} undocumented");
    }
    // A valid OpenAPI document, by an independent validator (scripts/test.sh installs it).
    let scratch = Scratch::new();
    let file = scratch.file("openapi.json", &doc.to_string());
    let out = std::process::Command::new("python3")
        .args(["-c", "import json,sys; from openapi_spec_validator import validate; validate(json.load(open(sys.argv[1])))"])
        .arg(&file)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "openapi-spec-validator: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.python("print(1)");
    let (_, m) = request("GET", &s.url("/metrics"), None, None);
    let text = m["text"].as_str().unwrap();
    for metric in [
        "ironcage_http_requests_total{method=\"POST\",route=\"/v1/executions\",status=\"200\"} 1",
        "ironcage_http_request_duration_seconds_bucket{route=\"/v1/executions\",le=\"+Inf\"} 1",
        "ironcage_executions_total{outcome=\"success\"} 1",
        "ironcage_pool_idle{profile=\"ai-strict\"}",
        "ironcage_pool_hits_total",
        "ironcage_pool_misses_total",
    ] {
        assert!(text.contains(metric), "{metric} missing:\n{text}");
    }
}

#[test]
fn executions_are_in_the_tamper_evident_audit_log() {
    let s = Server::start(Mode::Root, Db::Sqlite);
    let r = s.exec(json!({"language": "bash", "code": "echo hi", "env": {"API_TOKEN": "sk-live-abcdefghijklmnop1234"}}));
    // The log lives in the store; `ironcage audit` reads it by URL.
    let db = s.scratch.path.join("data/ironcage.db");
    let url = format!("sqlite://{}", db.display());
    let key = s.scratch.path.join("data/audit.key.pub");
    let audit = |args: &[&str]| {
        let out = std::process::Command::new(binary())
            .arg("audit")
            .args(args)
            .args(["--log", &url])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, text, err) = audit(&["tail", "-n", "50", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(text.contains(r["id"].as_str().unwrap()), "{text}");
    assert!(text.contains("run.end"));
    assert!(!text.contains("sk-live-abcdefghijklmnop1234"));
    let (code, out, err) = audit(&["verify", "--key", key.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = audit(&["prove", "1", "--key", key.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    // Exported and verified offline with the public key only.
    let bundle = s.scratch.path.join("bundle.json");
    let signing = s.scratch.path.join("data/audit.key");
    let (code, _, err) = audit(&[
        "export",
        "--out",
        bundle.to_str().unwrap(),
        "--key",
        signing.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let out = std::process::Command::new(binary())
        .args(["audit", "verify-bundle"])
        .arg(&bundle)
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Someone with write access to the database edits an entry: verification names it, and
    // the server stops running code it can no longer record.
    let changed = edit_db(
        &db,
        "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"UPDATE audit_entries SET entry = CAST(REPLACE(CAST(entry AS TEXT), 'bash', 'bosh') AS BLOB) WHERE seq = 1\"); c.commit(); print(c.total_changes)",
    );
    assert_eq!(changed, "1");
    let (code, out, err) = audit(&["verify", "--key", key.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(format!("{out}{err}").contains("entry 1"), "{out}{err}");
    // An edit in the middle is verify's to find (appends check O(log n)); an edit of the
    // newest entry stops the next append.
    let r = s.exec(json!({"language": "sh", "code": "echo next"}));
    assert_eq!(r["stdout"], "next\n");
    edit_db(
        &db,
        "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"UPDATE audit_entries SET entry = CAST(REPLACE(CAST(entry AS TEXT), '\\\"v\\\":1', '\\\"v\\\":2') AS BLOB) WHERE seq = (SELECT MAX(seq) FROM audit_entries)\"); c.commit()",
    );
    s.assert_audit_refuses();
    assert_eq!(request("GET", &s.url("/ready"), None, None).0, 503);
}

/// The newest entry edited together with its stored leaf hash: the leaf no longer hashes
/// up to the signed tree, so the next append is refused.
#[test]
fn an_edit_of_the_newest_audit_entry_and_its_leaf_is_refused() {
    let s = Server::start(Mode::Root, Db::Sqlite);
    for i in 0..3 {
        s.exec(json!({"language": "sh", "code": format!("echo {i}")}));
    }
    let db = s.scratch.path.join("data/ironcage.db");
    let script = r#"
import sqlite3, sys, hashlib
c = sqlite3.connect(sys.argv[1])
seq, entry = c.execute("SELECT seq, entry FROM audit_entries ORDER BY seq DESC LIMIT 1").fetchone()
new = bytes(entry).replace(b'"v":1', b'"v":2')
assert new != bytes(entry)
leaf = hashlib.sha256(b"\x00" + new).digest()
def node_count(n): return 2 * n - bin(n).count("1")
pos = node_count(seq)
c.execute("UPDATE audit_entries SET entry = ? WHERE seq = ?", (new, seq))
assert c.execute("UPDATE audit_nodes SET hash = ? WHERE pos = ?", (leaf, pos)).rowcount == 1
c.commit()
"#;
    edit_db(&db, script);
    s.assert_audit_refuses();
}

#[test]
fn overload_gets_clean_503s_and_leaves_nothing_behind() {
    let s = Server::start_with(
        Mode::Root,
        Db::Sqlite,
        Options {
            pool_size: 2,
            max_running: 2,
            queue_timeout_ms: 200,
            ..Options::default()
        },
    );
    let key = s.create_key("many", &["--max-concurrent", "100"]);
    let url = s.url("/v1/executions");
    let body = json!({"language": "python", "code": "import time; time.sleep(0.5); print('ok')"})
        .to_string();
    let results: Vec<(u16, Value)> = std::thread::scope(|t| {
        let hs: Vec<_> = (0..24)
            .map(|_| t.spawn(|| request("POST", &url, Some(&key), Some(body.as_bytes()))))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results
        .iter()
        .filter(|(st, v)| *st == 200 && v["stdout"] == "ok\n")
        .count();
    let busy = results
        .iter()
        .filter(|(st, v)| *st == 503 && v["error"]["code"] == "at_capacity")
        .count();
    assert_eq!(ok + busy, results.len(), "{results:#?}");
    assert!(ok >= 2 && busy >= 1, "ok {ok} busy {busy}");
    let mut s = s;
    s.stop();
    s.assert_no_leftovers();
    assert!(
        s.new_orphan_cgroups().is_empty(),
        "{:?}",
        s.new_orphan_cgroups()
    );
}

variants! {
fn a_killed_server_leaves_nothing_and_records_its_executions_as_failed(mode: Mode, db: Db) {
    let mut s = Server::start(mode, db);
    let id = std::thread::scope(|t| {
        let h = t.spawn(|| {
            let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
            let resp = agent
                .post(&s.url("/v1/executions?stream=true"))
                .set("Authorization", &format!("Bearer {}", s.key))
                .send_string(&json!({"language": "bash", "code": "echo started; sleep 120"}).to_string())
                .unwrap();
            let mut id = String::new();
            for line in std::io::BufRead::lines(std::io::BufReader::new(resp.into_reader())) {
                let Ok(line) = line else { break };
                if let Some(d) = line.strip_prefix("data: ") {
                    let v: Value = serde_json::from_str(d).unwrap();
                    if let Some(i) = v["id"].as_str() { id = i.to_string(); }
                    if v["data"] == "started\n" { break; }
                }
            }
            id
        });
        h.join().unwrap()
    });
    assert!(id.starts_with("exe_"));
    assert!(!s.leftovers().is_empty(), "the running sandbox should be visible");
    s.kill9();
    // Hosts notice their server is gone, kill their sandboxes and remove their cgroups.
    s.assert_no_leftovers();
    assert!(host_processes_with("sleep 120").is_empty());
    assert!(s.new_orphan_cgroups().is_empty(), "{:?}", s.new_orphan_cgroups());
    s.spawn();
    let (st, e) = s.get(&format!("/v1/executions/{id}"));
    assert_eq!(st, 200);
    assert_eq!(e["status"], "failed", "{e:#}");
    assert!(e["error"].as_str().unwrap().contains("server stopped"), "{e:#}");
    assert_eq!(s.python("print(5)")["stdout"], "5\n");
}
}

#[test]
fn bad_config_files_are_named_with_line_and_field() {
    let dir = Scratch::new();
    let cfg = dir.file("bad.yaml", "listen: 127.0.0.1:0\npool:\n  sizee: 3\n");
    let mut c = ironcage(Mode::Root);
    c.args(["serve", "--config"]).arg(&cfg);
    let (code, _, err) = spawn(c, None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bad.yaml") && err.contains("sizee") && err.contains("line 3"),
        "{err}"
    );
    let mut c = ironcage(Mode::Root);
    c.args(["serve", "--data-dir"])
        .arg(dir.path.join("d"))
        .env("API_PORT", "http");
    let (code, _, err) = spawn(c, None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("API_PORT"), "{err}");
}

/// 2,000 requests from 50 concurrent clients: every one gets its own correct answer or a
/// clean 503, the history holds exactly the answered ones, and nothing is left behind.
#[test]
fn load_of_2000_requests_at_concurrency_50() {
    let mut s = Server::start_with(
        Mode::Root,
        Db::Sqlite,
        Options {
            pool_size: 4,
            max_running: 8,
            queue_timeout_ms: 20_000,
            ..Options::default()
        },
    );
    let key = s.create_key(
        "load",
        &["--max-concurrent", "100", "--rate-limit", "100000"],
    );
    let url = s.url("/v1/executions");
    let results: Vec<(u16, bool)> = std::thread::scope(|t| {
        let hs: Vec<_> = (0..50)
            .map(|client| {
                let (url, key) = (&url, &key);
                t.spawn(move || {
                    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(120)).build();
                    (0..40)
                        .map(|i| {
                            let marker = format!("{client}-{i}");
                            let body = if i % 10 == 0 {
                                json!({"language": "python", "code": "import sys; print(sys.argv[1])", "args": [marker]})
                            } else {
                                json!({"language": "sh", "code": "echo \"$1\"", "args": [marker]})
                            };
                            let r = agent
                                .post(url)
                                .set("Authorization", &format!("Bearer {key}"))
                                .send_string(&body.to_string());
                            match r {
                                Ok(r) => {
                                    let v: Value = r.into_json().unwrap();
                                    (200, v["stdout"] == format!("{marker}\n") && v["exit_code"] == 0)
                                }
                                Err(ureq::Error::Status(code, r)) => {
                                    let v: Value = r.into_json().unwrap_or_default();
                                    (code, v["error"]["code"] == "at_capacity")
                                }
                                Err(e) => panic!("transport error: {e}"),
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.len(), 2000);
    let wrong: Vec<_> = results
        .iter()
        .filter(|(st, ok)| !ok || !matches!(st, 200 | 503))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} wrong answers, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    let answered = results.iter().filter(|(st, _)| *st == 200).count();
    assert!(
        answered >= 1900,
        "only {answered} of 2000 answered (the rest 503)"
    );
    let (_, m) = request("GET", &s.url("/metrics"), None, None);
    let text = m["text"].as_str().unwrap();
    let total: u64 = text
        .lines()
        .filter(|l| l.starts_with("ironcage_executions_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total as usize, answered, "{text}");
    assert!(text.contains("ironcage_executions_running 0"), "{text}");
    s.stop();
    s.assert_no_leftovers();
    assert!(
        s.new_orphan_cgroups().is_empty(),
        "{:?}",
        s.new_orphan_cgroups()
    );
}

/// kill -9 while 20 executions run: the sandboxes die with their hosts, and the restarted
/// server records every one of them as failed; none is lost or left running.
#[test]
fn kill_9_under_load_then_restart() {
    let mut s = Server::start_with(
        Mode::Root,
        Db::Sqlite,
        Options {
            pool_size: 4,
            max_running: 20,
            ..Options::default()
        },
    );
    let url = s.url("/v1/executions");
    let key = s.create_key("many", &["--max-concurrent", "100"]);
    let clients: Vec<_> = (0..20)
        .map(|i| {
            let (url, key) = (url.clone(), key.clone());
            std::thread::spawn(move || {
                let body = json!({"language": "bash", "code": format!("echo go-{i}; sleep 60")});
                // The connection breaks when the server dies: an error is expected.
                let _ = request_full(
                    "POST",
                    &url,
                    Some(&key),
                    Some(body.to_string().as_bytes()),
                    &[],
                );
            })
        })
        .collect();
    // Wait until all 20 are running (one sandbox host per execution, plus the idle pool).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, l) = request(
            "GET",
            &s.url("/v1/executions?status=running&limit=100"),
            Some(&key),
            None,
        );
        if l["executions"].as_array().map_or(0, Vec::len) == 20
            && host_processes_with("sleep 60").len() == 20
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "executions did not all start: {l:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    s.kill9();
    for c in clients {
        let _ = c.join();
    }
    s.assert_no_leftovers();
    assert!(
        host_processes_with("sleep 60").is_empty(),
        "{:?}",
        host_processes_with("sleep 60")
    );
    assert!(
        s.new_orphan_cgroups().is_empty(),
        "{:?}",
        s.new_orphan_cgroups()
    );
    s.spawn();
    let (_, l) = request("GET", &s.url("/v1/executions?limit=100"), Some(&key), None);
    let all = l["executions"].as_array().unwrap();
    assert_eq!(all.len(), 20, "{l:#}");
    assert!(all.iter().all(|e| e["status"] == "failed"), "{l:#}");
    assert_eq!(s.python("print('after')")["stdout"], "after\n");
}

variants! {
fn long_lived_sandboxes_keep_files_between_commands(mode: Mode, db: Db) {
    let s = Server::start_with(mode, db, Options {
        extra: "sandboxes:\n  max_workspace_bytes: 1048576\n".into(),
        ..Options::default()
    });
    let (st, sb) = s.post("/v1/sandboxes", &json!({"language": "python", "env": {"STEP": "one"}, "ttl_seconds": 60}));
    assert_eq!(st, 201, "{sb:#}");
    let id = sb["id"].as_str().unwrap().to_string();
    let base = format!("/v1/sandboxes/{id}");
    // A file put over HTTP, then read and changed by a command.
    let (st, _, _) = request_full("PUT", &s.url(&format!("{base}/files/data/in.txt")), Some(&s.key), Some(b"from put\n"), &[]);
    assert_eq!(st, 200);
    let (st, r) = s.post(&format!("{base}/commands"), &json!({"cmd": "bash", "args": ["-c",
        "cat data/in.txt; echo \"$STEP\" >> data/in.txt; mkdir -p out; echo made > out/x; ln -s data/in.txt link; mkfifo fifo; (sleep 300 &)"]}));
    assert_eq!(st, 200, "{r:#}");
    assert_eq!((r["stdout"].as_str(), r["files_saved"].as_bool()), (Some("from put\n"), Some(true)), "{r:#}");
    assert!(host_processes_with("sleep 300").is_empty(), "processes do not outlive their command");
    // The next command (with code, in the sandbox's language) sees what the last one left.
    let (_, r) = s.post(&format!("{base}/commands"), &json!({"code": "import os\nprint(open('data/in.txt').read(), os.readlink('link'), open('out/x').read(), os.path.exists('fifo'))"}));
    assert_eq!(r["stdout"], "from put\none\n data/in.txt made\n False\n", "{r:#}");
    let (st, _, body) = request_full("GET", &s.url(&format!("{base}/files/data/in.txt")), Some(&s.key), None, &[]);
    assert_eq!((st, body.as_str()), (200, "from put\none\n"));
    let (_, list) = s.get(&format!("{base}/files"));
    let paths: Vec<&str> = list["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["data", "data/in.txt", "link", "main.py", "out", "out/x"], "{list:#}");
    // Links are data: never followed by the server.
    let (st, e) = s.get(&format!("{base}/files/link"));
    assert_eq!(st, 409, "{e:#}");
    let (st, e) = request("PUT", &s.url(&format!("{base}/files/link/x")), Some(&s.key), Some(b"x"));
    assert_eq!(st, 409, "{e:#}");
    for bad in ["../x", "a/../../x", "%2e%2e/x"] {
        let (st, e) = request("PUT", &s.url(&format!("{base}/files/{bad}")), Some(&s.key), Some(b"x"));
        assert!(st == 400 || st == 404, "{bad}: {st} {e:#}");
    }
    // A command that times out leaves the files as they were.
    let (_, r) = s.post(&format!("{base}/commands"), &json!({"cmd": "bash", "args": ["-c", "echo lost > data/in.txt; sleep 30"], "timeout_ms": 500}));
    assert_eq!((r["timed_out"].as_bool(), r["files_saved"].as_bool()), (Some(true), Some(false)), "{r:#}");
    let (_, _, body) = request_full("GET", &s.url(&format!("{base}/files/data/in.txt")), Some(&s.key), None, &[]);
    assert_eq!(body, "from put\none\n");
    // Files beyond the server's per-sandbox limit are not kept.
    let (_, r) = s.post(&format!("{base}/commands"), &json!({"cmd": "bash", "args": ["-c", "head -c 2000000 /dev/zero > big"]}));
    assert_eq!(r["files_saved"], false, "{r:#}");
    assert!(r["files_note"].as_str().unwrap().contains("1048576"), "{r:#}");
    // Another key sees nothing; deletion is final.
    let other = s.create_key("other", &[]);
    assert_eq!(request("GET", &s.url(&base), Some(&other), None).0, 404);
    assert_eq!(request("DELETE", &s.url(&base), Some(&s.key), None).0, 204);
    assert_eq!(s.get(&base).0, 404);
    // Expiry.
    let (_, sb) = s.post("/v1/sandboxes", &json!({"ttl_seconds": 1}));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(s.get(&format!("/v1/sandboxes/{}", sb["id"].as_str().unwrap())).0, 404);
    // Commands are executions too: in the history.
    let (_, h) = s.get("/v1/executions?limit=100");
    assert!(h["executions"].as_array().unwrap().len() >= 4, "{h:#}");
}
}

#[test]
fn a_sandbox_cannot_use_its_stored_files_to_reach_the_host() {
    let s = Server::start(Mode::Root, Db::Sqlite);
    let (_, sb) = s.post("/v1/sandboxes", &json!({}));
    let base = format!("/v1/sandboxes/{}", sb["id"].as_str().unwrap());
    // Links planted to host paths, and paths that look like escapes, are stored as links.
    let (_, r) = s.post(&format!("{base}/commands"), &json!({"cmd": "bash", "args": ["-c",
        "ln -s /etc/shadow shadow; ln -s /proc/1/root root1; ln -s / rootdir; mkdir -p d; ln -s ../../../../etc d/up"]}));
    assert_eq!(r["files_saved"], true, "{r:#}");
    // Restored inside the next sandbox they lead only to what that sandbox may see.
    let (_, r) = s.post(
        &format!("{base}/commands"),
        &json!({"cmd": "bash", "args": ["-c",
        "cat shadow 2>&1; ls rootdir/root 2>&1; cat d/up/shadow 2>&1; ls root1/ | head -3"]}),
    );
    let out = r["stdout"].as_str().unwrap();
    assert!(!out.contains("root:"), "{out}");
    assert!(out.contains("No such file"), "{out}");
    // And the server never follows them.
    for link in ["shadow", "root1", "rootdir", "d/up"] {
        let (st, _) = s.get(&format!("{base}/files/{link}"));
        assert_eq!(st, 409, "{link}");
    }
    let (st, _) = s.get(&format!("{base}/files/rootdir/etc/passwd"));
    assert_eq!(st, 404);
}

/// Two instances on one PostgreSQL store: keys, history and long-lived sandboxes are
/// shared; one instance dying fails only its own executions.
#[test]
fn two_instances_share_one_postgresql_store() {
    let mut a = Server::start(Mode::Root, Db::Postgres);
    let b = Server::start_sharing(&a);
    let r = a.python("print('on a')");
    let (st, seen) = b.get(&format!("/v1/executions/{}", r["id"].as_str().unwrap()));
    assert_eq!((st, &seen), (200, &r));
    // A sandbox made on one, used on the other.
    let (_, sb) = a.post("/v1/sandboxes", &json!({}));
    let base = format!("/v1/sandboxes/{}", sb["id"].as_str().unwrap());
    let (_, r) = a.post(
        &format!("{base}/commands"),
        &json!({"cmd": "sh", "args": ["-c", "echo from-a > f"]}),
    );
    assert_eq!(r["files_saved"], true, "{r:#}");
    let (_, r) = b.post(
        &format!("{base}/commands"),
        &json!({"cmd": "cat", "args": ["f"]}),
    );
    assert_eq!(r["stdout"], "from-a\n", "{r:#}");
    // A long execution on each; kill -9 a.
    let (url_a, url_b, key) = (
        a.url("/v1/executions"),
        b.url("/v1/executions"),
        a.key.clone(),
    );
    let body = json!({"language": "bash", "code": "echo started; sleep 3; echo done"}).to_string();
    let on_b = {
        let (url_b, key, body) = (url_b.clone(), key.clone(), body.clone());
        std::thread::spawn(move || request("POST", &url_b, Some(&key), Some(body.as_bytes())))
    };
    {
        let (url_a, key, body) = (url_a.clone(), key.clone(), body.clone());
        std::thread::spawn(move || {
            let _ = request_full("POST", &url_a, Some(&key), Some(body.as_bytes()), &[]);
        });
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while a.get("/v1/executions?status=running").1["executions"]
        .as_array()
        .map_or(0, Vec::len)
        < 2
    {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    a.kill9();
    a.spawn();
    let (st, r) = on_b.join().unwrap();
    assert_eq!(
        (st, r["stdout"].as_str()),
        (200, Some("started\ndone\n")),
        "{r:#}"
    );
    let (_, all) = b.get("/v1/executions?limit=100");
    let statuses: Vec<&str> = all["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "failed").count(),
        1,
        "{all:#}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == "running").count(),
        0,
        "{all:#}"
    );
}

/// One raw HTTP/1.1 request (no client-side path normalisation): (status, body).
fn raw_request(base: &str, method: &str, path: &str, key: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    c.write_all(body).unwrap();
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// From the review of long-lived sandboxes: a client that goes away, a TTL shorter than
/// the command, names that would break the stored list, unreadable files.
#[test]
fn long_lived_sandboxes_survive_hostile_and_careless_clients() {
    let s = Server::start_with(
        Mode::Root,
        Db::Sqlite,
        Options {
            extra: "sandboxes:\n  max_per_key: 2\n".into(),
            ..Options::default()
        },
    );
    let (_, sb) = s.post("/v1/sandboxes", &json!({"ttl_seconds": 3}));
    let id = sb["id"].as_str().unwrap().to_string();
    let base = format!("/v1/sandboxes/{id}");
    // The client gives up after 0.5 s; the command (4 s, longer than the 3 s TTL) still
    // ends, its files are kept, and its sandbox did not expire under it.
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(500))
        .build();
    let r = agent
        .post(&s.url(&format!("{base}/commands")))
        .set("Authorization", &format!("Bearer {}", s.key))
        .send_string(
            &json!({"cmd": "sh", "args": ["-c", "sleep 4; echo kept > out.txt"]}).to_string(),
        );
    assert!(r.is_err(), "the client should have timed out");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (st, body) = loop {
        let (st, _, body) = request_full(
            "GET",
            &s.url(&format!("{base}/files/out.txt")),
            Some(&s.key),
            None,
            &[],
        );
        if st == 200 || std::time::Instant::now() > deadline {
            break (st, body);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!((st, body.as_str()), (200, "kept\n"));
    // "." names no file: refused, and the sandbox stays usable.
    let (st, body) = raw_request(&s.base, "PUT", &format!("{base}/files/."), &s.key, b"x");
    assert_eq!(st, 400, "{body}");
    let (st, body) = raw_request(&s.base, "PUT", &format!("{base}/files/./."), &s.key, b"x");
    assert!(st == 400 || st == 404, "{st} {body}");
    // Long names until the list is full: 413, never a broken sandbox.
    let (st, body) = raw_request(
        &s.base,
        "PUT",
        &format!("{base}/files/{}", "n".repeat(256)),
        &s.key,
        b"",
    );
    assert_eq!(st, 400, "{body}");
    let long = vec!["n".repeat(250); 15].join("/");
    let mut full = false;
    for i in 0..400 {
        let (st, body) = raw_request(
            &s.base,
            "PUT",
            &format!("{base}/files/{long}/{i}"),
            &s.key,
            b"",
        );
        if st == 413 {
            full = true;
            break;
        }
        assert_eq!(st, 200, "{body}");
    }
    assert!(full, "the list of names was never refused");
    assert_eq!(s.get(&base).0, 200);
    // An unreadable file is left out and named; everything else is kept.
    let (_, r) = s.post(&format!("{base}/commands"), &json!({"cmd": "sh", "args": ["-c", "rm -rf n*; echo a > ok.txt; echo b > secret; chmod 000 secret"]}));
    assert_eq!(r["files_saved"], true, "{r:#}");
    assert!(
        r["files_note"].as_str().unwrap_or("").contains("secret"),
        "{r:#}"
    );
    let (st, _, body) = request_full(
        "GET",
        &s.url(&format!("{base}/files/ok.txt")),
        Some(&s.key),
        None,
        &[],
    );
    assert_eq!((st, body.as_str()), (200, "a\n"));
    // A file cannot shadow a directory of files (nor the reverse).
    assert_eq!(
        raw_request(&s.base, "PUT", &format!("{base}/files/q/r"), &s.key, b"x").0,
        200
    );
    let (st, body) = raw_request(&s.base, "PUT", &format!("{base}/files/q"), &s.key, b"x");
    assert_eq!(st, 409, "{body}");
    // A key's number of sandboxes is bounded.
    let (st, _) = s.post("/v1/sandboxes", &json!({}));
    assert_eq!(st, 201);
    let (st, e) = s.post("/v1/sandboxes", &json!({}));
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (429, Some("too_many_sandboxes")),
        "{e:#}"
    );
    // The audit CLI never creates a database by mistake.
    let missing = s.scratch.path.join("typo/none.db");
    let out = std::process::Command::new(binary())
        .args([
            "audit",
            "verify",
            "--log",
            &format!("sqlite://{}", missing.display()),
        ])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(!missing.exists());
}

variants! {
    fn the_llm_gateway_is_mounted_with_budgets_per_key_and_agent(mode: Mode, db: Db) {
        let fake = Fake::start(REAL_KEY);
        let secrets = Scratch::new();
        let store = secrets.path.join("secrets.json");
        let master = secrets.path.join("master.key");
        // The provider key, stored encrypted as the server's user.
        let mut c = as_mode(mode, "/usr/bin/env");
        c.arg(format!("IRONCAGE_SECRETS={}", store.display()))
            .arg(format!("IRONCAGE_MASTER_KEY_FILE={}", master.display()))
            .arg(format!("V={REAL_KEY}"))
            .arg(binary())
            .args(["secret", "set", "openai", "--from-env", "V"]);
        let (code, out, err) = spawn(c, None);
        assert_eq!(code, 0, "{out}{err}");
        let extra = format!(
            "llm:\n  upstreams:\n    openai: http://127.0.0.1:{}/v1\n  key_budget_usd: \"0.01\"\n  agent_budget_usd: \"0.005\"\n  budget_period: daily\n  secrets_file: {}\n  master_key_file: {}\n",
            fake.port,
            store.display(),
            master.display()
        );
        let mut server = Server::start_with(mode, db, Options { extra, ..Options::default() });
        // The official SDK, pointed at the service with a service API key; each call costs
        // 100 input + 1000 output tokens of fake-gpt ($0.0021).
        let script = r#"
import json, sys, openai
base, key = sys.argv[1], sys.argv[2]
out = []
for agent in ["a", "a", "a", "b", "b", "b", None]:
    headers = {"x-ironcage-agent": agent} if agent else {}
    c = openai.OpenAI(base_url=base, api_key=key, max_retries=0, default_headers=headers)
    try:
        r = c.chat.completions.create(model="fake-gpt", max_tokens=1000,
            messages=[{"role": "user", "content": "[[fake:usage=100,1000]] hi"}])
        out.append([agent, r.choices[0].message.content])
    except openai.RateLimitError as e:
        out.append([agent, e.code])
try:
    openai.OpenAI(base_url=base, api_key="ick_not_a_key", max_retries=0).models.list()
except openai.AuthenticationError as e:
    out.append(["bad-key", e.status_code])
print(json.dumps(out))
"#;
        let sdk = |server: &Server| -> Value {
            let o = std::process::Command::new("/usr/bin/python3")
                .args(["-c", script, &server.url("/llm/openai/v1"), &server.key])
                .env("PYTHONPATH", "/opt/ironcage-test/py")
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            serde_json::from_slice(&o.stdout).unwrap()
        };
        let out = sdk(&server);
        // Each call reserves ~$0.00211 (its body's bytes as input, 1,000 output tokens) and
        // costs $0.0021. Agent a ($0.005): two fit, not a third. Agent b: two more, which
        // brings the key ($0.01) to $0.0084: no room for another, agent or not.
        assert_eq!(
            out,
            json!([["a", "echo: hi"], ["a", "echo: hi"], ["a", "budget_exceeded"],
                   ["b", "echo: hi"], ["b", "echo: hi"], ["b", "budget_exceeded"],
                   [null, "budget_exceeded"], ["bad-key", 401]]),
            "{}", server.log.lock().unwrap()
        );
        // The provider saw the stored key, never the service key.
        for r in fake.requests() {
            assert_eq!(r["headers"]["authorization"], format!("Bearer {REAL_KEY}"), "{r}");
        }
        let (_, m) = request_full_text(&server.url("/metrics"));
        assert!(m.contains("ironcage_llm_requests_total{decision=\"over_budget\"} 3"), "{m}");
        // Code run by the service reaches the same gateway from its sandbox, with a key
        // of its own that is charged to the API key that ran it.
        let exec_key = server.create_key("exec", &[]);
        let code = "import json, os, urllib.request\nreq = urllib.request.Request(os.environ['OPENAI_BASE_URL'] + '/chat/completions', data=json.dumps({'model': 'fake-gpt', 'max_tokens': 20, 'messages': [{'role': 'user', 'content': 'from an execution'}]}).encode(), headers={'Authorization': 'Bearer ' + os.environ['OPENAI_API_KEY'], 'Content-Type': 'application/json'})\nprint(json.load(urllib.request.urlopen(req))['choices'][0]['message']['content'], os.environ['OPENAI_API_KEY'][:4])\n";
        let body = json!({"language": "python", "code": code});
        let (status, v) = request("POST", &server.url("/v1/executions"), Some(&exec_key), Some(body.to_string().as_bytes()));
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["stdout"], "echo: from an execution icv_\n", "{v:#}");
        let last = fake.requests().last().cloned().unwrap();
        assert_eq!(last["headers"]["authorization"], format!("Bearer {REAL_KEY}"));
        // Spending survives a restart: the key is still out of budget.
        server.stop();
        server.spawn();
        let again = sdk(&server);
        assert_eq!(again[0], json!(["a", "budget_exceeded"]), "{again}");
        assert_eq!(again[6], json!([null, "budget_exceeded"]), "{again}");
        assert_eq!(fake.requests().len(), 5, "refused requests reached the provider");
    }
}

fn request_full_text(url: &str) -> (u16, String) {
    match ureq::get(url).call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
        Err(e) => panic!("{url}: {e}"),
    }
}

/// Two instances on one PostgreSQL store enforce one budget per key: each reads back what
/// the other spent.
#[test]
fn instances_sharing_a_store_share_llm_budgets() {
    let fake = Fake::start_keyless();
    let extra = format!(
        "llm:\n  upstreams:\n    openai: http://127.0.0.1:{}/v1\n  key_budget_usd: \"0.01\"\n",
        fake.port
    );
    let a = Server::start_with(
        Mode::Root,
        Db::Postgres,
        Options {
            extra: extra.clone(),
            ..Options::default()
        },
    );
    let b = Server::start_sharing_with(&a, &extra);
    // Each call reserves ~$0.00211 and costs $0.0021 (100 + 1,000 tokens of fake-gpt).
    let body = br#"{"model":"fake-gpt","max_tokens":1000,"messages":[{"role":"user","content":"[[fake:usage=100,1000]] hi"}]}"#;
    let call = |s: &Server| {
        request(
            "POST",
            &s.url("/llm/openai/v1/chat/completions"),
            Some(&a.key),
            Some(body),
        )
        .0
    };
    assert_eq!(
        call(&b),
        200,
        "b spends first, and knows the key from now on"
    );
    let on_a: Vec<u16> = (0..4).map(|_| call(&a)).collect();
    assert_eq!(
        on_a,
        vec![200, 200, 200, 429],
        "a saw b's spending when it loaded the key"
    );
    // b reads a's spending back within a second (alone it would allow three more calls).
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(call(&b), 429, "b let the key spend past its budget");
    assert_eq!(
        fake.requests().len(),
        4,
        "exactly the four calls that fit reached the provider"
    );
}
