//! cgroups for one run: create, limit, join, measure, kill, remove. Both hierarchies.
//!
//! Every function takes the filesystem root of the hierarchy as a path, so tests lay out a
//! fake cgroupfs in a temp dir. This module writes files; it never forks or signals except
//! to kill what is left in a cgroup it created. Errors carry the file and the data written.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup: cannot create {}: {source}", path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("cgroup: cannot write `{data}` to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        data: String,
        source: io::Error,
    },
    #[error("cgroup: cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cgroup: {0}")]
    Unavailable(String),
}

/// Controllers Iron Cage uses, named as cgroup v1 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Controller {
    Memory,
    Pids,
    Cpu,
    Blkio,
}

impl Controller {
    pub const ALL: [Controller; 4] = [
        Controller::Memory,
        Controller::Pids,
        Controller::Cpu,
        Controller::Blkio,
    ];

    pub fn v1_name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
            Controller::Blkio => "blkio",
        }
    }

    pub fn v2_name(self) -> &'static str {
        match self {
            Controller::Blkio => "io",
            other => other.v1_name(),
        }
    }
}

/// What limits to apply. `None` leaves a controller alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub pids: Option<u32>,
    /// CFS quota in microseconds per 100ms period.
    pub cpu_quota_us: Option<u64>,
    /// Read and write bytes per second, per block device.
    pub io_bps: Option<u64>,
}

impl Limits {
    pub fn controllers(&self) -> Vec<Controller> {
        let mut out = Vec::new();
        if self.memory_bytes.is_some() {
            out.push(Controller::Memory);
        }
        if self.pids.is_some() {
            out.push(Controller::Pids);
        }
        if self.cpu_quota_us.is_some() {
            out.push(Controller::Cpu);
        }
        if self.io_bps.is_some() {
            out.push(Controller::Blkio);
        }
        out
    }
}

pub const CPU_PERIOD_US: u64 = 100_000;

/// Where new cgroups go on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parent {
    /// One directory per controller (cgroup v1). Missing controllers are absent.
    V1(BTreeMap<Controller, PathBuf>),
    /// One directory with the controllers enabled in its subtree (cgroup v2).
    V2 {
        dir: PathBuf,
        controllers: Vec<Controller>,
    },
}

impl Parent {
    pub fn version(&self) -> u8 {
        match self {
            Parent::V1(_) => 1,
            Parent::V2 { .. } => 2,
        }
    }

    pub fn has(&self, c: Controller) -> bool {
        match self {
            Parent::V1(m) => m.contains_key(&c),
            Parent::V2 { controllers, .. } => controllers.contains(&c),
        }
    }
}

/// Facts about the host's cgroup mounts, read from /proc.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// v1 controller -> mount point.
    pub v1: BTreeMap<Controller, PathBuf>,
    /// v2 mount point, if any.
    pub v2: Option<PathBuf>,
    /// Controllers the v2 root offers (cgroup.controllers).
    pub v2_controllers: Vec<Controller>,
    /// This process's cgroup path per v1 controller, and on v2 ("" key is v2).
    pub own_v1: BTreeMap<Controller, String>,
    pub own_v2: Option<String>,
}

impl Layout {
    /// Reads /proc/self/mountinfo and /proc/self/cgroup.
    pub fn read() -> Layout {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mut layout = Layout::parse(&mountinfo, &own);
        if let Some(root) = &layout.v2 {
            let text = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            layout.v2_controllers = parse_v2_controllers(&text);
        }
        layout
    }

    pub fn parse(mountinfo: &str, own_cgroup: &str) -> Layout {
        let mut layout = Layout::default();
        for line in mountinfo.lines() {
            // id parent maj:min root mountpoint options ... - fstype source superoptions
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let fields: Vec<&str> = left.split(' ').collect();
            let rfields: Vec<&str> = right.split(' ').collect();
            if fields.len() < 5 || rfields.len() < 3 {
                continue;
            }
            let mountpoint = PathBuf::from(unescape(fields[4]));
            match rfields[0] {
                "cgroup2" if layout.v2.is_none() => layout.v2 = Some(mountpoint),
                "cgroup" => {
                    for opt in rfields[2].split(',') {
                        for c in Controller::ALL {
                            if opt == c.v1_name() {
                                layout.v1.entry(c).or_insert_with(|| mountpoint.clone());
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        for line in own_cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if ctrls.is_empty() {
                layout.own_v2 = Some(path.to_string());
            }
            for ctrl in ctrls.split(',') {
                for c in Controller::ALL {
                    if ctrl == c.v1_name() {
                        layout.own_v1.insert(c, path.to_string());
                    }
                }
            }
        }
        layout
    }

    /// v1 is in use when any controller Iron Cage needs is mounted on a v1 hierarchy.
    pub fn is_v1(&self) -> bool {
        !self.v1.is_empty()
    }

    /// Where a root-run sandbox's cgroups go: nested under this process's own cgroup on v1,
    /// under `<v2 root>/ironcage` on v2 (the root cgroup is exempt from the rule that a
    /// cgroup with controllers enabled for children may hold no processes).
    pub fn root_parent(&self) -> Option<Parent> {
        if self.is_v1() {
            let mut map = BTreeMap::new();
            for (c, mnt) in &self.v1 {
                let own = self.own_v1.get(c).map(String::as_str).unwrap_or("/");
                map.insert(*c, join_cgroup(mnt, own).join("ironcage"));
            }
            return Some(Parent::V1(map));
        }
        let root = self.v2.clone()?;
        Some(Parent::V2 {
            dir: root.join("ironcage"),
            controllers: self.v2_controllers.clone(),
        })
    }

    /// Where an unprivileged user's cgroups go once root has delegated them
    /// (`ironcage cgroup delegate --user NAME`): `<mount>/ironcage/user-<uid>` on v1; on v2
    /// the user's own cgroup when systemd (or root) delegated it.
    pub fn user_parent(&self, uid: u32) -> Option<Parent> {
        if self.is_v1() {
            let map = self
                .v1
                .iter()
                .map(|(c, mnt)| (*c, mnt.join("ironcage").join(format!("user-{uid}"))))
                .collect();
            return Some(Parent::V1(map));
        }
        let root = self.v2.clone()?;
        let own = self.own_v2.clone().unwrap_or_else(|| "/".into());
        let dir = join_cgroup(&root, &own);
        let text = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        Some(Parent::V2 {
            dir,
            controllers: parse_v2_controllers(&text),
        })
    }
}

fn join_cgroup(mnt: &Path, cg: &str) -> PathBuf {
    mnt.join(cg.trim_start_matches('/'))
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

pub fn parse_v2_controllers(text: &str) -> Vec<Controller> {
    text.split_whitespace()
        .filter_map(|w| Controller::ALL.into_iter().find(|c| c.v2_name() == w))
        .collect()
}

/// A cgroup created for one run. Dropping it does not remove it; call `remove`.
#[derive(Debug)]
pub struct RunCgroup {
    version: u8,
    /// (controller, dir) on v1; a single entry with every controller's dir on v2.
    dirs: Vec<(Option<Controller>, PathBuf)>,
    limits: Limits,
}

/// What the kernel measured for a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub peak_memory_bytes: Option<u64>,
    pub oom_kills: u64,
    pub pids_limit_hits: u64,
    pub cpu_usage_ns: Option<u64>,
    pub cpu_throttled_periods: Option<u64>,
}

fn write(path: &Path, data: &str) -> Result<(), CgroupError> {
    fs::write(path, data).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        data: data.to_string(),
        source,
    })
}

fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn mkdir(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError::Create {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Where a rootless supervisor on cgroup v2 moves itself inside its delegated cgroup.
pub const SUPERVISOR_LEAF: &str = "ironcage-supervisor";

/// Creates a run cgroup that must be new: a leftover with the same name (pid reuse, the
/// same pid in another pid namespace) may still belong to a live run elsewhere, and reusing
/// it would mix two runs' limits and counters. Returns the name actually used.
fn mkdir_new(base: &Path, name: &str) -> Result<PathBuf, CgroupError> {
    for attempt in 0..100 {
        let dir = if attempt == 0 {
            base.join(name)
        } else {
            base.join(format!("{name}-{attempt}"))
        };
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(CgroupError::Create { path: dir, source }),
        }
    }
    Err(CgroupError::Unavailable(format!(
        "{} has 100 run cgroups named {name}*",
        base.display()
    )))
}

fn mkdir_all(path: &Path) -> Result<(), CgroupError> {
    fs::create_dir_all(path).map_err(|source| CgroupError::Create {
        path: path.to_path_buf(),
        source,
    })
}

/// `keyed` of a cgroup file, None when the file cannot be read.
fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    read(path).ok().and_then(|t| keyed(&t, key))
}

/// Keyed value from a flat-keyed cgroup file such as memory.events ("oom_kill 3").
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

impl RunCgroup {
    /// Creates `<parent>/<name>` and applies the limits. `create_parent` makes the parent
    /// directories first (root); a delegated user's parent must already exist.
    pub fn create(
        parent: &Parent,
        name: &str,
        limits: &Limits,
        block_devices: &[String],
        create_parent: bool,
    ) -> Result<RunCgroup, CgroupError> {
        let wanted = limits.controllers();
        let mut cg = match parent {
            Parent::V1(map) => {
                let mut dirs = Vec::new();
                for c in &wanted {
                    let Some(base) = map.get(c) else {
                        return Err(CgroupError::Unavailable(format!(
                            "the {} controller is not mounted",
                            c.v1_name()
                        )));
                    };
                    if create_parent {
                        mkdir_all(base)?;
                    }
                    let dir = mkdir_new(base, name).map_err(|e| hint_delegate(e, base))?;
                    dirs.push((Some(*c), dir));
                }
                RunCgroup {
                    version: 1,
                    dirs,
                    limits: limits.clone(),
                }
            }
            Parent::V2 {
                dir: base,
                controllers,
            } => {
                for c in &wanted {
                    if !controllers.contains(c) {
                        return Err(CgroupError::Unavailable(format!(
                            "the {} controller is not enabled for {}",
                            c.v2_name(),
                            base.display()
                        )));
                    }
                }
                if create_parent {
                    mkdir_all(base)?;
                    // Enable controllers down from the hierarchy root to our parent.
                    let mut chain: Vec<&Path> = base
                        .ancestors()
                        .skip(1)
                        .take_while(|p| p.join("cgroup.subtree_control").exists())
                        .collect();
                    chain.reverse();
                    let enable: String = wanted
                        .iter()
                        .map(|c| format!("+{} ", c.v2_name()))
                        .collect();
                    for dir in chain.into_iter().chain([base.as_path()]) {
                        write(&dir.join("cgroup.subtree_control"), enable.trim())?;
                    }
                } else if !wanted.is_empty() {
                    // A delegated cgroup we live in (systemd-run --user --scope): cgroup v2
                    // lets a cgroup hand controllers to children only while it holds no
                    // process, so the supervisor first moves into a leaf of its own.
                    let leaf = base.join(SUPERVISOR_LEAF);
                    mkdir(&leaf)?;
                    write(
                        &leaf.join("cgroup.procs"),
                        &crate::sys::getpid().to_string(),
                    )?;
                    let enable: String = wanted
                        .iter()
                        .map(|c| format!("+{} ", c.v2_name()))
                        .collect();
                    write(&base.join("cgroup.subtree_control"), enable.trim())?;
                }
                let dir = mkdir_new(base, name)?;
                RunCgroup {
                    version: 2,
                    dirs: vec![(None, dir)],
                    limits: limits.clone(),
                }
            }
        };
        if let Err(e) = cg.apply(block_devices) {
            cg.remove();
            return Err(e);
        }
        cg.limits = limits.clone();
        Ok(cg)
    }

    fn dir(&self, c: Controller) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(k, _)| k.is_none() || *k == Some(c))
            .map(|(_, d)| d.as_path())
    }

    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(|(_, d)| d.as_path())
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Lowers the memory limit (a held sandbox's job asking for less than the plan).
    /// Never raises it: a request above the plan's limit keeps the plan's.
    pub fn lower_memory_limit(&mut self, bytes: u64) -> Result<(), CgroupError> {
        match self.limits.memory_bytes {
            Some(m) if bytes < m => {}
            _ => return Ok(()),
        }
        self.limits.memory_bytes = Some(bytes);
        self.apply_memory()
    }

    fn apply_memory(&self) -> Result<(), CgroupError> {
        let l = &self.limits;
        let v1 = self.version == 1;
        if let (Some(m), Some(d)) = (l.memory_bytes, self.dir(Controller::Memory)) {
            if v1 {
                write(&d.join("memory.limit_in_bytes"), &m.to_string())?;
                let memsw = d.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &m.to_string())?;
                }
                let _ = fs::write(d.join("memory.swappiness"), "0");
            } else {
                write(&d.join("memory.max"), &m.to_string())?;
                let swap = d.join("memory.swap.max");
                if swap.exists() {
                    write(&swap, "0")?;
                }
            }
        }
        Ok(())
    }

    fn apply(&self, block_devices: &[String]) -> Result<(), CgroupError> {
        self.apply_memory()?;
        let l = &self.limits;
        let v1 = self.version == 1;
        if let (Some(p), Some(d)) = (l.pids, self.dir(Controller::Pids)) {
            write(&d.join("pids.max"), &p.to_string())?;
        }
        if let (Some(q), Some(d)) = (l.cpu_quota_us, self.dir(Controller::Cpu)) {
            if v1 {
                write(&d.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write(&d.join("cpu.cfs_quota_us"), &q.to_string())?;
            } else {
                write(&d.join("cpu.max"), &format!("{q} {CPU_PERIOD_US}"))?;
            }
        }
        if let (Some(bps), Some(d)) = (l.io_bps, self.dir(Controller::Blkio)) {
            for dev in block_devices {
                if v1 {
                    write(
                        &d.join("blkio.throttle.read_bps_device"),
                        &format!("{dev} {bps}"),
                    )?;
                    write(
                        &d.join("blkio.throttle.write_bps_device"),
                        &format!("{dev} {bps}"),
                    )?;
                } else {
                    write(&d.join("io.max"), &format!("{dev} rbps={bps} wbps={bps}"))?;
                }
            }
        }
        Ok(())
    }

    /// Moves a process into every controller's cgroup.
    pub fn add(&self, pid: i32) -> Result<(), CgroupError> {
        for (_, d) in &self.dirs {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    pub fn usage(&self) -> Usage {
        let mut u = Usage::default();
        let v1 = self.version == 1;
        if let Some(d) = self
            .dir(Controller::Memory)
            .filter(|_| self.limits.memory_bytes.is_some())
        {
            if v1 {
                u.peak_memory_bytes = read(&d.join("memory.max_usage_in_bytes"))
                    .ok()
                    .and_then(|t| t.trim().parse().ok());
                u.oom_kills = read_keyed(&d.join("memory.oom_control"), "oom_kill").unwrap_or(0);
            } else {
                u.peak_memory_bytes = read(&d.join("memory.peak"))
                    .ok()
                    .and_then(|t| t.trim().parse().ok());
                u.oom_kills = read_keyed(&d.join("memory.events"), "oom_kill").unwrap_or(0);
            }
        }
        if let Some(d) = self
            .dir(Controller::Pids)
            .filter(|_| self.limits.pids.is_some())
        {
            u.pids_limit_hits = read_keyed(&d.join("pids.events"), "max").unwrap_or(0);
        }
        if let Some(d) = self
            .dir(Controller::Cpu)
            .filter(|_| self.limits.cpu_quota_us.is_some())
        {
            let stat = read(&d.join("cpu.stat")).unwrap_or_default();
            u.cpu_throttled_periods = keyed(&stat, "nr_throttled");
            if !v1 {
                u.cpu_usage_ns = keyed(&stat, "usage_usec").map(|us| us * 1000);
            }
        }
        u
    }

    /// Pids still in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        let mut out = Vec::new();
        for (_, d) in &self.dirs {
            if let Ok(text) = fs::read_to_string(d.join("cgroup.procs")) {
                out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Kills everything left and removes the directories. Never fails: cleanup is best
    /// done as far as possible, and leftovers are swept by `sweep_stale` on the next run.
    pub fn remove(&mut self) {
        // Usually everything is already dead (the pid namespace went with init): try the
        // plain rmdir first, and only then kill stragglers and retry.
        if self
            .dirs
            .iter()
            .all(|(_, d)| fs::remove_dir(d).is_ok() || !d.exists())
        {
            return;
        }
        for attempt in 0..50 {
            if self.version == 2 {
                if let Some((_, d)) = self.dirs.first() {
                    let _ = fs::write(d.join("cgroup.kill"), "1");
                }
            }
            let pids = self.pids();
            for pid in &pids {
                let _ = crate::sys::kill(*pid, libc::SIGKILL);
            }
            let mut all_gone = true;
            for (_, d) in &self.dirs {
                if d.exists() && fs::remove_dir(d).is_err() {
                    all_gone = false;
                }
            }
            if all_gone {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(if attempt < 10 {
                1
            } else {
                10
            }));
        }
    }
}

fn hint_delegate(e: CgroupError, base: &Path) -> CgroupError {
    match e {
        CgroupError::Create { path, source }
            if source.kind() == io::ErrorKind::PermissionDenied
                || source.kind() == io::ErrorKind::NotFound =>
        {
            CgroupError::Unavailable(format!(
                "cannot create {} ({source}); {} is not delegated to this user",
                path.display(),
                base.display()
            ))
        }
        other => other,
    }
}

/// Removes empty run cgroups left by a supervisor that died (SIGKILL) before cleaning up.
/// A run cgroup is named `run-<pid>-<n>`; it is stale when that supervisor pid is gone.
pub fn sweep_stale(parent: &Parent) {
    let bases: Vec<PathBuf> = match parent {
        Parent::V1(map) => map.values().cloned().collect(),
        Parent::V2 { dir, .. } => vec![dir.clone()],
    };
    for base in bases {
        let Ok(entries) = fs::read_dir(&base) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(pid) = name
                .strip_prefix("run-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            if Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let mut cg = RunCgroup {
                version: parent.version(),
                dirs: vec![(None, e.path())],
                limits: Limits::default(),
            };
            cg.remove();
        }
    }
}

/// Block devices as "major:minor", for the blkio/io limits: whole disks from
/// /proc/partitions (one read, where /sys/block costs one per device), without partitions
/// (throttling applies to whole disks) and without loop, ram and zram devices, whose I/O
/// is memory or is issued by the kernel on behalf of a backing file on a real disk.
pub fn block_devices(partitions: &str) -> Vec<String> {
    let mut disks: Vec<(String, String)> = Vec::new();
    for line in partitions.lines().skip(2) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [major, minor, _, name] = f[..] else {
            continue;
        };
        let is_partition = disks.iter().any(|(disk, _)| {
            let rest = name.strip_prefix(disk.as_str()).unwrap_or("");
            let rest = if disk.ends_with(|c: char| c.is_ascii_digit()) {
                rest.strip_prefix('p').unwrap_or("")
            } else {
                rest
            };
            !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit())
        });
        if !is_partition {
            disks.push((name.to_string(), format!("{major}:{minor}")));
        }
    }
    disks
        .into_iter()
        .filter(|(n, _)| !["loop", "ram", "zram"].iter().any(|p| n.starts_with(p)))
        .map(|(_, d)| d)
        .collect()
}

/// Root's side of rootless limits on cgroup v1: creates `<controller>/ironcage/user-<uid>`
/// in every controller hierarchy and hands it to `uid`, who can then create run cgroups in
/// it. On cgroup v2 the kernel also requires write access to the common ancestor of the
/// source and destination cgroups when moving a process, so delegation there is done by
/// systemd (`systemd-run --user --scope -p Delegate=yes`) and this returns an error saying so.
pub fn delegate(uid: u32) -> Result<Vec<PathBuf>, CgroupError> {
    let layout = Layout::read();
    if !layout.is_v1() {
        return Err(CgroupError::Unavailable(
            "this host uses cgroup v2: start rootless runs with `systemd-run --user --scope -p Delegate=yes ironcage run ...` so they run in a cgroup delegated to the user".into(),
        ));
    }
    let gid = crate::sys::getgid_of(uid);
    let mut out = Vec::new();
    for mnt in layout.v1.values() {
        let dir = mnt.join("ironcage").join(format!("user-{uid}"));
        mkdir_all(&dir)?;
        for f in ["", "cgroup.procs", "tasks"] {
            let p = if f.is_empty() {
                dir.clone()
            } else {
                dir.join(f)
            };
            if p.exists() {
                crate::sys::lchown(&p.display().to_string(), uid, gid).map_err(|source| {
                    CgroupError::Write {
                        path: p.clone(),
                        data: format!("chown {uid}:{gid}"),
                        source,
                    }
                })?;
            }
        }
        out.push(dir);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO_V1: &str = "\
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
33 30 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
35 30 0:31 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
36 30 0:32 / /sys/fs/cgroup/blkio rw - cgroup cgroup rw,blkio
";

    #[test]
    fn parses_v1_hybrid_layout() {
        let l = Layout::parse(MOUNTINFO_V1, "4:memory:/svc/a\n3:cpu,cpuacct:/\n0::/\n");
        assert!(l.is_v1());
        assert_eq!(
            l.v1[&Controller::Cpu],
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(l.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let Some(Parent::V1(map)) = l.root_parent() else {
            panic!()
        };
        assert_eq!(
            map[&Controller::Memory],
            PathBuf::from("/sys/fs/cgroup/memory/svc/a/ironcage")
        );
        assert_eq!(
            map[&Controller::Pids],
            PathBuf::from("/sys/fs/cgroup/pids/ironcage")
        );
        let Some(Parent::V1(map)) = l.user_parent(1000) else {
            panic!()
        };
        assert_eq!(
            map[&Controller::Memory],
            PathBuf::from("/sys/fs/cgroup/memory/ironcage/user-1000")
        );
    }

    #[test]
    fn parses_pure_v2_layout() {
        let l = Layout::parse(
            "31 25 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "0::/user.slice/x.scope\n",
        );
        assert!(!l.is_v1());
        assert_eq!(l.own_v2.as_deref(), Some("/user.slice/x.scope"));
        assert_eq!(
            parse_v2_controllers("cpuset cpu io memory hugetlb pids"),
            vec![
                Controller::Cpu,
                Controller::Blkio,
                Controller::Memory,
                Controller::Pids
            ]
        );
    }

    fn fake_v1(root: &Path) -> Parent {
        let mut map = BTreeMap::new();
        for c in Controller::ALL {
            map.insert(c, root.join(c.v1_name()).join("ironcage"));
        }
        Parent::V1(map)
    }

    #[test]
    fn v1_writes_limits_into_each_controller() {
        let tmp = tempfile::tempdir().unwrap();
        let limits = Limits {
            memory_bytes: Some(1 << 30),
            pids: Some(64),
            cpu_quota_us: Some(50_000),
            io_bps: Some(100 << 20),
        };
        let cg = RunCgroup::create(
            &fake_v1(tmp.path()),
            "run-1-1",
            &limits,
            &["8:0".into()],
            true,
        )
        .unwrap();
        let d = tmp.path();
        let r = |p: &str| fs::read_to_string(d.join(p)).unwrap();
        assert_eq!(
            r("memory/ironcage/run-1-1/memory.limit_in_bytes"),
            "1073741824"
        );
        assert_eq!(r("pids/ironcage/run-1-1/pids.max"), "64");
        assert_eq!(r("cpu/ironcage/run-1-1/cpu.cfs_quota_us"), "50000");
        assert_eq!(r("cpu/ironcage/run-1-1/cpu.cfs_period_us"), "100000");
        assert_eq!(
            r("blkio/ironcage/run-1-1/blkio.throttle.write_bps_device"),
            "8:0 104857600"
        );
        fs::write(
            d.join("memory/ironcage/run-1-1/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        fs::write(
            d.join("memory/ironcage/run-1-1/memory.max_usage_in_bytes"),
            "5000\n",
        )
        .unwrap();
        fs::write(d.join("pids/ironcage/run-1-1/pids.events"), "max 7\n").unwrap();
        let u = cg.usage();
        assert_eq!(
            (u.peak_memory_bytes, u.oom_kills, u.pids_limit_hits),
            (Some(5000), 2, 7)
        );
    }

    #[test]
    fn v2_enables_controllers_and_writes_limits() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::write(root.join("cgroup.subtree_control"), "").unwrap();
        let parent = Parent::V2 {
            dir: root.join("ironcage"),
            controllers: Controller::ALL.to_vec(),
        };
        let limits = Limits {
            memory_bytes: Some(1 << 20 << 4),
            pids: Some(10),
            cpu_quota_us: Some(200_000),
            io_bps: Some(1000),
        };
        RunCgroup::create(&parent, "run-1-2", &limits, &["259:0".into()], true).unwrap();
        let r = |p: &str| fs::read_to_string(root.join(p)).unwrap();
        assert_eq!(r("cgroup.subtree_control"), "+memory +pids +cpu +io");
        assert_eq!(r("ironcage/run-1-2/memory.max"), "16777216");
        assert_eq!(r("ironcage/run-1-2/cpu.max"), "200000 100000");
        assert_eq!(r("ironcage/run-1-2/io.max"), "259:0 rbps=1000 wbps=1000");
    }

    #[test]
    fn block_devices_are_whole_real_disks() {
        let text = "major minor  #blocks  name\n\n   7        0      1 loop0\n   7       10      1 loop10\n 254        0  1000 vda\n 254        1   900 vda1\n 259        0  1000 nvme0n1\n 259        1   500 nvme0n1p1\n 252        0   100 zram0\n   8       16   100 sdb\n   8       17   100 sdb1\n";
        assert_eq!(block_devices(text), vec!["254:0", "259:0", "8:16"]);
    }

    #[test]
    fn rootless_v2_moves_the_supervisor_into_a_leaf_first() {
        let tmp = tempfile::tempdir().unwrap();
        let scope = tmp.path().join("app.slice/run-1.scope");
        fs::create_dir_all(&scope).unwrap();
        fs::write(scope.join("cgroup.subtree_control"), "").unwrap();
        let parent = Parent::V2 {
            dir: scope.clone(),
            controllers: Controller::ALL.to_vec(),
        };
        let limits = Limits {
            pids: Some(10),
            ..Limits::default()
        };
        RunCgroup::create(&parent, "run-9-0", &limits, &[], false).unwrap();
        let leaf_procs =
            fs::read_to_string(scope.join(SUPERVISOR_LEAF).join("cgroup.procs")).unwrap();
        assert_eq!(leaf_procs, crate::sys::getpid().to_string());
        assert_eq!(
            fs::read_to_string(scope.join("cgroup.subtree_control")).unwrap(),
            "+pids"
        );
        assert_eq!(
            fs::read_to_string(scope.join("run-9-0/pids.max")).unwrap(),
            "10"
        );
    }

    #[test]
    fn an_existing_run_cgroup_is_never_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let parent = fake_v1(tmp.path());
        let other = tmp.path().join("pids/ironcage/run-5-0");
        fs::create_dir_all(&other).unwrap();
        let limits = Limits {
            pids: Some(10),
            ..Limits::default()
        };
        let cg = RunCgroup::create(&parent, "run-5-0", &limits, &[], true).unwrap();
        assert!(
            !other.join("pids.max").exists(),
            "another run's cgroup was touched"
        );
        assert_eq!(
            cg.dirs().next().unwrap(),
            tmp.path().join("pids/ironcage/run-5-0-1")
        );
    }

    #[test]
    fn missing_controller_is_unavailable_not_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let parent = Parent::V2 {
            dir: tmp.path().join("ironcage"),
            controllers: vec![Controller::Memory],
        };
        let limits = Limits {
            pids: Some(10),
            ..Limits::default()
        };
        let e = RunCgroup::create(&parent, "run-1-3", &limits, &[], true).unwrap_err();
        assert!(
            matches!(e, CgroupError::Unavailable(ref m) if m.contains("pids")),
            "{e}"
        );
    }
}
