#!/usr/bin/env bash
# Builds a release of the operator into dist/ (git-ignored) from this checkout, and checks it:
#
#   test-env/release.sh                      build and check, into dist/
#   test-env/release.sh --publish PREFIX     and then copy the signed index and chart, with their
#                                            signatures and SBOM attestations, to PREFIX/...
#                                            (e.g. ghcr.io/OWNER; REGISTRY_USER and
#                                            REGISTRY_PASSWORD log in) and verify them there
#
# 1. The operator for linux/amd64 and linux/arm64 (`cargo build --release`), both built by one
#    toolchain: Debian's rustc, cargo, arm64 standard library and cross linker, installed in a
#    Debian root (debootstrap of RELEASE_DEBIAN_SUITE, test-env/release-tools.env) kept in the
#    cache and keyed by its rustc's version. The arm64 binary is run here under qemu-user: `crd`,
#    `check` on examples/, and a reconcile of examples/statestore.yaml until Ready against the
#    quick start's API server and nats-server (test-env/quickstart.sh).
# 2. Their images, from scratch as test-env/image.sh builds the Dockerfile's final stage (the
#    libraries and CA certificates from that root, checked to hold none of this machine's own
#    CAs), as one OCI image index (test-env/oci.py). Their times are the commit's
#    (SOURCE_DATE_EPOCH): the same binaries give the same index digest (checked by building the
#    arm64 image twice).
# 3. An SBOM (CycloneDX) per binary: the crates compiled into it, with versions, licences and
#    checksums (test-env/sbom.py), checked against `cargo tree` and Cargo.lock.
# 4. The Helm chart, packaged, with the commit's time (SOURCE_DATE_EPOCH) in it: the same chart
#    gives the same archive and chart digest.
# 5. A registry on loopback (CNCF distribution, built from its Go module) the index and the chart
#    are pushed to; cosign (built from its Go module) signs the index, its two images and the
#    chart there, and the chart's archive as a file; every signature is verified there, and
#    verification must fail for an image re-pushed with one more layer and for a chart archive
#    changed by one byte.
#
# JKO_RELEASE_PLATFORMS=arm64 builds and checks the arm64 platform only (a quicker check of this
# script, not a release).
#
# The signing key: JKO_RELEASE_KEY names a cosign private key (COSIGN_PASSWORD its password);
# without it the script makes a key pair once and keeps it in the cache ($JKO_CACHE/release/keys).
# dist/cosign.pub is the public key that verifies this release.
#
# Needs root (debootstrap, chroot, mount namespaces), Go, Python 3 and Debian's debootstrap,
# qemu-user-static and buildah (installed with apt when missing). The Debian mirror is the one this
# machine's apt uses (or JKO_DEBIAN_MIRROR). Everything it builds is kept in
# $JKO_CACHE/release/, keyed by version; a warm run of an unchanged checkout takes about a
# minute. Heavy builds run with `nice -n 19`. Progress goes to stderr.
set -euo pipefail
# The whole script is one block, read before it runs: editing it during a run changes nothing.
{
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=release-tools.env
source "$here/release-tools.env"
cache=${JKO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jetstream-kv-operator}
export JKO_CACHE=$cache
rel="$cache/release"
dist="$repo/dist"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
t_start=$(date +%s)
step() { printf '\n==> %s\n' "$*" >&2; }
say() { printf '    %s\n' "$*" >&2; }
elapsed() { say "done in $(( $(date +%s) - $1 ))s"; }
fail() { printf 'release.sh: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "needs root (debootstrap, chroot and mount namespaces)"
publish=""
case ${1:-} in
  "") ;;
  --publish) publish=${2:-}; [ -n "$publish" ] || fail "--publish needs a registry prefix, e.g. ghcr.io/OWNER" ;;
  *) echo "usage: $0 [--publish REGISTRY/PREFIX]" >&2; exit 2 ;;
esac

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -1)
msrv=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -1)
commit=$(git -C "$repo" rev-parse HEAD)
if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]; then
  say "warning: the checkout has uncommitted changes: this builds them, not commit ${commit:0:12}"
fi
rm -rf "$dist"
mkdir -p "$dist" "$rel"

# Debian packages this script runs on the build machine.
missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
command -v buildah >/dev/null || missing+=(buildah)
if [ ${#missing[@]} -gt 0 ]; then
  step "installing Debian packages: ${missing[*]}"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >&2
fi

# --- 1. The toolchain: a Debian root with rustc, cargo and the arm64 cross toolchain ----------
# The mirror this machine's apt uses for Debian (deb822 or one-line sources).
debian_mirror() {
  if [ -n "${JKO_DEBIAN_MIRROR:-}" ]; then echo "$JKO_DEBIAN_MIRROR"; return; fi
  local f
  {
    for f in /etc/apt/sources.list.d/*.sources; do
      [ ! -e "$f" ] || awk '/^URIs:/ {u=$2} /^Suites:/ {for (i=2; i<=NF; i++) if ($i !~ /-/ && u ~ /\/debian\/?$/) {print u; exit}}' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [ ! -e "$f" ] || awk '$1=="deb" && $2 !~ /^\[/ && $2 ~ /\/debian\/?$/ {print $2}' "$f"
    done
  } | head -1 || true
}
# in_root DIR COMMAND...: COMMAND in the Debian root DIR/root, in a mount namespace of its own
# (so nothing stays mounted): /proc, /dev, this checkout at /jko/src (read-only), cargo's home
# and target folder from DIR, and this machine's CA certificates (cargo reaches crates through
# whatever TLS setup this machine trusts).
in_root() {
  local dir=$1; shift
  unshare --mount --fork bash -c '
    set -e
    dir=$1 src=$2 ca=$3; shift 3
    root=$dir/root
    mkdir -p "$root/jko/src" "$root/jko/target" "$root/jko/cargo-home" "$dir/target" "$dir/cargo-home"
    touch "$root/jko/ca.crt"
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount --bind "$src" "$root/jko/src"
    mount -o remount,bind,ro "$root/jko/src"
    mount --bind "$dir/target" "$root/jko/target"
    mount --bind "$dir/cargo-home" "$root/jko/cargo-home"
    mount --bind "$ca" "$root/jko/ca.crt"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    exec chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
      DEBIAN_FRONTEND=noninteractive CARGO_HOME=/jko/cargo-home CARGO_TARGET_DIR=/jko/target \
      CARGO_HTTP_CAINFO=/jko/ca.crt SSL_CERT_FILE=/jko/ca.crt CARGO_TERM_COLOR=never \
      CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc "$@"
  ' _ "$dir" "$repo" "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" "$@"
}
# Keep one line in 50 of a long tool's output (and every error).
progress() { awk -v what="$1" '/^(error|warning)(\[|:)|^E:|^W:|^ *(Error|error):/ {print "    " $0; fflush(); next} {n++; if (n % 50 == 0) {printf "    %d %s...\n", n, what; fflush()}}' >&2; }

suite=$RELEASE_DEBIAN_SUITE
tc=$(ls -d "$rel/toolchain/$suite-rustc-"* 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$tc" ] || [ ! -e "$tc/ready" ]; then
  mirror=$(debian_mirror)
  [ -n "$mirror" ] || fail "no Debian mirror in this machine's apt sources (set JKO_DEBIAN_MIRROR)"
  step "making a Debian $suite root with Debian's rustc, cargo, arm64 standard library and cross linker (debootstrap; cold: about 6 minutes)"
  t=$(date +%s)
  new="$rel/toolchain/$suite-new"
  rm -rf "$new" && mkdir -p "$new"
  nice -n 19 debootstrap --variant=minbase "$suite" "$new/root" "$mirror" 2>&1 | progress "debootstrap steps"
  # A suite's Release file is valid for a week: a mirror that is a snapshot serves an expired one.
  printf 'Acquire::Check-Valid-Until "false";\nAPT::Install-Recommends "false";\n' >"$new/root/etc/apt/apt.conf.d/99jko"
  in_root "$new" sh -c 'dpkg --add-architecture arm64 && apt-get update -qq &&
    nice -n 19 apt-get install -y -qq rustc cargo gcc libc6-dev libstd-rust-dev:arm64 \
      gcc-aarch64-linux-gnu libc6-dev-arm64-cross ca-certificates && apt-get clean' 2>&1 | progress "packages"
  rustc_version=$(chroot "$new/root" rustc --version | awk '{print $2}')
  [ -n "$rustc_version" ] || fail "no rustc in the $suite root"
  tc="$rel/toolchain/$suite-rustc-$rustc_version"
  rm -rf "$tc" && mv "$new" "$tc"
  touch "$tc/ready"
  elapsed "$t"
fi
root="$tc/root"
rustc_vv=$(chroot "$root" rustc --version)
if [ "$(printf '%s\n%s\n' "$msrv" "$(chroot "$root" rustc --version | awk '{print $2}')" | sort -V | head -1)" != "$msrv" ]; then
  fail "$rustc_vv is older than the crate's rust-version $msrv"
fi
say "toolchain: $rustc_vv, $(chroot "$root" cargo --version) (Debian $suite, $tc); the crate needs $msrv"

# --- The two binaries ------------------------------------------------------------------------
# Cached by the hash of what they are built from, as test-env/operator-image.sh does: a fresh
# clone of a commit already built skips cargo (whose freshness follows files' times).
sources=$(cd "$repo" && { echo "$rustc_vv"; find src Cargo.toml Cargo.lock -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum; } | sha256sum | cut -c1-16)
declare -A triple=([amd64]=x86_64-unknown-linux-gnu [arm64]=aarch64-unknown-linux-gnu)
case ${JKO_RELEASE_PLATFORMS:-amd64 arm64} in
  "amd64 arm64") platforms=(amd64 arm64) ;;
  arm64) platforms=(arm64) ;;
  *) fail "JKO_RELEASE_PLATFORMS is 'amd64 arm64' (the default) or 'arm64'" ;;
esac
kept="$tc/bin/$sources-${#platforms[@]}"
built=true
for arch in "${platforms[@]}"; do [ -x "$kept/$arch/jetstream-kv-operator" ] || built=false; done
if [ "$built" = true ] && [ -s "$kept/build.jsonl" ]; then
  step "the binaries of these sources are built ($kept)"
else
  # arm64 first: its check under qemu-user is the one that needs this toolchain. Build scripts
  # and proc-macros (compiled for this machine) are built once for both.
  : >"$tc/build.jsonl"
  for arch in $(printf '%s\n' "${platforms[@]}" | sort -r); do
    step "building the operator for linux/$arch (cargo build --release --target ${triple[$arch]}, nice 19; cold: 20-60 minutes on 2 shared cores)"
    t=$(date +%s)
    in_root "$tc" nice -n 19 sh -c 'cd /jko/src && cargo build --release --locked --bin jetstream-kv-operator --target "$1" --message-format=json-render-diagnostics' \
      _ "${triple[$arch]}" 2> >(progress "lines of cargo's output (Compiling ...)") >>"$tc/build.jsonl"
    elapsed "$t"
  done
  rm -rf "$kept.tmp"
  for arch in "${platforms[@]}"; do
    install -D -m 0755 "$tc/target/${triple[$arch]}/release/jetstream-kv-operator" "$kept.tmp/$arch/jetstream-kv-operator"
  done
  mv "$tc/build.jsonl" "$kept.tmp/build.jsonl"
  rm -rf "$kept" && mv "$kept.tmp" "$kept"
  # Keep the four newest builds.
  ls -dt "$tc/bin/"* | tail -n +5 | xargs -r rm -rf
fi
for arch in "${platforms[@]}"; do
  install -D -m 0755 "$kept/$arch/jetstream-kv-operator" "$dist/linux-$arch/jetstream-kv-operator"
  glibc=$(readelf -V "$dist/linux-$arch/jetstream-kv-operator" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
  say "dist/linux-$arch/jetstream-kv-operator: $(file -b "$dist/linux-$arch/jetstream-kv-operator" | cut -d, -f1-2), $(( $(stat -c %s "$dist/linux-$arch/jetstream-kv-operator") / 1000000 )) MB, needs $glibc or newer"
done

# --- The arm64 binary under qemu-user ---------------------------------------------------------
arm64_bin="$dist/linux-arm64/jetstream-kv-operator"
qemu=(qemu-aarch64-static -L "$root")
step "the arm64 binary under qemu-user: crd"
for kind in keyvaluebucket natsserverpolicy jetstreamstream; do
  "${qemu[@]}" "$arm64_bin" crd "$kind" | cmp -s - "$repo/crds/$kind.yaml" ||
    fail "the arm64 binary's 'crd $kind' differs from crds/$kind.yaml"
  say "crd $kind: the same as crds/$kind.yaml"
done
step "the arm64 binary under qemu-user: check examples/"
"${qemu[@]}" "$arm64_bin" check "$repo/examples" 2>&1 | tail -1 | sed 's/^/    /' >&2
[ "${PIPESTATUS[0]}" -eq 0 ] || fail "the arm64 binary's 'check examples/' failed"
step "the arm64 binary under qemu-user: reconciling examples/statestore.yaml against the quick start's API server and nats-server"
t=$(date +%s)
smoke="$rel/arm64-quickstart"
stop_smoke() { JKO_QUICKSTART_DIR="$smoke" "$here/quickstart.sh" stop >/dev/null 2>&1 || true; }
trap 'stop_smoke' EXIT
JKO_QUICKSTART_DIR="$smoke" JKO_QUICKSTART_OPERATOR="qemu-aarch64-static -L $root $arm64_bin" \
  "$here/quickstart.sh" >"$rel/arm64-quickstart.log" 2>&1 || {
    tail -40 "$rel/arm64-quickstart.log" >&2; fail "the arm64 operator did not make statestore Ready (log: $rel/arm64-quickstart.log)"; }
{ grep -A1 '^NAME ' "$rel/arm64-quickstart.log"; grep -m1 '^KV_' "$rel/arm64-quickstart.log"; } | sed 's/^/    /' >&2 || true
stop_smoke
trap - EXIT
say "Ready under qemu-user; $(( $(date +%s) - t ))s with the servers' start and stop"

# --- 2. The images and their index --------------------------------------------------------------
step "the images (test-env/image.sh: from scratch, the Dockerfile's final stage) and their OCI index"
t=$(date +%s)
export JKO_BUILDAH_STORE="$rel/buildah"
# The images' times (their creation and their files') are the commit's, or SOURCE_DATE_EPOCH's
# when it is given: the same binary makes the same image, to the digest.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" show -s --format=%ct HEAD)}
work="$rel/work"
rm -rf "$work" && mkdir -p "$work"
image() { JKO_IMAGE_PLATFORM=linux/$1 JKO_IMAGE_SYSROOT=$root "$here/image.sh" operator "$dist/linux-$1/jetstream-kv-operator" "$2" >/dev/null; }
manifest_digest() { tar -xOf "$1" index.json | python3 -c 'import json, sys; print(json.load(sys.stdin)["manifests"][0]["digest"])'; }
for arch in "${platforms[@]}"; do
  image "$arch" "$work/image-$arch.tar"
done
image arm64 "$work/again-arm64.tar"
[ "$(manifest_digest "$work/again-arm64.tar")" = "$(manifest_digest "$work/image-arm64.tar")" ] ||
  fail "the arm64 image built twice from the same binary has two digests: $(manifest_digest "$work/image-arm64.tar"), $(manifest_digest "$work/again-arm64.tar")"
say "reproducible: the linux/arm64 image built once more from the same binary has the same digest, $(manifest_digest "$work/image-arm64.tar") (times: SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH, $(date -u -d "@$SOURCE_DATE_EPOCH" +%FT%TZ))"
image_ref="jetstream-kv-operator:$version"
archives=()
for arch in "${platforms[@]}"; do archives+=("$work/image-$arch.tar"); done
index_digest=$(python3 "$here/oci.py" index "$dist/jetstream-kv-operator-$version.oci.tar" "$image_ref" "${archives[@]}")
say "dist/jetstream-kv-operator-$version.oci.tar: image index $index_digest"
# Each image holds all its binary needs: `crd` run from the image's own file system (natively
# for amd64, under qemu-user for arm64), nothing from this machine or the build root.
for arch in "${platforms[@]}"; do
  rm -rf "$work/rootfs-$arch"
  python3 "$here/oci.py" rootfs "$dist/jetstream-kv-operator-$version.oci.tar" "linux/$arch" "$work/rootfs-$arch"
  case $arch in
    amd64) run=(chroot "$work/rootfs-$arch" /jetstream-kv-operator) ;;
    arm64) run=(qemu-aarch64-static -L "$work/rootfs-$arch" "$work/rootfs-$arch/jetstream-kv-operator") ;;
  esac
  "${run[@]}" crd | cmp -s - "$repo/crds/keyvaluebucket.yaml" || fail "the linux/$arch image's binary, run from the image, does not print the CRD"
  say "linux/$arch: the binary runs from the image's own files ($(ls "$work/rootfs-$arch/lib/"*/ | tr '\n' ' '))"
  # Its CA certificates are the Debian root's package's, not this machine's bundle (which may
  # hold CAs of this machine's own: /usr/local/share/ca-certificates).
  cmp -s "$work/rootfs-$arch/etc/ssl/certs/ca-certificates.crt" "$root/etc/ssl/certs/ca-certificates.crt" ||
    fail "the linux/$arch image's CA certificates are not the $suite root's"
  local_cas=$(python3 - "$work/rootfs-$arch/etc/ssl/certs/ca-certificates.crt" /usr/local/share/ca-certificates <<'PY'
import glob, re, sys
pem = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)
bundle = set(pem.findall(open(sys.argv[1]).read()))
for path in sorted(glob.glob(sys.argv[2] + "/**/*.crt", recursive=True)):
    if set(pem.findall(open(path).read())) & bundle:
        print(path)
PY
)
  [ -z "$local_cas" ] || fail "the linux/$arch image trusts this machine's own CAs: $local_cas"
  say "linux/$arch: CA certificates: the $suite root's ca-certificates $(chroot "$root" dpkg-query -W -f '${Version}' ca-certificates), $(grep -c 'BEGIN CERTIFICATE' "$root/etc/ssl/certs/ca-certificates.crt") certificates, none of this machine's $(find /usr/local/share/ca-certificates -name '*.crt' 2>/dev/null | wc -l) own"
done
elapsed "$t"

# --- 3. The SBOMs ---------------------------------------------------------------------------
step "the SBOMs (CycloneDX), checked against cargo tree and Cargo.lock"
t=$(date +%s)
commit_time=$(git -C "$repo" show -s --format=%cI HEAD)
in_root "$tc" sh -c 'cd /jko/src && cargo metadata --locked --offline --format-version 1 --filter-platform "$1" --filter-platform "$2"' _ "${triple[amd64]}" "${triple[arm64]}" >"$work/metadata.json"
in_root "$tc" sh -c 'cd /jko/src && cargo tree --locked -e all --target all --prefix none --format "{p}"' >"$work/tree-all.txt"
for arch in "${platforms[@]}"; do
  in_root "$tc" sh -c 'cd /jko/src && cargo tree --locked --offline -e normal,no-proc-macro --target "$1" --prefix none --format "{p}"' _ "${triple[$arch]}" >"$work/tree-$arch.txt"
  in_root "$tc" sh -c 'cd /jko/src && cargo tree --locked --offline -e normal,build --target "$1" --prefix none --format "{p}"' _ "${triple[$arch]}" >"$work/tree-build-$arch.txt"
  sbom="$dist/jetstream-kv-operator-$version-linux-$arch.cdx.json"
  python3 "$here/sbom.py" generate --build "$kept/build.jsonl" --metadata "$work/metadata.json" \
    --lock "$repo/Cargo.lock" --binary "$dist/linux-$arch/jetstream-kv-operator" --target "${triple[$arch]}" \
    --platform "linux/$arch" --rustc "$rustc_vv" --timestamp "$commit_time" >"$sbom"
  python3 "$here/sbom.py" check --sbom "$sbom" --binary "$dist/linux-$arch/jetstream-kv-operator" --lock "$repo/Cargo.lock" \
    --tree "$work/tree-$arch.txt" --tree-build "$work/tree-build-$arch.txt" --tree-all "$work/tree-all.txt"
done
# The check sees a wrong SBOM: one crate left out, a build-time crate (a proc-macro) added, or
# another binary's digest.
for wrong in missing extra digest; do
  python3 - "$wrong" "$dist/jetstream-kv-operator-$version-linux-arm64.cdx.json" "$work/wrong.cdx.json" <<'PY'
import json, sys
how, src, out = sys.argv[1:]
bom = json.load(open(src))
if how == "missing":
    bom["components"] = [c for c in bom["components"] if c["name"] != "tokio"]
elif how == "extra":
    bom["components"].append({"name": "serde_derive", "version": next(c["version"] for c in bom["components"] if c["name"] == "serde"), "licenses": [{"expression": "MIT OR Apache-2.0"}]})
else:
    bom["metadata"]["component"]["hashes"][0]["content"] = "0" * 64
json.dump(bom, open(out, "w"))
PY
  if python3 "$here/sbom.py" check --sbom "$work/wrong.cdx.json" --binary "$dist/linux-arm64/jetstream-kv-operator" --lock "$repo/Cargo.lock" \
    --tree "$work/tree-arm64.txt" --tree-build "$work/tree-build-arm64.txt" --tree-all "$work/tree-all.txt" 2>"$work/wrong.err"; then
    fail "the SBOM check passed an SBOM with $wrong"
  fi
  say "control: an SBOM with $wrong is refused ($(head -1 "$work/wrong.err" | sed 's/^ *SBOM check failed: //'))"
done
elapsed "$t"

# --- 4. The chart --------------------------------------------------------------------------------
step "the Helm chart, packaged"
helm_env=$("$here/setup.sh" helm)
eval "$helm_env"
"$JKO_HELM_BIN" package "$repo/charts/jetstream-kv-operator" --destination "$dist" >/dev/null
chart="$dist/jetstream-kv-operator-$version.tgz"
[ -s "$chart" ] || fail "helm package wrote no $chart"
# helm package writes the time of packaging into the archive (its files' times, gzip's header),
# and helm push the archive file's time into the chart's OCI manifest: all of them become
# SOURCE_DATE_EPOCH, so the same chart gives the same archive and the same chart digest.
python3 - "$chart" "$SOURCE_DATE_EPOCH" <<'PY'
import gzip, io, sys, tarfile
path, epoch = sys.argv[1], int(sys.argv[2])
out = io.BytesIO()
with tarfile.open(path) as src, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst:
    for member in src.getmembers():
        member.mtime = epoch
        member.uid = member.gid = 0
        member.uname = member.gname = ""
        dst.addfile(member, src.extractfile(member) if member.isfile() else None)
with open(path, "wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=epoch) as gz:
    gz.write(out.getvalue())
PY
touch -d "@$SOURCE_DATE_EPOCH" "$chart"
"$JKO_HELM_BIN" lint "$chart" >/dev/null || fail "the chart archive, its times set, does not lint"
say "$(basename "$chart"): $(stat -c %s "$chart") bytes, sha256 $(sha256sum "$chart" | cut -c1-16)... (times: SOURCE_DATE_EPOCH)"

# --- 5. Registry, signatures, verification ------------------------------------------------------
tools="$rel/tools"
cosign="$tools/cosign-$COSIGN_VERSION/cosign"
registry_bin="$tools/registry-$DISTRIBUTION_VERSION/registry"
if [ ! -x "$registry_bin" ]; then
  step "building the CNCF distribution registry $DISTRIBUTION_VERSION from its Go module (cold: a few minutes)"
  t=$(date +%s)
  GOBIN="$(dirname "$registry_bin")" nice -n 19 go install -trimpath -ldflags "-s -w" \
    "github.com/distribution/distribution/v3/cmd/registry@$DISTRIBUTION_VERSION" 2>&1 | progress "lines"
  elapsed "$t"
fi
if [ ! -x "$cosign" ]; then
  step "building cosign $COSIGN_VERSION from its Go module (cold: about 10 minutes on 2 cores)"
  t=$(date +%s)
  GOBIN="$(dirname "$cosign")" nice -n 19 go install -trimpath -ldflags "-s -w" \
    "github.com/sigstore/cosign/v2/cmd/cosign@$COSIGN_VERSION" 2>&1 | progress "lines"
  elapsed "$t"
fi

step "a registry on loopback (distribution $DISTRIBUTION_VERSION)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
reg="127.0.0.1:$port"
mkdir -p "$work/registry"
cat >"$work/registry.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: $reg
YAML
OTEL_TRACES_EXPORTER=none OTEL_SDK_DISABLED=true "$registry_bin" serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
trap 'kill "$registry_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://$reg/v2/" >/dev/null && break; sleep 0.1; done
curl -sf "http://$reg/v2/" >/dev/null || { cat "$work/registry.log" >&2; fail "the registry did not start"; }
say "http://$reg"

step "pushing the image index and the chart"
repo_ref="$reg/jetstream-kv-operator"
pushed=$(python3 "$here/oci.py" push "$dist/jetstream-kv-operator-$version.oci.tar" "$reg" jetstream-kv-operator "$version")
[ "$pushed" = "$index_digest" ] || fail "the registry holds the index as $pushed, dist/ as $index_digest"
say "$repo_ref:$version = $pushed"
python3 "$here/oci.py" show "$reg" jetstream-kv-operator "$version" /jetstream-kv-operator >"$work/images.jsonl"
chart_push=$("$JKO_HELM_BIN" push "$chart" "oci://$reg/charts" --plain-http 2>&1)
chart_digest=$(sed -n 's/^Digest: //p' <<<"$chart_push")
[ -n "$chart_digest" ] || fail "helm push: $chart_push"
chart_ref="$reg/charts/jetstream-kv-operator"
say "oci://$chart_ref:$version = $chart_digest"

step "what the registry serves: every platform, each image's binary the one its SBOM describes"
for arch in "${platforms[@]}"; do
  line=$(grep "\"linux/$arch\"" "$work/images.jsonl") || fail "the index has no linux/$arch image"
  image_sha=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["binary_sha256"])' "$line")
  sbom_sha=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["metadata"]["component"]["hashes"][0]["content"])' \
    "$dist/jetstream-kv-operator-$version-linux-$arch.cdx.json")
  [ "$image_sha" = "$sbom_sha" ] || fail "linux/$arch: the image's binary is $image_sha, the SBOM's $sbom_sha"
  size=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["compressed_size"])' "$line")
  unpacked=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["uncompressed_size"])' "$line")
  digest=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["digest"])' "$line")
  printf -v "digest_$arch" '%s' "$digest"
  say "linux/$arch: $digest, $(awk -v s="$size" -v u="$unpacked" 'BEGIN {printf "%.1f MB compressed, %.1f MB uncompressed", s / 1e6, u / 1e6}'); its /jetstream-kv-operator sha256 ${image_sha:0:16}... = the SBOM's"
done

step "signing with cosign $COSIGN_VERSION (no transparency log: nothing leaves this machine)"
if [ -n "${JKO_RELEASE_KEY:-}" ]; then
  key=$JKO_RELEASE_KEY
  [ -s "$key" ] || fail "JKO_RELEASE_KEY=$key is not a file"
  "$cosign" public-key --key "$key" >"$dist/cosign.pub"
else
  mkdir -p "$rel/keys" && chmod 700 "$rel/keys"
  if [ ! -s "$rel/keys/cosign.key" ]; then
    (cd "$rel/keys" && COSIGN_PASSWORD="" "$cosign" generate-key-pair >/dev/null 2>&1)
    say "made a key pair: $rel/keys/cosign.key (no password), cosign.pub"
  fi
  key="$rel/keys/cosign.key"
  export COSIGN_PASSWORD=""
  cp "$rel/keys/cosign.pub" "$dist/cosign.pub"
fi
cosign_reg=(--allow-http-registry --allow-insecure-registry)
sign() { "$cosign" sign --yes --key "$key" --tlog-upload=false "${cosign_reg[@]}" "$@" >/dev/null 2>"$work/cosign.err" || { cat "$work/cosign.err" >&2; fail "cosign sign $*"; }; }
verify() { "$cosign" verify --key "$dist/cosign.pub" --insecure-ignore-tlog=true "${cosign_reg[@]}" "$@" 2>"$work/verify.err"; }
sign --recursive "$repo_ref@$index_digest"
say "signed the index $index_digest and its images (--recursive)"
for arch in "${platforms[@]}"; do
  sbom="$dist/jetstream-kv-operator-$version-linux-$arch.cdx.json"
  digest_var="digest_$arch"
  "$cosign" attest --yes --key "$key" --tlog-upload=false "${cosign_reg[@]}" --type cyclonedx \
    --predicate "$sbom" "$repo_ref@${!digest_var}" >/dev/null 2>"$work/cosign.err" || { cat "$work/cosign.err" >&2; fail "cosign attest"; }
done
say "attached each SBOM to its image as a signed CycloneDX attestation"
sign "$chart_ref@$chart_digest"
say "signed the chart $chart_digest"
"$cosign" sign-blob --yes --key "$key" --tlog-upload=false --output-signature "$chart.sig" "$chart" >/dev/null 2>"$work/cosign.err" ||
  { cat "$work/cosign.err" >&2; fail "cosign sign-blob"; }
say "signed $(basename "$chart") as a file: $(basename "$chart").sig"

step "verifying (cosign verify --key dist/cosign.pub)"
verify "$repo_ref:$version" >/dev/null || { cat "$work/verify.err" >&2; fail "the index does not verify"; }
say "ok: $repo_ref:$version (the index)"
for arch in "${platforms[@]}"; do
  digest_var="digest_$arch"
  verify "$repo_ref@${!digest_var}" >/dev/null || { cat "$work/verify.err" >&2; fail "the linux/$arch image does not verify"; }
  "$cosign" verify-attestation --key "$dist/cosign.pub" --insecure-ignore-tlog=true "${cosign_reg[@]}" --type cyclonedx \
    "$repo_ref@${!digest_var}" >"$work/attestation-$arch.json" 2>"$work/verify.err" || { cat "$work/verify.err" >&2; fail "the linux/$arch SBOM attestation does not verify"; }
  say "ok: the linux/$arch image ${!digest_var:0:19}... and its SBOM attestation"
done
verify "$chart_ref:$version" >/dev/null || { cat "$work/verify.err" >&2; fail "the chart does not verify"; }
say "ok: oci://$chart_ref:$version (the chart)"
"$cosign" verify-blob --key "$dist/cosign.pub" --insecure-ignore-tlog=true --signature "$chart.sig" "$chart" >/dev/null 2>"$work/verify.err" ||
  { cat "$work/verify.err" >&2; fail "the chart archive does not verify"; }
say "ok: $(basename "$chart") with $(basename "$chart").sig"

step "verification must fail for what was not signed"
tampered=$(python3 "$here/oci.py" tamper "$reg" jetstream-kv-operator "$version")
if verify "$repo_ref:$version" >/dev/null; then fail "an image re-pushed with one more layer still verifies"; fi
say "refused: $repo_ref:$version re-pushed with one more layer (now $tampered): $(grep -m1 -io 'no matching signatures.*\|error: .*' "$work/verify.err" | cut -c1-100)"
verify "$repo_ref@$index_digest" >/dev/null || fail "the signed index no longer verifies by its digest"
say "ok: the signed index, by its digest, still verifies"
cp "$chart" "$work/tampered.tgz"
# Byte 4 of a gzip file is part of its timestamp: the archive still unpacks (helm reads it), but
# it is not the one that was signed.
python3 -c 'import sys; p=sys.argv[1]; b=bytearray(open(p,"rb").read()); b[4]^=1; open(p,"wb").write(b)' "$work/tampered.tgz"
"$JKO_HELM_BIN" show chart "$work/tampered.tgz" >/dev/null || fail "the one-byte change broke the archive (helm cannot read it)"
if "$cosign" verify-blob --key "$dist/cosign.pub" --insecure-ignore-tlog=true --signature "$chart.sig" "$work/tampered.tgz" >/dev/null 2>"$work/verify.err"; then
  fail "a chart archive changed by one byte still verifies"
fi
say "refused: the chart archive with one byte changed (helm still reads it): $(grep -m1 -io 'invalid signature.*\|error: .*' "$work/verify.err" | cut -c1-100)"

if [ -n "$publish" ]; then
  step "publishing to $publish (cosign copy: the signed index, its images, their signatures and SBOM attestations; the signed chart)"
  if [ -n "${REGISTRY_USER:-}" ]; then
    "$cosign" login "${publish%%/*}" -u "$REGISTRY_USER" --password-stdin <<<"${REGISTRY_PASSWORD:-}" >/dev/null
  fi
  "$cosign" copy --force "${cosign_reg[@]}" "$repo_ref@$index_digest" "$publish/jetstream-kv-operator:$version" >&2
  "$cosign" copy --force "${cosign_reg[@]}" "$chart_ref@$chart_digest" "$publish/charts/jetstream-kv-operator:$version" >&2
  verify "$publish/jetstream-kv-operator:$version" >/dev/null || { cat "$work/verify.err" >&2; fail "the published index does not verify"; }
  verify "$publish/charts/jetstream-kv-operator:$version" >/dev/null || { cat "$work/verify.err" >&2; fail "the published chart does not verify"; }
  say "ok: $publish/jetstream-kv-operator:$version and oci://$publish/charts/jetstream-kv-operator:$version verify"
fi

kill "$registry_pid" 2>/dev/null || true
wait "$registry_pid" 2>/dev/null || true
trap - EXIT

cat >"$dist/release.env" <<ENV
VERSION=$version
COMMIT=$commit
IMAGE_INDEX_DIGEST=$index_digest
IMAGE_LINUX_AMD64_DIGEST=${digest_amd64:-}
IMAGE_LINUX_ARM64_DIGEST=${digest_arm64:-}
CHART_DIGEST=$chart_digest
RUSTC=$rustc_vv
SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH
ENV
(cd "$dist" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort | xargs sha256sum >SHA256SUMS)
step "dist/ (release $version of commit ${commit:0:12}, in $(( $(date +%s) - t_start ))s)"
(cd "$dist" && find . -type f -printf '%P\t%s\n' | LC_ALL=C sort | awk -F'\t' '{printf "    %-55s %8.1f MB\n", $1, $2/1e6}') >&2
exit 0
}
