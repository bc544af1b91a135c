#!/usr/bin/env bash
# Builds ironcage and shows it working: what the host can enforce, a python3 run under the
# strict profile, and an attack that is denied and reported.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ironcage-cli -p ironcage-fakellm
bin=target/release/ironcage
# Rootless runs need a delegated cgroup subtree for their limits (v1 hosts); root can do it.
if [ "$(id -u)" = 0 ] && [ -n "${SUDO_USER:-}" ]; then $bin cgroup delegate --user "$SUDO_USER" >/dev/null || true; fi

echo "== ironcage doctor"
$bin doctor
echo
echo "== python3 under ai-strict"
$bin run --profile ai-strict -- /usr/bin/python3 -c 'import os, sys; print("hello from the cage: uid", os.getuid(), "python", sys.version.split()[0]); print("visible:", sorted(os.listdir("/")))'
echo
echo "== an attack: ptrace from inside (denied, and named in the report)"
report=$(mktemp)
$bin run --profile ai-strict --report "$report" -- /usr/bin/python3 -c '
import ctypes; libc = ctypes.CDLL(None, use_errno=True)
print("ptrace returned", libc.ptrace(0, 0, 0, 0), "errno", ctypes.get_errno())' || true
/usr/bin/python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("report: outcome", r["outcome"], "| violations", [(v["syscall"], v["count"]) for v in r["violations"]], "| wall", round(r["wall_time_ms"],1), "ms")' "$report"
rm -f "$report"
echo
echo "== the audit log: both runs are on record, signed and verifiable"
$bin audit tail -n 8
$bin audit verify
echo
echo "== governance: an LLM call from the cage through the gateway (a local fake provider stands in for OpenAI)"
gov=$(mktemp -d)
target/release/fakellm --listen 127.0.0.1:0 --require-key sk-demo-real-key >"$gov/fake.json" &
fake_pid=$!
for _ in $(seq 100); do [ -s "$gov/fake.json" ] && break; sleep 0.05; done
fport=$(sed -n 's/.*:\([0-9]*\)".*/\1/p' "$gov/fake.json")
export IRONCAGE_SECRETS="$gov/secrets.json" IRONCAGE_MASTER_KEY_FILE="$gov/master.key"
DEMO_KEY=sk-demo-real-key $bin secret set openai --from-env DEMO_KEY
$bin run --profile ai-strict --budget-usd 0.50 --llm-upstream openai=http://127.0.0.1:$fport/v1 -- /usr/bin/python3 -c '
import json, os, urllib.request
body = {"model": "fake-gpt", "max_tokens": 50, "messages": [{"role": "user", "content": "hello, my e-mail is ann@example.com"}]}
req = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions", json.dumps(body).encode(),
      {"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"], "Content-Type": "application/json"})
print("the agent holds", os.environ["OPENAI_API_KEY"][:8] + "...", "(a virtual key); the provider answered:",
      json.load(urllib.request.urlopen(req))["choices"][0]["message"]["content"])'
kill $fake_pid; wait $fake_pid 2>/dev/null || true
unset IRONCAGE_SECRETS IRONCAGE_MASTER_KEY_FILE
rm -rf "$gov"
echo

echo "== the execution service: ironcage serve, an API key, code over HTTP"
data=$(mktemp -d)
key=$($bin key create --name demo --data-dir "$data" 2>/dev/null)
$bin serve --data-dir "$data" --listen 127.0.0.1:0 --log-level warn 2>"$data/serve.log" &
serve_pid=$!
trap 'kill $serve_pid 2>/dev/null; wait $serve_pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do grep -q "listening on" "$data/serve.log" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$data/serve.log")
curl -s -H "Authorization: Bearer $key" -d '{"language":"python","code":"import sys; print(sum(range(10)), sys.version.split()[0])"}' "http://$addr/v1/executions" |
  /usr/bin/python3 -c 'import json,sys; r=json.load(sys.stdin); print("POST /v1/executions ->", r["status"], "| exit", r["exit_code"], "| stdout", repr(r["stdout"]), "|", r["duration_ms"], "ms")'
