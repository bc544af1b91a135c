//! The sandbox host: one short-lived process per pooled sandbox, forked by the zygote
//! (`ironcage sandbox-zygote`, started by the server, never by people). It builds a held sandbox ahead of time,
//! says `ready` on its stdin (a Unix socket to the server), takes one job, supervises it,
//! and answers with the report. The sandbox's stdout and stderr are the host's own, which
//! the server reads directly: output never passes through this process.
//!
//! Why a process and not a thread of the server: the sandbox engine forks, and forking a
//! multi-threaded process (tokio) can deadlock the child on locks other threads held. A
//! host also ties the sandbox's lifetime to the server's: when the server dies its end of
//! the socket closes and the host kills the sandbox and removes its cgroup.

use ironcage_policy::units::Size;
use ironcage_policy::{Policy, SandboxPath};
use ironcage_sandbox::{make_plan, probe, run, sys, Plan, Request};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// Where every execution's files go and where it runs: a scratch tmpfs of its own.
pub const WORK_DIR: &str = "/work";

/// What the server asks a host to build (passed as JSON in the one argument).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct Spec {
    pub profile: String,
    /// The largest memory limit a job may ask for; jobs lower it.
    pub memory_limit_bytes: u64,
    /// The largest wall-clock time a job may ask for; jobs lower it.
    pub timeout_ms: u64,
    pub max_file_size: u64,
    pub pids_limit: u32,
    pub scratch_size: u64,
    pub run_id: String,
    /// The server this sandbox belongs to (shows in `ps`; tests find leftovers by it).
    #[serde(default)]
    pub node: String,
    /// The server serves this profile's LLM gateway: the host hands it the listener init
    /// opens (before `ready`), and the server answers on it for the execution.
    #[serde(default)]
    pub llm: bool,
}

/// What the host says on the control socket, one JSON object per line after `ready`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostMessage {
    Report(Box<ironcage_sandbox::RunReport>),
    Error(String),
}

/// The profile, adjusted for a service execution: a scratch working directory, and the
/// server's maxima as the sandbox's limits (a job may only lower them). The profile's own
/// tighter limits are kept.
pub fn service_policy(mut p: Policy, spec: &Spec) -> Policy {
    let work = SandboxPath(PathBuf::from(WORK_DIR));
    if !p.filesystem.scratch_paths.contains(&work) {
        p.filesystem.scratch_paths.push(work.clone());
    }
    p.filesystem.working_dir = Some(work);
    p.filesystem.scratch_size = Size(p.filesystem.scratch_size.0.min(spec.scratch_size));
    let r = &mut p.resources;
    r.memory_limit_bytes = Some(Size(
        r.memory_limit_bytes.map_or(spec.memory_limit_bytes, |m| {
            m.0.min(spec.memory_limit_bytes)
        }),
    ));
    r.max_file_size = Some(Size(
        r.max_file_size
            .map_or(spec.max_file_size, |m| m.0.min(spec.max_file_size)),
    ));
    r.pids_limit = Some(
        r.pids_limit
            .map_or(spec.pids_limit, |m| m.min(spec.pids_limit)),
    );
    let secs = spec.timeout_ms.div_ceil(1000).max(1);
    r.session_timeout_seconds = Some(r.session_timeout_seconds.map_or(secs, |s| s.min(secs)));
    // Executions are recorded by the server, in its own audit log.
    p.audit.enabled = false;
    p.audit.log_path = None;
    // The gateway listener only when the server will serve it (else the sandbox would
    // find a port that accepts and never answers).
    p.llm.enabled = p.llm.enabled && spec.llm;
    // The service does not run the egress proxy for its sandboxes: a `proxy` profile runs
    // with loopback only (stricter, never weaker; docs/serve.md).
    if p.network.mode == ironcage_policy::NetworkMode::Proxy {
        p.network.mode = ironcage_policy::NetworkMode::Isolated;
        p.network.allow_domains.clear();
        p.network.deny_domains.clear();
        p.network.allow_outgoing.clear();
    }
    p
}

/// The held plan for a spec (everything but the run id, which only names the run).
fn plan_for(spec: &Spec, facts: &ironcage_sandbox::HostFacts) -> Result<Plan, String> {
    let loaded = ironcage_policy::find_profile(&spec.profile).map_err(|e| e.to_string())?;
    let policy = service_policy(loaded.policy, spec);
    let req = Request {
        // Replaced by the job's; the plan needs one to be valid.
        argv: vec!["/bin/true".into()],
        cwd: Some(PathBuf::from(WORK_DIR)),
        ..Request::default()
    };
    let mut plan = make_plan(&policy, &req, facts).map_err(|e| e.to_string())?;
    plan.held = true;
    Ok(plan)
}

fn supervise(
    spec: &Spec,
    plan: &Plan,
    facts: &ironcage_sandbox::HostFacts,
) -> Result<ironcage_sandbox::RunReport, String> {
    let ctx = run::Context {
        run_id: &spec.run_id,
        policy_name: &spec.profile,
        cgroup_parent: facts.cgroup.as_ref().ok(),
        block_devices: &facts.block_devices,
        is_root: facts.is_root,
        relay_tty: false,
        held: Some(0),
        // The listener goes to the server over the control socket, before `ready`.
        on_listeners: Some(&|fds| {
            for (which, fd) in &fds {
                if *which == ironcage_sandbox::plan::Listener::LlmGateway {
                    let _ = sys::send_fd(0, fd.as_raw_fd());
                }
            }
        }),
    };
    run::run(plan, &ctx).map_err(|e| format!("sandbox setup failed: {e}"))
}

/// Entry point of `ironcage sandbox-zygote --node NODE` (the node only names the server
/// in `ps`, for its hosts too, which share the command line): a single-threaded process that forks sandbox
/// hosts for the server, so a host costs a fork instead of an exec of this binary plus
/// probing the host, loading the profile and planning (done once per spec here).
///
/// Protocol on fd 0 (a Unix socket to the server), per host: three descriptors (the
/// host's control socket, stdout and stderr, one per message), then a 4-byte length and
/// the spec as JSON. The reply is a pidfd of the new host, or a message without one if
/// the fork failed. Hosts are our children; ended ones are reaped at each request.
/// When the server goes away (end of file), the zygote exits; its hosts live on until
/// their own control sockets close.
pub fn zygote_main(_node: &str) -> i32 {
    let facts = probe::host_facts();
    let mut plans: HashMap<String, Result<Plan, String>> = HashMap::new();
    loop {
        let mut fds = Vec::with_capacity(3);
        for _ in 0..3 {
            match sys::recv_fd(0) {
                Ok(Some(fd)) => fds.push(fd),
                _ => return 0, // the server is gone
            }
        }
        let mut len = [0u8; 4];
        if sys::read_exact(0, &mut len).is_err() {
            return 0;
        }
        let n = u32::from_le_bytes(len) as usize;
        if n > 1 << 20 {
            return 1;
        }
        let mut spec_json = vec![0u8; n];
        if sys::read_exact(0, &mut spec_json).is_err() {
            return 0;
        }
        let spec: Result<Spec, String> =
            serde_json::from_slice(&spec_json).map_err(|e| format!("bad spec: {e}"));
        let key = {
            let mut k = spec.as_ref().ok().cloned();
            if let Some(k) = k.as_mut() {
                k.run_id.clear();
            }
            serde_json::to_string(&k).unwrap_or_default()
        };
        let plan = plans
            .entry(key)
            .or_insert_with(|| spec.clone().and_then(|s| plan_for(&s, &facts)));
        match sys::fork() {
            Ok(Some(pid)) => {
                drop(fds);
                // Opened before any reaping: until we reap it the pid cannot be reused, so
                // the pidfd is this host's even if it has already exited.
                match sys::pidfd_open(pid) {
                    Ok(pidfd) => {
                        let _ = sys::send_fd(0, pidfd.as_raw_fd());
                    }
                    Err(_) => {
                        let _ = sys::write_all(0, b"x");
                    }
                }
                // Hosts that have ended since the last request.
                while let Ok((p, _, _)) = sys::wait4(-1, libc::WNOHANG) {
                    if p <= 0 {
                        break;
                    }
                }
            }
            Ok(None) => {
                // The host: its control socket, stdout and stderr become 0, 1, 2.
                sys::set_name(c"ironcage-host");
                let ok = fds
                    .iter()
                    .enumerate()
                    .all(|(i, fd)| sys::dup2(fd.as_raw_fd(), i as i32).is_ok());
                drop(fds);
                let _ = sys::close_range(3, u32::MAX);
                if !ok {
                    sys::exit_now(1);
                }
                let result = match (spec, plan.as_ref()) {
                    (Ok(spec), Ok(plan)) => supervise(&spec, plan, &facts),
                    (Err(e), _) => Err(e),
                    (_, Err(e)) => Err(e.clone()),
                };
                let code = match result {
                    Ok(_) => 0,
                    Err(e) => {
                        if let Ok(mut line) = serde_json::to_vec(&HostMessage::Error(e)) {
                            line.push(b'\n');
                            let _ = sys::write_all(0, &line);
                        }
                        1
                    }
                };
                sys::exit_now(code);
            }
            Err(_) => {
                drop(fds);
                let _ = sys::write_all(0, b"x");
            }
        }
    }
}
