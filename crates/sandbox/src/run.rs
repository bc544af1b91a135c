//! The supervisor: starts a planned sandbox, feeds it, watches it, kills it on timeout,
//! measures it, cleans up after it, and writes the report. Runs on the host side.
//!
//! Must be called from a single-threaded process (it forks); it starts its own helper
//! thread only after the fork.

use crate::cgroup::{self, Parent, RunCgroup};
use crate::child::{self, ChildIo, Status};
use crate::plan::{MountStep, Plan, Rlimit};
use crate::report::{exit_code, LimitHit, Limits, Outcome, RunReport, Violation};
use crate::sys;
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error("output path {}: {reason}", path.display())]
    OutputPath {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("{step}: {source}")]
    Io {
        step: &'static str,
        source: std::io::Error,
    },
}

fn io(step: &'static str) -> impl FnOnce(std::io::Error) -> RunError {
    move |source| RunError::Io { step, source }
}

/// The listening sockets init opened for `plan.listeners`, in plan order.
pub type Listeners = Vec<(crate::plan::Listener, OwnedFd)>;

pub struct Context<'a> {
    /// Names this run in the report and the audit log.
    pub run_id: &'a str,
    pub policy_name: &'a str,
    pub cgroup_parent: Option<&'a Parent>,
    pub block_devices: &'a [String],
    pub is_root: bool,
    /// Give the sandbox a pty of its own and relay it to our stdin/stdout (a terminal).
    pub relay_tty: bool,
    /// A held sandbox (`plan.held`): the control socket on which we say `ready`, receive
    /// the job, learn of cancellation (the caller hanging up) and send the report (one
    /// line, `{"report": ...}`). Excludes `relay_tty`.
    pub held: Option<std::os::fd::RawFd>,
    /// Serves `plan.listeners`: called once with the listening sockets (in plan order),
    /// before the workload starts. Without it the sandbox gets no listeners.
    pub on_listeners: Option<&'a dyn Fn(Listeners)>,
}

static RUN_COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Runs the plan to completion and returns the report. Errors are for failures before the
/// sandbox exists; failures inside it are reported in the report.
pub fn run(plan: &Plan, ctx: &Context<'_>) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let started_at = unix_ms();

    prepare_output_dirs(plan, ctx.is_root)?;
    let mut cg = None;
    // The sandbox shares our stdin/stdout/stderr: whatever it does to their flags or to the
    // terminal's settings (O_NONBLOCK, echo off, raw mode) is undone when it ends.
    let stdio = sys::save_stdio();
    let mut teardown = None;
    let result = run_in(plan, ctx, &mut cg, &mut teardown, started, started_at);
    sys::restore_stdio(&stdio);
    // A held sandbox's caller gets the report, and the end of the output streams we share
    // with the sandbox, before the clean-up below: it need not wait for it.
    if let (Some(ctl), Ok(report)) = (ctx.held, result.as_ref()) {
        if let Ok(mut line) = serde_json::to_vec(&serde_json::json!({ "report": report })) {
            line.push(b'\n');
            let _ = sys::write_all(ctl, &line);
        }
        let _ = sys::null_stdio(&[1, 2]);
    }
    // Then the working directory, forwarded as it comes: a `capture` line, then the frame.
    if let (Some(ctl), Some(cap)) = (ctx.held, teardown.as_mut().and_then(|t| t.capture.take())) {
        if sys::write_all(ctl, b"{\"capture\":true}\n").is_ok() {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = sys::read(cap.as_raw_fd(), &mut buf) {
                if n == 0 || sys::write_all(ctl, &buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    if let Some(t) = teardown {
        // Whatever the workload left running dies with init.
        let _ = sys::kill(t.pid, libc::SIGKILL);
        let _ = sys::wait4(t.pid, 0);
        if let Some(h) = t.notifier {
            let _ = h.join();
        }
    }
    if let Some(cg) = cg.as_mut() {
        cg.remove();
    }
    // Cgroups of supervisors that were killed before they could clean up (SIGKILL): swept
    // after our own run, so it costs the sandboxed command nothing.
    // (Held sandboxes leave that to the service, which sweeps periodically: with many
    // sandboxes at once, reading the parent directory after each would add up.)
    if let (Some(parent), true, None) = (ctx.cgroup_parent, plan.cgroup.is_some(), ctx.held) {
        cgroup::sweep_stale(parent);
    }
    result
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Tells a held sandbox's caller that the sandbox is ready (`ready` and a newline on the
/// control socket), then waits for its job. `None`: the caller hung up or sent a bad frame,
/// or the sandbox died while waiting.
fn receive_job(ctl: std::os::fd::RawFd, pidfd: &OwnedFd) -> Option<crate::job::Job> {
    sys::write_all(ctl, b"ready\n").ok()?;
    loop {
        match sys::poll(
            &[(ctl, libc::POLLIN), (pidfd.as_raw_fd(), libc::POLLIN)],
            -1,
        ) {
            Ok(rev) if rev[1] != 0 => return None,
            Ok(rev) if rev[0] != 0 => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    crate::job::Job::read_from(|b| sys::read_exact(ctl, b)).ok()
}

fn create_cgroup(plan: &Plan, ctx: &Context<'_>) -> Result<Option<RunCgroup>, RunError> {
    match (&plan.cgroup, ctx.cgroup_parent) {
        (Some(limits), Some(parent)) => {
            let name = format!(
                "run-{}-{}",
                sys::getpid(),
                RUN_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            Ok(Some(RunCgroup::create(
                parent,
                &name,
                limits,
                ctx.block_devices,
                ctx.is_root,
            )?))
        }
        _ => Ok(None),
    }
}

/// What is left to do after a held sandbox was reported early: kill and reap init (its
/// exit waits for the namespaces to be torn down) and collect the notifier thread.
struct Teardown {
    pid: i32,
    notifier: Option<std::thread::JoinHandle<()>>,
    /// The working directory's capture, when the job asked for one.
    capture: Option<OwnedFd>,
}

fn workload_ended(status_buf: &[u8]) -> bool {
    String::from_utf8_lossy(status_buf)
        .lines()
        .filter_map(|l| serde_json::from_str::<Status>(l).ok())
        .any(|s| matches!(s, Status::Exited { .. } | Status::Signaled { .. }))
}

fn usage_status(status_buf: &[u8]) -> sys::Rusage {
    String::from_utf8_lossy(status_buf)
        .lines()
        .filter_map(|l| serde_json::from_str::<Status>(l).ok())
        .find_map(|s| match s {
            Status::Usage {
                user_us,
                system_us,
                max_rss_kib,
            } => Some(sys::Rusage {
                user_us,
                system_us,
                max_rss_kib,
            }),
            _ => None,
        })
        .unwrap_or_default()
}

fn run_in(
    plan: &Plan,
    ctx: &Context<'_>,
    cg_slot: &mut Option<RunCgroup>,
    teardown: &mut Option<Teardown>,
    started: Instant,
    started_at: u128,
) -> Result<RunReport, RunError> {
    // Root opens bind sources here, with its own permissions, as detached mounts; the
    // sandbox (uid 65534) could not read a root-only directory on the way to them.
    let mut detached = Vec::new();
    for m in &plan.mounts {
        detached.push(if ctx.is_root {
            child::detach_source(m).map_err(|e| RunError::OutputPath {
                path: source_of(m).into(),
                reason: e.to_string(),
            })?
        } else {
            None
        });
    }

    // For a relayed terminal: the socket on which init hands over its pty's master.
    let tty_pair = if ctx.relay_tty {
        Some(sys::socketpair().map_err(io("socketpair"))?)
    } else {
        None
    };
    let mut relay: Option<crate::tty::Relay> = None;
    let (go_r, go_w) = sys::pipe().map_err(io("pipe"))?;
    let (st_r, st_w) = sys::pipe().map_err(io("pipe"))?;
    // A held sandbox's working-directory capture (long-lived sandboxes).
    let (cap_r, cap_w) = match ctx.held {
        Some(_) => {
            let (r, w) = sys::pipe().map_err(io("pipe"))?;
            (Some(r), Some(w))
        }
        None => (None, None),
    };
    let (nt_parent, nt_child) = sys::socketpair().map_err(io("socketpair"))?;
    let listener_pair = match ctx.on_listeners {
        Some(_) if !plan.listeners.is_empty() => Some(sys::socketpair().map_err(io("socketpair"))?),
        _ => None,
    };
    let (ls_parent, ls_child) = match listener_pair {
        Some((p, c)) => (Some(p), Some(c)),
        None => (None, None),
    };

    // Signals we forward to the sandbox; blocked so the signalfd sees them. The child
    // inherits the mask, and init keeps it for its own synchronous wait.
    let mut forwarded = child::FORWARDED_SIGNALS.to_vec();
    forwarded.push(libc::SIGCHLD);
    let set = sys::sigset(&forwarded);
    let old_mask = sys::set_sigmask(&set).map_err(io("block signals"))?;
    let sigfd = sys::signalfd(&set).map_err(io("signalfd"))?;

    let flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC;
    // On cgroup v2 the sandbox is born in its cgroup (clone3 CLONE_INTO_CGROUP): moving a
    // process into a cgroup afterwards waits for an RCU grace period (5-15 ms measured on a
    // v1 host), which v1 cannot avoid. There the move overlaps the child's root building.
    let mut born_in: Option<OwnedFd> = None;
    if plan.cgroup.is_some() && ctx.cgroup_parent.map(|p| p.version()) == Some(2) {
        *cg_slot = create_cgroup(plan, ctx)?;
        born_in = cg_slot
            .as_ref()
            .and_then(|cg| cg.dirs().next())
            .and_then(|d| sys::open_dir(d).ok());
    }
    let cloned = match &born_in {
        Some(dir) => match sys::clone_into_cgroup(flags, dir) {
            // Kernels before 5.7 (no clone3 cgroup field): move it afterwards instead.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL)
                ) =>
            {
                born_in = None;
                sys::clone_fork(flags)
            }
            other => other,
        },
        None => sys::clone_fork(flags),
    };
    let pid = match cloned.map_err(io("clone into new namespaces"))? {
        None => {
            drop((go_w, st_r, nt_parent, sigfd, cap_r, ls_parent));
            child::init_main(
                plan,
                ChildIo {
                    go: go_r,
                    status: st_w,
                    notify: nt_child,
                    detached,
                    tty: tty_pair.as_ref().map(|(_, c)| c.as_raw_fd()),
                    capture: cap_w,
                    listeners: ls_child,
                },
            )
        }
        Some(pid) => pid,
    };
    drop((go_r, st_w, nt_child, detached, cap_w, ls_child));
    let tty_parent = tty_pair.map(|(p, _child_end_dropped_here)| p);

    // Two steps, so that our cgroup work overlaps the child building its root: "m" once the
    // id maps are written (the child may now create files and mount), "g" once it is in the
    // run cgroup (it may now enter a cgroup namespace and start the workload).
    let setup = (|| -> Result<(), RunError> {
        sys::write_proc(pid, "setgroups", "deny").map_err(io("write setgroups"))?;
        let (outside_uid, outside_gid) = if ctx.is_root {
            (plan.uid, plan.gid)
        } else {
            (sys::getuid(), sys::getgid())
        };
        sys::write_proc(pid, "uid_map", &format!("{} {outside_uid} 1", plan.uid))
            .map_err(io("write uid_map"))?;
        sys::write_proc(pid, "gid_map", &format!("{} {outside_gid} 1", plan.gid))
            .map_err(io("write gid_map"))?;
        sys::write_all(go_w.as_raw_fd(), b"m").map_err(io("start sandbox"))?;
        if born_in.is_none() {
            if cg_slot.is_none() {
                *cg_slot = create_cgroup(plan, ctx)?;
            }
            if let Some(cg) = cg_slot.as_ref() {
                cg.add(pid)?;
            }
        }
        // Init opened the listeners right after bringing up loopback; whoever serves them
        // gets them now, before the workload can connect.
        if let (Some(sock), Some(serve)) = (ls_parent.as_ref(), ctx.on_listeners) {
            let mut got = Vec::new();
            for l in &plan.listeners {
                match sys::recv_fd(sock.as_raw_fd()) {
                    Ok(Some(fd)) => got.push((*l, fd)),
                    // Init failed to open it: its status says why.
                    _ => break,
                }
            }
            if got.len() == plan.listeners.len() {
                serve(got);
            }
        }
        // Init has opened the sandbox's terminal by now (it does so right after building
        // the root): take the master and size it before the command can look.
        if let Some(sock) = tty_parent.as_ref() {
            if let Ok(Some(master)) = sys::recv_fd(sock.as_raw_fd()) {
                sys::make_raw(0);
                relay = Some(crate::tty::Relay::from_master(master));
            }
        }
        sys::write_all(go_w.as_raw_fd(), b"g").map_err(io("start sandbox"))?;
        Ok(())
    })();
    // go_w stays open until we return: init watches it to learn whether we are alive.
    if let Err(e) = setup {
        let _ = sys::kill(pid, libc::SIGKILL);
        let _ = sys::wait4(pid, 0);
        let _ = sys::set_sigmask(&old_mask);
        return Err(e);
    }
    let pidfd = sys::pidfd_open(pid).map_err(io("pidfd_open"))?;

    // A held sandbox is built: say so, wait for the job, and time the run from the job.
    let (mut started, mut started_at, mut timeout) = (started, started_at, plan.timeout);
    let mut cancelled = false;
    let (mut command, mut file_size) = (plan.argv.clone(), None);
    let mut capture_wanted = false;
    if let Some(ctl) = ctx.held {
        match receive_job(ctl, &pidfd) {
            Some(job) => {
                command.clone_from(&job.argv);
                capture_wanted = job.capture;
                file_size = job.max_file_size;
                started = Instant::now();
                started_at = unix_ms();
                if let Some(ms) = job.timeout_ms {
                    let t = std::time::Duration::from_millis(ms);
                    timeout = Some(timeout.map_or(t, |p| p.min(t)));
                }
                if let (Some(m), Some(cg)) = (job.memory_limit_bytes, cg_slot.as_mut()) {
                    if let Err(e) = cg.lower_memory_limit(m) {
                        let _ = sys::kill(pid, libc::SIGKILL);
                        let _ = sys::wait4(pid, 0);
                        let _ = sys::set_sigmask(&old_mask);
                        return Err(e.into());
                    }
                }
                // If init died meanwhile this fails; the loop below reports how it died.
                let _ = sys::write_all(go_w.as_raw_fd(), &job.encode());
            }
            None => {
                let _ = sys::kill(pid, libc::SIGKILL);
                cancelled = true;
            }
        }
    }
    let cg = cg_slot.as_ref();

    // Seccomp notifications: denied calls fail with EPERM and are counted; network calls
    // are inspected for the report.
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let rules = NetRules {
        inspected: crate::plan::inspected(&plan.seccomp),
        isolated: plan.net_isolated,
        outgoing: plan.allow_outgoing.clone(),
        incoming: plan.allow_incoming.clone(),
        writable: plan.writable.clone(),
    };
    let notifier = {
        let seen = Arc::clone(&seen);
        std::thread::Builder::new()
            .name("seccomp-notify".into())
            .spawn(move || serve_notifications(nt_parent, seen, rules))
            .ok()
    };

    let deadline = timeout.and_then(|t| started.checked_add(t));
    let mut ctl_open = ctx.held.is_some() && !cancelled;
    let mut early = false;
    let mut timed_out = false;
    let mut status_buf = Vec::new();
    let mut status_open = true;
    loop {
        let wait_ms = match deadline {
            Some(d) if !timed_out => d
                .saturating_duration_since(Instant::now())
                .as_millis()
                .min(i32::MAX as u128) as i32,
            _ => -1,
        };
        // [pidfd, signalfd, status pipe, relay fds...]; an entry with no events is ignored.
        let mut fds = vec![
            (pidfd.as_raw_fd(), libc::POLLIN),
            (sigfd.as_raw_fd(), libc::POLLIN),
            (st_r.as_raw_fd(), if status_open { libc::POLLIN } else { 0 }),
        ];
        if let Some(r) = relay.as_ref() {
            fds.extend(
                r.poll_set()
                    .into_iter()
                    .map(|(fd, ev)| (if ev == 0 { -1 } else { fd }, ev)),
            );
        }
        // A held sandbox's caller hanging up cancels the job (never together with a relay).
        let ctl_at = fds.len();
        if let (Some(ctl), true) = (ctx.held, ctl_open) {
            fds.push((ctl, libc::POLLIN));
        }
        let rev = match sys::poll(&fds, wait_ms) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(RunError::Io {
                    step: "poll",
                    source: e,
                })
            }
        };
        if !timed_out && deadline.is_some_and(|d| Instant::now() >= d) {
            // Deadline: kill init; the kernel then kills every process in its pid namespace.
            timed_out = true;
            let _ = sys::kill(pid, libc::SIGKILL);
            if let Some(cg) = cg {
                for p in cg.pids() {
                    let _ = sys::kill(p, libc::SIGKILL);
                }
            }
            continue;
        }
        if status_open && rev[2] != 0 {
            let mut buf = [0u8; 4096];
            match sys::read(st_r.as_raw_fd(), &mut buf) {
                Ok(0) | Err(_) => status_open = false,
                Ok(n) => status_buf.extend_from_slice(&buf[..n]),
            }
            // A held sandbox is reported as soon as its workload has ended; init's exit
            // (and the namespace teardown it waits for) happens after the report.
            if ctx.held.is_some() && workload_ended(&status_buf) {
                early = true;
                break;
            }
        }
        if let Some(r) = relay.as_mut() {
            r.handle(&rev[3..ctl_at]);
        }
        if ctl_open && rev.get(ctl_at).is_some_and(|r| *r != 0) {
            let mut b = [0u8; 64];
            if !matches!(sys::read(ctx.held.unwrap_or(-1), &mut b), Ok(n) if n > 0) {
                ctl_open = false;
                cancelled = true;
                let _ = sys::kill(pid, libc::SIGKILL);
                if let Some(cg) = cg {
                    for p in cg.pids() {
                        let _ = sys::kill(p, libc::SIGKILL);
                    }
                }
            }
        }
        if rev[1] != 0 {
            while let Some(sig) = sys::signalfd_read(sigfd.as_raw_fd()) {
                match (sig, relay.as_ref()) {
                    (libc::SIGCHLD, _) => {}
                    // With a relayed pty the size change goes to the sandbox's terminal,
                    // which signals its own foreground processes.
                    (libc::SIGWINCH, Some(r)) => r.resize(),
                    _ => {
                        let _ = sys::kill(pid, sig);
                    }
                }
            }
        }
        if rev[0] != 0 {
            break;
        }
    }
    if let Some(r) = relay.as_mut() {
        r.drain();
    }
    let (raw, rusage) = if early {
        let _ = sys::set_sigmask(&old_mask);
        *teardown = Some(Teardown {
            pid,
            notifier,
            capture: if capture_wanted { cap_r } else { None },
        });
        (0, usage_status(&status_buf))
    } else {
        let (_, raw, rusage) = sys::wait4(pid, 0).map_err(io("wait for sandbox"))?;
        let _ = sys::set_sigmask(&old_mask);
        // Drain what init wrote before exiting.
        loop {
            let mut buf = [0u8; 4096];
            match sys::read(st_r.as_raw_fd(), &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => status_buf.extend_from_slice(&buf[..n]),
            }
        }
        if let Some(h) = notifier {
            let _ = h.join();
        }
        (raw, rusage)
    };
    let wall = started.elapsed();
    let usage = cg.map(|c| c.usage()).unwrap_or_default();

    let statuses: Vec<Status> = String::from_utf8_lossy(&status_buf)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let seen = seen
        .lock()
        .map(|mut s| std::mem::take(&mut *s))
        .unwrap_or_default();
    let counts = seen.denied;
    let mut violations: Vec<Violation> = counts
        .iter()
        .map(|(nr, count)| {
            let name = ironcage_policy::syscalls::name_of(*nr as u32)
                .map(str::to_string)
                .unwrap_or_else(|| format!("syscall_{nr}"));
            let floor = ironcage_policy::syscalls::floor_reason(&name).is_some()
                || matches!(name.as_str(), "clone" | "ioctl" | "socket");
            Violation::Syscall {
                syscall: name,
                nr: *nr,
                count: *count,
                floor,
            }
        })
        .collect();
    let seen_dropped = seen.dropped;
    violations.extend(
        seen.paths
            .into_iter()
            .map(|((syscall, path, reason), count)| Violation::Path {
                syscall,
                path,
                count,
                reason,
            }),
    );
    violations.extend(
        seen.network
            .into_iter()
            .map(
                |((syscall, address, port, reason), count)| Violation::Network {
                    syscall,
                    address,
                    port,
                    count,
                    reason,
                },
            ),
    );

    let mut error = None;
    let (mut outcome, mut exit_code_v, mut signal) = (Outcome::SetupFailed, None, None);
    for s in &statuses {
        match s {
            Status::SetupFailed { step, error: e } => {
                error = Some(format!("sandbox setup failed at `{step}`: {e}"));
                outcome = Outcome::SetupFailed;
            }
            Status::ExecFailed {
                program,
                errno,
                error: e,
            } => {
                let denied = counts.contains_key(&59) || counts.contains_key(&322);
                error = Some(if denied {
                    format!("cannot execute {program}: execve denied by policy")
                } else {
                    format!("cannot execute {program}: {e}")
                });
                outcome = Outcome::ExecFailed;
                exit_code_v = Some(if denied {
                    exit_code::DENIED
                } else if *errno == libc::ENOENT {
                    exit_code::NOT_FOUND
                } else {
                    exit_code::NOT_EXECUTABLE
                });
            }
            Status::Exited { code } => {
                if outcome != Outcome::ExecFailed {
                    outcome = Outcome::Exited;
                    exit_code_v = Some(*code);
                }
            }
            Status::Signaled { signal: s } => {
                outcome = Outcome::Signaled;
                signal = Some(*s);
            }
            Status::Usage { .. } => {}
        }
    }
    if statuses.is_empty() {
        // init died without a word: killed by us (timeout) or from outside.
        if let Some(s) = sys::raw_status_signal(raw) {
            signal = Some(s);
            outcome = Outcome::Signaled;
        } else if let Some(c) = sys::raw_status_exit(raw) {
            exit_code_v = Some(c);
            outcome = Outcome::Exited;
        }
    }
    let oom = usage.oom_kills > 0 && signal == Some(libc::SIGKILL);
    if cancelled && error.is_none() {
        error = Some("cancelled: the caller hung up before the sandbox finished".into());
    }
    if timed_out {
        outcome = Outcome::Timeout;
    } else if oom {
        outcome = Outcome::OutOfMemory;
    }
    let ironcage_exit = match outcome {
        Outcome::Timeout => exit_code::TIMEOUT,
        Outcome::OutOfMemory => exit_code::MEMORY,
        Outcome::SetupFailed => exit_code::SETUP_FAILED,
        Outcome::ExecFailed => exit_code_v.unwrap_or(exit_code::NOT_EXECUTABLE),
        Outcome::Signaled => 128 + signal.unwrap_or(0),
        Outcome::Exited => exit_code_v.unwrap_or(0),
    };
    let rl = |w: Rlimit| plan.rlimits.iter().find(|(k, _)| *k == w).map(|(_, v)| *v);
    let limits = cg
        .map(|c| c.limits().clone())
        .or_else(|| plan.cgroup.clone())
        .unwrap_or_default();
    // Milliseconds with microsecond precision (no float noise in the JSON).
    let ms = |us: f64| (us).round() / 1000.0;
    Ok(RunReport {
        report_version: crate::report::REPORT_VERSION,
        run_id: ctx.run_id.to_string(),
        policy: ctx.policy_name.to_string(),
        command,
        outcome,
        exit_code: exit_code_v,
        signal: signal.map(sys::signal_name),
        ironcage_exit_code: ironcage_exit,
        error,
        wall_time_ms: ms(wall.as_micros() as f64),
        cpu_user_ms: ms(rusage.user_us as f64),
        cpu_system_ms: ms(rusage.system_us as f64),
        peak_memory_bytes: usage.peak_memory_bytes.or(Some(rusage.max_rss_kib * 1024)),
        limits: Limits {
            memory: LimitHit {
                limit: limits.memory_bytes,
                hit: usage.oom_kills > 0,
            },
            oom_kills: usage.oom_kills,
            pids: LimitHit {
                limit: limits.pids.map(u64::from),
                hit: usage.pids_limit_hits > 0,
            },
            pids_refused_forks: usage.pids_limit_hits,
            cpu_quota_us_per_100ms: limits.cpu_quota_us,
            cpu_throttled_periods: usage.cpu_throttled_periods,
            timeout: LimitHit {
                limit: timeout.map(|d| d.as_millis().div_ceil(1000) as u64),
                hit: timed_out,
            },
            file_size: LimitHit {
                limit: match (rl(Rlimit::FileSize), file_size) {
                    (Some(p), Some(j)) => Some(p.min(j)),
                    (p, j) => p.or(j),
                },
                hit: signal == Some(libc::SIGXFSZ),
            },
            open_files: rl(Rlimit::OpenFiles),
        },
        violations,
        violations_not_listed: seen_dropped,
        unenforced: plan.unenforced.clone(),
        floor_lifted: plan.floor_lifted.clone(),
        sandbox_uid: plan.uid,
        cgroup_version: ctx
            .cgroup_parent
            .filter(|_| cg.is_some())
            .map(|p| p.version()),
        landlock_abi: plan.landlock.as_ref().map(|l| l.abi).unwrap_or(0),
        started_at_unix_ms: started_at,
        llm: None,
    })
}

fn source_of(m: &MountStep) -> &Path {
    match m {
        MountStep::BindReadOnly { host, .. } | MountStep::BindWritable { host, .. } => host,
        MountStep::Scratch { target, .. }
        | MountStep::File { target, .. }
        | MountStep::Symlink { target, .. } => target,
    }
}

/// What the notification server saw.
#[derive(Default)]
struct Seen {
    /// Denied calls by number.
    denied: BTreeMap<i32, u64>,
    /// Refused network attempts: (syscall, address, port, reason) -> count.
    network: BTreeMap<(String, String, u16, String), u64>,
    /// Writes aimed outside every writable path: (syscall, path, reason) -> count.
    paths: BTreeMap<(String, String, String), u64>,
    /// Attempts not listed because the distinct-entry cap was reached.
    dropped: u64,
}

/// Distinct network and path entries kept per run. The supervisor is outside the run's
/// memory cgroup, so what the sandbox can make it remember must be bounded; attempts past
/// the cap are counted in `dropped`.
const MAX_DISTINCT: usize = 256;
/// Longest path kept in a report entry (bytes).
const MAX_PATH_SHOWN: usize = 256;

impl Seen {
    fn record_network(&mut self, key: (String, String, u16, String)) {
        if self.network.len() < MAX_DISTINCT || self.network.contains_key(&key) {
            *self.network.entry(key).or_insert(0) += 1;
        } else {
            self.dropped += 1;
        }
    }

    fn record_path(&mut self, (syscall, mut path, reason): (String, String, String)) {
        if path.len() > MAX_PATH_SHOWN {
            let mut cut = MAX_PATH_SHOWN;
            while !path.is_char_boundary(cut) {
                cut -= 1;
            }
            path.truncate(cut);
            path.push_str("...");
        }
        let key = (syscall, path, reason);
        if self.paths.len() < MAX_DISTINCT || self.paths.contains_key(&key) {
            *self.paths.entry(key).or_insert(0) += 1;
        } else {
            self.dropped += 1;
        }
    }
}

/// The network rules, as the notification server needs them to judge an attempt.
#[derive(Clone)]
struct NetRules {
    inspected: Vec<u32>,
    isolated: bool,
    outgoing: Vec<u16>,
    incoming: Vec<u16>,
    writable: Vec<std::path::PathBuf>,
}

/// Receives the listener from the workload, then answers every notification: denied calls
/// fail with EPERM and are counted; inspected calls (connect, bind) are looked at and let
/// through, and recorded when the network rules refuse them. Ends when every process that
/// could notify is gone.
fn serve_notifications(sock: OwnedFd, seen: Arc<Mutex<Seen>>, rules: NetRules) {
    let Ok(Some(listener)) = sys::recv_fd(sock.as_raw_fd()) else {
        return;
    };
    drop(sock);
    let fd = listener.as_raw_fd();
    loop {
        match sys::poll(&[(fd, libc::POLLIN)], -1) {
            Ok(r) if r[0] & libc::POLLIN != 0 => {}
            Ok(r) if r[0] & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
        let n = match sys::notif_recv(fd) {
            Ok(n) => n,
            // ENOENT: the caller died before we read it. Anything else: keep serving.
            Err(_) => continue,
        };
        if n.nr >= 0 && rules.inspected.contains(&(n.nr as u32)) {
            let name = ironcage_policy::syscalls::name_of(n.nr as u32).unwrap_or("");
            let network = matches!(name, "connect" | "bind");
            let path_key = if network {
                None
            } else {
                judge_path(name, &n, &rules)
            };
            let net_key = if network {
                judge_network(&n, &rules)
            } else {
                None
            };
            // What we read is only trusted if the caller is still the one waiting (not a
            // recycled pid).
            if sys::notif_id_valid(fd, n.id) {
                if let Ok(mut s) = seen.lock() {
                    if let Some(key) = net_key {
                        s.record_network(key);
                    }
                    if let Some(key) = path_key {
                        s.record_path(key);
                    }
                }
            }
            let _ = sys::notif_continue(fd, n.id);
            continue;
        }
        if let Ok(mut s) = seen.lock() {
            *s.denied.entry(n.nr).or_insert(0) += 1;
        }
        let _ = sys::notif_fail(fd, n.id, libc::EPERM);
    }
}

/// Reads the sockaddr of a connect/bind and says why the network rules refuse it, if they
/// do. The read races with the caller (it could change the memory afterwards), so this is
/// an observation for the report, never a decision: the kernel enforces independently.
fn judge_network(n: &sys::Notification, rules: &NetRules) -> Option<(String, String, u16, String)> {
    let syscall = ironcage_policy::syscalls::name_of(n.nr as u32)?.to_string();
    // The kernel refuses addresses longer than sockaddr_storage (EINVAL): nothing to judge.
    if n.args[2] > 128 {
        return None;
    }
    let len = n.args[2] as usize;
    let mut buf = [0u8; 128];
    let got = sys::read_process_memory(n.pid as i32, n.args[1], &mut buf[..len]).ok()?;
    let (ip, port) = parse_sockaddr(&buf[..got])?;
    let is_bind = syscall == "bind";
    let reason = if rules.isolated {
        if ip.is_loopback() || ip.is_unspecified() {
            return None;
        }
        "network is isolated (loopback only)".to_string()
    } else if is_bind {
        if rules.incoming.contains(&port) {
            return None;
        }
        "port not in network.allow_incoming".to_string()
    } else {
        if rules.outgoing.contains(&port) {
            return None;
        }
        "port not in network.allow_outgoing".to_string()
    };
    Some((syscall, ip.to_string(), port, reason))
}

/// Reads the path of an open-for-write, creat or mkdir and says why it is refused, if it
/// lies outside every scratch and output path. /dev and /proc are not judged (writing a
/// device node or a process's own /proc entry is ordinary). Like `judge_network`, an
/// observation only: the kernel decides.
fn judge_path(
    syscall: &str,
    n: &sys::Notification,
    rules: &NetRules,
) -> Option<(String, String, String)> {
    let (dirfd, ptr) = match syscall {
        "openat2" => {
            // struct open_how starts with the u64 flags: judge only opens that may write.
            let mut how = [0u8; 8];
            sys::read_process_memory(n.pid as i32, n.args[2], &mut how).ok()?;
            let flags = u64::from_ne_bytes(how);
            let write = libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC;
            if flags & write as u64 == 0 {
                return None;
            }
            (n.args[0] as i32, n.args[1])
        }
        "openat" | "mkdirat" => (n.args[0] as i32, n.args[1]),
        "open" | "creat" | "mkdir" => (libc::AT_FDCWD, n.args[0]),
        _ => return None,
    };
    let raw = read_c_string(n.pid as i32, ptr)?;
    if raw.is_empty() {
        return None;
    }
    let path = if raw.starts_with('/') {
        std::path::PathBuf::from(&raw)
    } else {
        let base = if dirfd == libc::AT_FDCWD {
            format!("/proc/{}/cwd", n.pid)
        } else {
            format!("/proc/{}/fd/{dirfd}", n.pid)
        };
        // A dirfd that is no directory (a pipe: "pipe:[123]") makes the kernel fail the
        // call with ENOTDIR; there is no path to report.
        let base = std::fs::read_link(base).ok()?;
        if !base.is_absolute() {
            return None;
        }
        base.join(&raw)
    };
    let path = ironcage_policy::normalize_path(&path);
    if path.starts_with("/dev")
        || path.starts_with("/proc")
        || rules.writable.iter().any(|w| path.starts_with(w))
    {
        return None;
    }
    Some((
        syscall.to_string(),
        path.display().to_string(),
        "not under a scratch or output path".into(),
    ))
}

/// Reads a NUL-terminated string of at most PATH_MAX bytes from another process, page by
/// page so that a string near the end of a mapping is still read.
fn read_c_string(pid: i32, mut addr: u64) -> Option<String> {
    let mut out = Vec::new();
    while out.len() < 4096 {
        let to_page_end = 4096 - (addr % 4096) as usize;
        let mut buf = vec![0u8; to_page_end];
        let got = sys::read_process_memory(pid, addr, &mut buf).ok()?;
        if let Some(end) = buf[..got].iter().position(|b| *b == 0) {
            out.extend_from_slice(&buf[..end]);
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        out.extend_from_slice(&buf[..got]);
        addr += got as u64;
        if got < to_page_end {
            return None;
        }
    }
    None
}

/// AF_INET / AF_INET6 socket addresses; anything else (unix sockets) is not judged.
fn parse_sockaddr(b: &[u8]) -> Option<(std::net::IpAddr, u16)> {
    let family = u16::from_ne_bytes([*b.first()?, *b.get(1)?]);
    let port = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
    match family as i32 {
        libc::AF_INET => {
            let o: [u8; 4] = b.get(4..8)?.try_into().ok()?;
            Some((std::net::IpAddr::from(o), port))
        }
        libc::AF_INET6 => {
            let o: [u8; 16] = b.get(8..24)?.try_into().ok()?;
            let v6 = std::net::Ipv6Addr::from(o);
            Some((
                v6.to_ipv4_mapped()
                    .map(std::net::IpAddr::V4)
                    .unwrap_or(std::net::IpAddr::V6(v6)),
                port,
            ))
        }
        _ => None,
    }
}

/// Makes sure each output directory exists, is a real directory reached without any
/// symlink, and (as root) is writable by the sandbox uid.
fn prepare_output_dirs(plan: &Plan, is_root: bool) -> Result<(), RunError> {
    for m in &plan.mounts {
        let MountStep::BindWritable { host, .. } = m else {
            continue;
        };
        let err = |reason: String| RunError::OutputPath {
            path: host.clone(),
            reason,
        };
        // Walk down from "/" without following symlinks, creating what is missing.
        let mut cur = std::path::PathBuf::from("/");
        for comp in host.components().skip(1) {
            cur.push(comp);
            match std::fs::symlink_metadata(&cur) {
                Ok(md) if md.file_type().is_symlink() => {
                    return Err(err(format!("{} is a symbolic link; output paths must not contain symlinks (one may have been planted by a sandbox)", cur.display())))
                }
                Ok(md) if !md.is_dir() => return Err(err(format!("{} is not a directory", cur.display()))),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir(&cur).map_err(|e| err(format!("cannot create {}: {e}", cur.display())))?;
                    if is_root && cur == *host {
                        sys::lchown(&cur.display().to_string(), plan.uid, plan.gid).map_err(|e| err(format!("cannot hand {} to uid {}: {e}", cur.display(), plan.uid)))?;
                    }
                }
                Err(e) => return Err(err(e.to_string())),
            }
        }
        if is_root {
            use std::os::unix::fs::MetadataExt;
            let md = std::fs::symlink_metadata(host).map_err(|e| err(e.to_string()))?;
            let writable = md.uid() == plan.uid && md.mode() & 0o200 != 0
                || md.gid() == plan.gid && md.mode() & 0o020 != 0
                || md.mode() & 0o002 != 0;
            if !writable {
                return Err(err(format!(
                    "not writable by the sandbox user (uid {uid}; root runs sandboxes as an unprivileged uid). Fix: `chown {uid}:{uid} {p}`, or name a directory that does not exist yet and ironcage will create it for the sandbox",
                    uid = plan.uid,
                    p = host.display()
                )));
            }
        }
    }
    Ok(())
}
