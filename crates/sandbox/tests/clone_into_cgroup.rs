//! clone3(CLONE_INTO_CGROUP) against a real cgroup2 hierarchy: the pure-v2 mount on most
//! hosts, the `unified` mount on v1 hybrids like our CI. Needs root (it creates a cgroup).

use ironcage_sandbox::cgroup::Layout;
use ironcage_sandbox::sys;
use std::os::fd::AsRawFd;

#[test]
fn child_is_born_in_the_cgroup() {
    let layout = Layout::read();
    let root = layout
        .v2
        .clone()
        .expect("a cgroup2 hierarchy is mounted (pure v2, or `unified` on hybrid hosts)");
    assert_eq!(sys::geteuid(), 0, "run as root: the test creates a cgroup");
    let name = format!("ironcage-clone3-test-{}", std::process::id());
    let own = layout.own_v2.clone().unwrap_or_else(|| "/".into());
    let parent = root.join(own.trim_start_matches('/'));
    let dir = parent.join(&name);
    std::fs::create_dir(&dir).unwrap();
    let fd = sys::open_dir(&dir).unwrap();
    let (r, w) = sys::pipe().unwrap();
    match sys::clone_into_cgroup(0, &fd).unwrap() {
        None => {
            // Child: no allocation (the test harness is multi-threaded); wait, then exit.
            let mut b = [0u8; 1];
            let _ = sys::read(r.as_raw_fd(), &mut b);
            sys::exit_now(0);
        }
        Some(pid) => {
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
            sys::write_all(w.as_raw_fd(), b"x").unwrap();
            let (_, status, _) = sys::wait4(pid, 0).unwrap();
            std::fs::remove_dir(&dir).unwrap();
            assert_eq!(sys::raw_status_exit(status), Some(0));
            let v2_line = cgroup.lines().find(|l| l.starts_with("0::")).unwrap();
            assert!(
                v2_line.ends_with(&format!("/{name}")),
                "child not in the cgroup: {cgroup}"
            );
        }
    }
}
