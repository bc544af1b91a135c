#!/usr/bin/env bash
# PII/secret detector (ironcage_guard::pii): accuracy, then speed on one thread.
#   1. The labelled corpus crates/guard/corpus/pii.jsonl through examples/pii_eval.rs:
#      per-kind TP, FP, FN, precision and recall, micro-averaged total (the example exits
#      non-zero when the total precision or recall is below 0.95, and so does this script).
#   2. The criterion bench benches/pii.rs: `scan` and `apply` over ~1 MiB of typical prompt
#      text (prose, code, JSON, some logs) and of digit-heavy text (CSV, access logs, number
#      arrays, hex dumps), and `apply_json` over an OpenAI chat body. MB/s are decimal.
# Usage: bash bench/pii.sh [criterion filter, e.g. scan/]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT

cargo run -q --release -p ironcage-guard --example pii_eval
echo
cargo bench -q -p ironcage-guard --bench pii -- "$@" | tee "$OUT"
echo
echo "throughput (median of the criterion samples, one thread):"
awk '/^pii\// { name = $1 }
     /thrpt:/ && name != "" { printf "  %-28s %8s %s\n", name, $4, $5; name = "" }' "$OUT"
