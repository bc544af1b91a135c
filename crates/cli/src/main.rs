//! `ironcage`: the command-line front end. Parses arguments, loads the policy, asks the
//! engine for a plan, runs it, prints the report. Exit codes and error printing live here
//! and only here (see `ironcage_sandbox::exit_code`).

#![forbid(unsafe_code)]

mod audit_cmd;
mod cli;
mod commands;
mod governance;
mod llm_cmd;
mod paths;
mod serve_cmd;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    let code = match commands::dispatch(args) {
        Ok(code) => code,
        Err(err) => {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "ironcage: {err:#}");
            err.downcast_ref::<commands::Exit>()
                .map(|e| e.code)
                .unwrap_or(ironcage_sandbox::exit_code::USAGE)
        }
    };
    std::process::exit(code);
}
