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
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

id -u ironcage-test >/dev/null 2>&1 || useradd --create-home --shell /bin/bash ironcage-test
export IRONCAGE_TEST_USER=ironcage-test

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast -- --test-threads=2
