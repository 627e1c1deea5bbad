#!/usr/bin/env bash
# The project's test command: builds or installs everything the tests need (cached outside the
# repository), checks formatting and lints, and runs every test against a real Kubernetes
# control plane, real nats-servers and a real node that the tests start and stop themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
last=$t0
# Each step says how long the previous one took.
step() {
  local now; now=$(date +%s)
  [ "$now" = "$t0" ] || printf '    (%ss)\n' "$(( now - last ))" >&2
  last=$now
  printf '\n==> %s\n' "$*" >&2
}

# The operator under test is always this checkout's: JKO_OPERATOR_BIN (another build, for
# bench/README.md's comparisons) would make every integration test run that binary instead.
if [ -n "${JKO_OPERATOR_BIN:-}" ]; then
  echo "JKO_OPERATOR_BIN is set ($JKO_OPERATOR_BIN): the tests would run that binary instead of" \
    "this checkout's; unset it to run them" >&2
  exit 2
fi

step "the test runner's own tests (test-env/test_run_tests.py)"
python3 test-env/test_run_tests.py

step "setting up the test environment (test-env/setup.sh)"
# Assigned first: `eval "$(…)"` would carry on after a failed setup (the status of a command
# substitution inside eval's argument is lost), against stale JKO_* servers or none.
env_out=$(test-env/setup.sh)
eval "$env_out"
# Build artefacts live in the cache too, so a fresh clone does not rebuild every dependency.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$JKO_CACHE/target}"
# In CI every run is a fresh clone, whose crate cargo builds from scratch (its fingerprint follows
# the checkout's path): incremental compilation's records would only be written, never read.
if [ -n "${CI:-}" ]; then
  export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
fi
# The servers' data (etcd, JetStream stores) and logs of a run live under target/tmp: cleared
# before, and after unless KEEP_TEST_DATA is set (to read logs of a failure).
clean_test_data() { rm -rf "$CARGO_TARGET_DIR/tmp/controlplanes" "$CARGO_TARGET_DIR/tmp/operator-logs"; }
clean_test_data
[ -n "${KEEP_TEST_DATA:-}" ] || trap clean_test_data EXIT

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings, beside the test binaries' build (cargo test --no-run)"
# Two builds of the same crate, each with idle moments (one crate's front end, linking) the other
# fills: together about 30 s sooner than one after the other. Clippy has a target folder of its
# own, as two cargos cannot share one at the same time.
clippy_log="$CARGO_TARGET_DIR/clippy.log"
CARGO_TARGET_DIR="$CARGO_TARGET_DIR/clippy" cargo clippy --locked --all-targets --color=never \
  -- -D warnings > "$clippy_log" 2>&1 &
clippy_pid=$!
cargo test --locked --no-run
if wait "$clippy_pid"; then
  tail -n 1 "$clippy_log" >&2
else
  cat "$clippy_log" >&2
  echo "cargo clippy found problems (above)" >&2
  exit 1
fi

step "building the operator's images for the node tests: this checkout's, and the release tests/upgrade.rs upgrades from (test-env/operator-image.sh)"
env_out=$(test-env/operator-image.sh)
eval "$env_out"

step "cargo test (unit tests, then integration tests against real servers and a real node, ${TEST_LANES:-3} modules at a time)"
# This run's marker: every server the tests start inherits it (see the leftover check below).
export JKO_TEST_RUN="test-sh-$$-$(date +%s%N)"
# test-env/run-tests.py builds the test binaries with cargo and runs them, the integration tests a
# module per process in parallel lanes (TEST_LANES), each module's output in one block with
# libtest's summary lines.
test-env/run-tests.py --test-threads="${TEST_THREADS:-8}"

step "checking that no test server or node is left"
sleep 1
# Every server the tests start runs one of these binaries (the kubelet and kube-scheduler are
# sub-commands of the control plane's; containerd starts the shims) and inherits this run's marker
# (JKO_TEST_RUN, set before the tests start) in its environment: count only those, not the
# servers of another checkout, tool or quick start on the same machine.
leftover=""
for pid in $(pgrep -f -- "$JKO_CONTROLPLANE_BIN|$JKO_NATS_SERVER_BIN|$JKO_DAPRD_BIN|containerd" || true); do
  if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -xF -- "JKO_TEST_RUN=$JKO_TEST_RUN" >/dev/null; then
    leftover+="$(ps -o pid=,args= -p "$pid" || true)"$'\n'
  fi
done
if [ -n "$leftover" ]; then
  echo "processes left running after the tests:" >&2
  echo "$leftover" >&2
  exit 1
fi
# This run's nodes (each control plane's ready.json names its node's id, jko-<hex>): each named
# its bridge, iptables rule, cgroup root and /run folder after that id, and mounted only under its
# control plane's folder and that /run folder.
left=""
for id in $(sed -n 's/.*"bridge": "\(jko-[0-9a-f]*\)".*/\1/p' "$CARGO_TARGET_DIR"/tmp/controlplanes/*/ready.json 2>/dev/null | sort -u); do
  left+=$( { ip -o link show "$id" 2>/dev/null | sed "s/^.*/bridge $id/";
             iptables -w -t nat -S 2>/dev/null | grep -F -- "$id" | sed 's/^/iptables rule /';
             grep -F -- "/run/$id" /proc/self/mountinfo | sed 's/^/mount /';
             ls -d "/run/$id" /sys/fs/cgroup/*/"$id" /sys/fs/cgroup/"$id" 2>/dev/null; } || true)
done
left+=$(grep -F -- "$CARGO_TARGET_DIR/tmp/controlplanes/" /proc/self/mountinfo | sed 's/^/mount /' || true)
if [ -n "$left" ]; then
  echo "node resources left after the tests:" >&2
  echo "$left" >&2
  exit 1
fi
echo "none left running; all tests passed in $(( $(date +%s) - t0 ))s" >&2
