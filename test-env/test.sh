#!/usr/bin/env bash
# The project's test command: builds or installs everything the tests need (cached outside the
# repository), checks formatting and lints, and runs every test against a real Kubernetes
# control plane and real nats-servers that the tests start and stop themselves.
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

step "building the operator's image for the node tests (test-env/operator-image.sh)"
eval "$(test-env/operator-image.sh)"

step "cargo test (unit tests, then integration tests against real servers and a real node)"
cargo test --locked --no-fail-fast -- --test-threads="${TEST_THREADS:-8}"

step "checking that no test server is left running"
sleep 1
# Every server the tests start runs one of these two binaries; the quick start's own servers
# (under the cache's quickstart folder) are not the tests' business.
leftover=$(pgrep -af -- "$JKO_CONTROLPLANE_BIN|$JKO_NATS_SERVER_BIN|$JKO_DAPRD_BIN|$CARGO_TARGET_DIR/tmp/controlplanes|containerd-shim" | grep -v -- "$JKO_CACHE/quickstart" || true)
if [ -n "$leftover" ]; then
  echo "processes left running after the tests:" >&2
  echo "$leftover" >&2
  exit 1
fi
# The test nodes' host resources are all named jko-<id>: the quick start's node (its id is in
# its ready.json) is not the tests' business.
qs_node=$(sed -n 's/.*"bridge": "\(jko-[0-9a-f]*\)".*/\1/p' "$JKO_CACHE/quickstart/controlplane/ready.json" 2>/dev/null || true)
qs_node=${qs_node:-none}
left=$( { ip -o link show type bridge | grep -o 'jko-[0-9a-f]*' | sed 's/^/bridge /';
          iptables -w -t nat -S 2>/dev/null | grep -o 'jko-[0-9a-f]*' | sed 's/^/iptables rule /';
          grep -o ' [^ ]*\(controlplanes\|/run/jko-\)[^ ]* ' /proc/self/mountinfo | sed 's/^/mount/';
          ls -d /run/jko-* /sys/fs/cgroup/*/jko-* 2>/dev/null; } | grep -v -- "$qs_node" || true)
if [ -n "$left" ]; then
  echo "node resources left after the tests:" >&2
  echo "$left" >&2
  exit 1
fi
echo "none left running; all tests passed in $(( $(date +%s) - t0 ))s" >&2
