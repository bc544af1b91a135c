//! Test harness: runs the real `ironcage` binary as root and as an unprivileged user.
//!
//! Every sandbox test runs in both modes (`both_modes!`). The suite must run as root (CI
//! does); it drops to the test user with `setpriv` for the rootless mode. Nothing here
//! skips: a missing prerequisite is a failure with a message saying how to fix it.

#![allow(dead_code)]

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Root,
    User,
}

/// The unprivileged user for rootless runs: $IRONCAGE_TEST_USER or `ironcage-test`.
pub fn test_user() -> &'static (String, u32, u32) {
    static U: OnceLock<(String, u32, u32)> = OnceLock::new();
    U.get_or_init(|| {
        let name = std::env::var("IRONCAGE_TEST_USER").unwrap_or_else(|_| "ironcage-test".into());
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, &name]).output().expect("run id");
            assert!(out.status.success(), "test user `{name}` does not exist: create it with `useradd -m {name}` (scripts/test.sh does)");
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        (name.clone(), id("-u"), id("-g"))
    })
}

fn assert_root() {
    // /proc/self/status names our effective uid.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let euid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap();
    assert_eq!(euid, "0", "the sandbox test suite runs as root (it tests root mode and drops to a user for rootless mode); run scripts/test.sh");
}

/// A world-readable copy of the binary (the build dir may sit under /root, which the test
/// user cannot traverse), plus cgroup delegation for the test user.
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        assert_root();
        let dir = PathBuf::from(format!("/tmp/ironcage-test-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.join("ironcage");
        std::fs::copy(env!("CARGO_BIN_EXE_ironcage"), &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (name, _, _) = test_user();
        let out = Command::new(&bin)
            .args(["cgroup", "delegate", "--user", name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cgroup delegate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        bin
    })
}

/// A scratch directory on the host that both root and the test user can use.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new() -> Scratch {
        let path = tempfile::Builder::new()
            .prefix("ironcage-test-")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        Scratch { path }
    }

    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path.join(name);
        std::fs::write(&p, contents).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Result of one `ironcage run`.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub report: Value,
}

impl Run {
    /// Syscall violations in the report, by name -> count.
    pub fn denied(&self, name: &str) -> u64 {
        self.report["violations"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter(|x| x["syscall"] == name)
                    .map(|x| x["count"].as_u64().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0)
    }

    pub fn show(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}\n--- report\n{:#}",
            self.code, self.stdout, self.stderr, self.report
        )
    }
}

/// Builds the command line that runs `ironcage ARGS` as root or as the test user.
pub fn ironcage(mode: Mode) -> Command {
    as_mode(mode, binary())
}

/// `program` as root, or as the test user (no groups, no inheritable capabilities, a clean
/// environment), in /tmp.
pub fn as_mode(mode: Mode, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = match mode {
        Mode::Root => Command::new(program),
        Mode::User => {
            let (_, uid, gid) = test_user();
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
                "--clear-groups",
                "--inh-caps=-all",
                "--reset-env",
            ]);
            c.arg(program);
            c
        }
    };
    c.current_dir("/tmp");
    c
}

/// `bash` as root, or as the test user with a clean environment (for tests that need a
/// shell around ironcage, e.g. to hand it extra descriptors).
pub fn bash_as(mode: Mode) -> Command {
    as_mode(mode, "bash")
}

/// Spawns `c` with `stdin` fed to it (or /dev/null), returns (exit code, stdout, stderr).
pub fn spawn(mut c: Command, stdin: Option<&str>) -> (i32, String, String) {
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Runs `ironcage run ARGS --report FILE -- CMD` and parses its report.
pub fn run_with_report(
    mode: Mode,
    args: &[&std::ffi::OsStr],
    cmd: &[&str],
    stdin: Option<&str>,
) -> Run {
    let s = Scratch::new();
    let report = s.path.join("report.json");
    let mut c = ironcage(mode);
    c.arg("run")
        .args(args)
        .arg("--report")
        .arg(&report)
        .arg("--")
        .args(cmd);
    let (code, stdout, stderr) = spawn(c, stdin);
    let report = std::fs::read_to_string(&report)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    Run {
        code,
        stdout,
        stderr,
        report,
    }
}

/// Runs `ironcage run --policy POLICY [extra] -- CMD` and parses its report.
pub fn cage_with(
    mode: Mode,
    policy: &Path,
    extra: &[&str],
    cmd: &[&str],
    stdin: Option<&str>,
) -> Run {
    let mut args: Vec<&std::ffi::OsStr> = vec!["--policy".as_ref(), policy.as_os_str()];
    args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
    run_with_report(mode, &args, cmd, stdin)
}

pub fn cage(mode: Mode, policy: &Path, cmd: &[&str]) -> Run {
    cage_with(mode, policy, &[], cmd, None)
}

/// Runs python3 code in the sandbox (Debian's interpreter, not a pyenv shim).
pub fn py(mode: Mode, policy: &Path, code: &str) -> Run {
    cage(mode, policy, &["/usr/bin/python3", "-c", code])
}

/// A policy file based on ai-strict, with sections replaced. `sections` are top-level YAML
/// blocks (e.g. "resources:\n  pids_limit: 16\n") that override the defaults below.
pub fn policy(dir: &Scratch, sections: &[&str]) -> PathBuf {
    let mut doc: Vec<(String, String)> = vec![
        ("name".into(), "name: test\n".into()),
        ("filesystem".into(), "filesystem:\n  immutable_paths:\n    - { host_path: /usr, sandbox_path: /usr }\n    - { host_path: /bin, sandbox_path: /bin }\n    - { host_path: /lib, sandbox_path: /lib }\n    - { host_path: /lib64, sandbox_path: /lib64, optional: true }\n    - { host_path: /etc/alternatives, sandbox_path: /etc/alternatives, optional: true }\n  scratch_paths: [/tmp]\n  working_dir: /tmp\n".into()),
        ("syscalls".into(), format!("syscalls:\n  default_deny: true\n  allow: [{}]\n", strict_allow())),
        ("resources".into(), "resources:\n  memory_limit_bytes: 512M\n  pids_limit: 64\n  session_timeout_seconds: 60\n".into()),
        ("network".into(), "network:\n  isolated: true\n".into()),
    ];
    for s in sections {
        let key = s.split(':').next().unwrap().trim().to_string();
        match doc.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = s.to_string(),
            None => doc.push((key, s.to_string())),
        }
    }
    let text: String = doc
        .into_iter()
        .map(|(_, v)| if v.ends_with('\n') { v } else { v + "\n" })
        .collect();
    dir.file(&format!("policy-{}.yaml", unique()), &text)
}

pub fn unique() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The allow list of the built-in ai-strict profile, so test policies behave like it.
pub fn strict_allow() -> String {
    let text = include_str!("../../../policy/profiles/ai-strict.yaml");
    let start = text
        .find("  allow: [")
        .expect("ai-strict has an allow list")
        + "  allow: [".len();
    let end = start + text[start..].find(']').unwrap();
    text[start..end]
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .trim_end_matches(',')
        .to_string()
}

/// Both modes for one test body: generates `NAME::as_root` and `NAME::as_user`.
#[macro_export]
macro_rules! both_modes {
    ($(#[$m:meta])* fn $name:ident($mode:ident: Mode) $body:block) => {
        mod $name {
            use super::*;
            fn body($mode: Mode) $body
            $(#[$m])*
            #[test]
            fn as_root() { body(Mode::Root) }
            $(#[$m])*
            #[test]
            fn as_user() { body(Mode::User) }
        }
    };
}

/// Host processes whose command line contains `marker` (to prove nothing survived).
pub fn host_processes_with(marker: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .chars()
            .all(|c| c.is_ascii_digit())
        {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(marker) && !cmd.contains("ironcage") && !cmd.contains("setpriv") {
                out.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
            }
        }
    }
    out
}

/// The "real" provider key of the LLM tests: the fake upstream accepts nothing else.
pub const REAL_KEY: &str = "sk-real-upstream-key-7f3a9c1e5b2d4f6a8c0e";

/// A running fake provider; killed on drop.
pub struct Fake {
    child: std::process::Child,
    pub port: u16,
}

impl Fake {
    /// A fake provider that accepts any key (or none).
    pub fn start_keyless() -> Fake {
        Fake::launch(&[])
    }

    pub fn start(require_key: &str) -> Fake {
        Fake::launch(&["--require-key", require_key])
    }

    fn launch(extra: &[&str]) -> Fake {
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_ironcage"))
            .parent()
            .unwrap()
            .join("fakellm");
        assert!(
            bin.exists(),
            "{} missing: build the workspace (cargo test --workspace builds it)",
            bin.display()
        );
        let mut child = std::process::Command::new(&bin)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        use std::io::BufRead as _;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("fakellm said {line:?}: {e}"));
        let port = v["listen"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        Fake { child, port }
    }

    pub fn requests(&self) -> Vec<Value> {
        let v: Value = ureq::get(&format!("http://127.0.0.1:{}/_fake/requests", self.port))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        v.as_array().unwrap().clone()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
