//! The LLM gateway and the egress proxy as `ironcage run` hosts them, driven from inside
//! the sandbox by the official `openai` and `anthropic` Python SDKs (installed by
//! scripts/test.sh in /opt/ironcage-test/py) against `fakellm`, a local fake provider that
//! speaks the real wire formats. Runs as root and as the unprivileged test user.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const SDK_DIR: &str = "/opt/ironcage-test/py";
/// Master key of the test secret store (64 hex digits).
const MASTER: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn sdk_installed() {
    assert!(
        Path::new(SDK_DIR).join("openai").is_dir() && Path::new(SDK_DIR).join("anthropic").is_dir(),
        "the official openai/anthropic SDKs are not installed in {SDK_DIR}: run scripts/test.sh (it installs them)"
    );
}

/// Everything one governed run needs: a scratch dir with the agent scripts, a secret store
/// holding the real key for both providers, an audit log, and a policy.
struct Setup {
    s: Scratch,
    mode: Mode,
    fake: Fake,
    policy: PathBuf,
    audit: PathBuf,
}

fn env_args(s: &Scratch) -> Vec<String> {
    vec![
        format!("IRONCAGE_SECRETS={}", s.path.join("secrets.json").display()),
        format!("IRONCAGE_MASTER_KEY={MASTER}"),
        format!("IRONCAGE_LLM_CONFIG={}", s.path.join("llm.yaml").display()),
    ]
}

/// `ironcage ARGS` in `mode` with the test's secret store and settings.
fn ironcage_env(mode: Mode, s: &Scratch) -> Command {
    let mut c = as_mode(mode, "/usr/bin/env");
    c.args(env_args(s)).arg(binary());
    c
}

impl Setup {
    fn new(mode: Mode, llm_section: &str, extra_sections: &[&str]) -> Setup {
        sdk_installed();
        let s = Scratch::new();
        for name in [
            "sdk_agent.py",
            "budget_agent.py",
            "stream_agent.py",
            "pii_agent.py",
            "abuse_agent.py",
        ] {
            let text = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/gateway")
                    .join(name),
            )
            .unwrap();
            s.file(name, &text);
        }
        let audit = s.path.join("audit.log");
        let mut sections = vec![
            llm_section.to_string(),
            format!("audit:\n  enabled: true\n  log_path: {}\n", audit.display()),
        ];
        sections.extend(extra_sections.iter().map(|x| x.to_string()));
        let refs: Vec<&str> = sections.iter().map(String::as_str).collect();
        let policy = policy(&s, &refs);
        let fake = Fake::start(REAL_KEY);
        // The real key goes into the encrypted store, from an environment variable.
        for provider in ["openai", "anthropic"] {
            let mut c = ironcage_env(mode, &s);
            c.args(["secret", "set", provider, "--from-env", "REAL_KEY_VAR"]);
            c.env("REAL_KEY_VAR", REAL_KEY);
            if mode == Mode::User {
                // setpriv --reset-env drops it: hand it over through env(1) instead.
                let mut w = as_mode(mode, "/usr/bin/env");
                w.args(env_args(&s))
                    .arg(format!("REAL_KEY_VAR={REAL_KEY}"))
                    .arg(binary())
                    .args(["secret", "set", provider, "--from-env", "REAL_KEY_VAR"]);
                c = w;
            }
            let (code, out, err) = spawn(c, None);
            assert_eq!(code, 0, "secret set: {out}{err}");
            assert!(
                !out.contains(REAL_KEY) && !err.contains(REAL_KEY),
                "secret set printed the key"
            );
        }
        let store = std::fs::read(s.path.join("secrets.json")).unwrap();
        assert!(
            !String::from_utf8_lossy(&store).contains(REAL_KEY),
            "the store holds the key in clear"
        );
        Setup {
            s,
            mode,
            fake,
            policy,
            audit,
        }
    }

    fn settings(&self, yaml: &str) {
        self.s.file("llm.yaml", yaml);
    }

    /// Runs `python3 /agent/SCRIPT ARGS` in the sandbox; returns the run and the agent's
    /// JSON line.
    fn agent(&self, script: &str, args: &[&str], extra: &[&str]) -> (Run, Value) {
        let report = self.s.path.join(format!("report-{}.json", unique()));
        let mut c = ironcage_env(self.mode, &self.s);
        let fake = format!("http://127.0.0.1:{}", self.fake.port);
        c.arg("run")
            .arg("--policy")
            .arg(&self.policy)
            .args(["--llm-upstream", &format!("openai={fake}/v1")])
            .args(["--llm-upstream", &format!("anthropic={fake}")])
            .args(["--ro", SDK_DIR])
            .arg("--ro")
            .arg(format!("{}:/agent", self.s.path.display()))
            .args(["--env", &format!("PYTHONPATH={SDK_DIR}")])
            .args(extra)
            .arg("--report")
            .arg(&report)
            .args(["--", "/usr/bin/python3", &format!("/agent/{script}")])
            .args(args);
        let (code, stdout, stderr) = spawn(c, None);
        let report = std::fs::read_to_string(&report)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        let run = Run {
            code,
            stdout,
            stderr,
            report,
        };
        let line = run.stdout.lines().last().unwrap_or("").to_string();
        let v = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("agent output is not JSON ({e}):\n{}", run.show()));
        (run, v)
    }

    /// The run's audit entries of one type.
    fn audit(&self, kind: &str) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["type"] == kind)
            .collect()
    }
}

/// Cost in picodollars of `usage` for the test models (crates/guard/prices.yaml, per 1M
/// tokens: fake-gpt 1.00 in, 0.50 cached, 2.00 out; fake-claude 3.00 in, 15.00 out;
/// fake-embedding 0.02 in).
fn expected_picos(model: &str, u: &Value) -> i64 {
    let n = |k: &str| u[k].as_i64().unwrap_or(0);
    let (input, cached, output) = match model {
        "fake-gpt" => (1_000_000, 500_000, 2_000_000),
        "fake-embedding" => (20_000, 20_000, 0),
        "fake-claude" => (3_000_000, 3_000_000, 15_000_000),
        other => panic!("unexpected model {other}"),
    };
    (n("input_tokens") - n("cached_input_tokens")) * input
        + n("cached_input_tokens") * cached
        + n("output_tokens") * output
}

fn picos(decimal: &str) -> i64 {
    let (i, f) = decimal.split_once('.').unwrap_or((decimal, ""));
    let f = format!("{f:0<12}");
    i.parse::<i64>().unwrap() * 1_000_000_000_000 + f.parse::<i64>().unwrap()
}

both_modes! {
    fn official_sdks_work_and_never_see_the_key(mode: Mode) {
        let t = Setup::new(mode, "llm:\n  enabled: true\n", &[]);
        // The agent is told the key in hex, so its own command line does not hold it.
        let hex: String = REAL_KEY.bytes().map(|b| format!("{b:02x}")).collect();
        let (run, out) = t.agent("sdk_agent.py", &[&hex], &[]);
        assert_eq!(run.code, 0, "{}", run.show());
        assert_eq!(out["chat"]["text"], "echo: say hello to the gateway", "{out}");
        assert_eq!(out["chat_stream"]["text"], "echo: stream five words please");
        assert_eq!(out["chat_stream"]["usage_chunks"], 0, "usage asked for on the client's behalf leaked: {out}");
        assert_eq!(out["chat_stream"]["usage_fields"], 0, "{out}");
        assert_eq!(out["chat_stream_usage"].as_array().unwrap().len(), 1, "a client that asks gets its usage chunk: {out}");
        assert_eq!(out["responses"]["text"], "echo: responses api works");
        assert_eq!(out["responses_stream"][0], "response.created");
        assert_eq!(out["responses_stream"][1], "response.completed");
        assert_eq!(out["embeddings"][0], 2);
        assert!(out["models"].as_array().unwrap().iter().any(|m| m == "fake-gpt"), "{out}");
        assert_eq!(out["messages"]["text"], "echo: hello claude");
        assert_eq!(out["messages_stream"]["text"], "echo: stream claude words");
        assert!(out["count_tokens"].as_u64().unwrap() > 0);
        assert_eq!(out["key_found"], serde_json::json!([]), "the real key is visible in the sandbox");
        assert_eq!(out["virtual_key_prefix"], "icv_");
        assert_eq!(out["same_virtual_key"], true);

        // Upstream saw the real key, never the virtual one, and only allow-listed headers.
        let reqs = t.fake.requests();
        assert_eq!(reqs.len(), 10, "{reqs:?}");
        for r in &reqs {
            let h = &r["headers"];
            let auth = h["authorization"].as_str().unwrap_or("");
            let xkey = h["x-api-key"].as_str().unwrap_or("");
            assert!(auth == format!("Bearer {REAL_KEY}") || xkey == REAL_KEY, "{r}");
            assert!(!r.to_string().contains("icv_"), "virtual key reached the provider: {r}");
        }

        // Every request is on record with its cost, computed from the provider's usage
        // and the price table, and the records add up to what the report says was spent.
        let entries = t.audit("llm.request");
        assert_eq!(entries.len(), 10, "{entries:?}");
        let mut total = 0;
        for e in &entries {
            let f = &e["fields"];
            assert!(matches!(f["decision"].as_str(), Some("forwarded")), "{f}");
            let cost = picos(f["cost_usd"].as_str().unwrap());
            let endpoint = f["endpoint"].as_str().unwrap();
            if endpoint == "models" || endpoint == "count_tokens" {
                assert_eq!(cost, 0, "{f}");
                continue;
            }
            let want = expected_picos(f["model"].as_str().unwrap(), &f["usage"]);
            assert_eq!(cost, want, "{f}");
            total += cost;
        }
        let chat = entries.iter().find(|e| e["fields"]["endpoint"] == "chat_completions" && e["fields"]["stream"] == false).unwrap();
        assert_eq!(chat["fields"]["usage"]["input_tokens"], out["chat"]["usage"][0]);
        assert_eq!(chat["fields"]["usage"]["output_tokens"], out["chat"]["usage"][1]);
        // The stream whose client did not ask for usage was still metered.
        let stream = entries.iter().find(|e| e["fields"]["stream"] == true && e["fields"]["endpoint"] == "chat_completions").unwrap();
        assert!(stream["fields"]["usage"]["output_tokens"].as_u64().unwrap() > 0, "{stream}");
        let llm = &run.report["llm"];
        assert_eq!(picos(llm["spent_usd"].as_str().unwrap()), total, "{llm}");
        assert_eq!(llm["budget_is_default"], true);
        assert_eq!(picos(llm["budget_usd"].as_str().unwrap()), 1_000_000_000_000);
        assert!(run.stderr.contains("budget (the default"), "run does not say the budget is the default: {}", run.stderr);
        let log = std::fs::read_to_string(&t.audit).unwrap();
        assert!(!log.contains(REAL_KEY), "the audit log holds the real key");
    }
}

both_modes! {
    fn budget_holds_under_fifty_concurrent_requests(mode: Mode) {
        let t = Setup::new(mode, "llm:\n  enabled: true\n", &[]);
        let (run, out) = t.agent("budget_agent.py", &[], &["--budget-usd", "0.022"]);
        assert_eq!(run.code, 0, "{}", run.show());
        assert_eq!(out["ok"], 10, "{out}\n{}", run.show());
        assert_eq!(out["refused"], 40, "{out}");
        assert_eq!(out["other"], serde_json::json!([]));
        let llm = &run.report["llm"];
        let spent = picos(llm["spent_usd"].as_str().unwrap());
        assert!(spent <= picos("0.022"), "spent {spent} over the budget: {llm}");
        // Each success billed 100 input + 1000 output tokens of fake-gpt.
        assert_eq!(spent, 10 * (100 * 1_000_000 + 1000 * 2_000_000), "{llm}");
        // Refusals said x-should-retry: false and the SDK did not retry (it would have
        // asked three times each).
        assert_eq!(llm["decisions"]["over_budget"], 40, "{llm}");
        let chats = t.fake.requests().iter().filter(|r| r["path"] == "/v1/chat/completions").count();
        assert_eq!(chats, 10, "only reserved requests reach the provider");
        assert_eq!(t.audit("llm.request").iter().filter(|e| e["fields"]["decision"] == "over_budget").count(), 40);
        assert!(run.stderr.contains("40 refused or stopped at the budget"), "{}", run.stderr);
    }
}

both_modes! {
    fn streams_stop_at_the_budget_and_abandoned_streams_are_billed(mode: Mode) {
        let t = Setup::new(mode, "llm:\n  enabled: true\n", &[]);
        let (run, out) = t.agent("stream_agent.py", &["cross"], &["--budget-usd", "0.01"]);
        assert_eq!(run.code, 0, "{}", run.show());
        let err = out["error"].as_str().unwrap_or_else(|| panic!("the stream crossed its budget without an error: {out}"));
        assert!(err.contains("budget"), "{err}");
        let n = out["chunks"].as_u64().unwrap();
        assert!(n > 1000 && n < 8000, "{out}");
        let spent = picos(run.report["llm"]["spent_usd"].as_str().unwrap());
        assert!(spent <= picos("0.01"), "spent {spent}");
        let e = t.audit("llm.request");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0]["fields"]["decision"], "stopped_over_budget", "{}", e[0]);

        let (run, out) = t.agent("stream_agent.py", &["leave"], &[]);
        assert_eq!(run.code, 0, "{}", run.show());
        assert_eq!(out["read"], 3);
        let e = t.audit("llm.request");
        let last = &e.last().unwrap()["fields"];
        assert_eq!(last["client_disconnected"], true, "{last}");
        // The gateway kept reading after the client left: all 200 words billed.
        assert_eq!(last["usage"]["output_tokens"], 200, "{last}");
        assert_eq!(picos(last["cost_usd"].as_str().unwrap()), expected_picos("fake-gpt", &last["usage"]));

        // A stream still running when the agent ends (40 s left) is cut off after the
        // drain time, billed at its reservation (no usage came), and on record.
        let (run, out) = t.agent("stream_agent.py", &["abandon"], &[]);
        assert_eq!(run.code, 0, "{}", run.show());
        assert_eq!(out["read"], 3);
        let e = t.audit("llm.request");
        let cut = &e.last().unwrap()["fields"];
        assert!(cut["reason"].as_str().unwrap_or("").contains("cut off"), "{cut}");
        let reserved = 4096 * 2_000_000 + 200 * 1_000_000;
        let cost = picos(cut["cost_usd"].as_str().unwrap());
        assert!(cost >= 4096 * 2_000_000 && cost <= reserved, "{cut}");
        assert_eq!(picos(run.report["llm"]["spent_usd"].as_str().unwrap()), cost);
    }
}

both_modes! {
    fn personal_data_is_redacted_or_blocked_and_recorded_by_kind_only(mode: Mode) {
        let t = Setup::new(mode, "llm:\n  enabled: true\n  pii:\n    credit_card: block\n    email: redact\n", &[]);
        let (run, out) = t.agent("pii_agent.py", &[], &[]);
        assert_eq!(run.code, 0, "{}", run.show());
        assert_eq!(out["card"], serde_json::json!([400, "pii_blocked", "false"]), "{out}");
        assert_eq!(out["email_echo"], "echo: write to [REDACTED:email] today");
        assert_eq!(out["unpriced"], "model_not_priced");
        assert_eq!(out["wrong_key"], 401);
        let sent = serde_json::to_string(&t.fake.requests()).unwrap();
        for secret in ["4111", "alice.smith@example.org", "AKIAQWERTYUIOPASDFGH", "219-09-9999"] {
            assert!(!sent.contains(secret), "{secret} reached the provider: {sent}");
        }
        let log = std::fs::read_to_string(&t.audit).unwrap();
        for secret in ["4111 1111", "alice.smith", "AKIAQWERTYUIOPASDFGH", "219-09-9999"] {
            assert!(!log.contains(secret), "{secret} is in the audit log");
        }
        let e = t.audit("llm.request");
        let blocked = e.iter().find(|e| e["fields"]["decision"] == "blocked").unwrap();
        assert_eq!(blocked["fields"]["pii_blocked"], serde_json::json!(["credit_card"]));
        let anth = e.iter().find(|e| e["fields"]["provider"] == "anthropic").unwrap();
        assert_eq!(anth["fields"]["pii_redacted"]["api_key"], 1, "{anth}");
        assert_eq!(anth["fields"]["pii_redacted"]["us_ssn"], 1, "{anth}");
        assert!(e.iter().any(|e| e["fields"]["decision"] == "unauthorized"));
    }
}

both_modes! {
    fn failing_upstream_opens_the_breaker(mode: Mode) {
        let t = Setup::new(mode, "llm:\n  enabled: true\n", &[]);
        t.settings("breaker:\n  min_requests: 3\n  failure_percent: 50\n  cooldown_seconds: 300\n");
        let code = "import json, openai\nc = openai.OpenAI(max_retries=0)\nout = []\nfor i in range(5):\n    try:\n        c.chat.completions.create(model='fake-gpt', messages=[{'role':'user','content':'[[fake:error=500]] x'}])\n        out.append(200)\n    except openai.APIStatusError as e:\n        out.append([e.status_code, e.code if hasattr(e, 'code') else None])\nprint(json.dumps(out))\n";
        t.s.file("breaker.py", code);
        let (run, out) = t.agent("breaker.py", &[], &[]);
        assert_eq!(run.code, 0, "{}", run.show());
        let statuses: Vec<u64> = out.as_array().unwrap().iter().map(|v| v[0].as_u64().unwrap_or(0)).collect();
        assert_eq!(statuses, vec![500, 500, 500, 503, 503], "{out}");
        assert_eq!(out[3][1], "circuit_open");
        let b = t.audit("llm.breaker");
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!(b[0]["fields"]["to"], "open");
        let reqs = t.fake.requests();
        assert_eq!(reqs.len(), 3, "an open breaker must not reach the upstream");
    }
}

/// A host-side web server for the egress tests.
fn web_server() -> (Child, u16) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = Command::new("/usr/bin/python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
            "/usr/share/doc",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (child, port)
}

both_modes! {
    fn egress_proxy_lets_only_listed_domains_through(mode: Mode) {
        let (mut web, port) = web_server();
        let t = Setup::new(
            mode,
            "llm:\n  enabled: false\n",
            &[&format!("network:\n  mode: proxy\n  allow_domains: [localhost, \"*.example.com\"]\n  deny_domains: [blocked.example.com]\n  allow_outgoing: [{port}]\n")],
        );
        let script = format!(
            "for u in http://localhost:{port}/ http://example.org:{port}/ http://blocked.example.com:{port}/; do curl -sS -o /dev/null -w '%{{http_code}}\\n' $u; done; \
             curl -sS -m 5 -o /dev/null -w '%{{http_code}}\\n' --noproxy '*' http://127.0.0.1:{port}/ 2>/dev/null || echo direct-failed; \
             /usr/bin/python3 -c 'import socket; s=socket.socket(); s.settimeout(3); s.connect((\"1.1.1.1\", 80))' 2>/dev/null || echo socket-failed\n"
        );
        t.s.file("egress.sh", &script);
        let report = t.s.path.join("egress-report.json");
        let mut c = ironcage_env(mode, &t.s);
        c.arg("run").arg("--policy").arg(&t.policy).arg("--ro").arg(format!("{}:/agent", t.s.path.display()))
            .arg("--report").arg(&report).args(["--", "/bin/sh", "/agent/egress.sh"]);
        let (code, stdout, stderr) = spawn(c, None);
        let _ = web.kill();
        let _ = web.wait();
        assert_eq!(code, 0, "{stdout}{stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines, ["200", "403", "403", "000", "direct-failed", "socket-failed"], "{stdout}\n{stderr}");
        let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        let v = report["violations"].as_array().unwrap();
        for host in ["example.org", "blocked.example.com"] {
            assert!(v.iter().any(|x| x["syscall"] == "proxy" && x["address"] == host), "{host} not reported: {v:?}");
        }
        assert!(v.iter().any(|x| x["syscall"] == "connect" && x["address"] == "1.1.1.1"), "{v:?}");
        let denied = t.audit("egress.denied");
        assert_eq!(denied.len(), 2, "{denied:?}");
        assert!(t.audit("egress.allowed").iter().any(|e| e["fields"]["host"] == "localhost"));
    }
}

both_modes! {
    fn provider_keys_cannot_be_handed_to_the_sandbox(mode: Mode) {
        let t = Setup::new(mode, "llm:\n  enabled: true\n", &[]);
        // The master key in the sandbox's environment would decrypt the store.
        let (code, out, err) = spawn(
            {
                let mut c = ironcage_env(mode, &t.s);
                c.args(["run", "--policy"]).arg(&t.policy)
                    .args(["--env", &format!("IRONCAGE_MASTER_KEY={MASTER}"), "--", "/bin/true"]);
                c
            },
            None,
        );
        assert_eq!(code, 120, "{out}{err}");
        assert!(err.contains("IRONCAGE_MASTER_KEY would be passed into the sandbox"), "{err}");
        // Rootless, the sandbox runs as the key file's owner: a bind containing it is refused.
        let keyfile = t.s.path.join("keys/master.key");
        let mut c = as_mode(mode, "/usr/bin/env");
        c.arg(format!("IRONCAGE_SECRETS={}", t.s.path.join("keys/secrets.json").display()))
            .arg(format!("IRONCAGE_MASTER_KEY_FILE={}", keyfile.display()))
            .arg(format!("V={REAL_KEY}"))
            .arg(binary())
            .args(["secret", "set", "openai", "--from-env", "V"]);
        let (code, out, err) = spawn(c, None);
        assert_eq!(code, 0, "{out}{err}");
        let mut c = as_mode(mode, "/usr/bin/env");
        c.arg(format!("IRONCAGE_SECRETS={}", t.s.path.join("keys/secrets.json").display()))
            .arg(format!("IRONCAGE_MASTER_KEY_FILE={}", keyfile.display()))
            .arg(binary())
            .args(["run", "--policy"]).arg(&t.policy)
            .arg("--ro").arg(format!("{}:/data", t.s.path.display()))
            .args(["--", "/bin/cat", "/data/keys/master.key"]);
        let (code, out, err) = spawn(c, None);
        match mode {
            Mode::User => {
                assert_eq!(code, 120, "{out}{err}");
                assert!(err.contains("contains the secret store's master key"), "{err}");
            }
            // Root's sandbox runs as nobody: the 0600 key file is unreadable in it.
            Mode::Root => {
                assert_ne!(code, 0, "{out}{err}");
                assert!(out.is_empty() && err.contains("Permission denied"), "{out}{err}");
            }
        }
    }
}

both_modes! {
    fn hostile_agents_cannot_dodge_the_meter_or_the_scanner(mode: Mode) {
        let t = Setup::new(mode, "llm:\n  enabled: true\n", &[]);
        let (run, out) = t.agent("abuse_agent.py", &[], &[]);
        assert_eq!(run.code, 0, "{}", run.show());
        for k in ["background", "previous_response", "server_tool", "image_url", "count_tokens_url"] {
            assert_eq!(out[k], 400, "{k}: {out}");
        }
        assert_eq!(out["stream_options_null"], serde_json::json!([200, true, false]), "{out}");
        assert_eq!(out["duplicate_keys"], 200);
        assert_eq!(out["zero_width"], "echo: write to [REDACTED:email]", "{out}");
        assert!(out["fullwidth_card"].as_str().unwrap().contains("[REDACTED:credit_card]"), "{out}");
        assert_eq!(out["in_key"], 400, "{out}");
        assert_eq!(out["after_flood"], 200, "{out}");
        let sent = serde_json::to_string(&t.fake.requests()).unwrap();
        for leak in ["eve@example.com", "bob\\u200b@", "4111-1111", "attacker.example"] {
            assert!(!sent.contains(leak), "{leak} reached the provider");
        }
        let e = t.audit("llm.request");
        // The client that hung up was billed for what the provider did (100 + 2000 tokens).
        let gone = e.iter().find(|e| e["fields"]["usage"]["output_tokens"] == 2000).unwrap_or_else(|| panic!("the abandoned request is not on record: {e:?}"));
        assert_eq!(picos(gone["fields"]["cost_usd"].as_str().unwrap()), 100 * 1_000_000 + 2000 * 2_000_000);
        // The stream whose client sent stream_options: null was billed from its usage.
        assert!(e.iter().any(|e| e["fields"]["usage"]["input_tokens"] == 5000), "{e:?}");
        let spent = picos(run.report["llm"]["spent_usd"].as_str().unwrap());
        let recorded: i64 = e.iter().map(|e| picos(e["fields"]["cost_usd"].as_str().unwrap())).sum();
        assert_eq!(spent, recorded);
    }
}
