//! The warm pool: sandboxes built ahead of time, per profile, each held by a sandbox host
//! process (forked by the zygote, see `host`) until a job arrives. A sandbox serves one
//! job and is destroyed; a background task keeps `size` ready per warmed profile.
//!
//! Pooled per profile, not per (profile, language): a sandbox does not depend on the
//! language (the job brings the interpreter's command line), so one pool serves all
//! languages and fewer sandboxes sit idle.

use crate::host::Spec;
use crate::metrics::Metrics;
use ironcage_sandbox::sys;
use std::collections::{HashMap, VecDeque};
use std::os::fd::AsRawFd;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::unix::pipe;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("starting a sandbox host: {0}")]
    Spawn(std::io::Error),
    #[error("sandbox for profile `{profile}` could not be built: {reason}")]
    Build { profile: String, reason: String },
    #[error("sandbox for profile `{0}` took more than 30 s to build")]
    Slow(String),
}

/// A sandbox host process, known by a pidfd (it is the zygote's child, not ours): killed
/// without a pid-reuse race, and awaited by polling the pidfd.
pub struct HostProc {
    pidfd: OwnedFd,
}

impl HostProc {
    pub fn kill(&self) {
        let _ = sys::pidfd_send_signal(self.pidfd.as_raw_fd(), libc::SIGKILL);
    }

    /// Whether it is still running (the pidfd turns readable when it exits).
    pub fn alive(&self) -> bool {
        matches!(sys::poll(&[(self.pidfd.as_raw_fd(), libc::POLLIN)], 0), Ok(r) if r[0] == 0)
    }

    /// Waits for it to exit (the zygote's kernel-side reaping does the rest).
    pub async fn wait(self) {
        // Only on failure paths: a short poll is enough.
        while self.alive() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A built sandbox waiting for its job.
pub struct Warm {
    pub profile: String,
    pub host: HostProc,
    pub ctl_read: BufReader<OwnedReadHalf>,
    pub ctl_write: OwnedWriteHalf,
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
    /// The gateway listener inside the sandbox's network namespace (`Spec::llm`).
    pub llm_listener: Option<OwnedFd>,
}

/// The limits every pooled sandbox is built with (the server's maxima).
#[derive(Debug, Clone)]
pub struct Build {
    pub exe: PathBuf,
    pub memory_limit_bytes: u64,
    pub timeout_ms: u64,
    pub max_file_size: u64,
    pub pids_limit: u32,
    pub scratch_size: u64,
    /// The server's node name, passed to each host.
    pub node: String,
    /// Profiles whose sandboxes get an LLM gateway listener (served per execution).
    pub llm_profiles: Vec<String>,
}

/// The zygote (`ironcage sandbox-zygote`, see `host::zygote_main`) and our end of its
/// socket; restarted if it dies.
struct Zygote {
    sock: std::os::unix::net::UnixStream,
    child: std::process::Child,
}

impl Zygote {
    fn start(exe: &std::path::Path, node: &str) -> std::io::Result<Zygote> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        // A clean environment: nothing of the server's (database URLs, tokens) reaches
        // the hosts, and so nothing can reach a sandbox through a policy's `pass` list.
        let child = std::process::Command::new(exe)
            .args(["sandbox-zygote", "--node", node])
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .spawn()?;
        Ok(Zygote { sock: ours, child })
    }

    /// Asks for a host; returns its pidfd.
    fn fork_host(&mut self, fds: [&OwnedFd; 3], spec: &[u8]) -> std::io::Result<OwnedFd> {
        use std::io::Write;
        let s = self.sock.as_raw_fd();
        for fd in fds {
            sys::send_fd(s, fd.as_raw_fd())?;
        }
        let mut msg = (spec.len() as u32).to_le_bytes().to_vec();
        msg.extend_from_slice(spec);
        self.sock.write_all(&msg)?;
        sys::recv_fd(s)?.ok_or_else(|| std::io::Error::other("the zygote could not fork a host"))
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // Closing our end makes it exit; reap it.
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        let _ = self.child.wait();
    }
}

pub struct Pool {
    build: Build,
    size: usize,
    /// Profiles kept warm; others are built on demand.
    warm: Vec<String>,
    idle: Mutex<HashMap<String, VecDeque<Warm>>>,
    filling: Mutex<HashMap<String, usize>>,
    /// Profiles that have been filled to `size` at least once (for /ready).
    filled: Mutex<HashMap<String, bool>>,
    metrics: Arc<Metrics>,
    closed: AtomicBool,
    zygote: Arc<Mutex<Option<Zygote>>>,
}

impl Pool {
    pub fn new(build: Build, size: usize, warm: Vec<String>, metrics: Arc<Metrics>) -> Arc<Pool> {
        Arc::new(Pool {
            build,
            size,
            warm,
            idle: Mutex::default(),
            filling: Mutex::default(),
            filled: Mutex::default(),
            metrics,
            closed: AtomicBool::new(false),
            zygote: Arc::default(),
        })
    }

    /// Forks a host through the zygote (started, or restarted, as needed).
    async fn fork_host(&self, fds: [OwnedFd; 3], spec: Vec<u8>) -> std::io::Result<OwnedFd> {
        let zygote = Arc::clone(&self.zygote);
        let exe = self.build.exe.clone();
        let node = self.build.node.clone();
        tokio::task::spawn_blocking(move || {
            let mut z = zygote.lock().unwrap_or_else(|p| p.into_inner());
            for attempt in 0..2 {
                if z.is_none() {
                    *z = Some(Zygote::start(&exe, &node)?);
                }
                let Some(zy) = z.as_mut() else { continue };
                match zy.fork_host([&fds[0], &fds[1], &fds[2]], &spec) {
                    Ok(pidfd) => return Ok(pidfd),
                    // A dead zygote (EOF, EPIPE): start a new one and try once more.
                    Err(e) if attempt == 0 => {
                        tracing::warn!("sandbox zygote: {e}; restarting it");
                        *z = None;
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(std::io::Error::other("the sandbox zygote keeps failing"))
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Builds one sandbox and waits until it is ready.
    pub async fn spawn(&self, profile: &str) -> Result<Warm, PoolError> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(PoolError::Spawn)?;
        let (out_r, out_w) = sys::pipe().map_err(PoolError::Spawn)?;
        let (err_r, err_w) = sys::pipe().map_err(PoolError::Spawn)?;
        let spec = Spec {
            profile: profile.to_string(),
            memory_limit_bytes: self.build.memory_limit_bytes,
            timeout_ms: self.build.timeout_ms,
            max_file_size: self.build.max_file_size,
            pids_limit: self.build.pids_limit,
            scratch_size: self.build.scratch_size,
            run_id: ironcage_audit::run_events::new_run_id(),
            node: self.build.node.clone(),
            llm: self.build.llm_profiles.iter().any(|p| p == profile),
        };
        let llm = spec.llm;
        let spec = serde_json::to_vec(&spec).map_err(|e| PoolError::Build {
            profile: profile.into(),
            reason: e.to_string(),
        })?;
        // Our copies of the host's ends are closed when this returns (end of file on the
        // output pipes must mean the sandbox is done with them).
        let pidfd = self
            .fork_host([OwnedFd::from(theirs), out_w, err_w], spec)
            .await
            .map_err(PoolError::Spawn)?;
        let host = HostProc { pidfd };
        // The gateway listener comes first (a descriptor on one byte), then `ready`.
        let mut llm_listener = None;
        if llm {
            ours.set_read_timeout(Some(Duration::from_secs(30)))
                .map_err(PoolError::Spawn)?;
            let sock = ours.try_clone().map_err(PoolError::Spawn)?;
            let got = tokio::task::spawn_blocking(move || sys::recv_fd(sock.as_raw_fd())).await;
            match got {
                Ok(Ok(Some(fd))) => llm_listener = Some(fd),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    host.kill();
                    host.wait().await;
                    return Err(PoolError::Slow(profile.into()));
                }
                _ => {
                    // The host failed before its sandbox was built: what came instead of the
                    // descriptor is the first byte (`{`) of its error line.
                    let mut rest = String::new();
                    let _ =
                        std::io::BufRead::read_line(&mut std::io::BufReader::new(&ours), &mut rest);
                    host.kill();
                    host.wait().await;
                    let reason = match serde_json::from_str::<crate::host::HostMessage>(&format!(
                        "{{{rest}"
                    )) {
                        Ok(crate::host::HostMessage::Error(e)) => e,
                        _ => "the sandbox host failed before handing over its gateway listener"
                            .into(),
                    };
                    return Err(PoolError::Build {
                        profile: profile.into(),
                        reason,
                    });
                }
            }
        }
        ours.set_nonblocking(true).map_err(PoolError::Spawn)?;
        let ctl = tokio::net::UnixStream::from_std(ours).map_err(PoolError::Spawn)?;
        let (r, w) = ctl.into_split();
        let mut ctl_read = BufReader::new(r);
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(30), ctl_read.read_line(&mut line));
        let failed = |reason: String| PoolError::Build {
            profile: profile.into(),
            reason,
        };
        match read.await {
            Err(_) => {
                host.kill();
                host.wait().await;
                return Err(PoolError::Slow(profile.into()));
            }
            Ok(Ok(_)) if line == "ready\n" => {}
            Ok(Ok(_)) => {
                host.wait().await;
                let reason = match serde_json::from_str::<crate::host::HostMessage>(&line) {
                    Ok(crate::host::HostMessage::Error(e)) => e,
                    _ if line.is_empty() => "the sandbox host exited".into(),
                    _ => format!("unexpected message {line:?}"),
                };
                return Err(failed(reason));
            }
            Ok(Err(e)) => {
                host.kill();
                host.wait().await;
                return Err(failed(e.to_string()));
            }
        }
        let pipe = |fd| pipe::Receiver::from_owned_fd(fd).map_err(PoolError::Spawn);
        Ok(Warm {
            profile: profile.to_string(),
            host,
            ctl_read,
            ctl_write: w,
            stdout: pipe(out_r)?,
            stderr: pipe(err_r)?,
            llm_listener,
        })
    }

    /// A ready sandbox: from the pool if one is idle (a hit), else built now (a miss).
    pub async fn take(self: &Arc<Self>, profile: &str) -> Result<Warm, PoolError> {
        let mut found = None;
        {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(q) = idle.get_mut(profile) {
                while let Some(w) = q.pop_front() {
                    // One that died while idle (killed from outside) is discarded.
                    if w.host.alive() {
                        found = Some(w);
                        break;
                    }
                }
            }
        }
        self.report_idle();
        // Building a sandbox takes CPU that the execution we are about to start would
        // compete for (two cores here): while others are idle, the caller refills after
        // its execution (`refill`); an empty pool starts refilling now.
        if found.is_none() || self.idle_count(profile) == 0 {
            self.refill(profile);
        }
        match found {
            Some(w) => {
                self.metrics.pool_hit();
                Ok(w)
            }
            None => {
                self.metrics.pool_miss();
                self.spawn(profile).await
            }
        }
    }

    fn idle_count(&self, profile: &str) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.get(profile).map_or(0, VecDeque::len)
    }

    fn report_idle(&self) {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        for (p, q) in idle.iter() {
            self.metrics.set_pool_idle(p, q.len());
        }
    }

    /// Starts building sandboxes for `profile` until `size` are idle or being built.
    pub fn refill(self: &Arc<Self>, profile: &str) {
        if self.size == 0
            || self.closed.load(Ordering::Relaxed)
            || !self.warm.iter().any(|p| p == profile)
        {
            return;
        }
        let want = {
            let mut filling = self.filling.lock().unwrap_or_else(|p| p.into_inner());
            let f = filling.entry(profile.to_string()).or_insert(0);
            let want = self.size.saturating_sub(self.idle_count(profile) + *f);
            *f += want;
            want
        };
        for _ in 0..want {
            let pool = Arc::clone(self);
            let profile = profile.to_string();
            tokio::spawn(async move {
                let built = pool.spawn(&profile).await;
                {
                    let mut filling = pool.filling.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(f) = filling.get_mut(&profile) {
                        *f = f.saturating_sub(1);
                    }
                }
                match built {
                    Ok(w) if !pool.closed.load(Ordering::Relaxed) => {
                        let n = {
                            let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
                            let q = idle.entry(profile.clone()).or_default();
                            q.push_back(w);
                            q.len()
                        };
                        if n >= pool.size {
                            let mut filled = pool.filled.lock().unwrap_or_else(|p| p.into_inner());
                            filled.insert(profile.clone(), true);
                        }
                        pool.report_idle();
                    }
                    Ok(_) => {}
                    Err(e) => {
                        pool.metrics.pool_build_failure();
                        tracing::warn!("warm pool: {e}");
                        // No retry storm: the next take() asks again.
                    }
                }
            });
        }
    }

    /// Whether each of these profiles has had a full pool at least once.
    pub fn warmed(&self, profiles: &[String]) -> bool {
        let filled = self.filled.lock().unwrap_or_else(|p| p.into_inner());
        self.size == 0
            || profiles
                .iter()
                .all(|p| filled.get(p).copied().unwrap_or(false))
    }

    /// Stops refilling and lets every idle sandbox go: each host sees its control socket
    /// close, kills its sandbox and removes its cgroup.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let all: Vec<Warm> = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.drain().flat_map(|(_, q)| q).collect()
        };
        let hosts: Vec<HostProc> = all.into_iter().map(|w| w.host).collect();
        for h in hosts {
            // Each host sees its socket close (the Warm was dropped), kills its sandbox and
            // removes its cgroup; one that does not within 5 s is killed.
            if tokio::time::timeout(Duration::from_secs(5), async {
                while h.alive() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .is_err()
            {
                h.kill();
            }
        }
        self.report_idle();
    }
}
