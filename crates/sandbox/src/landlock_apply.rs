//! Applies a `LandlockPlan` to the calling process with the `landlock` crate. Runs inside
//! the workload after pivot_root, so every path is a sandbox path.
//!
//! Compatibility is a hard requirement for everything the plan asks for: the plan already
//! dropped what this kernel cannot do (and recorded it), so any further downgrade would be
//! silent weakening and is an error instead.

use crate::plan::{FsAccess, LandlockPlan};
use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, Scope, ABI,
};

fn abi_of(n: i32) -> ABI {
    match n {
        i32::MIN..=0 => ABI::Unsupported,
        1 => ABI::V1,
        2 => ABI::V2,
        3 => ABI::V3,
        4 => ABI::V4,
        5 => ABI::V5,
        _ => ABI::V6,
    }
}

pub fn restrict_self(plan: &LandlockPlan) -> Result<(), String> {
    let abi = abi_of(plan.abi);
    let all = AccessFs::from_all(abi);
    let read = AccessFs::from_read(abi);
    let read_only = read & !AccessFs::Execute;
    let device = AccessFs::ReadFile
        | AccessFs::WriteFile
        | AccessFs::ReadDir
        | if plan.abi >= 5 {
            AccessFs::IoctlDev.into()
        } else {
            landlock::BitFlags::EMPTY
        };
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(all)
        .map_err(|e| e.to_string())?;
    let net = plan.tcp_connect.is_some() || plan.tcp_bind.is_some();
    if net {
        ruleset = ruleset
            .handle_access(AccessNet::from_all(abi))
            .map_err(|e| e.to_string())?;
    }
    if plan.scope {
        ruleset = ruleset
            .scope(Scope::AbstractUnixSocket | Scope::Signal)
            .map_err(|e| e.to_string())?;
    }
    let mut created = ruleset.create().map_err(|e| e.to_string())?;
    for (path, access) in &plan.paths {
        let bits = match access {
            FsAccess::ReadExecute => read,
            FsAccess::ReadWrite => all,
            FsAccess::Device => device,
            FsAccess::ReadOnly => read_only,
        };
        let fd = match PathFd::new(path) {
            Ok(fd) => fd,
            Err(_) if !path.exists() => continue,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        // A rule on a file may only carry file rights.
        let is_dir = path.is_dir();
        let bits = if is_dir {
            bits
        } else {
            bits & AccessFs::from_file(abi)
        };
        created = created
            .add_rule(PathBeneath::new(fd, bits))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    for port in plan.tcp_connect.iter().flatten() {
        created = created
            .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
            .map_err(|e| e.to_string())?;
    }
    for port in plan.tcp_bind.iter().flatten() {
        created = created
            .add_rule(NetPort::new(*port, AccessNet::BindTcp))
            .map_err(|e| e.to_string())?;
    }
    created.restrict_self().map_err(|e| e.to_string())?;
    Ok(())
}
