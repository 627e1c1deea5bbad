#!/usr/bin/env bash
# Quick start: a local Kubernetes control plane and a NATS server with JetStream, the operator
# running against them, and examples/statestore.yaml applied until its bucket is Ready.
#
#   test-env/quickstart.sh               start everything (again) and show the result
#   test-env/quickstart.sh --in-cluster  the same on a one-node cluster, with the operator as a pod
#                                        installed by `helm install` from its image built here,
#                                        ending with Dapr's sidecar (daprd) saving and reading a
#                                        value in the bucket (needs root)
#   test-env/quickstart.sh stop          stop everything it started
#
# Everything it starts keeps running in the background so you can try more Components:
#   export KUBECONFIG=~/.cache/jetstream-kv-operator/quickstart/controlplane/kubeconfig
#
# For another binary of the operator (test-env/release.sh runs its arm64 build under qemu-user):
# JKO_QUICKSTART_OPERATOR is the command that runs it (split on spaces; `run` is appended), and
# JKO_QUICKSTART_DIR the folder of its state (default $JKO_CACHE/quickstart), so that it never
# stops a quick start of yours.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*" >&2; }

mode=${1:-}
case $mode in
  # Assigned first: `eval "$(…)"` would carry on after a failed setup.
  ""|stop) env_out=$(test-env/setup.sh --quick-start) ;;
  --in-cluster) env_out=$(test-env/setup.sh controlplane nats helm node daprd) ;;
  *) echo "usage: $0 [--in-cluster|stop]" >&2; exit 2 ;;
esac
eval "$env_out"
state=${JKO_QUICKSTART_DIR:-$JKO_CACHE/quickstart}
mkdir -p "$state"

stop_all() {
  for name in operator nats controlplane; do
    if [ -f "$state/$name.pid" ]; then
      pid=$(cat "$state/$name.pid")
      if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        # The control plane tears its node down (pods, containerd, bridge...) before it exits.
        for _ in $(seq 450); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
      fi
      rm -f "$state/$name.pid"
    fi
  done
}
if [ "$mode" = "stop" ]; then
  stop_all
  echo "stopped the quick start's operator, nats-server and control plane" >&2
  exit 0
fi
stop_all
rm -rf "$state/controlplane" "$state/nats"

node_args=()
if [ "$mode" = --in-cluster ]; then
  step "building the operator's image (optimised build, buildah)"
  env_out=$(test-env/operator-image.sh --checkout-only)
  eval "$env_out"
  node_args=(--node --pause-image "$JKO_PAUSE_IMAGE_ARCHIVE" --image "$JKO_OPERATOR_IMAGE_ARCHIVE")
  step "starting the Kubernetes control plane and a node (containerd, kubelet, kube-scheduler)"
else
  step "starting the Kubernetes control plane (etcd, kube-apiserver, garbage collector)"
fi
setsid "$JKO_CONTROLPLANE_BIN" --dir "$state/controlplane" "${node_args[@]}" >"$state/controlplane.out" 2>"$state/controlplane.log" </dev/null &
echo $! >"$state/controlplane.pid"
for _ in $(seq 600); do
  grep -q '^READY' "$state/controlplane.out" 2>/dev/null && break
  kill -0 "$(cat "$state/controlplane.pid")" 2>/dev/null || { cat "$state/controlplane.log" >&2; exit 1; }
  sleep 0.2
done
grep -q '^READY' "$state/controlplane.out" || { echo "control plane not ready; see $state/controlplane.log" >&2; exit 1; }
export KUBECONFIG="$state/controlplane/kubeconfig"
kubectl version 2>/dev/null | grep Server >&2

step "starting nats-server with JetStream"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Pods reach the host at the node's bridge address, not at 127.0.0.1.
nats_host=127.0.0.1
if [ "$mode" = --in-cluster ]; then
  nats_host=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["node"]["gateway"])' "$state/controlplane/ready.json")
fi
nats_port=4222
if (echo >/dev/tcp/"$nats_host"/4222) 2>/dev/null; then nats_port=$(free_port); fi
monitor_port=$(free_port)
setsid "$JKO_NATS_SERVER_BIN" -a "$nats_host" -p "$nats_port" -m "$monitor_port" -js -sd "$state/nats" >"$state/nats.log" 2>&1 </dev/null &
echo $! >"$state/nats.pid"
for _ in $(seq 100); do
  (echo >/dev/tcp/"$nats_host"/"$nats_port") 2>/dev/null && break
  sleep 0.1
done
# The monitoring port listens on the same address as the clients' port.
echo "nats-server $("$JKO_NATS_SERVER_BIN" --version | awk '{print $2}') on nats://$nats_host:$nats_port (monitoring on http://$nats_host:$monitor_port)" >&2

step "installing the CRDs (Dapr Component, KeyValueBucket)"
kubectl apply --server-side -f crds/ >&2
kubectl wait --for=condition=Established crd --all --timeout=60s >&2

if [ "$mode" = --in-cluster ]; then
  step "helm install of charts/jetstream-kv-operator (image ${JKO_OPERATOR_IMAGE}, pullPolicy Never)"
  t=$(date +%s)
  helm install jetstream-kv-operator charts/jetstream-kv-operator --namespace jetstream-kv-operator \
    --create-namespace --set image.repository="${JKO_OPERATOR_IMAGE%:*}" \
    --set-string image.tag="${JKO_OPERATOR_IMAGE##*:}" --set image.pullPolicy=Never \
    --set "natsServerPolicy.servers={$nats_host:$nats_port}" --wait --timeout 180s >&2
  kubectl -n jetstream-kv-operator get pods -o wide >&2
  echo "the operator's pod is Ready $(( $(date +%s) - t ))s after helm install" >&2
else
  if [ -n "${JKO_QUICKSTART_OPERATOR:-}" ]; then
    read -r -a operator <<<"$JKO_QUICKSTART_OPERATOR"
  else
    step "building the operator"
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$JKO_CACHE/target}"
    cargo build --locked --bin jetstream-kv-operator
    operator=("$CARGO_TARGET_DIR/debug/jetstream-kv-operator")
  fi

  step "running the operator: ${operator[*]} run (log: $state/operator.log)"
  HTTP_ADDR="127.0.0.1:$(free_port)" setsid "${operator[@]}" run >"$state/operator.log" 2>&1 </dev/null &
  echo $! >"$state/operator.pid"
fi

step "applying examples/statestore.yaml"
sed "s#nats://127.0.0.1:4222#nats://$nats_host:$nats_port#" examples/statestore.yaml | kubectl apply -f - >&2
# The KeyValueBucket appears a moment after the Component, and `kubectl wait --for=condition`
# fails at once on an object that does not exist yet: wait for it to exist first.
{ kubectl wait --for=create kvb/statestore --timeout=60s >/dev/null &&
  kubectl wait --for=condition=Ready kvb/statestore --timeout=120s >&2; } || {
  kubectl get kvb statestore -o yaml >&2 || true
  if [ "$mode" = --in-cluster ]; then
    kubectl -n jetstream-kv-operator logs deploy/jetstream-kv-operator --tail=30 >&2 || true
  else
    tail -30 "$state/operator.log" >&2
  fi
  exit 1
}

step "the KeyValueBucket"
kubectl get kvb statestore -o wide
kubectl get kvb statestore -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}): {.message}{"\n"}{end}'

step "the bucket as NATS reports it"
python3 - "$nats_host" "$monitor_port" <<'PY'
import json, sys, urllib.request
jsz = json.load(urllib.request.urlopen(f"http://{sys.argv[1]}:{sys.argv[2]}/jsz?streams=true&config=true"))
for account in jsz.get("account_details", []):
    for s in account.get("stream_detail", []):
        c = s["config"]
        print(f'{s["name"]}: subjects={c["subjects"]} history={c["max_msgs_per_subject"]} '
              f'storage={c["storage"]} replicas={c["num_replicas"]} metadata={ {k: v for k, v in c.get("metadata", {}).items() if not k.startswith("_nats")} }')
PY

if [ "$mode" = --in-cluster ]; then
  step "Dapr's sidecar (daprd) with the Component the operator reconciled: save and read a value"
  mkdir -p "$state/daprd/resources"
  kubectl get component statestore -o json | python3 -c '
import json, sys
c = json.load(sys.stdin)
json.dump({"apiVersion": c["apiVersion"], "kind": c["kind"], "metadata": {"name": c["metadata"]["name"]}, "spec": c["spec"]}, sys.stdout, indent=2)
' >"$state/daprd/resources/statestore.yaml"
  dapr_port=$(free_port)
  "$JKO_DAPRD_BIN" --app-id quickstart --mode standalone --resources-path "$state/daprd/resources" \
    --dapr-http-port "$dapr_port" --dapr-grpc-port "$(free_port)" --dapr-internal-grpc-port "$(free_port)" \
    --metrics-port "$(free_port)" >"$state/daprd.log" 2>&1 </dev/null &
  daprd_pid=$!
  for _ in $(seq 150); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$dapr_port/v1.0/healthz")" = 204 ] && break
    kill -0 "$daprd_pid" 2>/dev/null || { cat "$state/daprd.log" >&2; exit 1; }
    sleep 0.2
  done
  curl -sf -X POST "http://127.0.0.1:$dapr_port/v1.0/state/statestore" -H 'Content-Type: application/json' \
    -d '[{"key": "order-1", "value": {"item": "coffee", "qty": 2}}]' >&2
  echo "POST /v1.0/state/statestore   order-1 = {\"item\": \"coffee\", \"qty\": 2}" >&2
  echo "GET  /v1.0/state/statestore/order-1 -> $(curl -sf "http://127.0.0.1:$dapr_port/v1.0/state/statestore/order-1")" >&2
  kill "$daprd_pid"; wait "$daprd_pid" 2>/dev/null || true
fi

cat >&2 <<MSG

The operator, the control plane and nats-server keep running. Try it:
  export KUBECONFIG=$KUBECONFIG
  kubectl get kvb -A
  kubectl describe component statestore
Stop everything with: test-env/quickstart.sh stop
MSG
