#!/usr/bin/env bash
# The benchmark: the operator (release build, a separate process) against its own local control
# plane and nats-server, at scale. Scenarios: the floor (the same API writes without the
# operator, on a control plane of its own), a wave of Components applied as fast as the API
# server takes them, three idle resync periods, and an operator restart. Results go to
# bench/results/ as JSON, and bench/results/README.md is regenerated. See bench/README.md.
#
#   test-env/bench.sh                                # sizes 100 and 1000, every scenario
#   test-env/bench.sh --sizes 100,1000,5000          # the scale series
#   test-env/bench.sh --platform --sizes 10000       # 100,000 Components, 10% ours, 100 namespaces
#   test-env/bench.sh --cluster --sizes 1000 --scenarios wave   # R3 buckets on a 3-node NATS cluster
#   test-env/bench.sh --sizes 1000 --scenarios wave  # one size, one scenario
#   test-env/bench.sh --sizes 1000 --scenarios floor,wave --repeat 8   # the ratio to the floor, 8 runs
#   test-env/bench.sh --resync 30s --in-flight 64 --noise-per-component 2 --namespaces 20
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*" >&2; }

step "setting up the test environment (test-env/setup.sh)"
env_out=$(test-env/setup.sh)  # not eval "$(…)", which carries on after a failure
eval "$env_out"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$JKO_CACHE/target}"

step "building the operator and the benchmark (release)"
cargo bench --locked --bench operator --no-run

step "load before the run: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
cargo bench --locked --bench operator -- "$@"
