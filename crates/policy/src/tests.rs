use super::*;

fn origin() -> Origin {
    Origin::File(PathBuf::from("p.yaml"))
}

fn err(text: &str) -> String {
    parse(text, &origin()).unwrap_err().to_string()
}

const SEED: &str = include_str!("../../../tests/policies/seed-custom.yaml");

#[test]
fn seed_custom_policy_loads_unchanged() {
    let p = parse(SEED, &origin()).unwrap();
    assert_eq!(p.name, "custom-profile");
    assert!(p.syscalls.default_deny);
    assert!(
        p.syscalls.deny.iter().any(|s| s.name == "umount2"),
        "`unmount` is an alias"
    );
    assert_eq!(p.resources.memory_limit_bytes, Some(units::Size(2 << 30)));
    assert_eq!(p.resources.block_io_limit, Some(units::Rate(100 << 20)));
    assert_eq!(
        p.network.allow_outgoing,
        vec![units::Port(443), units::Port(53)]
    );
    assert_eq!(p.capabilities.add[0].name, "CAP_NET_BIND_SERVICE");
    assert_eq!(
        p.filesystem.output_paths[0].sandbox_path.0,
        Path::new("/output")
    );
}

#[test]
fn built_ins_parse_and_json_matches_yaml() {
    for (name, text) in BUILT_INS {
        let p = parse(text, &Origin::BuiltIn(name)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&p.name, name);
        assert_eq!(
            load_built_in(name).unwrap(),
            p,
            "the JSON fast path must load the same policy"
        );
    }
}

#[test]
fn unknown_field_names_line_column_and_field() {
    let e = err("name: x\nfilesystem:\n  scratch_paths: [\"/tmp\"]\n  scrach_size: 1G\n");
    assert!(e.starts_with("p.yaml:4:3: "), "{e}");
    assert!(e.contains("unknown field `scrach_size`"), "{e}");
    assert!(e.contains("filesystem"), "{e}");
}

#[test]
fn unknown_syscall_suggests_nearest() {
    let e = err("name: x\nsyscalls:\n  default_deny: true\n  allow:\n    - read\n    - opneat\n");
    assert!(e.starts_with("p.yaml:6:7: "), "{e}");
    assert!(
        e.contains("syscalls.allow: unknown syscall `opneat`"),
        "{e}"
    );
    assert!(e.contains("did you mean `openat`"), "{e}");
}

#[test]
fn bad_size_rate_port_are_located() {
    let e = err("name: x\nresources:\n  memory_limit_bytes: 2X\n");
    assert!(e.starts_with("p.yaml:3:23: "), "{e}");
    assert!(
        e.contains("resources.memory_limit_bytes: `2X`: unknown size unit"),
        "{e}"
    );
    let e = err("name: x\nresources:\n  block_io_limit: 100MB\n");
    assert!(e.contains("p.yaml:3:") && e.contains("not a rate"), "{e}");
    let e = err("name: x\nnetwork:\n  isolated: false\n  allow_outgoing: [\"443\", \"99999\"]\n");
    assert!(e.contains("p.yaml:4:") && e.contains("out of range"), "{e}");
}

#[test]
fn missing_host_path_field_and_missing_host_dir() {
    let e = err("name: x\nfilesystem:\n  immutable_paths:\n    - sandbox_path: /usr\n");
    assert!(
        e.contains("p.yaml:4:") && e.contains("missing field `host_path`"),
        "{e}"
    );
    let e = err("name: x\nfilesystem:\n  immutable_paths:\n    - host_path: /no/such/dir/x\n      sandbox_path: /x\n");
    assert!(
        e.starts_with("p.yaml:4:18: filesystem.immutable_paths.host_path"),
        "{e}"
    );
    assert!(e.contains("does not exist"), "{e}");
    let ok = "name: x\nfilesystem:\n  immutable_paths:\n    - host_path: /no/such/dir/x\n      sandbox_path: /x\n      optional: true\n";
    parse(ok, &origin()).unwrap();
}

#[test]
fn contradictions_are_errors() {
    let e = err(
        "name: x\nsyscalls:\n  default_deny: true\n  allow: [read, write]\n  deny:\n    - write\n",
    );
    assert!(e.starts_with("p.yaml:6:7: syscalls.deny"), "{e}");
    assert!(e.contains("both allowed and denied"), "{e}");
    let e = err("name: x\nnetwork:\n  isolated: true\n  allow_outgoing: [443]\n");
    assert!(e.contains("network.allow_outgoing"), "{e}");
}

#[test]
fn floor_cannot_be_lifted_silently() {
    let e = err("name: x\nsyscalls:\n  default_deny: true\n  allow: [read, ptrace]\n");
    assert!(
        e.contains("always-on floor") && e.contains("unsafe_lift_floor"),
        "{e}"
    );
    let ok = "name: x\nsyscalls:\n  default_deny: true\n  allow: [read, ptrace]\n  unsafe_lift_floor: [ptrace]\n";
    assert_eq!(
        parse(ok, &origin()).unwrap().syscalls.unsafe_lift_floor[0].name,
        "ptrace"
    );
}

#[test]
fn capabilities_that_undo_isolation_are_refused() {
    let e = err("name: x\ncapabilities:\n  add: [CAP_SYS_ADMIN]\n");
    assert!(
        e.contains("p.yaml:3:") && e.contains("cannot be granted"),
        "{e}"
    );
    let e = err("name: x\ncapabilities:\n  add: [CAP_FLY]\n");
    assert!(e.contains("unknown capability"), "{e}");
}

#[test]
fn sandbox_paths_are_checked() {
    let e = err("name: x\nfilesystem:\n  scratch_paths: [tmp]\n");
    assert!(e.contains("must be absolute"), "{e}");
    let e = err("name: x\nfilesystem:\n  scratch_paths: [/tmp, /tmp/]\n");
    assert!(e.contains("mounted twice"), "{e}");
    let e = err("name: x\nfilesystem:\n  scratch_paths: [/proc/x]\n");
    assert!(e.contains("provided by the sandbox"), "{e}");
    let e = err("name: x\nfilesystem:\n  scratch_paths: [/tmp]\n  working_dir: /home\n");
    assert!(e.contains("working_dir"), "{e}");
}

#[test]
fn profiles_are_found_by_name_in_policies_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/mine.yaml"), "name: mine\n").unwrap();
    std::env::set_current_dir(dir.path()).unwrap();
    let found = find_profile("mine").unwrap();
    assert_eq!(found.policy.name, "mine");
    assert!(list_profiles().iter().any(|(n, _)| n == "mine"));
    let e = find_profile("nope").unwrap_err().to_string();
    assert!(e.contains("ai-strict") && e.contains("--policy"), "{e}");
    assert_eq!(
        find_profile("ai-strict").unwrap().origin,
        Origin::BuiltIn("ai-strict")
    );
}

#[test]
fn a_syscalls_section_without_default_deny_stays_allow_list() {
    let p = parse("name: x\nsyscalls:\n  deny: [ptrace]\n", &origin());
    // deny-only in allow-list mode is fine; the mode must not flip to deny-list silently.
    assert!(p.unwrap().syscalls.default_deny);
    let p = parse("name: x\nsyscalls: {}\n", &origin()).unwrap();
    assert!(p.syscalls.default_deny);
}

#[test]
fn oversized_and_odd_files_are_refused_cheaply() {
    let big = format!(
        "name: x\ndescription: \"{}\"\n",
        "a".repeat(MAX_POLICY_BYTES)
    );
    assert!(err(&big).contains("the limit is"));
    let e = err("name: x\nresources:\n\tpids_limit: 3\n");
    assert!(e.contains("indented with a tab"), "{e}");
    // Ordinary text with & and * is fine.
    parse(
        "name: x\ndescription: R & D, *not* an alias, host:*abc\n",
        &origin(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.yaml");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let e = load_file(&fifo).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
}

#[test]
fn more_bad_values_are_refused() {
    let e = err("name: x\nfilesystem:\n  scratch_paths: [\"/x\\0y\"]\n");
    assert!(e.contains("NUL"), "{e}");
    let e = err("name: x\nresources:\n  block_io_limit: 100Mbps\n");
    assert!(e.contains("bits"), "{e}");
    let e = err("name: x\nresources:\n  session_timeout_seconds: 18446744073709551615\n");
    assert!(
        e.contains("session_timeout_seconds: must be between 1 and"),
        "{e}"
    );
    let e = err("name: x\nresources:\n  pids_limit: 1\n");
    assert!(e.contains("at least 2"), "{e}");
    let e = err("name: x\nresources:\n  cpu_shares: 0.0000001\n");
    assert!(e.contains("cpu_shares"), "{e}");
    let e = err("name: x\ncapabilities:\n  default_drop: false\n");
    assert!(e.contains("default_drop: false is not supported"), "{e}");
}

#[test]
fn structural_errors_point_at_their_place() {
    let e = err("description: \"a named profile\"\n");
    assert!(e.starts_with("p.yaml:1:1: missing field `name`"), "{e}");
    let e = err(
        "name: x\nfilesystem:\n  output_paths:\n    - host_path: out\n      sandbox_path: /o\n",
    );
    assert!(
        e.starts_with("p.yaml:4:18: filesystem.output_paths.host_path"),
        "{e}"
    );
    let e = err("name: x\nresources:\n  block_io_limit: \"100MB\"\n");
    assert!(e.contains("resources.block_io_limit"), "{e}");
}

#[test]
fn network_mode_proxy_with_domains() {
    let p = parse(
        "name: x\nnetwork:\n  mode: proxy\n  allow_domains: [pypi.org, \"*.pythonhosted.org\"]\n  deny_domains: [upload.pypi.org]\n  allow_outgoing: [443]\n",
        &origin(),
    )
    .unwrap();
    assert_eq!(p.network.mode, NetworkMode::Proxy);
    assert!(
        p.network.isolated,
        "proxy mode keeps the sandbox's own namespace"
    );
    let host = parse("name: x\nnetwork:\n  mode: host\n", &origin()).unwrap();
    assert!(!host.network.isolated);
    let seed = parse("name: x\nnetwork:\n  isolated: false\n", &origin()).unwrap();
    assert_eq!(seed.network.mode, NetworkMode::Host);
    // Round trip through JSON (how built-ins are stored) keeps the meaning.
    let back: Policy = serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
    assert_eq!(back.network, p.network);
}

#[test]
fn network_and_llm_mistakes_are_named() {
    let e = err("name: x\nnetwork:\n  isolated: false\n  mode: proxy\n");
    assert!(e.contains("contradicts network.mode"), "{e}");
    let e = err("name: x\nnetwork:\n  allow_domains: [example.com]\n");
    assert!(
        e.contains("network.allow_domains") && e.contains("mode: proxy"),
        "{e}"
    );
    let e = err("name: x\nnetwork:\n  mode: proxy\n  allow_domains: [\"exa mple.com\"]\n");
    assert!(
        e.contains("exa mple.com") && e.starts_with("p.yaml:4:"),
        "{e}"
    );
    let e = err("name: x\nnetwork:\n  mode: proxy\n  allow_domains: [\"*\"]\n");
    assert!(e.contains("not a host name"), "{e}");
    let e = err("name: x\nnetwork:\n  mode: host\nllm:\n  enabled: true\n");
    assert!(
        e.contains("llm.enabled") && e.contains("own network namespace"),
        "{e}"
    );
    let e = err("name: x\nllm:\n  enabled: true\n  pii:\n    ssn: block\n");
    assert!(
        e.contains("unknown kind `ssn`") && e.contains("us_ssn"),
        "{e}"
    );
    let e = err("name: x\nllm:\n  enabled: true\n  pii:\n    email: shred\n");
    assert!(e.contains("shred"), "{e}");
    let e = err("name: x\nllm:\n  budget_usd: \"-1\"\n");
    assert!(e.contains("llm.budget_usd"), "{e}");
    let e = err("name: x\nllm:\n  budget_usd: \"1e3\"\n");
    assert!(e.contains("llm.budget_usd"), "{e}");
}

#[test]
fn built_ins_enable_the_gateway_with_the_default_budget() {
    for name in ["ai-strict", "ai-dev-safe"] {
        let p = find_profile(name).unwrap().policy;
        assert!(p.llm.enabled, "{name}");
        assert_eq!(p.llm.budget_usd, DEFAULT_LLM_BUDGET_USD);
    }
}
