//! Harness for the execution-service tests: a real `ironcage serve` (as root or as the test
//! user, on SQLite or on a real PostgreSQL server), a real HTTP client, and checks that
//! nothing the server started outlives it.

#![allow(dead_code)]

use crate::common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A PostgreSQL server for the tests: $IRONCAGE_TEST_POSTGRES_URL (scripts/test.sh starts
/// one and sets it). Each server under test gets a database of its own.
pub fn postgres_database() -> String {
    let base = std::env::var("IRONCAGE_TEST_POSTGRES_URL").expect(
        "IRONCAGE_TEST_POSTGRES_URL is not set: the PostgreSQL tests need a server (scripts/test.sh installs and starts one)",
    );
    let name = format!("ic_test_{}", unique().replace('-', "_"));
    let out = std::process::Command::new("psql")
        .args([
            &base,
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            &format!("CREATE DATABASE {name}"),
        ])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "creating database {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (prefix, _) = base.rsplit_once('/').expect("URL ends with /DATABASE");
    format!("{prefix}/{name}")
}

pub struct Options {
    pub pool_size: usize,
    pub max_running: usize,
    pub queue_timeout_ms: u64,
    pub output_limit: usize,
    pub max_body: usize,
    pub extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pool_size: 2,
            max_running: 8,
            queue_timeout_ms: 10_000,
            output_limit: 65_536,
            max_body: 1 << 20,
            extra: String::new(),
        }
    }
}

pub struct Server {
    pub mode: Mode,
    pub db: Db,
    pub child: Option<Child>,
    pub base: String,
    pub key: String,
    pub node: String,
    pub config: PathBuf,
    pub log: Arc<Mutex<String>>,
    pub scratch: Scratch,
    /// Orphaned run cgroups that existed before this server started (other tests' deliberate
    /// supervisor kills): not this server's doing.
    pub orphans_before: Vec<PathBuf>,
}

impl Server {
    pub fn start(mode: Mode, db: Db) -> Server {
        Server::start_with(mode, db, Options::default())
    }

    pub fn start_with(mode: Mode, db: Db, o: Options) -> Server {
        let database = match db {
            Db::Sqlite => None,
            Db::Postgres => Some(postgres_database()),
        };
        Server::start_on(mode, db, database, None, o)
    }

    /// A second instance on the same PostgreSQL store (its own node name and data dir),
    /// using the first one's key.
    pub fn start_sharing(other: &Server) -> Server {
        Server::start_sharing_with(other, "")
    }

    /// `start_sharing` with more configuration (YAML appended).
    pub fn start_sharing_with(other: &Server, extra: &str) -> Server {
        let text = std::fs::read_to_string(&other.config).unwrap();
        let url = text
            .lines()
            .find_map(|l| l.strip_prefix("database_url: "))
            .expect("a PostgreSQL server to share")
            .trim_matches('"')
            .to_string();
        // Instances sharing a store share the audit log's signing key.
        let key = other.scratch.path.join("data/audit.key");
        Server::start_on(
            other.mode,
            other.db,
            Some(url),
            Some(other.key.clone()),
            Options {
                extra: format!("audit_key: {}\n{extra}", key.display()),
                ..Options::default()
            },
        )
    }

    fn start_on(
        mode: Mode,
        db: Db,
        database: Option<String>,
        key: Option<String>,
        o: Options,
    ) -> Server {
        let scratch = Scratch::new();
        let node = format!("test-{}", unique());
        let data = scratch.path.join("data");
        let database = match database {
            None => String::new(),
            Some(url) => format!("database_url: {url:?}\n"),
        };
        let config = scratch.file(
            "serve.yaml",
            &format!(
                "listen: 127.0.0.1:0\nnode: {node}\ndata_dir: {}\n{database}pool:\n  size: {}\n  max_running: {}\n  queue_timeout_ms: {}\nlimits:\n  output_limit_bytes: {}\n  max_body_bytes: {}\n{}",
                data.display(),
                o.pool_size,
                o.max_running,
                o.queue_timeout_ms,
                o.output_limit,
                o.max_body,
                o.extra
            ),
        );
        let mut s = Server {
            mode,
            db,
            child: None,
            base: String::new(),
            key: String::new(),
            node,
            config,
            log: Arc::default(),
            scratch,
            orphans_before: orphan_cgroups(),
        };
        s.key = match key {
            Some(k) => k,
            None => s.create_key("test", &[]),
        };
        s.spawn();
        s
    }

    /// `ironcage key create` against this server's store; returns the secret.
    pub fn create_key(&self, name: &str, extra: &[&str]) -> String {
        let mut c = ironcage(self.mode);
        c.args(["key", "create", "--name", name, "--config"])
            .arg(&self.config)
            .args(extra);
        let (code, out, err) = spawn(c, None);
        assert_eq!(code, 0, "key create: {err}");
        out.trim().to_string()
    }

    pub fn key_cmd(&self, args: &[&str]) -> (i32, String, String) {
        let mut c = ironcage(self.mode);
        c.arg("key").args(args).arg("--config").arg(&self.config);
        spawn(c, None)
    }

    /// Starts `ironcage serve` and waits until it says where it listens.
    pub fn spawn(&mut self) {
        let mut c = ironcage(self.mode);
        c.args(["serve", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn ironcage serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::clone(&self.log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(200));
                panic!("server did not start:\n{}", self.log.lock().unwrap());
            }
        };
        self.base = format!("http://{addr}");
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM and wait (graceful shutdown).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if c.try_wait().unwrap().is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!(
                        "server did not stop on SIGTERM:\n{}",
                        self.log.lock().unwrap()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGKILL: the server gets no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        request("GET", &self.url(path), Some(&self.key), None)
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        request(
            "POST",
            &self.url(path),
            Some(&self.key),
            Some(body.to_string().as_bytes()),
        )
    }

    /// Runs code; asserts HTTP 200; returns the result.
    pub fn exec(&self, body: Value) -> Value {
        let (status, v) = self.post("/v1/executions", &body);
        assert_eq!(status, 200, "{body}: {v:#}\n{}", self.log.lock().unwrap());
        v
    }

    pub fn python(&self, code: &str) -> Value {
        self.exec(json!({"language": "python", "code": code}))
    }

    /// This server's sandbox zygote and hosts (each holds one sandbox; init and the
    /// workload die with it), found by the node name in their command line.
    pub fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.chars().all(|c| c.is_ascii_digit()) {
                continue;
            }
            if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                if cmd.contains(&format!("sandbox-zygote --node {} ", self.node)) {
                    out.push(format!("{name}: {cmd}"));
                }
            }
        }
        out
    }

    /// After someone tampered with the audit log: the next execution cannot be recorded,
    /// and from then on executions are refused with 503 `audit_unavailable`.
    pub fn assert_audit_refuses(&self) {
        let _ = self.post(
            "/v1/executions",
            &json!({"language": "sh", "code": "echo not recorded"}),
        );
        let (st, e) = self.post(
            "/v1/executions",
            &json!({"language": "sh", "code": "echo refused"}),
        );
        assert_eq!(
            (st, e["error"]["code"].as_str()),
            (503, Some("audit_unavailable")),
            "{e:#}"
        );
    }

    /// Run cgroups orphaned since this server started.
    pub fn new_orphan_cgroups(&self) -> Vec<PathBuf> {
        orphan_cgroups()
            .into_iter()
            .filter(|p| !self.orphans_before.contains(p))
            .collect()
    }

    /// Waits (bounded) until no process of this server's sandboxes is left.
    pub fn assert_no_leftovers(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.leftovers().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            self.leftovers().is_empty(),
            "processes left behind: {:#?}",
            self.leftovers()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs a python3 script on the SQLite database `db` (as someone with write access to it
/// would); returns what it printed.
pub fn edit_db(db: &std::path::Path, script: &str) -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(db)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One HTTP request with a real client; (status, body as JSON or {"text": ...}).
pub fn request(method: &str, url: &str, key: Option<&str>, body: Option<&[u8]>) -> (u16, Value) {
    let (status, _, text) = request_full(method, url, key, body, &[]);
    let v = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "text": text }));
    (status, v)
}

/// (status, headers, body text)
pub fn request_full(
    method: &str,
    url: &str,
    key: Option<&str>,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, String) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build();
    let mut r = agent.request(method, url);
    if let Some(k) = key {
        r = r.set("Authorization", &format!("Bearer {k}"));
    }
    for (h, v) in headers {
        r = r.set(h, v);
    }
    let resp = match body {
        Some(b) => r.send_bytes(b),
        None => r.call(),
    };
    let resp = match resp {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let hs = resp
        .headers_names()
        .into_iter()
        .map(|n| (n.clone(), resp.header(&n).unwrap_or("").to_string()))
        .collect();
    let text = resp.into_string().unwrap_or_default();
    (status, hs, text)
}

/// Run cgroups (run-PID-N) under any cgroup mount whose PID no longer exists.
pub fn orphan_cgroups() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::from("/sys/fs/cgroup")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix("run-") {
                let pid = rest.split('-').next().unwrap_or("");
                if !PathBuf::from(format!("/proc/{pid}")).exists() {
                    out.push(p);
                }
                continue;
            }
            // Do not descend into every system slice forever: our parents are shallow.
            if p.components().count() < 9 {
                stack.push(p);
            }
        }
    }
    out
}
