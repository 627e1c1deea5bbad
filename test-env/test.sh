#!/usr/bin/env bash
# The project's test command: builds or installs everything the tests need (cached outside the
# repository), checks formatting and lints, and runs every test against a real Kubernetes
# control plane and real nats-servers that the tests start and stop themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*" >&2; }
t0=$(date +%s)

step "setting up the test environment (test-env/setup.sh)"
eval "$(test-env/setup.sh)"
# Build artefacts live in the cache too, so a fresh clone does not rebuild every dependency.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$JKO_CACHE/target}"
# The servers' data (etcd, JetStream stores) and logs of a run live under target/tmp: cleared
# before, and after unless KEEP_TEST_DATA is set (to read logs of a failure).
clean_test_data() { rm -rf "$CARGO_TARGET_DIR/tmp/controlplanes" "$CARGO_TARGET_DIR/tmp/operator-logs"; }
clean_test_data
[ -n "${KEEP_TEST_DATA:-}" ] || trap clean_test_data EXIT

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings

step "cargo test (unit tests, then integration tests against real servers, ${TEST_LANES:-2} binaries at a time)"
# This run's marker: every server the tests start inherits it (see the leftover check below).
export JKO_TEST_RUN="test-sh-$$-$(date +%s%N)"
# test-env/run-tests.py builds the test binaries with cargo and runs them, the integration binaries
# in parallel lanes (TEST_LANES), each binary's output in one block with cargo's summary lines.
test-env/run-tests.py --test-threads="${TEST_THREADS:-8}"

step "checking that no test server is left running"
sleep 1
# Every server the tests start runs one of these two binaries and inherits this run's marker
# (JKO_TEST_RUN, set before the tests start) in its environment: count only those, not
# the servers of another checkout, tool or quick start on the same machine.
leftover=""
for pid in $(pgrep -f -- "$JKO_CONTROLPLANE_BIN|$JKO_NATS_SERVER_BIN" || true); do
  if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -xF -- "JKO_TEST_RUN=$JKO_TEST_RUN" >/dev/null; then
    leftover+="$(ps -o pid=,args= -p "$pid" || true)"$'\n'
  fi
done
if [ -n "$leftover" ]; then
  echo "processes left running after the tests:" >&2
  echo "$leftover" >&2
  exit 1
fi
echo "none left running; all tests passed in $(( $(date +%s) - t0 ))s" >&2
