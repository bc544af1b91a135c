//! Code that runs inside the sandbox: our init (pid 1 of the new pid namespace) and, forked
//! from it, the workload that becomes the user's command.
//!
//! The steps, in order, and why in that order:
//!
//! init (pid 1, full capabilities inside its own user namespace only):
//!  1. wait for the supervisor's "m": it has written our uid/gid maps (they need our pid,
//!     which only exists after clone); take the mapped ids, arm the parent-death signal;
//!  2. hostname, loopback up (isolated network), no nested user namespaces;
//!  3. mounts: make everything private, open the bind sources *before* any mount can hide
//!     or swap them, build the new root on a tmpfs, pivot_root into it, detach the old root,
//!     make the root read-only (meanwhile the supervisor creates the run cgroup);
//!  4. wait for "g": we are in the run cgroup; enter a new cgroup namespace rooted there;
//!  5. start the workload (vfork-style: it shares our memory until it execs); then drop
//!     every capability and become a reaper that forwards signals and reports the
//!     workload's exit status. When init exits the kernel kills
//!     every process left in the pid namespace, double-forked daemons included.
//!
//! workload (pid 2):
//!  6. new session (no controlling terminal: TIOCSTI-style injection has no target);
//!  7. working directory, resolve the program on PATH;
//!  8. move the two descriptors we still need above the open-files limit and close every
//!     other descriptor but 0, 1, 2 (nothing of the host leaks in);
//!  9. rlimits, then capabilities (drop all but `add`), then no_new_privs (setuid bits and
//!     file capabilities now grant nothing);
//! 10. Landlock, then seccomp last: seccomp must come after everything above because it may
//!     deny the very calls those steps make;
//! 11. hand the seccomp listener to the supervisor through the one sendmsg the filter allows,
//!     then execve. Both descriptors are close-on-exec.

use crate::job::{FileKind, Job};
use crate::landlock_apply;
use crate::plan::{MountStep, Plan, Rlimit};
use crate::sys;
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

/// What the sandbox tells the supervisor over the status pipe, one JSON object per line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    SetupFailed {
        step: String,
        error: String,
    },
    ExecFailed {
        program: String,
        errno: i32,
        error: String,
    },
    Exited {
        code: i32,
    },
    Signaled {
        signal: i32,
    },
    /// The workload's resource usage, sent by a held sandbox's init just before its exit
    /// status: the supervisor reports without waiting for init's own exit (tearing down the
    /// namespaces takes milliseconds).
    Usage {
        user_us: u64,
        system_us: u64,
        max_rss_kib: u64,
    },
}

/// Descriptors and pre-opened mounts the child inherits from the supervisor.
pub struct ChildIo {
    pub go: OwnedFd,
    pub status: OwnedFd,
    pub notify: OwnedFd,
    /// Detached mount trees opened by the supervisor (root mode), aligned with
    /// `plan.mounts`; `None` where the child opens the source itself.
    pub detached: Vec<Option<OwnedFd>>,
    /// Socket to hand the supervisor the master of a pty we open for the sandbox, when the
    /// caller is on a terminal.
    pub tty: Option<RawFd>,
    /// A held sandbox: where the working directory's capture goes (a job frame).
    pub capture: Option<OwnedFd>,
    /// Socket to hand the supervisor the listeners of `plan.listeners`, in order.
    pub listeners: Option<OwnedFd>,
}

/// Stage directory the new root is assembled on. Any existing directory would do: all bind
/// sources are opened before the tmpfs hides it, and it is detached after pivot_root.
const STAGE: &str = "/tmp";

/// Device nodes bound from the host into the sandbox's /dev.
const DEV_NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

pub const EXIT_SETUP_FAILED: i32 = 125;

/// Signals relayed from the supervisor to init and from init to the workload.
pub const FORWARDED_SIGNALS: [libc::c_int; 8] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGCONT,
];

fn send(status_fd: RawFd, s: &Status) {
    if let Ok(mut line) = serde_json::to_vec(s) {
        line.push(b'\n');
        let _ = sys::write_all(status_fd, &line);
    }
}

fn fail(status_fd: RawFd, step: &str, error: impl std::fmt::Display) -> ! {
    send(
        status_fd,
        &Status::SetupFailed {
            step: step.to_string(),
            error: error.to_string(),
        },
    );
    sys::exit_now(EXIT_SETUP_FAILED)
}

/// Entry point of pid 1. Never returns.
pub fn init_main(plan: &Plan, io: ChildIo) -> ! {
    let status = io.status.as_raw_fd();
    sys::set_name(c"ironcage-init");
    sys::scrub_process_strings();
    // The network namespace is the slowest to create (~0.5 ms): made here rather than in
    // clone, so it overlaps the supervisor writing our id maps and creating the cgroup.
    // We already hold CAP_SYS_ADMIN in our new user namespace, maps or not.
    if plan.net_isolated {
        if let Err(e) = sys::unshare(libc::CLONE_NEWNET) {
            fail(status, "network namespace", e);
        }
    }
    let mut byte = [0u8; 1];
    match sys::read(io.go.as_raw_fd(), &mut byte) {
        Ok(1) if byte[0] == b'm' => {}
        _ => sys::exit_now(EXIT_SETUP_FAILED), // supervisor gone before setup finished
    }
    // Become the mapped uid/gid. Until now we carried the supervisor's host ids, which
    // are unmapped here when root started us (files we create would get EOVERFLOW).
    if let Err(e) = sys::set_ids(plan.uid, plan.gid) {
        fail(status, "set uid/gid", e);
    }
    // Our memory is a copy of the supervisor's (which may hold provider keys for the
    // gateway): from now on no process of the sandbox may read it through /proc. (The
    // supervisor wrote our id maps already; nothing else of ours needs to be dumpable.)
    let _ = sys::set_dumpable(false);
    // If the supervisor dies, so do we, and with us the whole pid namespace. Set after the
    // id change, which clears it. The supervisor holds the other end of `go` open until it
    // exits, so a hang-up now means it died before we armed the signal.
    if let Err(e) = sys::set_parent_death_signal(libc::SIGKILL) {
        fail(status, "parent death signal", e);
    }
    if sys::poll(&[(io.go.as_raw_fd(), 0)], 0)
        .map(|r| r[0] & libc::POLLHUP != 0)
        .unwrap_or(true)
    {
        sys::exit_now(EXIT_SETUP_FAILED);
    }
    if let Err(e) = sys::sethostname(&plan.hostname) {
        fail(status, "hostname", e);
    }
    if plan.net_isolated {
        if let Err(e) = sys::loopback_up() {
            fail(status, "loopback interface", e);
        }
    }
    // Services the supervisor provides from outside (gateway, egress proxy): the sockets
    // belong to this namespace, so the sandbox reaches them on its loopback, while the
    // supervisor accepts on them from the host's. Opened before the workload exists, so
    // its first connection queues in the backlog instead of being refused.
    if let Some(sock) = io.listeners.as_ref() {
        for l in &plan.listeners {
            let bound = sys::listen_loopback(l.port());
            if let Err(e) = bound.and_then(|t| sys::send_fd(sock.as_raw_fd(), t.as_raw_fd())) {
                fail(status, "listener on 127.0.0.1", e);
            }
        }
    }
    drop(io.listeners);
    // Defence in depth behind the seccomp floor: this user namespace may not create more.
    let _ = std::fs::write("/proc/sys/user/max_user_namespaces", "0");

    if let Err((step, e)) = build_root(plan, io.detached) {
        fail(status, &step, e);
    }
    // A terminal of the sandbox's own, on its devpts: the master goes to the supervisor,
    // which relays it to the caller's terminal; the slave becomes the workload's stdio.
    let tty_slave = match io.tty {
        Some(sock) => match sys::open_pty_here()
            .and_then(|(master, slave)| sys::send_fd(sock, master.as_raw_fd()).map(|_| slave))
        {
            Ok(slave) => {
                sys::close(sock);
                Some(slave)
            }
            Err(e) => fail(status, "open the sandbox's terminal", e),
        },
        None => None,
    };
    // Wait until the supervisor has put us in the run cgroup.
    match sys::read(io.go.as_raw_fd(), &mut byte) {
        Ok(1) if byte[0] == b'g' => {}
        _ => sys::exit_now(EXIT_SETUP_FAILED),
    }
    // A held sandbox (warm pool) waits here, fully built, for its job: the command, its
    // stdin and files. Everything the job sets is applied to init's own copy of the plan.
    let job_plan;
    let mut capture_to = None;
    let plan = if plan.held {
        let job = match Job::read_from(|b| sys::read_exact(io.go.as_raw_fd(), b)) {
            Ok(job) => job,
            Err(e) => fail(status, "receive job", e),
        };
        if job.capture {
            capture_to = io
                .capture
                .map(|fd| (fd, job.capture_limit.unwrap_or(crate::job::MAX_JOB as u64)));
        }
        match apply_job(plan, job) {
            Ok(p) => {
                job_plan = p;
                &job_plan
            }
            Err((step, e)) => fail(status, &step, e),
        }
    } else {
        plan
    };
    drop(io.go);
    // Always a cgroup namespace: rooted at the run cgroup when there is one, otherwise at
    // wherever we are, so the host's cgroup paths never show in /proc/self/cgroup.
    if let Err(e) = sys::unshare(libc::CLONE_NEWCGROUP) {
        fail(status, "cgroup namespace", e);
    }

    // Signals init forwards, plus SIGCHLD; blocked here, waited for synchronously below.
    // The supervisor already blocked them before clone; make sure.
    let mut waited = FORWARDED_SIGNALS.to_vec();
    waited.push(libc::SIGCHLD);
    let set = sys::sigset(&waited);
    let _ = sys::set_sigmask(&set);

    // The workload shares our memory until it execs (vfork-style): it only reads the plan
    // and takes descriptor numbers, so nothing it does is undone or double-freed here.
    let (notify_fd, status_fd) = (io.notify.as_raw_fd(), io.status.as_raw_fd());
    let tty_slave = tty_slave.as_ref().map(|s| s.as_raw_fd());
    let workload = match sys::spawn_shared(|| workload_main(plan, notify_fd, status_fd, tty_slave))
    {
        Ok(pid) => pid,
        Err(e) => fail(status, "start workload", e),
    };
    drop(io.notify);
    // A held sandbox's output pipes end when the workload's processes end: init, which
    // outlives them for a while (namespace teardown), lets go of its copies.
    if plan.held {
        let _ = sys::null_stdio(&[0, 1, 2]);
    }
    // init needs no privilege from here on.
    let _ = sys::restrict_capabilities(&[]);
    let _ = sys::set_no_new_privs();
    let _ = sys::set_dumpable(false);

    loop {
        let sig = sys::sigwait(&set);
        if sig != libc::SIGCHLD {
            let _ = sys::kill(workload, sig);
            continue;
        }
        // Reap everything that has exited; orphans are reparented to us.
        loop {
            match sys::wait4(-1, libc::WNOHANG) {
                Ok((0, _, _)) | Err(_) => break,
                Ok((pid, raw, ru)) if pid == workload => {
                    let s = match (sys::raw_status_exit(raw), sys::raw_status_signal(raw)) {
                        (Some(code), _) => Status::Exited { code },
                        (_, Some(signal)) => Status::Signaled { signal },
                        _ => continue,
                    };
                    if plan.held {
                        send(
                            status,
                            &Status::Usage {
                                user_us: ru.user_us,
                                system_us: ru.system_us,
                                max_rss_kib: ru.max_rss_kib,
                            },
                        );
                    }
                    send(status, &s);
                    if let Some((fd, limit)) = capture_to.as_ref() {
                        send_capture(fd.as_raw_fd(), &plan.working_dir, *limit);
                    }
                    // Exiting tears down the pid namespace: the kernel SIGKILLs the rest.
                    sys::exit_now(match s {
                        Status::Exited { code } => code,
                        Status::Signaled { signal } => 128 + signal,
                        _ => EXIT_SETUP_FAILED,
                    });
                }
                Ok(_) => {}
            }
        }
    }
}

/// Ends every other process of the sandbox (nothing may change the files while they are
/// read), then streams the working directory as a job frame (`job::write_capture`).
/// Runs in init after the workload has exited.
fn send_capture(fd: RawFd, dir: &Path, limit: u64) {
    let _ = sys::kill(-1, libc::SIGKILL);
    // Reap what we just killed, so nothing holds files open mid-read.
    while let Ok((pid, _, _)) = sys::wait4(-1, 0) {
        if pid <= 0 {
            break;
        }
    }
    struct FdWriter(RawFd);
    impl std::io::Write for FdWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            sys::write_all(self.0, buf).map(|_| buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, FdWriter(fd));
    let _ = crate::job::write_capture(dir, limit, &mut out);
    let _ = std::io::Write::flush(&mut out);
}

/// Makes the plan a held sandbox runs its job with, and puts the job's files and stdin in
/// place. Runs in init, inside the finished root, as the sandbox's uid, before the
/// workload exists: nothing in the working directory can have been planted yet.
fn apply_job(plan: &Plan, job: Job) -> Result<Plan, StepError> {
    let mut p = plan.clone();
    p.argv = job.argv;
    for (k, v) in job.env {
        p.env.retain(|(name, _)| *name != k);
        p.env.push((k, v));
    }
    if let Some(cpu) = job.cpu_seconds {
        p.rlimits.retain(|(w, _)| *w != Rlimit::Cpu);
        p.rlimits.push((Rlimit::Cpu, cpu.max(1)));
    }
    if let Some(fsize) = job.max_file_size {
        for (w, v) in p.rlimits.iter_mut() {
            if *w == Rlimit::FileSize {
                *v = (*v).min(fsize);
            }
        }
        if !p.rlimits.iter().any(|(w, _)| *w == Rlimit::FileSize) {
            p.rlimits.push((Rlimit::FileSize, fsize));
        }
    }
    // Symbolic links last: until then no path can lead out of the working directory
    // (paths are checked relative and `..`-free, and the directory starts empty).
    let (links, entries): (Vec<_>, Vec<_>) =
        job.files.iter().partition(|f| f.kind == FileKind::Symlink);
    for f in entries {
        use std::io::Write as _;
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        let path = p.working_dir.join(&f.path);
        let name = || format!("write file {}", f.path);
        if f.kind == FileKind::Dir {
            step(
                name,
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(&path),
            )?;
            continue;
        }
        if let Some(parent) = path.parent() {
            step(
                name,
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent),
            )?;
        }
        let mut out = step(
            name,
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(if f.executable { 0o755 } else { 0o644 })
                .open(&path),
        )?;
        step(name, out.write_all(&f.content))?;
    }
    for f in links {
        use std::os::unix::ffi::OsStrExt as _;
        let path = p.working_dir.join(&f.path);
        let target = std::ffi::OsStr::from_bytes(&f.content);
        step(
            || format!("link {}", f.path),
            std::os::unix::fs::symlink(target, &path),
        )?;
    }
    let stdin = if job.stdin.is_empty() {
        step(
            || "open /dev/null for stdin".into(),
            std::fs::File::open("/dev/null").map(OwnedFd::from),
        )?
    } else {
        step(|| "stdin".into(), sys::memfd_with(c"stdin", &job.stdin))?
    };
    // Our own stdin was the supervisor's control socket: the sandbox never sees it.
    step(|| "stdin".into(), sys::dup2(stdin.as_raw_fd(), 0))?;
    Ok(p)
}

fn stage(p: &Path) -> String {
    format!("{STAGE}{}", p.display())
}

type StepError = (String, std::io::Error);

fn step<T>(name: impl FnOnce() -> String, r: std::io::Result<T>) -> Result<T, StepError> {
    r.map_err(|e| (name(), e))
}

/// Opens (or takes the pre-opened) detached mount for a bind step.
pub fn detach_source(m: &MountStep) -> std::io::Result<Option<OwnedFd>> {
    match m {
        MountStep::BindReadOnly { host, is_dir, .. } => {
            let fd = sys::open_path(&host.display().to_string())?;
            let tree = sys::open_tree_clone(&fd, *is_dir)?;
            sys::mount_setattr_fd(
                &tree,
                sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
                0,
            )?;
            Ok(Some(tree))
        }
        MountStep::BindWritable { host, .. } => {
            let fd = sys::open_path_nofollow(&host.display().to_string())?;
            let tree = sys::open_tree_clone(&fd, true)?;
            sys::mount_setattr_fd(&tree, sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV, 0)?;
            Ok(Some(tree))
        }
        _ => Ok(None),
    }
}

/// Creates the directories above a mount point or generated file in the new root.
fn create_parent(path: &str) -> Result<(), StepError> {
    match Path::new(path).parent() {
        Some(parent) => step(
            || format!("create {}", parent.display()),
            std::fs::create_dir_all(parent),
        ),
        None => Ok(()),
    }
}

fn mkdirs(path: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(path)
}

fn build_root(plan: &Plan, detached: Vec<Option<OwnedFd>>) -> Result<(), StepError> {
    step(
        || "make mounts private".into(),
        sys::mount(None, "/", None, libc::MS_REC | libc::MS_PRIVATE, None),
    )?;
    // Open every source first: once the stage tmpfs is mounted, host paths under it are hidden.
    let mut sources = Vec::with_capacity(plan.mounts.len());
    for (i, m) in plan.mounts.iter().enumerate() {
        let pre = detached.get(i).and_then(|d| d.as_ref()).is_some();
        sources.push(if pre {
            None
        } else {
            step(
                || format!("open bind source {}", describe(m)),
                detach_source(m),
            )?
        });
    }
    let mut detached = detached;
    let mut dev_sources = Vec::new();
    for n in DEV_NODES {
        let fd = step(
            || format!("open /dev/{n}"),
            sys::open_path(&format!("/dev/{n}")),
        )?;
        dev_sources.push(step(
            || format!("clone /dev/{n}"),
            sys::open_tree_clone(&fd, false),
        )?);
    }

    step(
        || "mount root tmpfs".into(),
        sys::mount(
            Some("ironcage"),
            STAGE,
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some("mode=0755,size=4m"),
        ),
    )?;
    for (i, m) in plan.mounts.iter().enumerate() {
        let target = match m {
            MountStep::BindReadOnly { target, .. }
            | MountStep::BindWritable { target, .. }
            | MountStep::Scratch { target, .. }
            | MountStep::File { target, .. }
            | MountStep::Symlink { target, .. } => target,
        };
        let t = stage(target);
        match m {
            MountStep::File { contents, .. } => {
                create_parent(&t)?;
                step(
                    || format!("write {}", target.display()),
                    std::fs::write(&t, contents),
                )?;
            }
            MountStep::Symlink { link, .. } => {
                create_parent(&t)?;
                step(
                    || format!("link {}", target.display()),
                    sys::symlink(&link.display().to_string(), &t),
                )?;
            }
            MountStep::Scratch { size, .. } => {
                step(|| format!("create {}", target.display()), mkdirs(&t))?;
                let opts = format!("mode=1777,size={size}");
                step(
                    || format!("mount scratch tmpfs at {}", target.display()),
                    sys::mount(
                        Some("scratch"),
                        &t,
                        Some("tmpfs"),
                        libc::MS_NOSUID | libc::MS_NODEV,
                        Some(&opts),
                    ),
                )?;
            }
            MountStep::BindReadOnly { .. } | MountStep::BindWritable { .. } => {
                let is_dir = !matches!(m, MountStep::BindReadOnly { is_dir: false, .. });
                if is_dir {
                    step(|| format!("create {}", target.display()), mkdirs(&t))?;
                } else {
                    create_parent(&t)?;
                    step(
                        || format!("create {}", target.display()),
                        std::fs::write(&t, b""),
                    )?;
                }
                let tree = match detached.get_mut(i).and_then(Option::take) {
                    Some(fd) => fd,
                    None => sources[i].take().expect("source opened above"),
                };
                step(
                    || format!("bind {}", describe(m)),
                    sys::move_mount_to(&tree, &t),
                )?;
            }
        }
    }

    mount_proc()?;
    mount_dev(dev_sources)?;
    switch_root()
}

/// A fresh /proc for the new pid namespace, with the kernel-tunable parts read-only.
fn mount_proc() -> Result<(), StepError> {
    let proc_dir = format!("{STAGE}/proc");
    step(|| "create /proc".into(), mkdirs(&proc_dir))?;
    step(
        || "mount /proc".into(),
        sys::mount(
            Some("proc"),
            &proc_dir,
            Some("proc"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            None,
        ),
    )?;
    // Only these hold files a user-namespace root may write (namespaced sysctls such as
    // kernel.hostname or net.*); the rest of /proc belongs to the host's root.
    for sub in ["sys", "sysrq-trigger"] {
        let p = format!("{proc_dir}/{sub}");
        if Path::new(&p).exists() {
            step(
                || format!("bind /proc/{sub}"),
                sys::mount(Some(&p), &p, None, libc::MS_BIND | libc::MS_REC, None),
            )?;
            step(
                || format!("read-only /proc/{sub}"),
                sys::mount_setattr_path(
                    &p,
                    sys::MOUNT_ATTR_RDONLY
                        | sys::MOUNT_ATTR_NOSUID
                        | sys::MOUNT_ATTR_NODEV
                        | sys::MOUNT_ATTR_NOEXEC,
                    0,
                ),
            )?;
        }
    }

    Ok(())
}

/// A minimal /dev: a few harmless nodes bound from the host, private pts and shm.
fn mount_dev(dev_sources: Vec<OwnedFd>) -> Result<(), StepError> {
    let dev = format!("{STAGE}/dev");
    step(|| "create /dev".into(), mkdirs(&dev))?;
    step(
        || "mount /dev tmpfs".into(),
        sys::mount(
            Some("dev"),
            &dev,
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some("mode=0755,size=64k"),
        ),
    )?;
    for (n, tree) in DEV_NODES.iter().zip(dev_sources) {
        let p = format!("{dev}/{n}");
        step(|| format!("create /dev/{n}"), std::fs::write(&p, b""))?;
        step(|| format!("bind /dev/{n}"), sys::move_mount_to(&tree, &p))?;
    }
    step(|| "create /dev/pts".into(), mkdirs(&format!("{dev}/pts")))?;
    step(
        || "mount /dev/pts".into(),
        sys::mount(
            Some("devpts"),
            &format!("{dev}/pts"),
            Some("devpts"),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620,max=64"),
        ),
    )?;
    step(|| "create /dev/shm".into(), mkdirs(&format!("{dev}/shm")))?;
    step(
        || "mount /dev/shm".into(),
        sys::mount(
            Some("shm"),
            &format!("{dev}/shm"),
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some("mode=1777,size=64m"),
        ),
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        step(
            || format!("link /dev/{link}"),
            sys::symlink(target, &format!("{dev}/{link}")),
        )?;
    }
    step(
        || "read-only /dev".into(),
        sys::mount_setattr_path(&dev, sys::MOUNT_ATTR_RDONLY, 0),
    )?;

    Ok(())
}

/// pivot_root(".", ".") stacks the old root under the new one; detaching "." then removes
/// it, so nothing of the host's tree stays reachable. Then the root becomes read-only.
fn switch_root() -> Result<(), StepError> {
    step(|| "enter new root".into(), sys::chdir(STAGE))?;
    step(|| "pivot_root".into(), sys::pivot_root(".", "."))?;
    step(|| "detach old root".into(), sys::umount_detach("."))?;
    step(|| "chdir /".into(), sys::chdir("/"))?;
    step(
        || "read-only root".into(),
        sys::mount_setattr_path(
            "/",
            sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
            0,
        ),
    )?;
    Ok(())
}

fn describe(m: &MountStep) -> String {
    match m {
        MountStep::BindReadOnly { host, target, .. } | MountStep::BindWritable { host, target } => {
            format!("{} -> {}", host.display(), target.display())
        }
        MountStep::Scratch { target, .. }
        | MountStep::File { target, .. }
        | MountStep::Symlink { target, .. } => target.display().to_string(),
    }
}

fn find_program(argv0: &str, path_var: &str) -> Option<CString> {
    if argv0.contains('/') {
        return CString::new(argv0).ok();
    }
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .find_map(|dir| {
            let c = CString::new(format!("{dir}/{argv0}")).ok()?;
            sys::access_exec(&c).then_some(c)
        })
}

/// Entry point of the workload process. Never returns.
fn workload_main(plan: &Plan, notify: RawFd, status_fd: RawFd, tty: Option<RawFd>) -> ! {
    let empty = sys::sigset(&[]);
    let _ = sys::set_sigmask(&empty);
    sys::reset_signal_dispositions();
    if let Err(e) = sys::setsid() {
        fail(status_fd, "setsid", e);
    }
    // With a relayed pty, it becomes stdin/stdout/stderr and the controlling terminal of the
    // new session: a terminal of the sandbox's own, not the caller's.
    if let Some(slave) = tty {
        let r = (0..3)
            .try_for_each(|fd| sys::dup2(slave, fd))
            .and_then(|_| sys::set_controlling_tty(0));
        if let Err(e) = r {
            fail(status_fd, "terminal", e);
        }
    }
    if let Err(e) = sys::chdir(&plan.working_dir.display().to_string()) {
        fail(
            status_fd,
            &format!("working directory {}", plan.working_dir.display()),
            e,
        );
    }
    let path_var = plan
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(crate::plan::DEFAULT_PATH);
    let Some(program) = find_program(&plan.argv[0], path_var) else {
        send(
            status_fd,
            &Status::ExecFailed {
                program: plan.argv[0].clone(),
                errno: libc::ENOENT,
                error: "command not found in the sandbox (is its directory an immutable path?)"
                    .into(),
            },
        );
        sys::exit_now(127);
    };
    let argv_c: Vec<CString> = plan
        .argv
        .iter()
        .map(|a| CString::new(a.as_str()).unwrap_or_default())
        .collect();
    let envp_c: Vec<CString> = plan
        .env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")).unwrap_or_default())
        .collect();
    let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = envp_c.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());

    let hs = plan.handshake_fd as RawFd;
    let report_fd = hs + 1;
    if let Err(e) = sys::dup_to(notify, hs).and_then(|_| sys::dup_to(status_fd, report_fd)) {
        fail(status_fd, "move handshake descriptors", e);
    }
    sys::close(notify);
    sys::close(status_fd);
    // From here on, errors go to report_fd.
    if let Err(e) = sys::close_range(3, hs as u32 - 1)
        .and_then(|_| sys::close_range(report_fd as u32 + 1, u32::MAX))
    {
        fail(report_fd, "close inherited descriptors", e);
    }
    for (which, value) in &plan.rlimits {
        let res = match which {
            Rlimit::Cpu => libc::RLIMIT_CPU,
            Rlimit::FileSize => libc::RLIMIT_FSIZE,
            Rlimit::OpenFiles => libc::RLIMIT_NOFILE,
            Rlimit::Core => libc::RLIMIT_CORE,
        };
        if let Err(e) = sys::setrlimit(res, *value) {
            fail(report_fd, &format!("rlimit {which:?}"), e);
        }
    }
    if let Err(e) = sys::restrict_capabilities(&plan.keep_caps) {
        fail(report_fd, "drop capabilities", e);
    }
    if let Err(e) = sys::set_no_new_privs() {
        fail(report_fd, "no_new_privs", e);
    }
    if let Some(ll) = &plan.landlock {
        if let Err(e) = landlock_apply::restrict_self(ll) {
            fail(report_fd, "landlock", e);
        }
    }
    let prog = match crate::seccomp::compile(&plan.seccomp) {
        Ok(p) => p,
        Err(e) => fail(report_fd, "compile seccomp filter", e),
    };
    match sys::install_seccomp(&prog, plan.seccomp_reports) {
        Ok(Some(listener)) => {
            if let Err(e) = sys::send_fd(hs, listener) {
                fail(report_fd, "hand over seccomp listener", e);
            }
        }
        Ok(None) => {}
        Err(e) => fail(report_fd, "install seccomp filter", e),
    }
    let err = sys::execve(&program, &argv, &envp);
    let errno = err.raw_os_error().unwrap_or(0);
    send(
        report_fd,
        &Status::ExecFailed {
            program: program.to_string_lossy().into_owned(),
            errno,
            error: err.to_string(),
        },
    );
    sys::exit_now(if errno == libc::ENOENT { 127 } else { 126 })
}
