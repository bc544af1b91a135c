//! One function per subcommand, each short: the work happens in the library crates.

use crate::cli::{CgroupCmd, Cli, Command, ProfileCmd, RunArgs};
use anyhow::{anyhow, bail, Context, Result};
use ironcage_audit::run_events;
use ironcage_policy::{Loaded, Origin};
use ironcage_sandbox::plan::MountStep;
use ironcage_sandbox::{exit_code, probe, run, PlanError, Request};
use std::io::Write;

/// Writes a line to stderr, ignoring failure: the sandbox shares our stderr and may have
/// made it non-blocking or full, and a diagnostic must never abort the supervisor.
/// Writes a line to stdout; a closed pipe (`ironcage profile list | head -1`) is not an error.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub(crate) use {out, say};

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

pub fn fail(code: i32, msg: impl std::fmt::Display) -> anyhow::Error {
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
        Command::Audit(args) => crate::audit_cmd::run(args),
        Command::SandboxZygote { node } => Ok(ironcage_server::host::zygote_main(&node)),
        Command::Serve(args) => crate::serve_cmd::serve(args),
        Command::Key(cmd) => crate::serve_cmd::key(cmd),
        Command::Secret(cmd) => crate::llm_cmd::secret(cmd),
        Command::Gateway(args) => crate::llm_cmd::gateway(args),
    }
}

/// A policy by profile name or file (for commands other than `run`).
pub fn load_policy(
    profile: Option<&str>,
    policy: Option<&std::path::Path>,
) -> Result<ironcage_policy::Policy> {
    Ok(load(profile, policy)?.policy)
}

fn load(profile: Option<&str>, policy: Option<&std::path::Path>) -> Result<Loaded> {
    let loaded = match (profile, policy) {
        (_, Some(path)) => ironcage_policy::load_file(path),
        (Some(name), None) => ironcage_policy::find_profile(name).inspect(|l| {
            // A name that resolved to a file (./policies/ may come with a cloned repository):
            // say which file, so nobody runs under a policy they did not expect.
            if let Origin::File(path) = &l.origin {
                say!("ironcage: profile `{name}` is {}", path.display());
            }
        }),
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
    let mut binds = Vec::new();
    for (spec, writable) in args
        .ro
        .iter()
        .map(|s| (s, false))
        .chain(args.rw.iter().map(|s| (s, true)))
    {
        binds.push(parse_bind(spec, writable)?);
    }
    let req = Request {
        argv: args.command.clone(),
        env,
        best_effort: args.best_effort,
        binds,
        cwd: args.cwd.clone(),
    };
    let facts = probe::host_facts();
    let run_id = run_events::new_run_id();
    let audit_path = match (policy.audit.enabled, &policy.audit.log_path) {
        (false, _) => None,
        (true, Some(p)) => Some(p.clone()),
        (true, None) => Some(crate::paths::default_audit_log(facts.is_root).map_err(|e| {
            fail(
                exit_code::DENIED,
                format!("{e} (policy `{}` requires an audit record)", policy.name),
            )
        })?),
    };
    let mut plan = match ironcage_sandbox::make_plan(policy, &req, &facts) {
        Ok(p) => p,
        Err(e @ PlanError::Refused(_)) => {
            // A refusal is a decision worth recording too.
            if let (Some(path), false) = (&audit_path, args.dry_run) {
                let event = run_events::run_refused(&run_id, policy, &args.command, &e.to_string());
                if let Err(ae) = open_audit_log(path, facts.is_root)
                    .and_then(|mut log| append_audit(&mut log, path, &[event]))
                {
                    say!("ironcage: {ae:#}");
                }
            }
            return Err(fail(exit_code::DENIED, e));
        }
        Err(e @ PlanError::BadBind(_)) => return Err(fail(exit_code::USAGE, e)),
        Err(e) => return Err(fail(exit_code::SETUP_FAILED, e)),
    };
    if args.dry_run {
        out!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(0);
    }
    for u in &plan.unenforced {
        say!(
            "ironcage: warning: NOT ENFORCED (--best-effort): {}: {}",
            u.mechanism,
            u.reason
        );
    }
    if !plan.floor_lifted.is_empty() {
        say!("ironcage: WARNING: policy `{}` LIFTS THE SECCOMP FLOOR for: {} (syscalls.unsafe_lift_floor)", policy.name, plan.floor_lifted.join(", "));
    }
    // The sandbox must not reach its own record: no writable bind over the audit log,
    // and (rootless, where the sandbox runs as the key's owner) no bind over the key.
    if let Some(path) = &audit_path {
        let key = crate::paths::default_audit_key(facts.is_root)
            .map_err(|e| fail(exit_code::DENIED, e))?;
        if let Some(why) = audit_exposure(&plan, path, &key, facts.is_root) {
            let event = run_events::run_refused(&run_id, policy, &args.command, &why);
            if let Err(ae) = open_audit_log(path, facts.is_root)
                .and_then(|mut log| append_audit(&mut log, path, &[event]))
            {
                say!("ironcage: {ae:#}");
            }
            return Err(fail(exit_code::DENIED, why));
        }
    }
    // The audit log first, and the run's start recorded durably before it starts: a run
    // that cannot be recorded does not happen, and a supervisor killed mid-run still
    // leaves its start on record.
    let audit = match &audit_path {
        Some(path) => {
            let mut log = open_audit_log(path, facts.is_root).map_err(|e| {
                fail(
                    exit_code::DENIED,
                    format!("{e:#} (policy `{}` requires an audit record)", policy.name),
                )
            })?;
            let start = run_events::run_start(&run_events::StartInfo {
                run_id: &run_id,
                policy,
                argv: &plan.argv,
                host_uid: facts.uid,
                sandbox_uid: plan.uid,
                rootless: !facts.is_root,
                best_effort: args.best_effort,
                unenforced: plan
                    .unenforced
                    .iter()
                    .map(|u| format!("{}: {}", u.mechanism, u.reason))
                    .collect(),
                floor_lifted: &plan.floor_lifted,
                binds: plan
                    .mounts
                    .iter()
                    .filter_map(|m| match m {
                        MountStep::BindReadOnly { host, target, .. } => Some((
                            host.display().to_string(),
                            target.display().to_string(),
                            false,
                        )),
                        MountStep::BindWritable { host, target } => Some((
                            host.display().to_string(),
                            target.display().to_string(),
                            true,
                        )),
                        _ => None,
                    })
                    .collect(),
                cwd: plan.working_dir.display().to_string(),
                env_names: plan.env.iter().map(|(k, _)| k.clone()).collect(),
            });
            append_audit(&mut log, path, &[start]).map_err(|e| {
                fail(
                    exit_code::DENIED,
                    format!("{e:#} (policy `{}` requires an audit record)", policy.name),
                )
            })?;
            Some((log, path.clone()))
        }
        None => None,
    };
    let audit: crate::governance::SharedLog = std::sync::Arc::new(std::sync::Mutex::new(audit));
    // The gateway and the egress proxy, when the policy asks for them. A failure to set
    // them up refuses the run: the sandbox would otherwise run without what it was promised.
    let hosted = match crate::governance::Hosted::prepare(
        policy,
        &mut plan,
        &run_id,
        facts.is_root,
        &crate::governance::Flags {
            budget_usd: args.budget_usd.as_deref(),
            llm_upstream: &args.llm_upstream,
        },
        &audit,
    ) {
        Ok(h) => h,
        Err(e) => {
            let why = format!("{e:#}");
            if let Ok(mut g) = audit.lock() {
                if let Some((log, path)) = g.as_mut() {
                    let event = run_events::run_refused(&run_id, policy, &args.command, &why);
                    let _ = append_audit(log, path, &[event]);
                }
            }
            return Err(fail(exit_code::DENIED, why));
        }
    };
    let serve_listeners = |fds: Vec<(ironcage_sandbox::plan::Listener, std::os::fd::OwnedFd)>| {
        if let Some(h) = hosted.as_ref() {
            h.start(fds);
        }
    };
    // The report destination too: a typo in it must not cost a run whose report is lost.
    // A report file is only checked here and opened afresh after the run: it may sit in a
    // directory the sandbox can write, and the sandbox must not get hold of our descriptor's
    // file (rename it away, scribble into it) while it runs.
    let mut report_out: Option<std::fs::File> = match (&args.report, args.report_fd) {
        (Some(path), _) => {
            open_report_file(path)?;
            None
        }
        (None, Some(fd)) => Some(inherited_fd(fd)?),
        (None, None) => None,
    };
    let parent = facts.cgroup.as_ref().ok();
    let ctx = run::Context {
        run_id: &run_id,
        policy_name: &policy.name,
        cgroup_parent: parent,
        block_devices: &facts.block_devices,
        is_root: facts.is_root,
        // A pty of its own when we are the foreground job on a terminal (in the background,
        // taking the terminal over would stop us with SIGTTOU).
        held: None,
        relay_tty: !args.no_tty
            && ironcage_sandbox::sys::isatty(0)
            && ironcage_sandbox::sys::isatty(1)
            && ironcage_sandbox::sys::in_foreground(0),
        on_listeners: Some(&serve_listeners),
    };
    let report = run::run(&plan, &ctx);
    let mut report = match report {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("sandbox setup failed: {e}");
            if let Some(h) = hosted {
                h.finish(None);
            }
            let mut guard = audit
                .lock()
                .map_err(|_| anyhow!("audit log lock poisoned"))?;
            if let Some((log, path)) = guard.as_mut() {
                let _ = append_audit(
                    log,
                    path,
                    &[run_events::run_failed(
                        &run_id,
                        &msg,
                        exit_code::SETUP_FAILED,
                    )],
                );
            }
            return Err(fail(exit_code::SETUP_FAILED, msg));
        }
    };
    // The gateway's and proxy's records, then the run's end.
    if let Some(h) = hosted {
        h.finish(Some(&mut report));
    }
    // The audit record first: nothing the sandbox did to our stderr can prevent it.
    let mut guard = audit
        .lock()
        .map_err(|_| anyhow!("audit log lock poisoned"))?;
    if let Some((log, path)) = guard.as_mut() {
        let events = run_events::run_end(&report, &policy.audit.detail_level);
        append_audit(log, path, &events)
            .map_err(|e| fail(exit_code::SETUP_FAILED, format!("{e:#}")))?;
    }
    if let Some(err) = &report.error {
        say!("ironcage: {err}");
    }
    match report.outcome {
        ironcage_sandbox::report::Outcome::Timeout => say!(
            "ironcage: killed: session timeout ({}s) reached",
            report.limits.timeout.limit.unwrap_or(0)
        ),
        ironcage_sandbox::report::Outcome::OutOfMemory => say!(
            "ironcage: killed: out of memory (limit {} bytes)",
            report.limits.memory.limit.unwrap_or(0)
        ),
        _ => {}
    }
    if let Some(path) = &args.report {
        report_out = Some(
            open_report_file(path).map_err(|e| fail(exit_code::SETUP_FAILED, format!("{e:#}")))?,
        );
    }
    if args.json || report_out.is_some() {
        let mut text = serde_json::to_string(&report)?;
        text.push('\n');
        match report_out.as_mut() {
            Some(f) => f.write_all(text.as_bytes()).map_err(|e| {
                fail(
                    exit_code::SETUP_FAILED,
                    format!("writing the run report: {e}"),
                )
            })?,
            None => {
                let _ = std::io::stderr().write_all(text.as_bytes());
            }
        }
    }
    Ok(report.ironcage_exit_code)
}

/// `HOST[:SANDBOX]` -> (absolute host path, sandbox path, writable). The host path is made
/// absolute against our working directory (not resolved through symlinks: a writable one is
/// refused later if it has any).
fn parse_bind(
    spec: &str,
    writable: bool,
) -> Result<(std::path::PathBuf, std::path::PathBuf, bool)> {
    let (host, target) = match spec.split_once(':') {
        Some((h, t)) => (h, Some(t)),
        None => (spec, None),
    };
    let host = std::path::absolute(host)
        .map_err(|e| fail(exit_code::USAGE, format!("--ro/--rw {spec}: {e}")))?;
    let host = ironcage_policy::normalize_path(&host);
    let target = target
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| host.clone());
    Ok((host, target, writable))
}

/// Opens `/proc/self/fd/N` for writing: uses an inherited descriptor without `unsafe`.
fn inherited_fd(fd: i32) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{fd}"))
        .map_err(|_| {
            fail(
                exit_code::USAGE,
                format!("--report-fd {fd} is not an open descriptor"),
            )
        })
}

/// The report file is opened without following symlinks: it may sit in a directory a
/// sandbox could write to, and a planted link must not make us (perhaps root) write elsewhere.
fn open_report_file(path: &std::path::Path) -> Result<std::fs::File> {
    ironcage_sandbox::sys::create_nofollow(path, false).map_err(|e| {
        let why = if e.raw_os_error() == Some(libc::ELOOP) {
            "it is or lies under a symbolic link, and ironcage never writes through links (a sandbox may have planted one)".to_string()
        } else {
            e.to_string()
        };
        fail(exit_code::USAGE, format!("cannot write the report to {}: {why}", path.display()))
    })
}

/// Whether a bind would hand the sandbox its own audit record: a writable bind containing
/// the log (it could rewrite it), or, rootless, any bind containing the signing key (the
/// sandbox runs as the key's owner and could read it, then forge checkpoints).
fn audit_exposure(
    plan: &ironcage_sandbox::plan::Plan,
    log: &std::path::Path,
    key: &std::path::Path,
    is_root: bool,
) -> Option<String> {
    if let Some((host, log)) = crate::paths::bind_containing(plan, log, true) {
        return Some(format!(
            "the writable bind {} contains the audit log {}: the sandbox could rewrite its own record (bind another directory, or move the log with audit.log_path or IRONCAGE_AUDIT_LOG)",
            host.display(),
            log.display()
        ));
    }
    if is_root {
        return None;
    }
    crate::paths::bind_containing(plan, key, false).map(|(host, key)| {
        format!(
            "the bind {} contains the audit signing key {}, which the sandbox (running as you) could read (bind a narrower directory, or keep the key elsewhere with IRONCAGE_AUDIT_KEY)",
            host.display(),
            key.display()
        )
    })
}

/// Opens the audit log for appending, with the host's signing key so every append leaves
/// a signed checkpoint (created on first use). A key that exists but cannot be used
/// (readable by others, not ours, damaged) refuses the run: an unsigned record is a
/// weaker one, and the policy never silently weakens.
pub fn open_audit_log(path: &std::path::Path, is_root: bool) -> Result<ironcage_audit::AuditLog> {
    let key_path = crate::paths::default_audit_key(is_root).map_err(|e| anyhow!(e))?;
    let (key, created) = ironcage_audit::note::load_or_create_key(&key_path)
        .map_err(|e| anyhow!("audit signing key: {e}"))?;
    if created {
        say!(
            "ironcage: created audit signing key {} (public key {}.pub)",
            key_path.display(),
            key_path.display()
        );
    }
    ironcage_audit::AuditLog::open_file(path, Some(key)).map_err(|e| anyhow!("{e}"))
}

/// Appends events and tells the user about repairs and late warnings.
fn append_audit(
    log: &mut ironcage_audit::AuditLog,
    path: &std::path::Path,
    events: &[ironcage_audit::Event],
) -> Result<()> {
    let a = log.append(events).map_err(|e| anyhow!("{e}"))?;
    crate::audit_cmd::print_repairs(path, &a);
    Ok(())
}

fn doctor(json: bool) -> Result<i32> {
    let checks = probe::doctor();
    if json {
        out!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for c in &checks {
            out!(
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
                out!("{name:<16} {origin:<40} {desc}");
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
                out!("{}", text.trim_end());
            } else if let Origin::File(p) = &loaded.origin {
                out!(
                    "# from {}\n{}",
                    p.display(),
                    std::fs::read_to_string(p)?.trim_end()
                );
            }
            Ok(0)
        }
        ProfileCmd::Validate { file } => {
            let loaded = load(None, Some(&file))?;
            out!("{}: valid policy `{}`", file.display(), loaded.policy.name);
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
        out!("delegated {} to uid {uid}", d.display());
    }
    Ok(0)
}
