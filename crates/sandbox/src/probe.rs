//! What this host can enforce: read once per run (cheaply) and shown by `ironcage doctor`.
//! Reads /proc and /sys and asks the kernel harmless questions; changes nothing.

use crate::cgroup::{self, Controller, Layout, Parent};
use crate::plan::HostFacts;
use crate::sys;
use std::fs;
use std::path::Path;

/// Facts for planning a run as the current user.
pub fn host_facts() -> HostFacts {
    let uid = sys::getuid();
    let is_root = sys::geteuid() == 0;
    let layout = Layout::read();
    let landlock_abi = sys::landlock_abi();
    HostFacts {
        uid,
        gid: sys::getgid(),
        is_root,
        user_namespaces: user_namespaces(),
        landlock_abi,
        seccomp_user_notif: seccomp_user_notif(landlock_abi),
        cgroup: cgroup_parent(&layout, is_root, uid),
        block_devices: cgroup::block_devices(
            &fs::read_to_string("/proc/partitions").unwrap_or_default(),
        ),
        nofile_hard: sys::getrlimit(libc::RLIMIT_NOFILE)
            .map(|(_, h)| h)
            .unwrap_or(1024),
        host_env: std::env::vars().collect(),
    }
}

fn user_namespaces() -> Result<(), String> {
    let max = fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    if max == Some(0) {
        return Err("user namespaces are disabled (user.max_user_namespaces = 0); fix: sysctl -w user.max_user_namespaces=15000".into());
    }
    if let Ok(v) = fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone") {
        if v.trim() == "0" && sys::geteuid() != 0 {
            return Err("unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0); fix: sysctl -w kernel.unprivileged_userns_clone=1".into());
        }
    }
    if let Ok(v) = fs::read_to_string("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") {
        if v.trim() == "1" && sys::geteuid() != 0 {
            return Err("AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1); fix: an AppArmor profile for ironcage with `userns,` or sysctl -w kernel.apparmor_restrict_unprivileged_userns=0".into());
        }
    }
    Ok(())
}

/// SECCOMP_GET_NOTIF_SIZES succeeds on kernels with user notification (5.0+).
fn seccomp_user_notif(landlock_abi: i32) -> bool {
    // Landlock arrived in 5.13, user notification in 5.0: skip the probe when we can.
    landlock_abi >= 1 || sys::seccomp_user_notif_supported()
}

/// Where this user's run cgroups can go, or why nowhere.
pub fn cgroup_parent(layout: &Layout, is_root: bool, uid: u32) -> Result<Parent, String> {
    if layout.v1.is_empty() && layout.v2.is_none() {
        return Err("no cgroup filesystem is mounted".into());
    }
    if is_root {
        let parent = layout.root_parent().ok_or("no usable cgroup hierarchy")?;
        // A read-only cgroupfs (a container's default) cannot host our subtree: say so now,
        // where --best-effort can act on it, rather than fail after planning.
        let dirs: Vec<std::path::PathBuf> = match &parent {
            Parent::V1(map) => map.values().cloned().collect(),
            Parent::V2 { dir, .. } => vec![dir.clone()],
        };
        for dir in dirs {
            let existing = dir
                .ancestors()
                .find(|p| p.exists())
                .unwrap_or(&dir)
                .to_path_buf();
            if !sys::access_write(&existing) {
                return Err(format!(
                    "{} is not writable (a read-only cgroup mount, as in a container?)",
                    existing.display()
                ));
            }
        }
        return Ok(parent);
    }
    let parent = layout
        .user_parent(uid)
        .ok_or("no usable cgroup hierarchy")?;
    match &parent {
        Parent::V1(map) => {
            let mut usable = std::collections::BTreeMap::new();
            for (c, dir) in map {
                if writable_dir(dir) {
                    usable.insert(*c, dir.clone());
                }
            }
            if usable.is_empty() {
                let example = map
                    .values()
                    .next()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                return Err(format!("cgroup v1 subtrees such as {example} do not exist or are not writable by uid {uid}"));
            }
            Ok(Parent::V1(usable))
        }
        Parent::V2 { dir, controllers } => {
            let writable = writable_dir(dir)
                && sys::access_write(&dir.join("cgroup.procs"))
                && sys::access_write(&dir.join("cgroup.subtree_control"));
            if !writable {
                return Err(format!(
                    "this process's cgroup {} is not delegated to uid {uid}",
                    dir.display()
                ));
            }
            // We will move into a leaf and enable controllers here, which cgroup v2 allows
            // only if no other process lives in this cgroup (a terminal's scope has the shell).
            let me = sys::getpid().to_string();
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            if procs
                .lines()
                .any(|p| p.trim() != me && !p.trim().is_empty())
            {
                return Err(format!(
                    "this process's cgroup {} also holds other processes",
                    dir.display()
                ));
            }
            Ok(Parent::V2 {
                dir: dir.clone(),
                controllers: controllers.clone(),
            })
        }
    }
}

fn writable_dir(p: &Path) -> bool {
    sys::access_write(p)
}

/// One line of `ironcage doctor`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub mechanism: String,
    pub ok: bool,
    pub detail: String,
}

pub fn doctor() -> Vec<Check> {
    let facts = host_facts();
    let layout = Layout::read();
    let mut out = Vec::new();
    let mut add = |m: &str, ok: bool, d: String| {
        out.push(Check {
            mechanism: m.into(),
            ok,
            detail: d,
        })
    };
    add(
        "user",
        true,
        format!(
            "uid {} ({})",
            facts.uid,
            if facts.is_root {
                "root: sandboxes run as uid 65534"
            } else {
                "rootless: sandboxes run as your uid"
            }
        ),
    );
    add(
        "arch",
        cfg!(target_arch = "x86_64"),
        std::env::consts::ARCH.into(),
    );
    match &facts.user_namespaces {
        Ok(()) => add(
            "namespaces",
            true,
            "user, pid, mount, net, uts, ipc, cgroup".into(),
        ),
        Err(e) => add("namespaces", false, e.clone()),
    }
    add("seccomp", true, "seccomp-bpf filters".into());
    add(
        "seccomp.report",
        facts.seccomp_user_notif,
        if facts.seccomp_user_notif {
            "user notification: denied calls are reported by name".into()
        } else {
            "no user notification (needs Linux 5.0+)".into()
        },
    );
    let abi = facts.landlock_abi;
    add(
        "landlock",
        abi >= 1,
        match abi {
            0 => "not available (Linux 5.13+ with landlock in the lsm= list)".into(),
            a => format!(
                "ABI {a}: filesystem{}{}",
                if a >= 4 {
                    ", TCP ports"
                } else {
                    "; no TCP port rules (ABI 4)"
                },
                if a >= 6 {
                    ", signal and abstract-socket scoping"
                } else {
                    "; no scoping (ABI 6)"
                }
            ),
        },
    );
    let version = if layout.is_v1() {
        "v1 (hybrid)"
    } else if layout.v2.is_some() {
        "v2"
    } else {
        "none"
    };
    match &facts.cgroup {
        Ok(parent) => {
            for c in Controller::ALL {
                let ok = parent.has(c);
                add(
                    &format!("cgroup.{}", c.v1_name()),
                    ok,
                    format!(
                        "cgroup {version}{}",
                        if ok {
                            ""
                        } else {
                            ": controller not available to this user"
                        }
                    ),
                );
            }
        }
        Err(e) => add(
            "cgroups",
            false,
            format!(
                "cgroup {version}: {e}. Fix: {}",
                if facts.is_root {
                    "mount cgroup controllers".to_string()
                } else {
                    format!("sudo ironcage cgroup delegate --user {}", facts.uid)
                }
            ),
        ),
    }
    if layout.is_v1() {
        let favored = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains(" - cgroup2 ") && l.contains("favordynmods"));
        add(
            "cgroup.join",
            favored,
            if favored {
                "favordynmods is set: joining the run cgroup is fast".into()
            } else {
                "each run waits for an RCU grace period when it joins its cgroup (measured 5-13 ms on a 2-core VM). \
                 Fix (root, Linux 6.0+): mount -o remount,favordynmods <the cgroup2 mount, e.g. /sys/fs/cgroup/unified>"
                    .into()
            },
        );
    }
    add(
        "rlimits",
        true,
        format!(
            "file size, open files (host hard limit {}), core dumps off",
            facts.nofile_hard
        ),
    );
    add(
        "pidfd",
        sys::pidfd_open(sys::getpid()).is_ok(),
        "pidfd_open (Linux 5.3+)".into(),
    );
    out
}
