#!/usr/bin/env bash
# Startup and syscall-overhead benchmark: bare vs bubblewrap vs `ironcage run --profile ai-strict`
# (plus firejail, gVisor's runsc and crun when they happen to be installed).
# Usage: bash bench/run.sh           (see bench/README.md)
# Environment:
#   IRONCAGE=/path/to/ironcage   benchmark this binary instead of building target/release/ironcage
#   RUNS=N                       runs for the short commands (default 100); the stat loop uses N/10 (min 3)
#   WARMUP=N                     warmup runs for the short commands (default 5; the stat loop uses min(N, 2))
# Writes nothing into the repository except target/ (cargo build); raw hyperfine JSON goes to a
# temporary directory whose path is printed at the end. Exit status: 0 when every required command
# ran (PASS/MISS against the targets is reported, not enforced), non-zero otherwise.
set -euo pipefail

die() { echo "bench/run.sh: $*" >&2; exit 1; }

# Resolve a relative IRONCAGE against the caller's cwd before moving to the repo root.
if [ -n "${IRONCAGE:-}" ]; then
  want=$IRONCAGE
  IRONCAGE=$(realpath -e -- "$want" 2>/dev/null) || die "IRONCAGE=$want does not exist"
  [ -x "$IRONCAGE" ] || die "IRONCAGE=$IRONCAGE is not executable"
fi
cd "$(dirname "$(realpath -e -- "${BASH_SOURCE[0]}")")/.."
ROOT=$PWD

RUNS=${RUNS:-100}
WARMUP=${WARMUP:-5}
[[ $RUNS =~ ^[0-9]+$ ]] && [ "$RUNS" -ge 2 ] || die "RUNS must be an integer >= 2 (got '$RUNS')"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a non-negative integer (got '$WARMUP')"
LOOP_RUNS=$((RUNS / 10)); [ "$LOOP_RUNS" -ge 3 ] || LOOP_RUNS=3
LOOP_WARMUP=$((WARMUP < 2 ? WARMUP : 2))

PY=/usr/bin/python3

# ---- prerequisites -------------------------------------------------------------------------
need=()
command -v hyperfine >/dev/null || need+=(hyperfine)
command -v bwrap >/dev/null || need+=(bubblewrap)
[ -x "$PY" ] || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    die "missing: ${need[*]}. Install them (e.g. 'sudo apt-get install -y ${need[*]}') or run this script as root, which installs them."
  fi
  echo "== installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
command -v hyperfine >/dev/null || die "hyperfine is still missing after installation"
command -v bwrap >/dev/null || die "bwrap is still missing after installation"
[ -x "$PY" ] || die "$PY is still missing after installation"

if [ -z "${IRONCAGE:-}" ]; then
  command -v cargo >/dev/null || die "cargo not found in PATH (or set IRONCAGE=/path/to/ironcage to skip the build)"
  echo "== cargo build --release -p ironcage-cli"
  cargo build --release -p ironcage-cli
  IRONCAGE=$ROOT/target/release/ironcage
else
  echo "== using IRONCAGE=$IRONCAGE (no build)"
fi
[ -x "$IRONCAGE" ] || die "$IRONCAGE is not executable"

TMP=$(mktemp -d /tmp/ironcage-bench.XXXXXX)

# Every measured command (and its pre-flight) runs with the same small environment, so that
# bare, bwrap and ironcage see the same inputs whatever the caller's shell exports.
CLEAN_ENV=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
           HOME="${HOME:-/}" LANG=C.UTF-8)

# ---- command lines -------------------------------------------------------------------------
BWRAP_BIND=(bwrap --unshare-all --die-with-parent --ro-bind /usr /usr --ro-bind /lib /lib
            --ro-bind /lib64 /lib64 --ro-bind /bin /bin --proc /proc --dev /dev --tmpfs /tmp)
# Merged-/usr variant: the top-level directories are symlinks into /usr, as on the host.
BWRAP_LINK=(bwrap --unshare-all --die-with-parent --ro-bind /usr /usr --symlink usr/lib /lib
            --symlink usr/lib64 /lib64 --symlink usr/bin /bin --proc /proc --dev /dev --tmpfs /tmp)
IRON=("$IRONCAGE" run --profile ai-strict --)

TRUE_CMD=(/bin/true)
PASS_CMD=("$PY" -c pass)
LOOP_SRC=$'import os\nfor _ in range(200000): os.stat("/usr")'
LOOP_CMD=("$PY" -c "$LOOP_SRC")

# Quote an argv for hyperfine -N (which splits its command string with POSIX shell-word rules).
hf_quote() {
  local out="" a
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./=:,+@%-]+$ ]]; then out+="$a "
    else out+="'${a//\'/\'\\\'\'}' "
    fi
  done
  printf '%s' "${out% }"
}

# Run once, quietly; on failure show the command and its stderr.
preflight() {
  local err=$TMP/preflight.err
  local rc=0
  "${CLEAN_ENV[@]}" "$@" >/dev/null 2>"$err" || rc=$?
  [ "$rc" != 0 ] || return 0
  echo "   command failed (exit $rc): $(hf_quote "$@")" >&2
  sed -n '1,8s/^/   | /p' "$err" >&2
  return 1
}

if preflight "${BWRAP_BIND[@]}" /bin/true; then
  BWRAP=("${BWRAP_BIND[@]}"); BWRAP_NOTE="--ro-bind /usr /lib /lib64 /bin"
elif [ -L /lib ] && preflight "${BWRAP_LINK[@]}" /bin/true; then
  BWRAP=("${BWRAP_LINK[@]}"); BWRAP_NOTE="--ro-bind /usr, --symlink /lib /lib64 /bin (merged /usr)"
  echo "== note: bwrap with --ro-bind /lib etc. failed; using the merged-/usr symlink layout"
else
  die "bubblewrap cannot run /bin/true on this machine (see above); unprivileged user namespaces may be disabled"
fi

# Optional peers: only when already installed; never installed by this script.
FIREJAIL=$(command -v firejail || true)
RUNSC=$(command -v runsc || true)
CRUN=$(command -v crun || true)
[ -n "$FIREJAIL" ] || echo "== note: firejail not installed; skipping it (optional peer)"
[ -n "$RUNSC" ] || echo "== note: runsc (gVisor) not installed; skipping it (optional peer)"
[ -n "$CRUN" ] || echo "== note: crun not installed; skipping it (optional peer)"
SKIPPED=()   # "peer/workload: reason"

# An OCI bundle for crun running ARGV: read-only rootfs holding only /usr (+ the host's
# top-level symlinks or bind mounts for /bin /lib /lib64), tmpfs /tmp, no network (own netns).
crun_bundle() {
  local dir=$1; shift
  mkdir -p "$dir/rootfs"
  local rootless=""
  [ "$(id -u)" = 0 ] || rootless=--rootless
  (cd "$dir" && "$CRUN" spec $rootless) || return 1
  "$PY" - "$dir/config.json" "$@" <<'EOF' || return 1
import json, os, sys
path, argv = sys.argv[1], sys.argv[2:]
with open(path) as f:
    spec = json.load(f)
spec["process"]["args"] = argv
spec["process"]["terminal"] = False
spec["process"]["cwd"] = "/"
spec["root"] = {"path": "rootfs", "readonly": True}
rootfs = os.path.join(os.path.dirname(path), "rootfs")
mounts = [{"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]}]
for top in ("bin", "lib", "lib64"):
    host = "/" + top
    if os.path.islink(host):
        os.symlink(os.readlink(host), os.path.join(rootfs, top))
    elif os.path.isdir(host):
        mounts.append({"destination": host, "type": "bind", "source": host, "options": ["rbind", "ro"]})
for d in ("usr", "tmp", "proc", "dev", "sys"):
    os.makedirs(os.path.join(rootfs, d), exist_ok=True)
mounts.append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]})
spec["mounts"] = spec.get("mounts", []) + mounts
ns = spec["linux"].setdefault("namespaces", [])
if not any(n.get("type") == "network" for n in ns):
    ns.append({"type": "network"})
with open(path, "w") as f:
    json.dump(spec, f, indent=2)
EOF
}

# ---- benchmarking --------------------------------------------------------------------------
NAMES=(); CMDS=()
reset_cmds() { NAMES=(); CMDS=(); }
add_required() {  # NAME ARGV...
  local name=$1; shift
  preflight "$@" || die "required command '$name' fails on this machine (see above); not benchmarking"
  NAMES+=("$name"); CMDS+=("$(hf_quote "$@")")
}
add_optional() {  # WORKLOAD NAME ARGV...
  local wl=$1 name=$2; shift 2
  if preflight "$@"; then
    NAMES+=("$name"); CMDS+=("$(hf_quote "$@")")
  else
    echo "== note: $name fails on this machine; skipping it for '$wl' (optional peer)"
    SKIPPED+=("$name/$wl: fails on this machine")
  fi
}
add_peers() {  # WORKLOAD ARGV...
  local wl=$1; shift
  [ -z "$FIREJAIL" ] || add_optional "$wl" firejail "$FIREJAIL" --quiet --noprofile --net=none \
    --seccomp --caps.drop=all --nonewprivs --private-tmp "$@"
  if [ -n "$RUNSC" ]; then
    if [ "$(id -u)" = 0 ]; then add_optional "$wl" runsc "$RUNSC" --network=none do "$@"
    else add_optional "$wl" runsc "$RUNSC" --rootless --network=none do "$@"
    fi
  fi
  if [ -n "$CRUN" ]; then
    local bundle=$TMP/crun-$wl
    if crun_bundle "$bundle" "$@" >"$TMP/crun-$wl.log" 2>&1; then
      add_optional "$wl" crun "$CRUN" run --bundle "$bundle" "ironcage-bench-$$-$wl"
    else
      echo "== note: could not build an OCI bundle for crun ($TMP/crun-$wl.log); skipping it for '$wl'"
      SKIPPED+=("crun/$wl: bundle creation failed")
    fi
  fi
}
run_hyperfine() {  # WORKLOAD WARMUP RUNS
  local wl=$1 warmup=$2 runs=$3 args=() i
  for i in "${!NAMES[@]}"; do args+=(-n "${NAMES[$i]}" "${CMDS[$i]}"); done
  echo
  echo "== benchmark '$wl': ${#NAMES[@]} commands, warmup $warmup, runs $runs"
  "${CLEAN_ENV[@]}" "$(command -v hyperfine)" -N -w "$warmup" -r "$runs" \
    --export-json "$TMP/$wl.json" "${args[@]}"
}

echo
echo "== pre-flight (each command runs once)"

reset_cmds
add_required bare "${TRUE_CMD[@]}"
add_required bwrap "${BWRAP[@]}" "${TRUE_CMD[@]}"
add_required ironcage "${IRON[@]}" "${TRUE_CMD[@]}"
add_peers true "${TRUE_CMD[@]}"
run_hyperfine true "$WARMUP" "$RUNS"

reset_cmds
add_required bare "${PASS_CMD[@]}"
add_required bwrap "${BWRAP[@]}" "${PASS_CMD[@]}"
add_required ironcage "${IRON[@]}" "${PASS_CMD[@]}"
add_peers pypass "${PASS_CMD[@]}"
run_hyperfine pypass "$WARMUP" "$RUNS"

reset_cmds
add_required bare "${LOOP_CMD[@]}"
add_required bwrap "${BWRAP[@]}" "${LOOP_CMD[@]}"
add_required ironcage "${IRON[@]}" "${LOOP_CMD[@]}"
add_peers statloop "${LOOP_CMD[@]}"
run_hyperfine statloop "$LOOP_WARMUP" "$LOOP_RUNS"

# ---- report --------------------------------------------------------------------------------
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- crates 2>/dev/null || REV="$REV+dirty"
echo
echo "== environment"
echo "   host:      $(nproc) cores, $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)"
echo "   load avg:  $(cut -d' ' -f1-3 /proc/loadavg) (at the end of the run)"
echo "   ironcage:  $IRONCAGE (git $REV)"
echo "   tools:     $(hyperfine --version), $(bwrap --version), $("$PY" --version 2>&1)"
echo "   bwrap:     $BWRAP_NOTE"
echo "   runs:      $RUNS (stat loop $LOOP_RUNS), warmup $WARMUP (stat loop $LOOP_WARMUP)"
for s in "${SKIPPED[@]+"${SKIPPED[@]}"}"; do echo "   skipped:   $s"; done

"$PY" - "$TMP" <<'EOF'
import json, os, sys

tmp = sys.argv[1]
workloads = [
    ("true", "/bin/true"),
    ("pypass", "python3 -c pass"),
    ("statloop", "python3 stat loop (200k os.stat)"),
]
data = {}
for key, _ in workloads:
    with open(os.path.join(tmp, key + ".json")) as f:
        data[key] = {r["command"]: r for r in json.load(f)["results"]}

ms = lambda s: s * 1000.0
print()
print("== results (times in ms)")
hdr = f"{'workload':<34} {'command':<10} {'mean':>10} {'stddev':>9} {'median':>10} {'min':>10} {'runs':>5}"
print(hdr)
print("-" * len(hdr))
for key, label in workloads:
    for name, r in data[key].items():
        sd = r.get("stddev") or 0.0
        print(f"{label:<34} {name:<10} {ms(r['mean']):>10.2f} {ms(sd):>9.2f} "
              f"{ms(r['median']):>10.2f} {ms(r['min']):>10.2f} {len(r['times']):>5}")
        label = ""

print()
print("== ratios (of means)")
hdr = f"{'workload':<34} {'ratio':<18} {'value':>7}  {'target':<8} verdict"
print(hdr)
print("-" * len(hdr))

def ratio(key, a, b):
    return data[key][a]["mean"] / data[key][b]["mean"]

rows = []  # (workload label, ratio name, value, target or None)
for key, label in workloads:
    peers = [n for n in data[key] if n not in ("bare", "bwrap", "ironcage")]
    if key in ("true", "pypass"):
        rows.append((label, "ironcage/bwrap", ratio(key, "ironcage", "bwrap"), 1.0))
        rows.append((label, "bwrap/bare", ratio(key, "bwrap", "bare"), None))
        rows.append((label, "ironcage/bare", ratio(key, "ironcage", "bare"), None))
    else:
        rows.append((label, "ironcage/bare", ratio(key, "ironcage", "bare"), 1.05))
        rows.append((label, "bwrap/bare", ratio(key, "bwrap", "bare"), None))
        rows.append((label, "ironcage/bwrap", ratio(key, "ironcage", "bwrap"), None))
    for p in peers:
        rows.append((label, f"{p}/bare", ratio(key, p, "bare"), None))
        rows.append((label, f"ironcage/{p}", ratio(key, "ironcage", p), None))

misses = 0
last = None
for label, name, value, target in rows:
    shown = label if label != last else ""
    last = label
    if target is None:
        print(f"{shown:<34} {name:<18} {value:>7.3f}  {'':<8} (context)")
    else:
        ok = value <= target
        misses += not ok
        print(f"{shown:<34} {name:<18} {value:>7.3f}  {'<= ' + format(target, '.2f'):<8} "
              f"{'PASS' if ok else 'MISS'}")
print()
print(f"== {3 - misses}/3 targets met" + ("" if not misses else
      " (a benchmark, not a test: the exit status stays 0; re-run on a quiet machine before concluding)"))
EOF

echo "== raw hyperfine JSON: $TMP"
