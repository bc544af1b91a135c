#!/usr/bin/env bash
# Execution-service latency and throughput (print(1) in python via the API vs bare, at
# concurrency 1 and 8, with a cold `ironcage run` and bwrap as peers in the same run).
# Run as root. BENCH_N sets the requests per row (default 200).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v bwrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap; }
cargo bench -p ironcage-cli --bench serve
