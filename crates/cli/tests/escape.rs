//! Attacks from inside the sandbox. Each test tries to break one isolation claim, asserts
//! the specific way it failed (an errno, a kill, a limit), and that the run report shows
//! it where the kernel lets us observe it. Every test runs as root and as a user.

mod common;
use common::*;
use std::path::Path;

/// Python prelude: raw syscalls through ctypes, returning (result, errno).
const SYSCALL: &str = "import ctypes, os, sys, errno\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.syscall.restype = ctypes.c_long\ndef sc(nr, *a):\n    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(x) for x in a])\n    return r, ctypes.get_errno()\n";

fn attack(mode: Mode, name: &str, nr: u32, args: &str, syscall: &str) {
    let s = Scratch::new();
    let p = policy(&s, &[]);
    let code = format!("{SYSCALL}r, e = sc({nr}{args})\nprint(r, errno.errorcode.get(e, e))");
    let r = py(mode, &p, &code);
    assert_eq!(r.code, 0, "{name}: {}", r.show());
    assert_eq!(
        r.stdout.trim(),
        "-1 EPERM",
        "{name} must fail with EPERM: {}",
        r.show()
    );
    assert!(
        r.denied(syscall) >= 1,
        "{name} must be reported as a `{syscall}` violation: {}",
        r.show()
    );
}

both_modes!(
    fn mount_is_denied(mode: Mode) {
        attack(mode, "mount", 165, ", 0, 0, 0, 0, 0", "mount");
    }
);
both_modes!(
    fn unshare_is_denied(mode: Mode) {
        attack(
            mode,
            "unshare(CLONE_NEWUSER)",
            272,
            ", 0x10000000",
            "unshare",
        );
    }
);
both_modes!(
    fn ptrace_is_denied(mode: Mode) {
        attack(
            mode,
            "ptrace(PTRACE_TRACEME)",
            101,
            ", 0, 0, 0, 0",
            "ptrace",
        );
    }
);
both_modes!(
    fn bpf_is_denied(mode: Mode) {
        attack(mode, "bpf", 321, ", 0, 0, 0", "bpf");
    }
);
both_modes!(
    fn keyctl_is_denied(mode: Mode) {
        attack(mode, "keyctl", 250, ", 0, 0, 0, 0", "keyctl");
    }
);
both_modes!(
    fn io_uring_setup_is_denied(mode: Mode) {
        attack(mode, "io_uring_setup", 425, ", 8, 0", "io_uring_setup");
    }
);
both_modes!(
    fn userfaultfd_is_denied(mode: Mode) {
        attack(mode, "userfaultfd", 323, ", 0", "userfaultfd");
    }
);
both_modes!(
    fn tiocsti_is_denied(mode: Mode) {
        // ioctl(0, TIOCSTI, &c): typing into the controlling terminal.
        attack(
            mode,
            "ioctl(TIOCSTI)",
            16,
            ", 0, 0x5412, ctypes.addressof(ctypes.c_char(b'x'))",
            "ioctl",
        );
    }
);
both_modes!(
    fn clone_with_namespace_flags_is_denied(mode: Mode) {
        // clone(CLONE_NEWUSER | SIGCHLD): a new user namespace would hand out capabilities.
        attack(
            mode,
            "clone(CLONE_NEWUSER)",
            56,
            ", 0x10000011, 0, 0, 0, 0",
            "clone",
        );
    }
);
both_modes!(
    fn vsock_is_denied(mode: Mode) {
        attack(mode, "socket(AF_VSOCK)", 41, ", 40, 1, 0", "socket");
    }
);

both_modes!(
    fn nested_user_namespaces_are_exhausted(mode: Mode) {
        // Behind the seccomp floor: even a namespace created some other way hits a zero quota.
        let s = Scratch::new();
        let r = py(
            mode,
            &policy(&s, &[]),
            "print(open('/proc/sys/user/max_user_namespaces').read().strip())",
        );
        assert_eq!(r.stdout.trim(), "0", "{}", r.show());
    }
);

both_modes!(
    fn fork_bomb_is_held_by_pids_limit(mode: Mode) {
        let s = Scratch::new();
        let p = policy(&s, &["resources:\n  pids_limit: 24\n  memory_limit_bytes: 512M\n  session_timeout_seconds: 60\n"]);
        let code = "import os, errno, time\nkids = []\nerr = None\nfor i in range(200):\n    try:\n        pid = os.fork()\n    except OSError as e:\n        err = errno.errorcode[e.errno]; break\n    if pid == 0:\n        time.sleep(30); os._exit(0)\n    kids.append(pid)\nprint(len(kids), err)\n";
        let r = py(mode, &p, code);
        assert_eq!(r.code, 0, "{}", r.show());
        let mut parts = r.stdout.split_whitespace();
        let forked: u32 = parts.next().unwrap().parse().unwrap();
        assert!(
            forked < 24,
            "forked {forked} processes under pids_limit 24: {}",
            r.show()
        );
        assert_eq!(parts.next(), Some("EAGAIN"), "{}", r.show());
        assert_eq!(r.report["limits"]["pids"]["hit"], true, "{}", r.show());
        assert!(r.report["limits"]["pids_refused_forks"].as_u64().unwrap() >= 1);
    }
);

both_modes!(
    fn memory_bomb_is_oom_killed(mode: Mode) {
        let s = Scratch::new();
        let p = policy(&s, &["resources:\n  memory_limit_bytes: 64M\n  pids_limit: 64\n  session_timeout_seconds: 60\n"]);
        let r = py(
            mode,
            &p,
            "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))\n",
        );
        assert_eq!(
            r.code,
            122,
            "memory bomb must end with the 'killed: memory' code: {}",
            r.show()
        );
        assert_eq!(r.report["outcome"], "out_of_memory", "{}", r.show());
        assert!(r.report["limits"]["oom_kills"].as_u64().unwrap() >= 1);
        assert_eq!(r.report["limits"]["memory"]["hit"], true);
        let peak = r.report["peak_memory_bytes"].as_u64().unwrap();
        assert!(peak <= 64 << 20, "peak {peak} above the limit");
        assert!(r.stderr.contains("killed: out of memory"), "{}", r.show());
    }
);

both_modes!(
    fn cpu_spin_is_killed_at_timeout(mode: Mode) {
        let s = Scratch::new();
        let marker = format!("spin-{}", unique());
        let p = policy(&s, &["resources:\n  memory_limit_bytes: 256M\n  pids_limit: 64\n  session_timeout_seconds: 2\n"]);
        let r = py(mode, &p, &format!("# {marker}\nwhile True: pass"));
        assert_eq!(r.code, 121, "{}", r.show());
        assert_eq!(r.report["outcome"], "timeout");
        assert_eq!(r.report["limits"]["timeout"]["hit"], true);
        let wall = r.report["wall_time_ms"].as_f64().unwrap();
        assert!((1900.0..15000.0).contains(&wall), "killed after {wall} ms");
        assert!(
            host_processes_with(&marker).is_empty(),
            "left running: {:?}",
            host_processes_with(&marker)
        );
    }
);

both_modes!(
    fn double_forked_daemon_dies_at_timeout(mode: Mode) {
        let s = Scratch::new();
        let marker = format!("daemon-{}", unique());
        let p = policy(&s, &["resources:\n  memory_limit_bytes: 256M\n  pids_limit: 64\n  session_timeout_seconds: 2\n"]);
        // setsid + double fork: the daemon is reparented to init and leaves the session.
        let script = format!("setsid bash -c 'bash -c \"exec -a {marker} sleep 300\" & disown' </dev/null >/dev/null 2>&1 & sleep 100");
        let r = cage(mode, &p, &["/bin/bash", "-c", &script]);
        assert_eq!(r.code, 121, "{}", r.show());
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            host_processes_with(&marker).is_empty(),
            "daemon survived: {:?}",
            host_processes_with(&marker)
        );
    }
);

both_modes!(
    fn daemon_dies_when_the_command_exits(mode: Mode) {
        let s = Scratch::new();
        let marker = format!("orphan-{}", unique());
        let p = policy(&s, &[]);
        let script = format!("setsid bash -c 'exec -a {marker} sleep 300' </dev/null >/dev/null 2>&1 & sleep 0.2; echo started");
        let r = cage(mode, &p, &["/bin/bash", "-c", &script]);
        assert_eq!((r.code, r.stdout.trim()), (0, "started"), "{}", r.show());
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            host_processes_with(&marker).is_empty(),
            "orphan survived: {:?}",
            host_processes_with(&marker)
        );
    }
);

both_modes!(
    fn writing_past_the_file_size_limit_fails(mode: Mode) {
        let s = Scratch::new();
        let p = policy(&s, &["resources:\n  memory_limit_bytes: 256M\n  pids_limit: 64\n  session_timeout_seconds: 30\n  max_file_size: 1M\n"]);
        // Python ignores SIGXFSZ, so the write fails with EFBIG.
        let r = py(mode, &p, "import errno\ntry:\n    open('/tmp/big', 'wb').write(b'x' * (2 << 20))\n    print('wrote')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\n");
        assert_eq!(r.stdout.trim(), "EFBIG", "{}", r.show());
        // A program that does not ignore it is killed by SIGXFSZ, and the report says so.
        let r = cage(
            mode,
            &p,
            &[
                "/bin/bash",
                "-c",
                "exec head -c 2000000 /dev/zero > /tmp/big",
            ],
        );
        assert_eq!(r.code, 128 + 25, "{}", r.show());
        assert_eq!(r.report["signal"], "SIGXFSZ");
        assert_eq!(r.report["limits"]["file_size"]["hit"], true);
    }
);

both_modes!(
    fn host_secrets_are_absent(mode: Mode) {
        let s = Scratch::new();
        let home = match mode {
            Mode::Root => "/root".to_string(),
            Mode::User => format!("/home/{}", test_user().0),
        };
        let code = format!("import os\nfor p in ['/etc/shadow', '/root', '{home}', '/home', '/sys', '/var/log', '/run']:\n    print(p, os.path.exists(p))\n");
        let r = py(mode, &policy(&s, &[]), &code);
        assert_eq!(r.code, 0, "{}", r.show());
        for line in r.stdout.lines() {
            assert!(
                line.ends_with(" False"),
                "visible in the sandbox: {line}\n{}",
                r.show()
            );
        }
        assert_eq!(r.stdout.lines().count(), 7);
    }
);

both_modes!(
    fn immutable_paths_are_read_only(mode: Mode) {
        let s = Scratch::new();
        let code = "import errno\nfor p in ['/usr/bin/ironcage-pwned', '/usr/lib/os.py', '/etc/passwd', '/newdir']:\n    try:\n        open(p, 'w').write('x'); print(p, 'WROTE')\n    except OSError as e:\n        print(p, errno.errorcode[e.errno])\n";
        let r = py(mode, &policy(&s, &[]), code);
        assert_eq!(r.code, 0, "{}", r.show());
        for line in r.stdout.lines() {
            assert!(
                line.ends_with("EROFS") || line.ends_with("EACCES"),
                "write allowed: {line}\n{}",
                r.show()
            );
        }
        assert!(!Path::new("/usr/bin/ironcage-pwned").exists());
        // Each attempt is named in the report.
        let mut paths: Vec<&str> = r.report["violations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["kind"] == "path")
            .map(|v| v["path"].as_str().unwrap())
            .collect();
        paths.sort();
        assert_eq!(
            paths,
            vec![
                "/etc/passwd",
                "/newdir",
                "/usr/bin/ironcage-pwned",
                "/usr/lib/os.py"
            ],
            "{}",
            r.show()
        );
    }
);

both_modes!(
    fn only_output_paths_reach_the_host(mode: Mode) {
        let s = Scratch::new();
        let out = s.path.join("out");
        let marker = format!("leak-{}", unique());
        let p = policy(&s, &[&format!("filesystem:\n  immutable_paths:\n    - {{ host_path: /usr, sandbox_path: /usr }}\n    - {{ host_path: /lib, sandbox_path: /lib }}\n    - {{ host_path: /lib64, sandbox_path: /lib64, optional: true }}\n  scratch_paths: [/tmp, /var/tmp]\n  output_paths:\n    - {{ host_path: {}, sandbox_path: /output }}\n  working_dir: /tmp\n", out.display())]);
        let code = format!("for d in ['/tmp', '/var/tmp', '/output']:\n    open(d + '/{marker}', 'w').write(d)\nprint('ok')\n");
        let r = py(mode, &p, &code);
        assert_eq!(r.stdout.trim(), "ok", "{}", r.show());
        assert_eq!(
            std::fs::read_to_string(out.join(&marker)).unwrap(),
            "/output"
        );
        assert!(
            !Path::new("/tmp").join(&marker).exists(),
            "scratch write reached host /tmp"
        );
        assert!(
            !Path::new("/var/tmp").join(&marker).exists(),
            "scratch write reached host /var/tmp"
        );
    }
);

both_modes!(
    fn planted_symlink_does_not_redirect_the_host(mode: Mode) {
        let s = Scratch::new();
        let out = s.path.join("out");
        let victim = s.path.join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("precious"), "keep").unwrap();
        let fs = |host: &Path| {
            format!("filesystem:\n  immutable_paths:\n    - {{ host_path: /usr, sandbox_path: /usr }}\n    - {{ host_path: /lib, sandbox_path: /lib }}\n    - {{ host_path: /lib64, sandbox_path: /lib64, optional: true }}\n  scratch_paths: [/tmp]\n  output_paths:\n    - {{ host_path: {}, sandbox_path: /output }}\n  working_dir: /tmp\n", host.display())
        };
        // Run 1 plants links to a host directory and to /etc inside its output directory.
        let p1 = policy(&s, &[&fs(&out)]);
        let code = format!("import os\nos.symlink('{}', '/output/evil')\nos.symlink('/etc', '/output/etc')\nprint('planted')", victim.display());
        let r = py(mode, &p1, &code);
        assert_eq!(r.stdout.trim(), "planted", "{}", r.show());
        // Run 2 names the planted link as its output path: ironcage must refuse, not follow it.
        let p2 = policy(&s, &[&fs(&out.join("evil"))]);
        let r = py(mode, &p2, "open('/output/precious', 'w').write('pwned')");
        assert_eq!(r.code, 125, "{}", r.show());
        assert!(r.stderr.contains("symbolic link"), "{}", r.show());
        // Run 3 writes through the links from inside: they resolve in the sandbox's own tree.
        let r = py(mode, &p1, "import errno\nfor p in ['/output/etc/passwd', '/output/evil/precious']:\n    try:\n        open(p, 'w').write('pwned'); print('WROTE', p)\n    except OSError as e:\n        print(errno.errorcode[e.errno])\n");
        assert!(!r.stdout.contains("WROTE /output/etc"), "{}", r.show());
        assert_eq!(
            std::fs::read_to_string(victim.join("precious")).unwrap(),
            "keep"
        );
        assert!(!std::fs::read_to_string("/etc/passwd")
            .unwrap()
            .contains("pwned"));
    }
);

both_modes!(
    fn isolated_network_cannot_reach_host_loopback_or_dns(mode: Mode) {
        let s = Scratch::new();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let code = format!("import socket, errno\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=3); print('CONNECTED')\nexcept OSError as e:\n    print(errno.errorcode.get(e.errno, e))\ntry:\n    socket.getaddrinfo('example.com', 443); print('RESOLVED')\nexcept socket.gaierror as e:\n    print('gaierror')\nprint(sorted(n for _, n in socket.if_nameindex()))\n");
        let r = py(mode, &policy(&s, &[]), &code);
        let lines: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(
            lines,
            vec!["ECONNREFUSED", "gaierror", "['lo']"],
            "{}",
            r.show()
        );
        assert!(
            listener.accept().is_err(),
            "the host listener received a connection"
        );
        // Reaching out is a violation the report names (loopback inside is the sandbox's own).
        let r = py(mode, &policy(&s, &[]), "import socket, errno\ntry:\n    socket.create_connection(('192.0.2.1', 443), timeout=3)\nexcept OSError as e:\n    print(errno.errorcode.get(e.errno, e))\n");
        assert_eq!(r.stdout.trim(), "ENETUNREACH", "{}", r.show());
        let v = &r.report["violations"];
        assert_eq!(v.as_array().map(|a| a.len()), Some(1), "{}", r.show());
        assert_eq!(
            (
                v[0]["kind"].as_str(),
                v[0]["address"].as_str(),
                v[0]["port"].as_u64()
            ),
            (Some("network"), Some("192.0.2.1"), Some(443)),
            "{}",
            r.show()
        );
    }
);

both_modes!(
    fn setuid_binaries_gain_nothing(mode: Mode) {
        let s = Scratch::new();
        // util-linux mount is setuid root on the host; inside, no_new_privs and nosuid mounts
        // keep our uid, so it refuses as an unprivileged user would be refused.
        assert!(
            std::fs::metadata("/usr/bin/mount")
                .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o4000 != 0)
                .unwrap_or(false),
            "test needs setuid /usr/bin/mount"
        );
        let r = cage(mode, &policy(&s, &[]), &["/bin/bash", "-c", "/usr/bin/mount -t tmpfs none /tmp; echo rc=$?; grep -E '^(Uid|NoNewPrivs|CapEff)' /proc/self/status"]);
        assert!(
            r.stdout.contains("rc=32") || r.stdout.contains("rc=1"),
            "{}",
            r.show()
        );
        assert!(r.stdout.contains("NoNewPrivs:\t1"), "{}", r.show());
        assert!(
            r.stdout.contains("CapEff:\t0000000000000000"),
            "{}",
            r.show()
        );
        assert!(
            !r.stdout
                .lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().skip(1).any(|u| u == "0")),
            "{}",
            r.show()
        );
    }
);

both_modes!(
    fn proc_sys_and_sys_are_not_writable(mode: Mode) {
        let s = Scratch::new();
        let code = "import errno\nfor p in ['/proc/sys/kernel/hostname', '/proc/sys/vm/drop_caches', '/proc/sysrq-trigger', '/sys/kernel/uevent_helper']:\n    try:\n        open(p, 'w').write('x'); print(p, 'WROTE')\n    except OSError as e:\n        print(p, errno.errorcode[e.errno])\n";
        let r = py(mode, &policy(&s, &[]), code);
        let got: Vec<&str> = r
            .stdout
            .lines()
            .map(|l| l.rsplit(' ').next().unwrap())
            .collect();
        // This kernel may be built without magic SysRq; then the file is absent everywhere.
        let sysrq = if Path::new("/proc/sysrq-trigger").exists() {
            "EROFS"
        } else {
            "ENOENT"
        };
        assert_eq!(got, vec!["EROFS", "EROFS", sysrq, "ENOENT"], "{}", r.show());
    }
);

both_modes!(
    fn host_processes_are_invisible_and_unkillable(mode: Mode) {
        let s = Scratch::new();
        let marker = format!("victim-{}", unique());
        let mut victim = std::process::Command::new("bash")
            .args(["-c", &format!("exec -a {marker} sleep 60")])
            .spawn()
            .unwrap();
        let host_pid = victim.id();
        let code = format!("import os, errno\npids = [p for p in os.listdir('/proc') if p.isdigit()]\nothers = [p for p in pids if int(p) != os.getpid()]\nprint('visible', any('{marker}' in open('/proc/%s/cmdline' % p, 'rb').read().decode(errors='replace') for p in others if os.path.exists('/proc/%s/cmdline' % p)))\ntry:\n    os.kill({host_pid}, 9); print('KILLED')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\nprint(len(pids) < 10)\n");
        let r = py(mode, &policy(&s, &[]), &code);
        let alive = victim.try_wait().unwrap().is_none();
        let _ = victim.kill();
        let _ = victim.wait();
        assert_eq!(
            r.stdout.lines().collect::<Vec<_>>(),
            vec!["visible False", "ESRCH", "True"],
            "{}",
            r.show()
        );
        assert!(alive, "host process was killed from inside the sandbox");
    }
);

both_modes!(
    fn host_environment_does_not_leak(mode: Mode) {
        let s = Scratch::new();
        let p = policy(&s, &[]);
        let mut c = ironcage(mode);
        // In user mode setpriv resets the environment, so set the secret after it.
        let bin_args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let mut cmd = if mode == Mode::User {
            let mut cmd = std::process::Command::new("setpriv");
            let split = bin_args
                .iter()
                .position(|a| a.ends_with("/ironcage"))
                .unwrap();
            cmd.args(&bin_args[..split])
                .arg("/usr/bin/env")
                .arg("AWS_SECRET_ACCESS_KEY=hunter2")
                .arg("OPENAI_API_KEY=sk-live")
                .arg(&bin_args[split]);
            cmd
        } else {
            c.env("AWS_SECRET_ACCESS_KEY", "hunter2")
                .env("OPENAI_API_KEY", "sk-live");
            c
        };
        cmd.current_dir("/tmp");
        let out = cmd
            .args(["run", "--policy"])
            .arg(&p)
            .args(["--env", "PASSED=yes", "--", "/usr/bin/env"])
            .output()
            .unwrap();
        let env = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{env} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !env.contains("hunter2") && !env.contains("sk-live"),
            "secret leaked:\n{env}"
        );
        assert!(
            env.contains("PASSED=yes") && env.contains("PATH=/usr/local/bin:/usr/bin:/bin"),
            "{env}"
        );
    }
);

both_modes!(
    fn init_shows_nothing_of_the_host(mode: Mode) {
        // pid 1 is a fork of the supervisor: its memory once held the host's environment and
        // command line. It must not be readable, and what /proc shows must be scrubbed.
        let s = Scratch::new();
        let p = policy(&s, &[]);
        let code = "import errno\nfor f in ['/proc/1/environ', '/proc/1/mem', '/proc/1/cmdline']:\n    try:\n        d = open(f, 'rb').read(4096); print(f, 'READ', len(d.strip(bytes(1))))\n    except OSError as e:\n        print(f, errno.errorcode[e.errno])\n";
        let mut c = ironcage(mode);
        c.env("IRONCAGE_TEST_SECRET", "hunter2");
        let out = c
            .args(["run", "--policy"])
            .arg(&p)
            .args(["--", "/usr/bin/python3", "-c", code])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines.len(),
            3,
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(lines[0].ends_with("EACCES"), "{stdout}");
        assert!(lines[1].ends_with("EACCES"), "{stdout}");
        assert_eq!(lines[2], "/proc/1/cmdline READ 0", "{stdout}");
        assert!(!stdout.contains("hunter2"));
    }
);

both_modes!(
    fn host_descriptors_do_not_leak(mode: Mode) {
        let s = Scratch::new();
        let p = policy(&s, &[]);
        let bin = binary();
        // bash opens fd 7 and 9 without close-on-exec, then runs ironcage with them.
        let inner = format!("exec 7</etc/hostname 9>/dev/null; exec {} run --policy {} -- /usr/bin/python3 -c 'import os; print(sorted(int(f) for f in os.listdir(\"/proc/self/fd\")))'", bin.display(), p.display());
        let mut c = bash_as(mode);
        let out = c.current_dir("/tmp").args(["-c", &inner]).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        // 0, 1, 2 and the descriptor listdir itself opened.
        assert_eq!(
            stdout.trim(),
            "[0, 1, 2, 3]",
            "{stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
);

fn host_net_policy(s: &Scratch, allowed_port: u16) -> std::path::PathBuf {
    policy(s, &[&format!("network:\n  isolated: false\n  allow_outgoing: [{allowed_port}]\n  allow_incoming: []\n")])
}

both_modes!(
    fn host_network_is_limited_to_allowed_ports(mode: Mode) {
        let s = Scratch::new();
        let allowed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        other.set_nonblocking(true).unwrap();
        let (a, o) = (
            allowed.local_addr().unwrap().port(),
            other.local_addr().unwrap().port(),
        );
        let free = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let code = format!("import socket, errno\nfor port in [{a}, {o}]:\n    try:\n        socket.create_connection(('127.0.0.1', port), timeout=3).close(); print(port, 'connected')\n    except OSError as e:\n        print(port, errno.errorcode.get(e.errno, e))\ntry:\n    s = socket.socket(); s.bind(('127.0.0.1', {free})); s.listen(); print('listening')\nexcept OSError as e:\n    print('bind', errno.errorcode.get(e.errno, e))\ntry:\n    socket.socket(socket.AF_INET, socket.SOCK_DGRAM); print('udp')\nexcept OSError as e:\n    print('udp', errno.errorcode.get(e.errno, e))\n");
        let r = py(mode, &host_net_policy(&s, a), &code);
        let lines: Vec<String> = r.stdout.lines().map(str::to_string).collect();
        assert_eq!(
            lines,
            vec![
                format!("{a} connected"),
                format!("{o} EACCES"),
                "bind EACCES".into(),
                "udp EPERM".into()
            ],
            "{}",
            r.show()
        );
        assert!(
            allowed.accept().is_ok(),
            "the allowed port saw no connection"
        );
        assert!(
            other.accept().is_err(),
            "the other port received a connection"
        );
        assert!(
            r.denied("socket") >= 1,
            "the UDP socket must be reported: {}",
            r.show()
        );
        let net: Vec<(String, u64, String)> = r.report["violations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["kind"] == "network")
            .map(|v| {
                (
                    v["syscall"].as_str().unwrap().to_string(),
                    v["port"].as_u64().unwrap(),
                    v["reason"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            net,
            vec![
                (
                    "bind".to_string(),
                    free as u64,
                    "port not in network.allow_incoming".to_string()
                ),
                (
                    "connect".to_string(),
                    o as u64,
                    "port not in network.allow_outgoing".to_string()
                )
            ],
            "{}",
            r.show()
        );
    }
);

both_modes!(
    fn host_abstract_sockets_and_signals_are_out_of_scope(mode: Mode) {
        // On the host network the sandbox shares the abstract unix socket namespace (D-Bus,
        // X11 live there); Landlock scoping must keep it out, and signals to outside processes.
        let s = Scratch::new();
        let name = format!("ironcage-test-{}", unique());
        let server = std::os::unix::net::UnixListener::bind_addr(&<std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        server.set_nonblocking(true).unwrap();
        let code = format!("import socket, errno\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect('\\0{name}'); print('connected')\nexcept OSError as e:\n    print(errno.errorcode.get(e.errno, e))\n");
        let r = py(mode, &host_net_policy(&s, 443), &code);
        assert_eq!(r.stdout.trim(), "EPERM", "{}", r.show());
        assert!(
            server.accept().is_err(),
            "the host's abstract socket received a connection"
        );
    }
);

#[test]
fn killing_the_supervisor_leaves_nothing_behind() {
    let s = Scratch::new();
    let p = policy(&s, &[]);
    let marker = format!("crash-{}", unique());
    let mut c = ironcage(Mode::Root);
    c.arg("run").arg("--policy").arg(&p).args([
        "--",
        "/bin/bash",
        "-c",
        &format!("(exec -a {marker} sleep 300) & exec -a {marker}-main sleep 300"),
    ]);
    let mut sup = c
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while host_processes_with(&marker).len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "sandbox did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid = sup.id();
    let cgroups_of = |pid: u32| -> Vec<String> {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let mem = own
            .lines()
            .find(|l| l.split(':').nth(1) == Some("memory"))
            .map(|l| l.split(':').nth(2).unwrap().to_string())
            .unwrap_or_default();
        let dir = format!(
            "/sys/fs/cgroup/memory{}/ironcage",
            mem.trim_end_matches('/')
        );
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&format!("run-{pid}-")))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        cgroups_of(pid).len(),
        1,
        "the run cgroup exists while running"
    );
    sup.kill().unwrap(); // SIGKILL: no cleanup code runs
    sup.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !host_processes_with(&marker).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "orphans: {:?}",
            host_processes_with(&marker)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The next run sweeps the dead supervisor's cgroup.
    let r = cage(Mode::Root, &p, &["/bin/true"]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(
        cgroups_of(pid).is_empty(),
        "stale cgroup left: {:?}",
        cgroups_of(pid)
    );
}

both_modes!(
    fn mptcp_and_other_inet_protocols_cannot_dodge_port_rules(mode: Mode) {
        // Landlock's port rules cover plain TCP only; MPTCP (which falls back to TCP) would
        // reach any port. On the host network such sockets are refused outright.
        let s = Scratch::new();
        let code = "import socket, errno\nfor fam in (socket.AF_INET, socket.AF_INET6):\n    for proto in (262, 132):\n        try:\n            socket.socket(fam, socket.SOCK_STREAM, proto); print('OPENED', fam, proto)\n        except OSError as e:\n            print(errno.errorcode.get(e.errno, e))\ns = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP); print('tcp ok')\n";
        let r = py(mode, &host_net_policy(&s, 443), code);
        assert_eq!(
            r.stdout,
            "EPERM\nEPERM\nEPERM\nEPERM\ntcp ok\n",
            "{}",
            r.show()
        );
        assert_eq!(r.denied("socket"), 4, "{}", r.show());
    }
);

both_modes!(
    fn prlimit_on_other_processes_is_denied(mode: Mode) {
        let s = Scratch::new();
        let code = "import resource, errno, os\ntry:\n    resource.prlimit(1, resource.RLIMIT_CPU, (1, 1)); print('CHANGED')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\nresource.setrlimit(resource.RLIMIT_CORE, (0, 0)); print('own ok')\n";
        let r = py(mode, &policy(&s, &[]), code);
        assert_eq!(r.stdout, "EPERM\nown ok\n", "{}", r.show());
        assert!(r.denied("prlimit64") >= 1, "{}", r.show());
    }
);

both_modes!(
    fn terminal_takeover_ioctls_are_denied(mode: Mode) {
        // TIOCSETD (line discipline) and TIOCEXCL on the caller's stdio, which the sandbox shares.
        let s = Scratch::new();
        let code = format!("{SYSCALL}import ctypes\nfor req in (0x5423, 0x540C):\n    r, e = sc(16, 0, req, ctypes.addressof(ctypes.c_int(0)))\n    print(r, errno.errorcode.get(e, e))\n");
        let r = py(mode, &policy(&s, &[]), &code);
        assert_eq!(r.stdout, "-1 EPERM\n-1 EPERM\n", "{}", r.show());
        assert_eq!(r.denied("ioctl"), 2, "{}", r.show());
    }
);

both_modes!(
    fn shared_stdio_flags_are_restored(mode: Mode) {
        let s = Scratch::new();
        let p = policy(&s, &[]);
        // The sandbox makes the shared stdout pipe non-blocking; the shell sees it undone.
        let script = format!("{} run --policy {} -- /usr/bin/python3 -c 'import fcntl, os; fcntl.fcntl(1, fcntl.F_SETFL, fcntl.fcntl(1, fcntl.F_GETFL) | os.O_NONBLOCK)'; /usr/bin/python3 -c 'import fcntl, os; print(\"nonblock\", bool(fcntl.fcntl(1, fcntl.F_GETFL) & os.O_NONBLOCK))'", binary().display(), p.display());
        let mut c = bash_as(mode);
        c.args(["-c", &script]);
        let (code, stdout, stderr) = spawn(c, None);
        assert_eq!((code, stdout.as_str()), (0, "nonblock False\n"), "{stderr}");
    }
);

both_modes!(
    fn reports_are_never_written_through_planted_links(mode: Mode) {
        let s = Scratch::new();
        let out = s.path.join("out");
        let victim = s.file("victim", "keep");
        let p = policy(&s, &[&format!("filesystem:\n  immutable_paths:\n    - {{ host_path: /usr, sandbox_path: /usr }}\n    - {{ host_path: /lib, sandbox_path: /lib }}\n    - {{ host_path: /lib64, sandbox_path: /lib64, optional: true }}\n  scratch_paths: [/tmp]\n  output_paths:\n    - {{ host_path: {}, sandbox_path: /output }}\n  working_dir: /tmp\n", out.display())]);
        let r = py(
            mode,
            &p,
            &format!(
                "import os\nos.symlink('{}', '/output/report.json')",
                victim.display()
            ),
        );
        assert_eq!(r.code, 0, "{}", r.show());
        let mut c = ironcage(mode);
        c.arg("run")
            .arg("--policy")
            .arg(&p)
            .arg("--report")
            .arg(out.join("report.json"))
            .args(["--", "/bin/true"]);
        let (code, _, stderr) = spawn(c, None);
        assert_ne!(code, 0, "wrote the report through the link: {stderr}");
        assert!(stderr.contains("symbolic link"), "{stderr}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    }
);

both_modes!(
    fn what_the_supervisor_remembers_is_bounded(mode: Mode) {
        // Each distinct refused write is an entry; past 256 they are only counted, so the
        // sandbox cannot make the supervisor (outside its memory cgroup) grow without end.
        let s = Scratch::new();
        let code = "for i in range(1000):\n    try:\n        open('/usr/x%d-' % i + 'y' * 300, 'w')\n    except OSError:\n        pass\nprint('done')";
        let r = py(mode, &policy(&s, &[]), code);
        assert_eq!(r.stdout, "done\n", "{}", r.show());
        let listed = r.report["violations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["kind"] == "path")
            .count();
        assert_eq!(listed, 256, "{}", r.show());
        assert_eq!(r.report["violations_not_listed"], 744);
        let longest = r.report["violations"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["path"].as_str())
            .map(str::len)
            .max()
            .unwrap();
        assert!(longest <= 259, "path entries are truncated: {longest}");
    }
);

both_modes!(
    fn openat2_writes_are_reported(mode: Mode) {
        let s = Scratch::new();
        let code = format!("{SYSCALL}import ctypes\nclass How(ctypes.Structure):\n    _fields_ = [('flags', ctypes.c_uint64), ('mode', ctypes.c_uint64), ('resolve', ctypes.c_uint64)]\nhow = How(0o101, 0o644, 0)\npath = ctypes.create_string_buffer(b'/usr/openat2-pwn')\nr, e = sc(437, -100, ctypes.addressof(path), ctypes.addressof(how), 24)\nprint(r, errno.errorcode.get(e, e))\n");
        let r = py(mode, &policy(&s, &[]), &code);
        assert_eq!(r.stdout, "-1 EROFS\n", "{}", r.show());
        let v: Vec<&str> = r.report["violations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["syscall"] == "openat2")
            .filter_map(|v| v["path"].as_str())
            .collect();
        assert_eq!(v, vec!["/usr/openat2-pwn"], "{}", r.show());
    }
);

both_modes!(
    fn private_ptys_are_limited(mode: Mode) {
        let s = Scratch::new();
        let code = "import os, errno\nfds = []\ntry:\n    while len(fds) < 200:\n        fds.append(os.open('/dev/ptmx', os.O_RDWR | os.O_NOCTTY))\nexcept OSError as e:\n    print(len(fds), errno.errorcode[e.errno])\n";
        let r = py(mode, &policy(&s, &[]), code);
        assert_eq!(r.stdout, "64 ENOSPC\n", "{}", r.show());
    }
);

both_modes!(
    fn probing_unknown_syscall_numbers_costs_nothing(mode: Mode) {
        // Numbers past the kernel's table get ENOSYS in the filter: no notification, no report
        // entry, nothing for the supervisor to remember.
        let s = Scratch::new();
        let code = format!(
            "{SYSCALL}print(set(sc(n)[1] for n in range(1000, 21000)) == {{errno.ENOSYS}})\n"
        );
        let r = py(mode, &policy(&s, &[]), &code);
        assert_eq!(r.stdout, "True\n", "{}", r.show());
        assert!(
            r.report["violations"].as_array().unwrap().is_empty(),
            "{}",
            r.show()
        );
    }
);

both_modes!(
    fn the_report_file_cannot_be_swapped_during_the_run(mode: Mode) {
        let s = Scratch::new();
        let out = s.path.join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let p = policy(&s, &[&format!("filesystem:\n  immutable_paths:\n    - {{ host_path: /usr, sandbox_path: /usr }}\n    - {{ host_path: /lib, sandbox_path: /lib }}\n    - {{ host_path: /lib64, sandbox_path: /lib64, optional: true }}\n  scratch_paths: [/tmp]\n  output_paths:\n    - {{ host_path: {}, sandbox_path: /output }}\n  working_dir: /tmp\n", out.display())]);
        let report = out.join("report.json");
        // The sandbox moves the (pre-created) report away and forges one in its place.
        let code = "import os\nif os.path.exists('/output/report.json'):\n    os.rename('/output/report.json', '/output/moved')\nopen('/output/report.json', 'w').write('{\"outcome\": \"forged\"}')\n";
        let mut c = ironcage(mode);
        c.arg("run")
            .arg("--policy")
            .arg(&p)
            .arg("--report")
            .arg(&report)
            .args(["--", "/usr/bin/python3", "-c", code]);
        let (rc, _, stderr) = spawn(c, None);
        assert_eq!(rc, 0, "{stderr}");
        let text = std::fs::read_to_string(&report).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(v["outcome"], "exited", "{text}");
    }
);
