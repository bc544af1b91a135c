//! The Iron Cage sandbox engine.
//!
//! Parse -> plan -> apply: a validated `Policy` (crate `ironcage-policy`) and the host's
//! facts (`probe`) become a `Plan` (`plan`, pure and tested), which `run` applies by
//! forking into new namespaces, where `child` builds the cage and execs the command.
//! All `unsafe` lives in `sys`.

#![deny(unsafe_code)]

pub mod cgroup;
pub mod child;
pub mod job;
mod landlock_apply;
pub mod plan;
pub mod probe;
pub mod report;
pub mod run;
pub mod seccomp;
pub mod sys;
pub mod tty;

pub use plan::{make_plan, HostFacts, Plan, PlanError, Request};
pub use report::{exit_code, RunReport};
