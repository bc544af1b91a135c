//! Drives `fakellm` with the official, unmodified `openai` and `anthropic` Python SDKs
//! (installed by scripts/test.sh into /opt/ironcage-test/py). Each test runs one check from
//! tests/py/checks.py against its own fakellm, started with `--require-key` so every check
//! also proves the SDKs' keys arrive. Missing SDKs fail the tests; they never skip.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use common::Fake;

const PYTHON: &str = "/usr/bin/python3";
const SDK_DIR: &str = "/opt/ironcage-test/py";
const KEY: &str = "sk-fake-test-key-0123456789";

fn checks_py() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/checks.py")
}

fn python() -> Command {
    let mut cmd = Command::new(PYTHON);
    cmd.arg("-B")
        .env("PYTHONPATH", SDK_DIR)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

/// Fails (once, with the fix) when the SDKs cannot be imported.
fn require_sdks() {
    static FOUND: OnceLock<Result<String, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let out = python()
            .args([
                "-c",
                "import openai, anthropic; print(openai.__version__, anthropic.__version__)",
            ])
            .output()
            .map_err(|e| format!("could not run {PYTHON}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    if let Err(why) = found {
        panic!(
            "the official openai/anthropic Python SDKs are not importable from {SDK_DIR}.\n\
             Hint: run scripts/test.sh (as root) once; it installs them there.\n{why}"
        );
    }
}

fn run_check(name: &str) {
    require_sdks();
    let fake = Fake::start(&["--require-key", KEY]);
    let out = python()
        .arg(checks_py())
        .arg(name)
        .env("FAKE_URL", fake.url())
        .env("FAKE_KEY", KEY)
        .output()
        .expect("run checks.py");
    assert!(
        out.status.success(),
        "check {name} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every check in checks.py, each run by one test below.
const CHECKS: &[&str] = &[
    "anthropic_basic",
    "anthropic_cached_and_usage",
    "anthropic_count_tokens",
    "anthropic_cut",
    "anthropic_errors",
    "anthropic_stream",
    "anthropic_stream_error",
    "chat_basic",
    "chat_delay",
    "chat_directives_usage_cached_chunks",
    "chat_n_and_max_tokens",
    "chat_stream_include_usage",
    "chat_stream_n",
    "chat_stream_without_usage",
    "chat_text_parts",
    "embeddings",
    "models",
    "openai_cut",
    "openai_errors",
    "openai_stream_error",
    "request_log",
    "require_key",
    "responses_basic",
    "responses_stream",
    "responses_stream_error_and_incomplete",
];

#[test]
fn every_python_check_has_a_test() {
    require_sdks();
    let out = python()
        .arg(checks_py())
        .arg("--list")
        .env("FAKE_URL", "http://unused")
        .env("FAKE_KEY", "unused")
        .output()
        .expect("list checks");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        listed, CHECKS,
        "tests/sdk.rs CHECKS must list every check in checks.py"
    );
}

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_check(stringify!($name));
            }
        )*
    };
}

checks!(
    anthropic_basic,
    anthropic_cached_and_usage,
    anthropic_count_tokens,
    anthropic_cut,
    anthropic_errors,
    anthropic_stream,
    anthropic_stream_error,
    chat_basic,
    chat_delay,
    chat_directives_usage_cached_chunks,
    chat_n_and_max_tokens,
    chat_stream_include_usage,
    chat_stream_n,
    chat_stream_without_usage,
    chat_text_parts,
    embeddings,
    models,
    openai_cut,
    openai_errors,
    openai_stream_error,
    request_log,
    require_key,
    responses_basic,
    responses_stream,
    responses_stream_error_and_incomplete,
);
