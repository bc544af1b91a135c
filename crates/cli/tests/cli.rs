//! The command line as a user meets it: profiles, policy errors, exit codes, reports,
//! refusals, audit records, streaming and signals.

mod common;
use common::*;
use std::process::Stdio;

fn out(mut c: std::process::Command) -> (i32, String, String) {
    let o = c.stdin(Stdio::null()).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

#[test]
fn profile_list_show_validate() {
    let mut c = ironcage(Mode::Root);
    c.args(["profile", "list"]);
    let (code, stdout, _) = out(c);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("ai-strict") && stdout.contains("ai-dev-safe"),
        "{stdout}"
    );

    let mut c = ironcage(Mode::Root);
    c.args(["profile", "show", "ai-strict"]);
    let (code, stdout, _) = out(c);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("default_deny: true") && stdout.contains("name: \"ai-strict\""),
        "{stdout}"
    );

    let seed = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/policies/seed-custom.yaml"
    );
    let mut c = ironcage(Mode::Root);
    c.args(["profile", "validate", seed]);
    let (code, stdout, stderr) = out(c);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("valid policy `custom-profile`"), "{stdout}");
}

#[test]
fn bad_policies_fail_before_anything_runs_with_a_location() {
    let s = Scratch::new();
    let marker = s.path.join("ran");
    let cases = [
        ("name: x\nsyscalls:\n  allow: [read, opneat]\n", ":3:", "did you mean `openat`"),
        ("name: x\nresources:\n  memory_limit_bytes: 2Q\n", ":3:", "unknown size unit"),
        ("name: x\nfilesystm: {}\n", ":2:", "unknown field `filesystm`"),
        ("name: x\nsyscalls:\n  default_deny: true\n  allow: [read]\n  deny: [read]\n", ":5:", "both allowed and denied"),
        ("name: x\nfilesystem:\n  immutable_paths:\n    - { host_path: /nope/nope, sandbox_path: /n }\n", ":4:", "does not exist"),
        ("name: x\nnetwork:\n  isolated: false\n  allow_outgoing: [\"https\"]\n", ":4:", "not a port"),
    ];
    for (i, (text, line, msg)) in cases.iter().enumerate() {
        let p = s.file(&format!("bad{i}.yaml"), text);
        let mut c = ironcage(Mode::Root);
        c.arg("run")
            .arg("--policy")
            .arg(&p)
            .args(["--", "/bin/sh", "-c"])
            .arg(format!("touch {}", marker.display()));
        let (code, _, stderr) = out(c);
        assert_eq!(code, 2, "{text}: {stderr}");
        assert!(
            stderr.contains(&format!("{}{line}", p.display())) && stderr.contains(msg),
            "{text}: {stderr}"
        );
        assert!(!marker.exists(), "the command ran despite a bad policy");
    }
}

both_modes!(
    fn exit_codes_pass_through(mode: Mode) {
        let s = Scratch::new();
        let p = policy(&s, &[]);
        let r = cage(mode, &p, &["/bin/sh", "-c", "exit 42"]);
        assert_eq!(r.code, 42, "{}", r.show());
        assert_eq!(r.report["exit_code"], 42);
        let r = cage(mode, &p, &["/bin/bash", "-c", "kill -SEGV $$"]);
        assert_eq!(r.code, 128 + 11, "{}", r.show());
        assert_eq!(r.report["signal"], "SIGSEGV");
        assert_eq!(r.report["outcome"], "signaled");
        let r = cage(mode, &p, &["no-such-command-xyz"]);
        assert_eq!(r.code, 127, "{}", r.show());
        assert!(r.stderr.contains("no-such-command-xyz"), "{}", r.show());
    }
);

both_modes!(
    fn exec_denied_by_policy_is_code_120(mode: Mode) {
        let s = Scratch::new();
        let p = policy(
            &s,
            &["syscalls:\n  default_deny: true\n  allow: [openat]\n"],
        );
        let r = cage(mode, &p, &["/bin/true"]);
        assert_eq!(r.code, 120, "{}", r.show());
        assert!(r.denied("execve") >= 1, "{}", r.show());
        assert!(r.stderr.contains("execve denied by policy"), "{}", r.show());
    }
);

both_modes!(
    fn stdin_and_stdout_stream(mode: Mode) {
        let s = Scratch::new();
        let p = policy(&s, &[]);
        let input: String = (0..20000).map(|i| format!("line {i}\n")).collect();
        let r = cage_with(mode, &p, &[], &["/usr/bin/sort", "-r"], Some(&input));
        let mut expected: Vec<&str> = input.lines().collect();
        expected.sort_by(|a, b| b.cmp(a));
        assert_eq!(
            r.stdout.lines().collect::<Vec<_>>(),
            expected,
            "exit {}: {}",
            r.code,
            r.stderr
        );
    }
);

both_modes!(
    fn json_report_on_stderr_and_on_a_descriptor(mode: Mode) {
        let s = Scratch::new();
        let p = policy(&s, &[]);
        let mut c = ironcage(mode);
        c.arg("run")
            .arg("--policy")
            .arg(&p)
            .args(["--json", "--", "/bin/echo", "hi"]);
        let (code, stdout, stderr) = out(c);
        assert_eq!((code, stdout.as_str()), (0, "hi\n"), "{stderr}");
        let report: serde_json::Value =
            serde_json::from_str(stderr.lines().last().unwrap()).unwrap();
        assert_eq!(report["outcome"], "exited");
        for key in [
            "wall_time_ms",
            "cpu_user_ms",
            "peak_memory_bytes",
            "limits",
            "violations",
            "unenforced",
        ] {
            assert!(report.get(key).is_some(), "report lacks {key}: {report}");
        }
        let file = s.path.join("fd-report.json");
        let bin = binary();
        let script = format!(
            "{} run --policy {} --report-fd 3 -- /bin/true 3>{}",
            bin.display(),
            p.display(),
            file.display()
        );
        let mut c = bash_as(mode);
        c.current_dir("/tmp").args(["-c", &script]);
        let (code, _, stderr) = out(c);
        assert_eq!(code, 0, "{stderr}");
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(report["exit_code"], 0);
    }
);

#[test]
fn rootless_without_cgroup_delegation_refuses_unless_best_effort() {
    let s = Scratch::new();
    let p = policy(&s, &[]);
    // A uid nobody delegated a cgroup to.
    let run = |extra: &[&str]| {
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--reuid=4242",
            "--regid=4242",
            "--clear-groups",
            "--reset-env",
        ])
        .arg(binary())
        .current_dir("/tmp");
        c.arg("run")
            .arg("--policy")
            .arg(&p)
            .args(extra)
            .args(["--", "/bin/echo", "ran"]);
        out(c)
    };
    let (code, stdout, stderr) = run(&[]);
    assert_eq!(code, 120, "{stdout}{stderr}");
    assert!(stdout.is_empty(), "the command ran: {stdout}");
    assert!(
        stderr.contains("cgroups")
            && stderr.contains("ironcage cgroup delegate --user 4242")
            && stderr.contains("--best-effort"),
        "{stderr}"
    );
    let report = s.path.join("be.json");
    let (code, stdout, stderr) = run(&["--best-effort", "--report", report.to_str().unwrap()]);
    assert_eq!((code, stdout.as_str()), (0, "ran\n"), "{stderr}");
    assert!(stderr.contains("NOT ENFORCED"), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["unenforced"][0]["mechanism"], "cgroups", "{report}");
}

both_modes!(
    fn audit_log_gets_one_line_per_run(mode: Mode) {
        let s = Scratch::new();
        let log = s.path.join("audit/runs.log");
        let p = policy(
            &s,
            &[&format!(
                "audit:\n  enabled: true\n  log_path: {}\n  detail_level: [syscall]\n",
                log.display()
            )],
        );
        for _ in 0..2 {
            let r = py(
                mode,
                &p,
                "import ctypes; ctypes.CDLL(None).ptrace(0, 0, 0, 0)",
            );
            assert_eq!(r.code, 0, "{}", r.show());
        }
        let text = std::fs::read_to_string(&log).unwrap();
        let entries: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // log.init, then per run: run.start, run.end, violation.syscall (detail: syscall).
        let kinds: Vec<&str> = entries
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "log.init",
                "run.start",
                "run.end",
                "violation.syscall",
                "run.start",
                "run.end",
                "violation.syscall"
            ],
            "{text}"
        );
        assert_eq!(entries[6]["fields"]["syscall"], "ptrace", "{text}");
    }
);

both_modes!(
    fn unwritable_audit_log_refuses_the_run(mode: Mode) {
        let s = Scratch::new();
        let blocker = s.file("not-a-dir", "x");
        let p = policy(
            &s,
            &[&format!(
                "audit:\n  enabled: true\n  log_path: {}/audit.log\n",
                blocker.display()
            )],
        );
        let r = cage(mode, &p, &["/bin/echo", "ran"]);
        assert_eq!(r.code, 120, "{}", r.show());
        assert!(
            r.stdout.is_empty() && r.stderr.contains("audit"),
            "{}",
            r.show()
        );
    }
);

#[test]
fn lifting_the_floor_is_loud() {
    let s = Scratch::new();
    let p = policy(&s, &[&format!("syscalls:\n  default_deny: true\n  allow: [{}, ptrace]\n  unsafe_lift_floor: [ptrace]\n", strict_allow())]);
    let r = py(
        Mode::Root,
        &p,
        "import ctypes; print(ctypes.CDLL(None).ptrace(0, 0, 0, 0))",
    );
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(
        r.stdout.trim(),
        "0",
        "PTRACE_TRACEME works once lifted: {}",
        r.show()
    );
    assert!(
        r.stderr.contains("LIFTS THE SECCOMP FLOOR for: ptrace"),
        "{}",
        r.show()
    );
    assert_eq!(r.report["floor_lifted"][0], "ptrace");
}

#[test]
fn seed_policy_runs_python_as_is() {
    let seed = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/policies/seed-custom.yaml"
    );
    let r = cage(
        Mode::Root,
        std::path::Path::new(seed),
        &["python3", "-c", "print(6 * 7)"],
    );
    assert_eq!((r.code, r.stdout.as_str()), (0, "42\n"), "{}", r.show());
    assert_eq!(r.report["policy"], "custom-profile");
    assert_eq!(r.report["limits"]["memory"]["limit"], 2u64 << 30);
}

both_modes!(
    fn signals_are_forwarded_to_the_command(mode: Mode) {
        let s = Scratch::new();
        let p = policy(&s, &[]);
        let mut c = ironcage(mode);
        c.arg("run").arg("--policy").arg(&p).args(["--", "/usr/bin/python3", "-c", "import os, signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: (os.write(1, b'got TERM\\n'), sys.exit(7)))\nprint('ready', flush=True)\ntime.sleep(30)"]);
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut buf = [0u8; 6];
        std::io::Read::read_exact(&mut stdout, &mut buf).unwrap();
        assert_eq!(&buf, b"ready\n");
        // In user mode the pid is setpriv's, which execs ironcage: same process.
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(
            (rest.as_str(), status.code()),
            ("got TERM\n", Some(7)),
            "{err}"
        );
    }
);

both_modes!(
    fn no_controlling_terminal(mode: Mode) {
        let s = Scratch::new();
        let r = py(mode, &policy(&s, &[]), "import errno, os\ntry:\n    open('/dev/tty')\n    print('OPENED')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\nprint(os.getsid(0) == os.getpid())");
        assert_eq!(r.stdout, "ENXIO\nTrue\n", "{}", r.show());
    }
);

#[test]
fn doctor_reports_mechanisms() {
    let mut c = ironcage(Mode::Root);
    c.args(["doctor", "--json"]);
    let (code, stdout, _) = out(c);
    assert_eq!(code, 0);
    let checks: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let names: Vec<&str> = checks
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["mechanism"].as_str().unwrap())
        .collect();
    for m in [
        "namespaces",
        "seccomp.report",
        "landlock",
        "cgroup.memory",
        "cgroup.pids",
        "cgroup.cpu",
        "rlimits",
    ] {
        assert!(names.contains(&m), "doctor lacks {m}: {names:?}");
    }
    let landlock = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["mechanism"] == "landlock")
        .unwrap();
    assert!(
        landlock["detail"].as_str().unwrap().starts_with("ABI "),
        "{landlock}"
    );
}

both_modes!(
    fn added_capabilities_work_and_others_do_not(mode: Mode) {
        // CAP_NET_BIND_SERVICE is granted inside the sandbox's own user and network namespaces:
        // binding port 80 works with it and fails without it.
        let s = Scratch::new();
        let code = "import socket, errno\ntry:\n    socket.socket().bind(('127.0.0.1', 80)); print('bound')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\nprint(open('/proc/self/status').read().split('CapEff:')[1].split()[0])";
        let with = policy(&s, &["capabilities:\n  add: [CAP_NET_BIND_SERVICE]\n"]);
        let r = py(mode, &with, code);
        assert_eq!(r.stdout, "bound\n0000000000000400\n", "{}", r.show());
        let without = policy(&s, &[]);
        let r = py(mode, &without, code);
        assert_eq!(r.stdout, "EACCES\n0000000000000000\n", "{}", r.show());
    }
);

both_modes!(
    fn the_sandbox_sees_its_own_cgroup_root(mode: Mode) {
        let s = Scratch::new();
        let r = cage(mode, &policy(&s, &[]), &["/bin/cat", "/proc/self/cgroup"]);
        assert_eq!(r.code, 0, "{}", r.show());
        for line in r.stdout.lines() {
            assert!(
                line.ends_with(":/"),
                "host cgroup path visible: {line}\n{}",
                r.show()
            );
        }
    }
);

#[test]
fn the_double_dash_is_optional() {
    let s = Scratch::new();
    let p = policy(&s, &[]);
    let mut c = ironcage(Mode::Root);
    c.arg("run")
        .arg("--policy")
        .arg(&p)
        .args(["/bin/sh", "-c", "echo \"$0 $1\"", "a", "-b"]);
    let (code, stdout, stderr) = spawn(c, None);
    assert_eq!((code, stdout.as_str()), (0, "a -b\n"), "{stderr}");
}

both_modes!(
    fn on_a_terminal_the_sandbox_gets_a_pty_of_its_own(mode: Mode) {
        // The caller sits on a pty (made here with python's pty module). Inside, the command
        // has a terminal with job control; the caller's terminal settings come back unchanged.
        let s = Scratch::new();
        let p = policy(&s, &[]);
        let inner = "import os, termios; print('tty', os.isatty(0), os.isatty(1), os.ttyname(0).startswith('/dev/pts/'), 'fg', os.tcgetpgrp(0) == os.getpgrp()); a = termios.tcgetattr(0); a[3] &= ~termios.ECHO; termios.tcsetattr(0, termios.TCSANOW, a)";
        let outer = format!(
        "import os, pty, sys, termios\npid, fd = pty.fork()\nif pid == 0:\n    os.execv('{bin}', ['ironcage', 'run', '--policy', '{p}', '--', '/usr/bin/python3', '-c', {inner:?}])\nout = b''\nwhile True:\n    try:\n        chunk = os.read(fd, 4096)\n    except OSError:\n        break\n    if not chunk:\n        break\n    out += chunk\n_, status = os.waitpid(pid, 0)\nprint(out.decode().replace('\\r', '').strip())\nprint('exit', os.waitstatus_to_exitcode(status))\n",
        bin = binary().display(),
        p = p.display(),
    );
        let mut c = as_mode(mode, "/usr/bin/python3");
        c.args(["-c", &outer]);
        let (code, stdout, stderr) = spawn(c, None);
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert_eq!(stdout, "tty True True True fg True\nexit 0\n", "{stderr}");
    }
);

both_modes!(
    fn command_line_binds_bring_code_in_and_results_out(mode: Mode) {
        let s = Scratch::new();
        let p = policy(&s, &[]);
        let proj = s.path.join("proj");
        std::fs::create_dir(&proj).unwrap();
        std::fs::write(
            proj.join("agent.py"),
            "import os\nopen('/out/result', 'w').write('from ' + os.getcwd())\n",
        )
        .unwrap();
        std::fs::set_permissions(&proj, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::set_permissions(
            proj.join("agent.py"),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
        let out = s.path.join("out");
        let ro = format!("{}:/work", proj.display());
        let rw = format!("{}:/out", out.display());
        let r = cage_with(
            mode,
            &p,
            &["--ro", &ro, "--rw", &rw, "--cwd", "/work"],
            &["/usr/bin/python3", "agent.py"],
            None,
        );
        assert_eq!(r.code, 0, "{}", r.show());
        assert_eq!(
            std::fs::read_to_string(out.join("result")).unwrap(),
            "from /work"
        );
        // The read-only bind stays read-only.
        let r = cage_with(
            mode,
            &p,
            &["--ro", &ro],
            &["/usr/bin/python3", "-c", "open('/work/agent.py', 'a')"],
            None,
        );
        assert_ne!(r.code, 0, "{}", r.show());
        assert!(
            r.stderr.contains("Read-only file system") || r.stderr.contains("Permission denied"),
            "{}",
            r.show()
        );
        assert!(std::fs::read_to_string(proj.join("agent.py"))
            .unwrap()
            .starts_with("import os"));
        // Bad binds are usage errors, before anything runs.
        for bad in [
            &["--ro", "/usr:/proc/x"][..],
            &["--cwd", "/nowhere"][..],
            &["--ro", "/no/such/dir:/x"][..],
        ] {
            let r = cage_with(mode, &p, bad, &["/bin/true"], None);
            assert_eq!(r.code, 2, "{bad:?}: {}", r.show());
        }
    }
);
