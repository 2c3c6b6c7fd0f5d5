#!/usr/bin/env bash
# Every check and test, as CI runs them: the web console's build and type check, format,
# clippy (warnings are errors), the OpenAPI drift check (a test), and the whole suite (the
# browser tests among them) on SQLite and on a real PostgreSQL this script starts and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

# One build from scratch: incremental artifacts would only cost time and disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# The browser tests drive Debian's Chromium (Playwright never downloads one).
if ! dpkg-query -W -f='${Status}' chromium 2>/dev/null | grep -q "install ok installed"; then
  echo "==> installing chromium (for the web console's browser tests)"
  SUDO=""; if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium
fi

echo "==> building the web console (type-checked against docs/openapi.json)"
make web

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

pgdir=$(mktemp -d /tmp/hearth-pg.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() { scripts/pg-test.sh stop "$pgdir"; }
trap cleanup EXIT
export HEARTH_TEST_POSTGRES_URL=$(scripts/pg-test.sh start "$pgdir" "$port")
echo "==> PostgreSQL for tests on 127.0.0.1:$port"

echo "==> building the static guest agent (the boot tests put it in their initramfs)"
cargo build --locked --target x86_64-unknown-linux-musl -p hearth-guest
export HEARTH_GUEST_BIN=$PWD/target/x86_64-unknown-linux-musl/debug/hearth-guest

echo "==> tests"
# The Firecracker and Cloud Hypervisor end-to-end tests run apart, below, so that what they
# say (run, or skipped and why) shows.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast -E 'not test(/^end_to_end_on_/)'
else
  cargo test --workspace --locked --no-fail-fast -- --skip end_to_end_on_
fi

echo "==> Firecracker and Cloud Hypervisor end to end (HEARTH_FIRECRACKER_BIN, HEARTH_CLOUD_HYPERVISOR_BIN, hardware KVM)"
cargo test --locked -p hearth-manager --test vmms end_to_end_on_ -- --nocapture --test-threads 1
