//! Argument definitions only (clap derive). No behaviour.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "ironcage", version, about = "Run untrusted code and AI agents in a kernel-enforced cage", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a command inside the cage described by a policy.
    Run(RunArgs),
    /// Show what this host can enforce, and what it can't.
    Doctor {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List, show and validate policy profiles.
    #[command(subcommand)]
    Profile(ProfileCmd),
    /// cgroup administration (run as root).
    #[command(subcommand)]
    Cgroup(CgroupCmd),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Profile name (built-in, ./policies/, ~/.config/ironcage/policies, /etc/ironcage/policies).
    #[arg(long, short = 'p', conflicts_with = "policy")]
    pub profile: Option<String>,
    /// Policy file path.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Print the run report as JSON (to stderr, or to --report / --report-fd).
    #[arg(long)]
    pub json: bool,
    /// Write the JSON run report to this file (implies --json).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write the JSON run report to this already-open descriptor (implies --json).
    #[arg(long, value_name = "FD")]
    pub report_fd: Option<i32>,
    /// Run even if the host cannot enforce everything the policy asks for; warn and record it.
    #[arg(long)]
    pub best_effort: bool,
    /// Pass an environment variable: NAME (value from here) or NAME=VALUE.
    #[arg(long = "env", short = 'e', value_name = "NAME[=VALUE]")]
    pub env: Vec<String>,
    /// Bind a host path read-only into the sandbox: HOST[:SANDBOX] (SANDBOX defaults to the
    /// absolute host path). E.g. `--ro .:/work --cwd /work` to run code from here.
    #[arg(long = "ro", value_name = "HOST[:SANDBOX]")]
    pub ro: Vec<String>,
    /// Bind a host directory writable into the sandbox (like a policy output path).
    #[arg(long = "rw", value_name = "HOST[:SANDBOX]")]
    pub rw: Vec<String>,
    /// Working directory inside the sandbox (overrides the policy's working_dir).
    #[arg(long, value_name = "SANDBOX_PATH")]
    pub cwd: Option<std::path::PathBuf>,
    /// Share the caller's terminal instead of giving the sandbox a pty of its own (the
    /// default when stdin and stdout are a terminal).
    #[arg(long)]
    pub no_tty: bool,
    /// Print the plan as JSON and exit without running anything.
    #[arg(long)]
    pub dry_run: bool,
    /// The command and its arguments (after `--`, or after the last ironcage option).
    #[arg(required = true, num_args = 1.., trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum ProfileCmd {
    /// List profiles that can be used by name.
    List,
    /// Print a profile (by name or path) as YAML.
    Show { name: String },
    /// Validate a policy file; exit 0 if valid.
    Validate { file: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum CgroupCmd {
    /// Create a cgroup subtree owned by USER so their rootless sandboxes can have limits.
    Delegate {
        /// User name or uid.
        #[arg(long)]
        user: String,
    },
}
