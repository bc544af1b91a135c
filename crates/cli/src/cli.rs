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
    /// Read, verify, prove and export the tamper-evident audit log.
    Audit(AuditArgs),
    /// Run the execution service: an HTTP API that runs code in sandboxes from a warm pool.
    Serve(ServeArgs),
    /// Create, list and revoke the execution service's API keys.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Store provider API keys, encrypted at rest, for the LLM gateway.
    #[command(subcommand)]
    Secret(SecretCmd),
    /// Run the LLM gateway on its own (what `ironcage run` hosts inside each sandbox).
    Gateway(GatewayArgs),
    /// Internal: forks sandbox hosts for `ironcage serve` (talks on stdin, a socket).
    #[command(hide = true, name = "sandbox-zygote")]
    SandboxZygote {
        #[arg(long, default_value = "")]
        node: String,
    },
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// The log file (default: $IRONCAGE_AUDIT_LOG, else /var/log/ironcage/audit.log for
    /// root, ~/.local/state/ironcage/audit.log for others).
    #[arg(long, global = true, value_name = "FILE")]
    pub log: Option<PathBuf>,
    #[command(subcommand)]
    pub command: AuditCmd,
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Print the last entries, oldest first.
    Tail {
        /// How many entries.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u64,
        /// Keep printing entries as they are appended.
        #[arg(short, long)]
        follow: bool,
        /// Print the entries as stored (JSON lines).
        #[arg(long)]
        json: bool,
        /// Only the entries of this run.
        #[arg(long, value_name = "RUN_ID")]
        run: Option<String>,
    },
    /// Print one entry with its leaf hash.
    Show {
        seq: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check the whole log; exit 0 only if it is intact (1 if not).
    Verify {
        /// Also check against this saved checkpoint (repeatable): detects truncation and
        /// rewriting since it was taken.
        #[arg(long, value_name = "FILE")]
        checkpoint: Vec<PathBuf>,
        /// Public key to check signatures with (key text, .pub file or private key file;
        /// repeatable, e.g. across a key rotation; default: the public half of the default
        /// signing key).
        #[arg(long, value_name = "KEY")]
        key: Vec<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sign and print a checkpoint (signed tree head) of the log as it is now.
    Checkpoint {
        /// Private key file (default: $IRONCAGE_AUDIT_KEY, else /etc/ironcage/audit.key for
        /// root, ~/.config/ironcage/audit.key for others; created on first use, mode 0600).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Also write it to this file.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Sign a log that has entries but no checkpoint of this key (its checkpoint file
        /// was removed, or the key changed) as it is now; recorded in the log. Check the
        /// log first (`verify --key OLD.pub`, or against a saved checkpoint).
        #[arg(long)]
        adopt: bool,
    },
    /// Print an inclusion proof for entry SEQ (verified before it is printed).
    Prove {
        seq: u64,
        /// Prove against this saved checkpoint (default: the log's latest).
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        /// Public key to check the checkpoint with.
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
    },
    /// Prove that the log now extends an older checkpoint (nothing rewritten or removed).
    Consistency {
        /// The older checkpoint.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The newer checkpoint (default: the log's latest).
        #[arg(long, value_name = "FILE")]
        to: Option<PathBuf>,
        /// Public key to check both checkpoints with.
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
    },
    /// Write entries, a signed checkpoint and proofs to a bundle for offline checking.
    Export {
        /// Bundle file to write ("-" for stdout).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Only the entries of this run.
        #[arg(long, value_name = "RUN_ID", conflicts_with_all = ["from", "to"])]
        run: Option<String>,
        /// First entry (inclusive).
        #[arg(long)]
        from: Option<u64>,
        /// Last entry (exclusive).
        #[arg(long)]
        to: Option<u64>,
        /// Private key to sign a fresh checkpoint and the bundle's manifest with (default:
        /// the default key if it exists; without one, the log's latest stored checkpoint
        /// is used, and only whole-log bundles can be made).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// Verify a bundle offline with only the log's public key.
    VerifyBundle {
        bundle: PathBuf,
        /// The log's public key (key text or file).
        #[arg(long, value_name = "KEY")]
        key: String,
    },
    /// Print the public key that verifies this host's checkpoints (hand it to auditors).
    PublicKey {
        /// Private key file (default: the default key).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
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
    /// LLM budget for this run in US dollars (default: the policy's llm.budget_usd, $1.00
    /// in the built-ins). The gateway refuses requests that could exceed it.
    #[arg(long, value_name = "USD")]
    pub budget_usd: Option<String>,
    /// Send a provider's traffic to another base URL (repeatable): `openai=URL` (with /v1),
    /// `anthropic=URL` (without). Overrides llm.yaml.
    #[arg(long = "llm-upstream", value_name = "PROVIDER=URL")]
    pub llm_upstream: Vec<String>,
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

/// Where the service's settings and store are (shared by `serve` and `key`).
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// YAML config file (default: $IRONCAGE_CONFIG if set). See docs/serve.md.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory: SQLite database, audit log and key (default: /var/lib/ironcage for
    /// root, ~/.local/share/ironcage otherwise; env IRONCAGE_DATA_DIR).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// sqlite://PATH or postgres://USER:PASSWORD@HOST/DB (env DATABASE_URL).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address to listen on, IP:PORT (default 127.0.0.1:8000).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Port to listen on (env API_PORT).
    #[arg(long)]
    pub port: Option<u16>,
    /// Idle sandboxes kept ready per warmed profile (env POOL_SIZE; default 4).
    #[arg(long)]
    pub pool_size: Option<usize>,
    /// error, warn, info, debug (env LOG_LEVEL).
    #[arg(long)]
    pub log_level: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Create a key; prints it once (only its hash is stored).
    Create {
        #[command(flatten)]
        store: StoreArgs,
        /// A name for the key (who or what uses it).
        #[arg(long)]
        name: String,
        /// Requests per minute (default from the config: keys.rate_limit_per_minute).
        #[arg(long)]
        rate_limit: Option<u32>,
        /// Executions running at once (default from the config: keys.max_concurrent).
        #[arg(long)]
        max_concurrent: Option<u32>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id or name; requests with it get 401 from then on.
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        /// The key's id (key_...) or name.
        key: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum SecretCmd {
    /// Encrypt and store a secret (e.g. `openai`, `anthropic`: the gateway's provider keys).
    Set {
        /// Name: [a-z0-9_-], 1-64 characters.
        name: String,
        /// Read the value from this environment variable.
        #[arg(long, value_name = "VAR", conflicts_with = "from_file")]
        from_env: Option<String>,
        /// Read the value from this file (`-` for stdin); one trailing newline is dropped.
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
    },
    /// List stored secrets (names and times; never values).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret.
    Rm { name: String },
}

#[derive(Args, Debug)]
pub struct GatewayArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:4000")]
    pub listen: String,
    /// Total budget in US dollars for everything sent through this gateway.
    #[arg(long, value_name = "USD", default_value = "1.00")]
    pub budget_usd: String,
    /// Provider base URL override (repeatable): `openai=URL` (with /v1), `anthropic=URL`.
    #[arg(long = "llm-upstream", value_name = "PROVIDER=URL")]
    pub llm_upstream: Vec<String>,
    /// Policy whose `llm` section (PII rules, unpriced models) applies.
    #[arg(long, short = 'p', conflicts_with = "policy")]
    pub profile: Option<String>,
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Append decisions to this audit log (default: none).
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
}
