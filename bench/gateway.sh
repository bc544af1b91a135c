#!/usr/bin/env bash
# LLM gateway overhead: the latency `ironcage gateway` and the LiteLLM proxy add on top of an
# upstream, at a fixed open-loop rate (default 1,000 req/s), for non-streaming and streaming
# chat completions.
#
# Targets, all in front of the same fake upstream (crates/fakellm, which answers in well
# under a millisecond):
#   direct    llmload -> fakellm
#   ironcage  llmload -> ironcage gateway -> fakellm
#   litellm   llmload -> LiteLLM proxy (bench/gateway/litellm.yaml) -> fakellm
# llmload (crates/fakellm) measures each request from its *scheduled* send time to the last
# byte of the response, so a target that falls behind shows its queueing delay; a target that
# cannot sustain the rate is reported with the rate it achieved, not dropped.
#
# Usage: bash bench/gateway.sh
# Environment:
#   BENCH_RATE=N          requests per second (default 1000)
#   BENCH_LOW_RATE=N      a second pass at a rate LiteLLM sustains on a 2-core machine, so
#                         that added latencies compare without its queue (default 20; 0 skips)
#   BENCH_SECONDS=N       measured seconds per run (default 10)
#   BENCH_WARMUP=N        seconds of load before measuring (default 2)
#   BENCH_TARGETS="..."   which targets to run (default "direct ironcage litellm"; direct is
#                         always run, it is the baseline)
#   BENCH_STREAM=0        skip the streaming variant
#   BENCH_LITELLM_WORKERS=N  LiteLLM uvicorn workers (default: one per core, as LiteLLM's docs
#                         recommend; `nproc` here)
#   BENCH_CONNECTIONS=N   llmload's connection pool (default 256)
#   IRONCAGE=/path/to/ironcage  benchmark this binary instead of building ironcage-cli
# Needs: cargo, /usr/bin/python3 with venv (LiteLLM is installed into bench/.venv, git-ignored),
# network access to PyPI the first time. Writes nothing else into the repository except target/;
# logs and raw results go to a temporary directory printed at the end. Every process started
# here is stopped on exit.
set -euo pipefail

die() { echo "bench/gateway.sh: $*" >&2; exit 1; }

# Resolve a relative IRONCAGE against the caller's cwd before moving to the repo root.
IRONCAGE=${IRONCAGE:-}
if [ -n "$IRONCAGE" ]; then
  want=$IRONCAGE
  IRONCAGE=$(realpath -e -- "$want" 2>/dev/null) || die "IRONCAGE=$want does not exist"
  [ -x "$IRONCAGE" ] || die "IRONCAGE=$IRONCAGE is not executable"
fi
cd "$(dirname "$(realpath -e -- "${BASH_SOURCE[0]}")")/.."
ROOT=$PWD

RATE=${BENCH_RATE:-1000}
DURATION=${BENCH_SECONDS:-10}
WARMUP=${BENCH_WARMUP:-2}
TARGETS=${BENCH_TARGETS:-"direct ironcage litellm"}
STREAM=${BENCH_STREAM:-1}
LITELLM_WORKERS=${BENCH_LITELLM_WORKERS:-$(nproc)}
CONNECTIONS=${BENCH_CONNECTIONS:-256}
LOW_RATE=${BENCH_LOW_RATE:-20}
LITELLM_VERSION=1.108.7
PY=/usr/bin/python3
VENV=$ROOT/bench/.venv
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release

[[ $RATE =~ ^[0-9]+$ ]] && [ "$RATE" -ge 1 ] || die "BENCH_RATE must be a positive integer (got '$RATE')"
[[ $DURATION =~ ^[0-9]+$ ]] && [ "$DURATION" -ge 1 ] || die "BENCH_SECONDS must be a positive integer (got '$DURATION')"
[[ $LOW_RATE =~ ^[0-9]+$ ]] || die "BENCH_LOW_RATE must be a non-negative integer (got '$LOW_RATE')"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "BENCH_WARMUP must be a non-negative integer (got '$WARMUP')"
[[ $LITELLM_WORKERS =~ ^[0-9]+$ ]] && [ "$LITELLM_WORKERS" -ge 1 ] || die "BENCH_LITELLM_WORKERS must be >= 1"
wants() { [[ " $TARGETS " == *" $1 "* ]]; }
for t in $TARGETS; do
  case $t in direct|ironcage|litellm) ;; *) die "unknown target '$t' in BENCH_TARGETS (known: direct ironcage litellm)" ;; esac
done
[ -x "$PY" ] || die "$PY is missing (apt-get install python3)"

WORK=$(mktemp -d /tmp/ironcage-bench-gateway.XXXXXX)
PIDS=()

# Stops every server started here: each runs in its own session (setsid), so its whole
# process group (LiteLLM's workers included) is signalled by the id we started.
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for pid in "${PIDS[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CMD...: runs CMD in its own session, stdout/stderr to $WORK/NAME.{out,err}.
start() {
  local name=$1; shift
  setsid "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" </dev/null &
  PIDS+=($!)
}

# first_line NAME: waits (30 s) for the JSON line a server prints when it is ready.
first_line() {
  local name=$1 pid=${PIDS[-1]}
  for _ in $(seq 300); do
    if [ -s "$WORK/$name.out" ] && head -n1 "$WORK/$name.out" | grep -q '}$'; then
      head -n1 "$WORK/$name.out"
      return
    fi
    kill -0 "$pid" 2>/dev/null || { cat "$WORK/$name.err" >&2; die "$name exited before it was ready"; }
    sleep 0.1
  done
  cat "$WORK/$name.err" >&2
  die "$name printed no ready line within 30 s"
}

json_field() { "$PY" -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---- build ---------------------------------------------------------------------------------
command -v cargo >/dev/null || die "cargo not found in PATH"
pkgs=(-p ironcage-fakellm)
wants ironcage && [ -z "$IRONCAGE" ] && pkgs+=(-p ironcage-cli)
echo "== cargo build --release ${pkgs[*]}"
cargo build --release "${pkgs[@]}"
IRONCAGE=${IRONCAGE:-$BIN/ironcage}

# ---- LiteLLM into bench/.venv --------------------------------------------------------------
if wants litellm; then
  if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('litellm') != '$LITELLM_VERSION')" 2>/dev/null; then
    echo "== installing litellm[proxy]==$LITELLM_VERSION into bench/.venv"
    "$PY" -m venv "$VENV" || die "python3 -m venv failed (apt-get install python3-venv)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION"
  fi
fi

# ---- servers -------------------------------------------------------------------------------
start fakellm "$BIN/fakellm" --listen 127.0.0.1:0 --threads 1
line=$(first_line fakellm)
FAKE=$(json_field "$line" listen)
echo "== fakellm on $FAKE"

if wants ironcage; then
  # Its own (absent) settings and secret store: the machine's /etc/ironcage is not used, the
  # upstream gets no key (fakellm accepts any), prices are the shipped table (fake-gpt in it).
  start ironcage env IRONCAGE_LLM_CONFIG="$WORK/llm.yaml" IRONCAGE_SECRETS="$WORK/secrets.json" \
    IRONCAGE_MASTER_KEY_FILE="$WORK/master.key" \
    "$IRONCAGE" gateway --listen 127.0.0.1:0 \
    --llm-upstream "openai=http://$FAKE/v1" --llm-upstream "anthropic=http://$FAKE" \
    --budget-usd 1000000
  line=$(first_line ironcage)
  IRONCAGE_URL="$(json_field "$line" openai_base_url)/chat/completions"
  IRONCAGE_KEY=$(json_field "$line" api_key)
  echo "== ironcage gateway on $(json_field "$line" listen)"
fi

if wants litellm; then
  LITELLM_PORT=$(free_port)
  LITELLM_KEY="sk-bench-$("$PY" -c 'import secrets; print(secrets.token_hex(16))')"
  start litellm env LITELLM_MASTER_KEY="$LITELLM_KEY" LITELLM_LOCAL_MODEL_COST_MAP=True \
    BENCH_FAKE_OPENAI_BASE="http://$FAKE/v1" LITELLM_LOG=ERROR \
    "$VENV/bin/litellm" --config "$ROOT/bench/gateway/litellm.yaml" \
    --host 127.0.0.1 --port "$LITELLM_PORT" --num_workers "$LITELLM_WORKERS"
  echo "== waiting for LiteLLM ($LITELLM_WORKERS workers) on 127.0.0.1:$LITELLM_PORT"
  ready=0
  for _ in $(seq 240); do
    if "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
      "http://127.0.0.1:$LITELLM_PORT/health/liveliness" 2>/dev/null; then
      ready=1
      break
    fi
    kill -0 "${PIDS[-1]}" 2>/dev/null || { tail -n 30 "$WORK/litellm.err" >&2; die "LiteLLM exited before it was ready"; }
    sleep 0.5
  done
  [ "$ready" = 1 ] || { tail -n 30 "$WORK/litellm.err" >&2; die "LiteLLM not ready within 120 s"; }
  LITELLM_URL="http://127.0.0.1:$LITELLM_PORT/v1/chat/completions"
fi

# ---- load ----------------------------------------------------------------------------------
PROMPT="Please say hello to the gateway benchmark in a few short words"
BODY_PLAIN="{\"model\":\"fake-gpt\",\"max_tokens\":64,\"messages\":[{\"role\":\"user\",\"content\":\"$PROMPT\"}]}"
# 20 one-word chunks, usage requested (as a metering client would).
BODY_STREAM="{\"model\":\"fake-gpt\",\"max_tokens\":64,\"stream\":true,\"stream_options\":{\"include_usage\":true},\"messages\":[{\"role\":\"user\",\"content\":\"$PROMPT [[fake:chunks=20]]\"}]}"

variants=(plain)
[ "$STREAM" = 0 ] || variants+=(stream)
rates=("$RATE")
[ "$LOW_RATE" = 0 ] || [ "$LOW_RATE" = "$RATE" ] || rates+=("$LOW_RATE")

order=(direct)
wants ironcage && order+=(ironcage)
wants litellm && order+=(litellm)

# settle_litellm: an overloaded LiteLLM keeps working through requests whose clients gave up;
# wait (up to 180 s) until it answers its liveness probe quickly again, so that its backlog
# does not load the machine during the next run.
settle_litellm() {
  local fast=0
  for _ in $(seq 180); do
    if "$PY" -c '
import sys, time, urllib.request
t = time.monotonic()
try:
    urllib.request.urlopen(sys.argv[1], timeout=5).read()
except Exception:
    sys.exit(1)
sys.exit(0 if time.monotonic() - t < 0.1 else 1)' "http://127.0.0.1:$LITELLM_PORT/health/liveliness"; then
      fast=$((fast + 1))
      [ "$fast" -ge 3 ] && return
    else
      fast=0
    fi
    sleep 1
  done
  echo "   (LiteLLM still slow after 180 s; going on)"
}

for rate in "${rates[@]}"; do
  for variant in "${variants[@]}"; do
    body=$BODY_PLAIN
    [ "$variant" = stream ] && body=$BODY_STREAM
    for target in "${order[@]}"; do
      case $target in
        direct) url="http://$FAKE/v1/chat/completions"; key=sk-upstream-dummy ;;
        ironcage) url=$IRONCAGE_URL; key=$IRONCAGE_KEY ;;
        litellm) url=$LITELLM_URL; key=$LITELLM_KEY ;;
      esac
      echo "== $variant / $target: ${rate} req/s for ${DURATION} s (+${WARMUP} s warmup)"
      "$BIN/llmload" --url "$url" --body "$body" -H "Authorization: Bearer $key" \
        --rate "$rate" --duration "$DURATION" --warmup "$WARMUP" --connections "$CONNECTIONS" \
        | tee "$WORK/result-$rate-$variant-$target.json"
      if [ "$target" = litellm ]; then settle_litellm; else sleep 1; fi
    done
  done
done

# ---- table ---------------------------------------------------------------------------------
echo
"$PY" - "$WORK" "${#variants[@]}" "${variants[@]}" "${rates[@]}" <<'EOF'
import json, os, sys

work, nv = sys.argv[1], int(sys.argv[2])
variants, rates = sys.argv[3:3 + nv], sys.argv[3 + nv:]
ms = lambda us: f"{us / 1000:.2f}"


def sustained(r, rate):
    return r["ok"] > 0 and r["errors"] == 0 and r["rate_achieved"] >= 0.95 * float(rate)


for rate in rates:
    for variant in variants:
        res = {}
        for t in ("direct", "ironcage", "litellm"):
            path = os.path.join(work, f"result-{rate}-{variant}-{t}.json")
            if os.path.exists(path):
                res[t] = json.load(open(path))
        base = res["direct"]
        print(f"{variant} chat completions at {rate} req/s "
              f"(latency in ms from the scheduled send; + = added over direct)")
        print(f"  {'target':<9} {'ok/s':>8} {'ok':>7} {'err':>6} {'p50':>9} {'p99':>9} {'p99.9':>9}"
              f" {'+p50':>9} {'+p99':>9}")
        for t, r in res.items():
            line = (f"  {t:<9} {r['rate_achieved']:>8.1f} {r['ok']:>7} {r['errors']:>6} "
                    f"{ms(r['p50_us']):>9} {ms(r['p99_us']):>9} {ms(r['p999_us']):>9}")
            if t != "direct" and r["ok"] > 0:
                line += f" {ms(r['p50_us'] - base['p50_us']):>9} {ms(r['p99_us'] - base['p99_us']):>9}"
            print(line)
            if r["errors"]:
                print(f"            {r['errors']} errors, e.g.: {r['error_sample']}")
            if not sustained(r, rate):
                print(f"            did NOT sustain {rate} req/s (its latencies include the queue it built)")
        if "ironcage" in res and "litellm" in res:
            ic, ll = res["ironcage"], res["litellm"]
            for q in ("p50", "p99"):
                ic_add = ic[f"{q}_us"] - base[f"{q}_us"]
                ll_add = ll[f"{q}_us"] - base[f"{q}_us"]
                if not (sustained(ic, rate) and sustained(ll, rate)):
                    ratio = "n/a (not both sustained the rate; see above)"
                elif ic_add <= 0:
                    ratio = "n/a (ironcage added nothing measurable)"
                else:
                    ratio = f"{ll_add / ic_add:.1f}x"
                print(f"  litellm_added / ironcage_added at {q}: {ratio}")
        print()
EOF
echo "raw results and server logs: $WORK"
