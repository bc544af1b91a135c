//! System call names: lookup, "did you mean", and the two fixed sets every policy builds on,
//! the always-on floor (never allowed) and the runtime baseline (always allowed in allow-list
//! mode unless the policy turns it off).
//!
//! Only x86_64 numbers are known; the sandbox refuses other architectures.

use crate::syscall_table::SYSCALLS_X86_64;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// Names that people write for a call that has another name in the kernel table.
/// `unmount` appears in the seed policy format; the kernel calls it `umount2`.
const ALIASES: &[(&str, &str)] = &[("unmount", "umount2"), ("umount", "umount2")];

/// A validated system call name with its x86_64 number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Syscall {
    pub name: String,
    pub nr: u32,
}

impl Syscall {
    pub fn lookup(name: &str) -> Result<Syscall, String> {
        let canonical = ALIASES
            .iter()
            .find(|(alias, _)| *alias == name)
            .map(|(_, real)| *real)
            .unwrap_or(name);
        match number(canonical) {
            Some(nr) => Ok(Syscall {
                name: canonical.to_string(),
                nr,
            }),
            None => {
                let hint = match nearest(name) {
                    Some(near) => format!("; did you mean `{near}`?"),
                    None => String::new(),
                };
                Err(format!("unknown syscall `{name}`{hint}"))
            }
        }
    }
}

impl<'de> Deserialize<'de> for Syscall {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Syscall::lookup(name.trim()).map_err(de::Error::custom)
    }
}

impl Serialize for Syscall {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

/// The x86_64 number of a syscall, by its kernel name.
pub fn number(name: &str) -> Option<u32> {
    SYSCALLS_X86_64
        .binary_search_by(|(n, _)| n.cmp(&name))
        .ok()
        .map(|i| SYSCALLS_X86_64[i].1)
}

/// The highest syscall number in the table.
pub fn max_number() -> u32 {
    SYSCALLS_X86_64.iter().map(|(_, n)| *n).max().unwrap_or(0)
}

/// The kernel name of an x86_64 syscall number, for reports.
pub fn name_of(nr: u32) -> Option<&'static str> {
    SYSCALLS_X86_64
        .iter()
        .find(|(_, n)| *n == nr)
        .map(|(name, _)| *name)
}

/// The closest known name by edit distance, if it is close enough to be a plausible typo.
pub fn nearest(name: &str) -> Option<&'static str> {
    let (best, dist) = SYSCALLS_X86_64
        .iter()
        .map(|(n, _)| (*n, edit_distance(name, n)))
        .min_by_key(|(_, d)| *d)?;
    (dist <= 1 + name.len() / 3).then_some(best)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Calls the sandbox denies whatever the policy says. Each one either reaches kernel attack
/// surface that untrusted code has no business touching, or would undo the isolation.
/// A policy may lift an entry only through `syscalls.unsafe_lift_floor`, which the CLI
/// announces loudly on every run.
pub const FLOOR: &[(&str, &str)] = &[
    ("kexec_load", "replaces the running kernel"),
    ("kexec_file_load", "replaces the running kernel"),
    ("init_module", "loads kernel code"),
    ("finit_module", "loads kernel code"),
    ("delete_module", "unloads kernel code"),
    ("bpf", "large kernel attack surface (verifier bugs)"),
    ("perf_event_open", "kernel attack surface and side channels"),
    ("ptrace", "inspects and rewrites other processes"),
    ("process_vm_readv", "reads another process's memory"),
    ("process_vm_writev", "writes another process's memory"),
    ("mount", "changes the sandbox's view of the filesystem"),
    ("umount2", "could uncover what the sandbox hides"),
    ("pivot_root", "changes the root"),
    ("move_mount", "new mount API"),
    ("open_tree", "new mount API"),
    ("open_tree_attr", "new mount API"),
    ("fsopen", "new mount API"),
    ("fsconfig", "new mount API"),
    ("fsmount", "new mount API"),
    ("fspick", "new mount API"),
    ("mount_setattr", "new mount API"),
    ("unshare", "new namespaces widen kernel attack surface"),
    ("setns", "joins other namespaces"),
    ("keyctl", "kernel keyrings are not namespaced"),
    ("add_key", "kernel keyrings are not namespaced"),
    ("request_key", "kernel keyrings are not namespaced"),
    ("userfaultfd", "used to win kernel races in exploits"),
    ("io_uring_setup", "bypasses seccomp for the I/O it performs"),
    ("io_uring_enter", "bypasses seccomp for the I/O it performs"),
    (
        "io_uring_register",
        "bypasses seccomp for the I/O it performs",
    ),
    (
        "open_by_handle_at",
        "opens files outside the mount tree (the 'shocker' escape)",
    ),
    ("name_to_handle_at", "companion of open_by_handle_at"),
    ("reboot", "host power state"),
    ("swapon", "host memory configuration"),
    ("swapoff", "host memory configuration"),
    ("clock_settime", "host clock"),
    ("clock_adjtime", "host clock"),
    ("settimeofday", "host clock"),
    ("adjtimex", "host clock"),
    ("acct", "host process accounting"),
    ("quotactl", "host filesystem quotas"),
    ("iopl", "raw hardware I/O"),
    ("ioperm", "raw hardware I/O"),
    ("syslog", "kernel log can leak addresses"),
    ("lookup_dcookie", "kernel internals"),
    ("vhangup", "terminal takeover"),
    ("uselib", "obsolete loader with a history of bugs"),
    ("nfsservctl", "obsolete"),
];

/// Calls the floor restricts by argument rather than by name: they stay usable, but the
/// dangerous forms are denied. The sandbox crate compiles these into BPF argument checks.
pub const FLOOR_BY_ARGUMENT: &[(&str, &str)] = &[
    ("clone", "denied when the flags ask for new namespaces"),
    (
        "clone3",
        "answered with ENOSYS so libc falls back to clone, whose flags can be checked",
    ),
    (
        "ioctl",
        "denied for TIOCSTI and TIOCLINUX (typing into the terminal)",
    ),
    ("socket", "denied for AF_VSOCK (talks to the hypervisor)"),
];

/// Calls that any dynamically linked program needs to start and run and that act only on
/// the calling process itself or on files the mount namespace and Landlock already govern.
/// In allow-list mode these are allowed in addition to `syscalls.allow`, unless the policy
/// sets `syscalls.baseline: false`. Nothing here opens, creates, or removes a file, starts a
/// process, or touches the network.
pub const BASELINE: &[&str] = &[
    // memory
    "brk",
    "mmap",
    "munmap",
    "mprotect",
    "mremap",
    "madvise",
    "msync",
    "mincore",
    "membarrier",
    // signals
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigpending",
    "rt_sigtimedwait",
    "sigaltstack",
    "restart_syscall",
    // threads and process start-up
    "arch_prctl",
    "set_tid_address",
    "set_robust_list",
    "get_robust_list",
    "rseq",
    "futex",
    "futex_waitv",
    "sched_yield",
    "sched_getaffinity",
    "getcpu",
    "exit",
    "exit_group",
    // identity and limits (queries only)
    "getpid",
    "getppid",
    "gettid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getgroups",
    "getresuid",
    "getresgid",
    "getpgrp",
    "getpgid",
    "getsid",
    "getrlimit",
    "prlimit64",
    "getrusage",
    "times",
    "uname",
    "sysinfo",
    "getrandom",
    // time
    "clock_gettime",
    "clock_getres",
    "clock_nanosleep",
    "gettimeofday",
    "time",
    "nanosleep",
    // already-open file descriptors
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "lseek",
    "close",
    "fstat",
    "fcntl",
    "dup",
    "dup2",
    "dup3",
    "ioctl",
    "getdents64",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    // looking at paths (visibility is decided by the mount namespace and Landlock)
    "newfstatat",
    "stat",
    "lstat",
    "statx",
    "access",
    "faccessat",
    "faccessat2",
    "readlink",
    "readlinkat",
    "getcwd",
];

/// Floor entries by name, for validation messages.
pub fn floor_reason(name: &str) -> Option<&'static str> {
    FLOOR.iter().find(|(n, _)| *n == name).map(|(_, why)| *why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_known_numbers_match() {
        assert!(SYSCALLS_X86_64.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(number("read"), Some(0));
        assert_eq!(number("clone3"), Some(435));
        assert_eq!(number("mseal"), Some(462));
        assert_eq!(name_of(59), Some("execve"));
    }

    #[test]
    fn aliases_and_suggestions() {
        assert_eq!(Syscall::lookup("unmount").unwrap().name, "umount2");
        let err = Syscall::lookup("opneat").unwrap_err();
        assert!(err.contains("did you mean `openat`"), "{err}");
        let err = Syscall::lookup("definitely_not_a_call_xyz").unwrap_err();
        assert!(!err.contains("did you mean"), "{err}");
    }

    #[test]
    fn fixed_sets_name_real_calls() {
        for (name, _) in FLOOR.iter().chain(FLOOR_BY_ARGUMENT) {
            assert!(number(name).is_some(), "{name}");
        }
        for name in BASELINE {
            assert!(number(name).is_some(), "{name}");
            assert!(floor_reason(name).is_none(), "{name} is in both sets");
        }
    }
}
