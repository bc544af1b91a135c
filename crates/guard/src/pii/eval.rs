//! Scores the scanner against a labelled corpus (`crates/guard/corpus/pii.jsonl`), for the
//! `pii_eval` example and the regression test that keeps precision and recall up.
//!
//! A corpus line is `{"text": "...", "spans": [{"kind": "email", "value": "..."}]}` listing
//! every true value in the text; hard negatives have no spans. A finding counts as a true
//! positive when a labelled span of the same kind has the same value. The corpus is fake
//! data made for this, which is why this module, unlike the rest of `pii`, handles values.

use super::{Kind, Scanner};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Why a corpus cannot be scored.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("corpus line {line}: {source}")]
    Parse {
        line: usize,
        source: serde_json::Error,
    },
    #[error("corpus line {line}: labelled {kind} `{value}` does not occur in the text")]
    NotInText {
        line: usize,
        kind: Kind,
        value: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    text: String,
    #[serde(default)]
    spans: Vec<Span>,
    /// What the line is for (a hard-negative class, a format); not scored.
    #[serde(default, rename = "note")]
    _note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Span {
    kind: Kind,
    value: String,
}

/// True positives, false positives and false negatives of one kind (or all).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Score {
    pub tp: u32,
    pub fp: u32,
    pub fneg: u32,
}

impl Score {
    /// 1.0 when nothing was reported: no claim was wrong.
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    /// 1.0 when nothing was labelled: nothing was missed.
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fneg)
    }

    fn add(&mut self, other: Score) {
        self.tp += other.tp;
        self.fp += other.fp;
        self.fneg += other.fneg;
    }
}

fn ratio(a: u32, b: u32) -> f64 {
    if b == 0 {
        1.0
    } else {
        f64::from(a) / f64::from(b)
    }
}

/// A finding that matched no label (`missed == false`) or a label no finding matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// 1-based corpus line.
    pub line: usize,
    pub kind: Kind,
    pub value: String,
    pub missed: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub lines: usize,
    pub per_kind: BTreeMap<Kind, Score>,
    pub mismatches: Vec<Mismatch>,
}

impl Report {
    /// Micro-averaged over all kinds.
    pub fn total(&self) -> Score {
        let mut all = Score::default();
        for s in self.per_kind.values() {
            all.add(*s);
        }
        all
    }

    /// Kinds whose precision or recall is below `min`.
    pub fn kinds_below(&self, min: f64) -> Vec<Kind> {
        self.per_kind
            .iter()
            .filter(|(_, s)| s.precision() < min || s.recall() < min)
            .map(|(k, _)| *k)
            .collect()
    }

    /// The per-kind table with a micro-averaged total row.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<12} {:>5} {:>5} {:>5} {:>9} {:>7}",
            "kind", "TP", "FP", "FN", "precision", "recall"
        );
        let row = |out: &mut String, name: &str, s: &Score| {
            let _ = writeln!(
                out,
                "{:<12} {:>5} {:>5} {:>5} {:>9.3} {:>7.3}",
                name,
                s.tp,
                s.fp,
                s.fneg,
                s.precision(),
                s.recall()
            );
        };
        for (kind, s) in &self.per_kind {
            row(&mut out, kind.as_str(), s);
        }
        row(&mut out, "all (micro)", &self.total());
        out
    }
}

/// Scores `scanner` on every non-empty line of `corpus`.
pub fn evaluate(scanner: &Scanner, corpus: &str) -> Result<Report, EvalError> {
    let mut report = Report::default();
    for kind in Kind::ALL {
        report.per_kind.insert(kind, Score::default());
    }
    for (i, raw) in corpus.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let parsed: Line =
            serde_json::from_str(raw).map_err(|source| EvalError::Parse { line, source })?;
        report.lines += 1;
        let mut labels: Vec<(Kind, &str)> = Vec::with_capacity(parsed.spans.len());
        for span in &parsed.spans {
            if !parsed.text.contains(&span.value) {
                return Err(EvalError::NotInText {
                    line,
                    kind: span.kind,
                    value: span.value.clone(),
                });
            }
            labels.push((span.kind, &span.value));
        }
        for f in scanner.scan(&parsed.text) {
            let value = &parsed.text[f.range()];
            let score = report.per_kind.entry(f.kind).or_default();
            match labels.iter().position(|&(k, v)| k == f.kind && v == value) {
                Some(at) => {
                    labels.swap_remove(at);
                    score.tp += 1;
                }
                None => {
                    score.fp += 1;
                    report.mismatches.push(Mismatch {
                        line,
                        kind: f.kind,
                        value: value.to_owned(),
                        missed: false,
                    });
                }
            }
        }
        for (kind, value) in labels {
            report.per_kind.entry(kind).or_default().fneg += 1;
            report.mismatches.push(Mismatch {
                line,
                kind,
                value: value.to_owned(),
                missed: true,
            });
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_tp_fp_fn_by_kind_and_value() {
        let corpus = concat!(
            r#"{"text": "mail a@example.com or b@example.org", "spans": [{"kind": "email", "value": "a@example.com"}, {"kind": "email", "value": "b@example.org"}]}"#,
            "\n\n",
            r#"{"text": "call 212-555-0100", "spans": [{"kind": "email", "value": "212-555-0100"}], "note": "wrong kind"}"#,
            "\n",
            r#"{"text": "nothing here"}"#,
        );
        let report = evaluate(&Scanner::new(), corpus).unwrap();
        assert_eq!(report.lines, 3);
        assert_eq!(
            report.per_kind[&Kind::Email],
            Score {
                tp: 2,
                fp: 0,
                fneg: 1
            }
        );
        assert_eq!(
            report.per_kind[&Kind::Phone],
            Score {
                tp: 0,
                fp: 1,
                fneg: 0
            }
        );
        assert_eq!(
            report.total(),
            Score {
                tp: 2,
                fp: 1,
                fneg: 1
            }
        );
        assert_eq!(report.kinds_below(0.95), vec![Kind::Email, Kind::Phone]);
        assert_eq!(report.mismatches.len(), 2);
        assert!(report.table().contains("all (micro)"));
    }

    #[test]
    fn bad_lines_are_errors_with_their_number() {
        let err = evaluate(&Scanner::new(), "{\"text\": \"x\"}\n{\"txt\": 1}").unwrap_err();
        assert!(matches!(err, EvalError::Parse { line: 2, .. }), "{err}");
        let err = evaluate(
            &Scanner::new(),
            r#"{"text": "x", "spans": [{"kind": "email", "value": "a@b.co"}]}"#,
        )
        .unwrap_err();
        assert!(matches!(err, EvalError::NotInText { line: 1, .. }), "{err}");
    }
}
