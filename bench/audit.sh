#!/usr/bin/env bash
# Audit log speed, with peers measured in the same run on the same disk:
#   - appends: the plain JSON-lines sink ironcage had before (write + fdatasync, no hashing,
#     no signing) and SQLite (WAL, synchronous=FULL), one event per durable call and 1,000
#     per call;
#   - verify: `sha256sum` over the same log file (one hash pass, no parsing: the floor).
# The log was just written, so verify reads it from the page cache (hot).
# Usage: bash bench/audit.sh   (IRONCAGE_BENCH_ENTRIES=1000000, BENCH_DIR=/var/tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${IRONCAGE_BENCH_ENTRIES:-1000000}
DIR=${BENCH_DIR:-/var/tmp}
OUT=$(mktemp)
trap 'rm -f "$OUT" "$OUT.err"' EXIT

if ! IRONCAGE_BENCH_ENTRIES=$N IRONCAGE_BENCH_DIR=$DIR IRONCAGE_BENCH_KEEP=1 \
    cargo bench -q -p ironcage-audit --bench log_bench >"$OUT" 2>"$OUT.err"; then
    cat "$OUT.err" >&2
    echo "bench/audit.sh: the benchmark failed" >&2
    exit 1
fi
KEPT=$(sed -n 's/^kept //p' "$OUT.err")
get() { awk -v k="$1" '$1 == k {print $2}' "$OUT"; }

PEERS=$(/usr/bin/python3 - "$DIR" "$N" <<'PY'
import json, os, sqlite3, sys, tempfile, time
d = tempfile.mkdtemp(dir=sys.argv[1]); n = int(sys.argv[2])
ev = lambda i: {"type": "run.end", "run": "5f3c1a9e0b7d4c2a8e6f1b3d", "fields": {"outcome": "exited",
     "exit_code": 0, "signal": None, "ironcage_exit_code": 0, "error": None, "wall_time_us": 15000 + i % 997,
     "violations": {"syscall": i % 3, "filesystem": 0, "network": 0, "not_listed": 0}}}
count = 3000
fd = os.open(os.path.join(d, "plain.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
t = time.perf_counter()
for i in range(count):
    os.write(fd, (json.dumps(ev(i), separators=(",", ":")) + "\n").encode()); os.fdatasync(fd)
print("jsonl_unbatched", count / (time.perf_counter() - t))
db = sqlite3.connect(os.path.join(d, "log.db"), isolation_level=None)
db.execute("pragma journal_mode=wal"); db.execute("pragma synchronous=full")
db.execute("create table log (seq integer primary key, entry text)")
t = time.perf_counter()
for i in range(count):
    db.execute("begin"); db.execute("insert into log (entry) values (?)", (json.dumps(ev(i)),)); db.execute("commit")
print("sqlite_unbatched", count / (time.perf_counter() - t))
t = time.perf_counter()
for b in range(0, n, 1000):
    db.execute("begin")
    db.executemany("insert into log (entry) values (?)", ((json.dumps(ev(i)),) for i in range(b, min(n, b + 1000))))
    db.execute("commit")
print("sqlite_batched", n / (time.perf_counter() - t))
db.close()
import shutil; shutil.rmtree(d)
PY
)
peer() { awk -v k="$1" '$1 == k {print $2}' <<<"$PEERS"; }
T0=$(date +%s.%N); sha256sum "$KEPT/big.log" >/dev/null; T1=$(date +%s.%N)
SHA=$(awk -v n="$(get log_entries)" -v a="$T0" -v b="$T1" 'BEGIN {print n / (b - a)}')
rm -rf "$KEPT"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a / b}'; }
printf '%-34s %14s %14s %8s  %s\n' metric ironcage peer ratio target
row() { printf '%-34s %14.0f %14.0f %8s  %s\n' "$1" "$2" "$3" "$(ratio "$2" "$3")" "$4"; }
row "append, 1/call, signed (/s)"   "$(get append_unbatched_signed)"   "$(peer jsonl_unbatched)"  "vs plain jsonl+fsync"
row "append, 1/call, unsigned (/s)" "$(get append_unbatched_unsigned)" "$(peer sqlite_unbatched)" "vs sqlite txn/event"
row "append, 1000/call (/s)"        "$(get append_batched_1000)"       "$(peer sqlite_batched)"   ">= 100000"
row "verify (entries/s)"            "$(get verify)"                    "$SHA"                     ">= 500000 (peer: sha256sum)"
printf '%-34s %14s\n' "inclusion proof at $(get log_entries | cut -d. -f1) (us)" "$(get inclusion_proof)"
printf '%-34s %14s\n' "consistency proof (us)" "$(get consistency_proof)"
printf '%-34s %14s   (target < 1000 us)\n' "read+prove+check one entry (us)" "$(get prove_entry_end_to_end)"
