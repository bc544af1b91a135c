//! Scores `ironcage_guard::pii` on the labelled corpus and prints per-kind precision and
//! recall. Exits 1 if the micro-averaged precision or recall is below 0.95, 2 if the corpus
//! cannot be read.
//!
//! `cargo run --release -p ironcage-guard --example pii_eval [-- CORPUS.jsonl] [--mismatches]`

use ironcage_guard::pii::{eval, Scanner};
use std::process::ExitCode;

const MIN: f64 = 0.95;

fn main() -> ExitCode {
    let mut path = concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/pii.jsonl").to_owned();
    let mut show = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--mismatches" => show = true,
            _ => path = arg,
        }
    }
    let corpus = match std::fs::read_to_string(&path) {
        Ok(c) => c,
        Err(err) => {
            eprintln!("pii_eval: cannot read {path}: {err}");
            return ExitCode::from(2);
        }
    };
    let report = match eval::evaluate(&Scanner::new(), &corpus) {
        Ok(r) => r,
        Err(err) => {
            eprintln!("pii_eval: {path}: {err}");
            return ExitCode::from(2);
        }
    };
    let labelled: u32 = report.per_kind.values().map(|s| s.tp + s.fneg).sum();
    println!(
        "corpus: {path} ({} lines, {labelled} labelled values)",
        report.lines
    );
    print!("{}", report.table());
    if show {
        for m in &report.mismatches {
            let what = if m.missed { "FN" } else { "FP" };
            println!(
                "{what} line {:>4} {:<12} {:?}",
                m.line,
                m.kind.as_str(),
                m.value
            );
        }
    } else if !report.mismatches.is_empty() {
        println!(
            "({} mismatches; --mismatches lists them)",
            report.mismatches.len()
        );
    }
    let all = report.total();
    if all.precision() < MIN || all.recall() < MIN {
        eprintln!("pii_eval: overall precision or recall below {MIN}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
