#!/usr/bin/env bash
# The whole test suite, from a fresh machine (run as root): installs what the tests need,
# creates the unprivileged test user, checks formatting and lints, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh must run as root: the suite tests root mode and drops to a user for rootless mode" >&2
  exit 1
fi

need=()
command -v python3 >/dev/null || need+=(python3)
[ -x /usr/bin/python3 ] || need+=(python3)
command -v git >/dev/null || need+=(git)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
command -v setpriv >/dev/null || need+=(util-linux)
command -v bash >/dev/null || need+=(bash)
command -v curl >/dev/null || need+=(curl)
# A real PostgreSQL server for the execution service's store tests.
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v psql >/dev/null || need+=(postgresql-client)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

# An independent OpenAPI validator for the execution service's /openapi.json.
python3 -c 'import openapi_spec_validator' 2>/dev/null || python3 -m pip install -q openapi-spec-validator

# ---- official LLM SDKs for the gateway/fakellm tests (crates/fakellm/tests/sdk.rs) -----------
# Pinned to the versions docs/plans/governance-wire-formats.md was written against, installed
# for Debian's /usr/bin/python3 into a fixed directory that the unprivileged test user can read
# (tests run them with PYTHONPATH=/opt/ironcage-test/py). Skipped when already there.
sdk_dir=/opt/ironcage-test/py
sdk_pins=('openai==3.57.0' 'anthropic==2.14.0')
if ! PYTHONPATH=$sdk_dir /usr/bin/python3 -c '
import importlib.metadata as m, sys
sys.exit(any(m.version(p.split("==")[0]) != p.split("==")[1] for p in sys.argv[1:]))' "${sdk_pins[@]}" 2>/dev/null; then
  /usr/bin/python3 -m pip --version >/dev/null 2>&1 || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip
  }
  rm -rf "$sdk_dir"
  /usr/bin/python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$sdk_dir" "${sdk_pins[@]}"
fi
chmod -R a+rX /opt/ironcage-test
# ---- end of the official LLM SDKs ----------------------------------------------------------

id -u ironcage-test >/dev/null 2>&1 || useradd --create-home --shell /bin/bash ironcage-test
export IRONCAGE_TEST_USER=ironcage-test

# A private PostgreSQL instance (its own directory and port, trust auth on loopback), not
# the system's cluster; stopped when the tests end.
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pg_dir=$(mktemp -d /tmp/ironcage-pg.XXXXXX)
chown postgres: "$pg_dir"
pg_port=54329
runuser -u postgres -- "$pg_bin/initdb" -D "$pg_dir/data" -A trust -U postgres >/dev/null
runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
  -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off" start >/dev/null
trap 'runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1; rm -rf "$pg_dir"' EXIT
export IRONCAGE_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast -- --test-threads=2
