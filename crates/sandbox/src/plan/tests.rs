use super::*;
use crate::cgroup::Controller;
use crate::seccomp::{
    compile, run as bpf, AUDIT_ARCH_X86_64, RET_ALLOW, RET_ERRNO, RET_USER_NOTIF,
};
use ironcage_policy::{parse, Origin};
use std::collections::BTreeMap as Map;

fn policy(text: &str) -> Policy {
    parse(text, &Origin::File("t.yaml".into())).unwrap()
}

fn host() -> HostFacts {
    let mut v1 = Map::new();
    for c in Controller::ALL {
        v1.insert(c, PathBuf::from(format!("/cg/{}", c.v1_name())));
    }
    HostFacts {
        uid: 1000,
        gid: 1000,
        is_root: false,
        user_namespaces: Ok(()),
        landlock_abi: 7,
        seccomp_user_notif: true,
        cgroup: Ok(Parent::V1(v1)),
        block_devices: vec!["8:0".into()],
        nofile_hard: 1 << 20,
        host_env: vec![
            ("HOME".into(), "/home/u".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "x".into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("KEEP".into(), "k".into()),
        ],
    }
}

fn req(argv: &[&str]) -> Request {
    Request {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        ..Request::default()
    }
}

const SEED: &str = include_str!("../../../../tests/policies/seed-custom.yaml");

#[test]
fn seed_policy_plan() {
    let plan = make_plan(&policy(SEED), &req(&["python3"]), &host()).unwrap();
    // /lib is a symlink on merged-/usr hosts: mirrored, with its target bound.
    if std::fs::read_link("/lib").is_ok() {
        assert!(plan.mounts.contains(&MountStep::Symlink {
            target: "/lib".into(),
            link: std::fs::read_link("/lib").unwrap()
        }));
        let target = std::fs::canonicalize("/lib").unwrap();
        assert!(plan
            .mounts
            .iter()
            .any(|m| matches!(m, MountStep::BindReadOnly { host, .. } if *host == target)));
    }
    assert!(plan.mounts.contains(&MountStep::BindWritable {
        host: "/var/output/custom".into(),
        target: "/output".into()
    }));
    assert!(plan.mounts.iter().any(
        |m| matches!(m, MountStep::Scratch { target, .. } if target == Path::new("/var/tmp"))
    ));
    let cg = plan.cgroup.as_ref().unwrap();
    assert_eq!(cg.cpu_quota_us, Some(50_000));
    assert_eq!(cg.memory_bytes, Some(2 << 30));
    assert_eq!(cg.io_bps, Some(100 << 20));
    assert_eq!(plan.timeout, Some(Duration::from_secs(3600)));
    assert_eq!(plan.keep_caps, vec![10]); // CAP_NET_BIND_SERVICE
    let ll = plan.landlock.as_ref().unwrap();
    assert_eq!(ll.tcp_connect, Some(vec![443, 53]));
    assert_eq!(ll.tcp_bind, Some(vec![]));
    assert_eq!(
        plan.audit_log,
        Some(PathBuf::from("/var/log/purple/custom.log"))
    );
}

#[test]
fn parents_are_mounted_before_children() {
    let p = policy("name: x\nfilesystem:\n  immutable_paths:\n    - { host_path: /usr/lib, sandbox_path: /usr/lib }\n    - { host_path: /usr, sandbox_path: /usr }\n  scratch_paths: [/usr/tmp]\n");
    let plan = make_plan(&p, &req(&["x"]), &host()).unwrap();
    let order: Vec<&Path> = plan
        .mounts
        .iter()
        .filter_map(|m| match m {
            MountStep::BindReadOnly { target, .. } | MountStep::Scratch { target, .. } => {
                Some(target.as_path())
            }
            _ => None,
        })
        .collect();
    assert_eq!(order[0], Path::new("/usr"));
}

#[test]
fn environment_is_cleared_to_the_documented_set() {
    let p = policy("name: x\nfilesystem:\n  scratch_paths: [/tmp]\nenvironment:\n  pass: [KEEP]\n  set: { FIXED: v }\n");
    let mut r = req(&["x"]);
    r.env = vec![("EXTRA".into(), Some("e".into())), ("HOME".into(), None)];
    let plan = make_plan(&p, &r, &host()).unwrap();
    let env: Map<&str, &str> = plan
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(env.get("AWS_SECRET_ACCESS_KEY"), None);
    assert_eq!(env["PATH"], DEFAULT_PATH);
    assert_eq!(env["LANG"], "C.UTF-8");
    assert_eq!(env["KEEP"], "k");
    assert_eq!(env["FIXED"], "v");
    assert_eq!(env["EXTRA"], "e");
    assert_eq!(
        env["HOME"], "/home/u",
        "--env HOME passes the host value explicitly"
    );
}

#[test]
fn missing_mechanisms_refuse_unless_best_effort() {
    let p = policy("name: x\nresources:\n  memory_limit_bytes: 1G\nnetwork:\n  isolated: false\n  allow_outgoing: [443]\n");
    let mut h = host();
    h.landlock_abi = 3;
    h.cgroup = Err("not delegated".into());
    let err = make_plan(&p, &req(&["x"]), &h).unwrap_err();
    let PlanError::Refused(list) = &err else {
        panic!("{err}")
    };
    let names: Vec<&str> = list.iter().map(|u| u.mechanism.as_str()).collect();
    assert_eq!(names, vec!["landlock.network", "cgroups"]);
    assert!(
        err.to_string()
            .contains("ironcage cgroup delegate --user 1000"),
        "{err}"
    );
    assert!(err.to_string().contains("--best-effort"));
    let mut r = req(&["x"]);
    r.best_effort = true;
    let plan = make_plan(&p, &r, &h).unwrap();
    assert_eq!(plan.unenforced.len(), 2);
    assert!(plan.cgroup.is_none());
    assert_eq!(plan.landlock.as_ref().unwrap().tcp_connect, None);
}

#[test]
fn a_missing_controller_is_named() {
    let p = policy("name: x\nresources:\n  pids_limit: 10\n  block_io_limit: 1MBps\n");
    let mut h = host();
    let Ok(Parent::V1(mut map)) = h.cgroup.clone() else {
        panic!()
    };
    map.remove(&Controller::Blkio);
    h.cgroup = Ok(Parent::V1(map));
    let PlanError::Refused(list) = make_plan(&p, &req(&["x"]), &h).unwrap_err() else {
        panic!()
    };
    assert_eq!(list[0].mechanism, "cgroup.blkio");
}

#[test]
fn no_user_namespaces_is_fundamental() {
    let mut h = host();
    h.user_namespaces = Err("disabled".into());
    let mut r = req(&["x"]);
    r.best_effort = true;
    assert_eq!(
        make_plan(&policy("name: x\n"), &r, &h).unwrap_err(),
        PlanError::Fundamental("disabled".into())
    );
}

#[test]
fn root_runs_the_sandbox_as_an_unprivileged_uid() {
    let mut h = host();
    h.is_root = true;
    h.uid = 0;
    let plan = make_plan(&policy("name: x\n"), &req(&["x"]), &h).unwrap();
    assert_eq!((plan.uid, plan.gid), (ROOT_SANDBOX_ID, ROOT_SANDBOX_ID));
}

#[test]
fn handshake_descriptor_is_out_of_reach() {
    let plan = make_plan(
        &policy("name: x\nresources:\n  max_open_files: 256\n"),
        &req(&["x"]),
        &host(),
    )
    .unwrap();
    assert_eq!(plan.handshake_fd, 256);
    assert!(plan.rlimits.contains(&(Rlimit::OpenFiles, 256)));
    assert!(plan.rlimits.contains(&(Rlimit::Core, 0)));
}

fn decide(spec: &FilterSpec, name: &str, args: [u64; 6]) -> u32 {
    let prog = compile(spec).unwrap();
    bpf(
        &prog,
        AUDIT_ARCH_X86_64,
        syscalls::number(name).unwrap(),
        args,
    )
}

#[test]
fn allow_list_filter() {
    let p = policy(
        "name: x\nsyscalls:\n  default_deny: true\n  allow: [openat, clone, socket, execve]\n",
    );
    let spec = seccomp_spec(&p, false, 1024, true);
    assert_eq!(decide(&spec, "openat", [0; 6]), RET_ALLOW);
    assert_eq!(decide(&spec, "futex", [0; 6]), RET_ALLOW, "baseline");
    assert_eq!(decide(&spec, "unlink", [0; 6]), RET_USER_NOTIF);
    assert_eq!(decide(&spec, "ptrace", [0; 6]), RET_USER_NOTIF);
    assert_eq!(decide(&spec, "clone", [0x11, 0, 0, 0, 0, 0]), RET_ALLOW);
    assert_eq!(
        decide(&spec, "clone", [0x2000_0011, 0, 0, 0, 0, 0]),
        RET_USER_NOTIF,
        "CLONE_NEWPID"
    );
    assert_eq!(decide(&spec, "clone3", [0; 6]), RET_ERRNO | 38);
    assert_eq!(
        decide(&spec, "ioctl", [0, 0x5412, 0, 0, 0, 0]),
        RET_USER_NOTIF
    );
    assert_eq!(decide(&spec, "ioctl", [0, 0x5401, 0, 0, 0, 0]), RET_ALLOW);
    assert_eq!(decide(&spec, "socket", [40, 1, 0, 0, 0, 0]), RET_USER_NOTIF);
    assert_eq!(
        decide(&spec, "socket", [2, 2, 0, 0, 0, 0]),
        RET_ALLOW,
        "UDP is fine inside an isolated netns"
    );
    let no_baseline =
        policy("name: x\nsyscalls:\n  default_deny: true\n  baseline: false\n  allow: [openat]\n");
    assert_eq!(
        decide(
            &seccomp_spec(&no_baseline, false, 1024, true),
            "futex",
            [0; 6]
        ),
        RET_USER_NOTIF
    );
}

#[test]
fn deny_list_filter_keeps_the_floor() {
    let p = policy("name: x\nsyscalls:\n  default_deny: false\n  deny: [unlinkat]\nnetwork:\n  isolated: false\n  allow_outgoing: [443]\n");
    let spec = seccomp_spec(&p, true, 1024, true);
    assert_eq!(decide(&spec, "unlinkat", [0; 6]), RET_USER_NOTIF);
    assert_eq!(decide(&spec, "openat", [0; 6]), RET_ALLOW);
    for floor in [
        "mount",
        "bpf",
        "keyctl",
        "io_uring_setup",
        "userfaultfd",
        "unshare",
        "setns",
        "kexec_load",
        "open_by_handle_at",
    ] {
        assert_eq!(decide(&spec, floor, [0; 6]), RET_USER_NOTIF, "{floor}");
    }
    assert_eq!(
        decide(&spec, "clone", [0x1000_0011, 0, 0, 0, 0, 0]),
        RET_USER_NOTIF
    );
    assert_eq!(
        decide(&spec, "socket", [2, 2 | 0x80000, 0, 0, 0, 0]),
        RET_USER_NOTIF,
        "UDP on the host network"
    );
    assert_eq!(
        decide(&spec, "socket", [10, 2, 0, 0, 0, 0]),
        RET_USER_NOTIF,
        "UDP over IPv6"
    );
    assert_eq!(
        decide(&spec, "socket", [2, 1, 0, 0, 0, 0]),
        RET_ALLOW,
        "TCP (ports are Landlock's job)"
    );
    assert_eq!(decide(&spec, "sendmsg", [1024, 0, 0, 0, 0, 0]), RET_ALLOW);
}

#[test]
fn lifted_floor_entries_are_allowed() {
    let p = policy("name: x\nsyscalls:\n  default_deny: true\n  allow: [ptrace]\n  unsafe_lift_floor: [ptrace]\n");
    let plan = make_plan(&p, &req(&["x"]), &host()).unwrap();
    assert_eq!(plan.floor_lifted, vec!["ptrace".to_string()]);
    assert_eq!(decide(&plan.seccomp, "ptrace", [0; 6]), RET_ALLOW);
    assert_eq!(decide(&plan.seccomp, "bpf", [0; 6]), RET_USER_NOTIF);
}

#[test]
fn without_user_notification_denials_are_plain_eperm_and_recorded() {
    let mut h = host();
    h.seccomp_user_notif = false;
    let mut r = req(&["x"]);
    assert!(matches!(
        make_plan(&policy("name: x\n"), &r, &h),
        Err(PlanError::Refused(_))
    ));
    r.best_effort = true;
    let plan = make_plan(&policy("name: x\n"), &r, &h).unwrap();
    assert_eq!(decide(&plan.seccomp, "ptrace", [0; 6]), RET_ERRNO | 1);
    assert_eq!(plan.unenforced[0].mechanism, "seccomp.report");
}

#[test]
fn landlock_rules_follow_the_mounts() {
    let p = policy("name: x\nfilesystem:\n  immutable_paths:\n    - { host_path: /usr, sandbox_path: /usr }\n  scratch_paths: [/tmp]\n  output_paths:\n    - { host_path: /srv/out, sandbox_path: /out }\n");
    let plan = make_plan(&p, &req(&["x"]), &host()).unwrap();
    let ll = plan.landlock.unwrap();
    assert!(ll
        .paths
        .contains(&(PathBuf::from("/usr"), FsAccess::ReadExecute)));
    assert!(ll
        .paths
        .contains(&(PathBuf::from("/tmp"), FsAccess::ReadWrite)));
    assert!(ll
        .paths
        .contains(&(PathBuf::from("/out"), FsAccess::ReadWrite)));
    assert!(ll.paths.contains(&(PathBuf::from("/"), FsAccess::ReadOnly)));
    assert_eq!(
        ll.tcp_connect, None,
        "isolated network: the namespace does it"
    );
    assert!(ll.scope);
}

#[test]
fn allowed_network_calls_are_inspected_not_denied() {
    let isolated = policy("name: x\nsyscalls:\n  default_deny: true\n  allow: [connect, bind]\n");
    let spec = seccomp_spec(&isolated, false, 1024, true);
    assert_eq!(
        inspected(&spec),
        vec![syscalls::number("connect").unwrap()],
        "bind is free inside a private netns"
    );
    let host = policy("name: x\nsyscalls:\n  default_deny: true\n  allow: [connect, bind]\nnetwork:\n  isolated: false\n  allow_outgoing: [443]\n");
    let spec = seccomp_spec(&host, true, 1024, true);
    assert_eq!(inspected(&spec).len(), 2);
    let denied = policy("name: x\nsyscalls:\n  default_deny: true\n  allow: [read]\n");
    let spec = seccomp_spec(&denied, false, 1024, true);
    assert!(
        inspected(&spec).is_empty(),
        "a denied connect is reported as a denial, not inspected"
    );
    assert_eq!(decide(&spec, "connect", [0; 6]), RET_USER_NOTIF);
}

#[test]
fn only_opens_that_may_write_are_inspected() {
    let p = policy("name: x\nsyscalls:\n  default_deny: true\n  allow: [openat, open, mkdir]\nfilesystem:\n  scratch_paths: [/tmp]\n");
    let spec = seccomp_spec(&p, false, 1024, true);
    let at = (-100i64) as u64;
    assert_eq!(
        decide(&spec, "openat", [at, 0, 0o2000000, 0, 0, 0]),
        RET_ALLOW,
        "O_RDONLY|O_CLOEXEC stays in the kernel"
    );
    assert_eq!(
        decide(&spec, "openat", [at, 0, 0o1, 0, 0, 0]),
        RET_USER_NOTIF,
        "O_WRONLY"
    );
    assert_eq!(
        decide(&spec, "openat", [at, 0, 0o2, 0, 0, 0]),
        RET_USER_NOTIF,
        "O_RDWR"
    );
    assert_eq!(
        decide(&spec, "openat", [at, 0, 0o100, 0, 0, 0]),
        RET_USER_NOTIF,
        "O_CREAT"
    );
    assert_eq!(
        decide(&spec, "open", [0, 0o1000 | 0o1, 0, 0, 0, 0]),
        RET_USER_NOTIF,
        "O_TRUNC"
    );
    assert_eq!(decide(&spec, "mkdir", [0; 6]), RET_USER_NOTIF);
    let inspected = inspected(&spec);
    for name in ["openat", "open", "mkdir", "connect"] {
        let n = syscalls::number(name).unwrap();
        assert_eq!(inspected.contains(&n), name != "connect", "{name}");
    }
    let plan = make_plan(&p, &req(&["x"]), &host()).unwrap();
    assert_eq!(plan.writable, vec![PathBuf::from("/tmp")]);
}

#[test]
fn host_network_sockets_are_plain_tcp_only() {
    let p = policy("name: x\nsyscalls:\n  default_deny: false\nnetwork:\n  isolated: false\n  allow_outgoing: [443]\n");
    let spec = seccomp_spec(&p, true, 1024, true);
    assert_eq!(
        decide(&spec, "socket", [2, 1, 0, 0, 0, 0]),
        RET_ALLOW,
        "TCP, protocol 0"
    );
    assert_eq!(
        decide(&spec, "socket", [10, 1 | 0o4000, 6, 0, 0, 0]),
        RET_ALLOW,
        "TCP, IPPROTO_TCP, nonblocking"
    );
    assert_eq!(
        decide(&spec, "socket", [2, 1, 262, 0, 0, 0]),
        RET_USER_NOTIF,
        "MPTCP"
    );
    assert_eq!(
        decide(&spec, "socket", [10, 1, 132, 0, 0, 0]),
        RET_USER_NOTIF,
        "SCTP"
    );
    assert_eq!(
        decide(&spec, "socket", [1, 1, 0, 0, 0, 0]),
        RET_ALLOW,
        "unix sockets are not inet"
    );
    let isolated = policy("name: x\nsyscalls:\n  default_deny: false\n");
    let spec = seccomp_spec(&isolated, false, 1024, true);
    assert_eq!(
        decide(&spec, "socket", [2, 1, 262, 0, 0, 0]),
        RET_ALLOW,
        "inside a private netns anything goes"
    );
    assert_eq!(
        decide(&spec, "prlimit64", [0, 7, 0, 0, 0, 0]),
        RET_ALLOW,
        "our own limits"
    );
    assert_eq!(
        decide(&spec, "prlimit64", [1, 7, 0, 0, 0, 0]),
        RET_USER_NOTIF,
        "another process's"
    );
}
