//! One function per subcommand, each short: the work happens in the library crates.

use crate::cli::{CgroupCmd, Cli, Command, ProfileCmd, RunArgs};
use anyhow::{anyhow, bail, Context, Result};
use ironcage_policy::{Loaded, Origin};
use ironcage_sandbox::{exit_code, probe, run, PlanError, Request};
use std::io::Write;

/// An error that carries the exit code `ironcage` should end with.
#[derive(Debug)]
pub struct Exit {
    pub code: i32,
    pub message: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

fn fail(code: i32, msg: impl std::fmt::Display) -> anyhow::Error {
    anyhow!(Exit {
        code,
        message: msg.to_string()
    })
}

pub fn dispatch(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Run(args) => run_cmd(args),
        Command::Doctor { json } => doctor(json),
        Command::Profile(p) => profile(p),
        Command::Cgroup(CgroupCmd::Delegate { user }) => delegate(&user),
    }
}

fn load(profile: Option<&str>, policy: Option<&std::path::Path>) -> Result<Loaded> {
    let loaded = match (profile, policy) {
        (_, Some(path)) => ironcage_policy::load_file(path),
        (Some(name), None) => ironcage_policy::find_profile(name),
        (None, None) => ironcage_policy::find_profile("ai-strict"),
    };
    loaded.map_err(|e| fail(exit_code::USAGE, e))
}

fn run_cmd(args: RunArgs) -> Result<i32> {
    let loaded = load(args.profile.as_deref(), args.policy.as_deref())?;
    let policy = &loaded.policy;
    let env = args
        .env
        .iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (e.clone(), None),
        })
        .collect();
    let req = Request {
        argv: args.command.clone(),
        env,
        best_effort: args.best_effort,
    };
    let facts = probe::host_facts();
    let plan = match ironcage_sandbox::make_plan(policy, &req, &facts) {
        Ok(p) => p,
        Err(e @ PlanError::Refused(_)) => return Err(fail(exit_code::DENIED, e)),
        Err(e) => return Err(fail(exit_code::SETUP_FAILED, e)),
    };
    if args.dry_run {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(0);
    }
    for u in &plan.unenforced {
        eprintln!(
            "ironcage: warning: NOT ENFORCED (--best-effort): {}: {}",
            u.mechanism, u.reason
        );
    }
    if !plan.floor_lifted.is_empty() {
        eprintln!("ironcage: WARNING: policy `{}` LIFTS THE SECCOMP FLOOR for: {} (syscalls.unsafe_lift_floor)", policy.name, plan.floor_lifted.join(", "));
    }
    // Open the audit log before running: a run that cannot be recorded does not happen.
    let audit_path = plan.audit_log.clone().or_else(|| {
        policy
            .audit
            .enabled
            .then(|| default_audit_log(facts.is_root))
    });
    let mut audit = match &audit_path {
        Some(path) => Some(ironcage_audit::Log::open(path).map_err(|e| {
            fail(
                exit_code::DENIED,
                format!("{e} (policy `{}` requires an audit record)", policy.name),
            )
        })?),
        None => None,
    };
    let parent = facts.cgroup.as_ref().ok();
    let ctx = run::Context {
        policy_name: &policy.name,
        cgroup_parent: parent,
        block_devices: &facts.block_devices,
        is_root: facts.is_root,
    };
    let report = run::run(&plan, &ctx).map_err(|e| {
        fail(
            exit_code::SETUP_FAILED,
            format!("sandbox setup failed: {e}"),
        )
    })?;
    if let Some(err) = &report.error {
        eprintln!("ironcage: {err}");
    }
    match report.outcome {
        ironcage_sandbox::report::Outcome::Timeout => eprintln!(
            "ironcage: killed: session timeout ({}s) reached",
            report.limits.timeout.limit.unwrap_or(0)
        ),
        ironcage_sandbox::report::Outcome::OutOfMemory => eprintln!(
            "ironcage: killed: out of memory (limit {} bytes)",
            report.limits.memory.limit.unwrap_or(0)
        ),
        _ => {}
    }
    if let Some(log) = audit.as_mut() {
        let event = ironcage_audit::Event {
            version: ironcage_audit::EVENT_VERSION,
            kind: ironcage_audit::KIND_RUN,
            time_unix_ms: report.started_at_unix_ms,
            host_uid: facts.uid,
            detail: &report,
        };
        log.append(&event)
            .map_err(|e| fail(exit_code::SETUP_FAILED, e))?;
    }
    if args.json || args.report.is_some() || args.report_fd.is_some() {
        let mut text = serde_json::to_string(&report)?;
        text.push('\n');
        if let Some(path) = &args.report {
            std::fs::write(path, &text)
                .with_context(|| format!("writing report to {}", path.display()))?;
        } else if let Some(fd) = args.report_fd {
            let mut f = inherited_fd(fd)?;
            f.write_all(text.as_bytes())
                .context("writing report to --report-fd")?;
        } else {
            std::io::stderr().write_all(text.as_bytes())?;
        }
    }
    Ok(report.ironcage_exit_code)
}

/// Opens `/proc/self/fd/N` for writing: uses an inherited descriptor without `unsafe`.
fn inherited_fd(fd: i32) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{fd}"))
        .with_context(|| format!("--report-fd {fd} is not an open descriptor"))
}

/// Where audit records go when a policy enables audit without naming a file.
fn default_audit_log(is_root: bool) -> std::path::PathBuf {
    if is_root {
        return "/var/log/ironcage/audit.log".into();
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/state"))
        })
        .unwrap_or_else(|| "/tmp".into());
    state.join("ironcage/audit.log")
}

fn doctor(json: bool) -> Result<i32> {
    let checks = probe::doctor();
    if json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for c in &checks {
            println!(
                "{:<4} {:<16} {}",
                if c.ok { "ok" } else { "MISS" },
                c.mechanism,
                c.detail
            );
        }
    }
    Ok(0)
}

fn profile(cmd: ProfileCmd) -> Result<i32> {
    match cmd {
        ProfileCmd::List => {
            for (name, origin) in ironcage_policy::list_profiles() {
                let desc = match &origin {
                    Origin::BuiltIn(_) => ironcage_policy::find_profile(&name)
                        .map(|l| l.policy.description)
                        .unwrap_or_default(),
                    Origin::File(p) => ironcage_policy::load_file(p)
                        .map(|l| l.policy.description)
                        .unwrap_or_else(|e| format!("INVALID: {e}")),
                };
                println!("{name:<16} {origin:<40} {desc}");
            }
            Ok(0)
        }
        ProfileCmd::Show { name } => {
            let path = std::path::Path::new(&name);
            let loaded = if name.contains('/') || path.is_file() {
                load(None, Some(path))?
            } else {
                load(Some(&name), None)?
            };
            if let Origin::BuiltIn(n) = loaded.origin {
                let text = ironcage_policy::BUILT_INS
                    .iter()
                    .find(|(b, _)| *b == n)
                    .map(|(_, t)| *t)
                    .unwrap_or_default();
                print!("{text}");
            } else if let Origin::File(p) = &loaded.origin {
                print!("# from {}\n{}", p.display(), std::fs::read_to_string(p)?);
            }
            Ok(0)
        }
        ProfileCmd::Validate { file } => {
            let loaded = load(None, Some(&file))?;
            println!("{}: valid policy `{}`", file.display(), loaded.policy.name);
            Ok(0)
        }
    }
}

fn delegate(user: &str) -> Result<i32> {
    let uid: u32 = match user.parse() {
        Ok(u) => u,
        Err(_) => {
            let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
            passwd
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.first() == Some(&user))
                        .then(|| f.get(2).and_then(|u| u.parse().ok()))
                        .flatten()
                })
                .ok_or_else(|| anyhow!("no such user `{user}`"))?
        }
    };
    let dirs = ironcage_sandbox::cgroup::delegate(uid).map_err(|e| anyhow!("{e}"))?;
    if dirs.is_empty() {
        bail!("no cgroup controllers found to delegate");
    }
    for d in dirs {
        println!("delegated {} to uid {uid}", d.display());
    }
    Ok(0)
}
