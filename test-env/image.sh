#!/usr/bin/env bash
# Builds a container image from scratch with buildah (nothing can be pulled here) and writes it as
# an OCI archive that `ctr images import` loads into the node's containerd:
#
#   test-env/image.sh operator BINARY ARCHIVE   the operator's image: the Dockerfile's final stage
#   test-env/image.sh pause BINARY ARCHIVE      the node's sandbox image (a static binary)
#   test-env/image.sh daprd BINARY ARCHIVE      Dapr's sidecar (test-env/daprd's build), for pods
#                                               that run it as Dapr's injector would
#
# The operator's image has the runtime contents and metadata of the Dockerfile's final stage
# (distroless/cc with the operator): the binary and the shared libraries it links (what ldd lists,
# at the same paths), CA certificates, the nonroot user 65532 and a writable /tmp, the same labels,
# user, exposed port, entrypoint and command. tests/image.rs checks that the two agree.
# The image is named localhost/<name>:<first 12 hex digits of the binary's sha256>; the name is
# printed on stdout. buildah's storage lives in the cache and is emptied after each build.
set -euo pipefail
kind=$1 binary=$2 archive=$3
cache=${JKO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jetstream-kv-operator}
store="$cache/buildah"
bh() { buildah --root "$store/root" --runroot "$store/run" --storage-driver overlay "$@"; }

tag=$(sha256sum "$binary" | cut -c1-12)
case $kind in
  operator) name="localhost/jetstream-kv-operator:$tag" ;;
  pause) name="localhost/pause:$tag" ;;
  daprd) name="localhost/daprd:$tag" ;;
  *) echo "image.sh: unknown image '$kind'" >&2; exit 2 ;;
esac

ctr=$(bh from --name "jko-image-$$" scratch)
cleanup() { bh rm "$ctr" >/dev/null 2>&1 || true; bh rmi -a -f >/dev/null 2>&1 || true; }
trap cleanup EXIT
root=$(bh mount "$ctr")

case $kind in
  pause)
    install -D -m 0755 "$binary" "$root/pause"
    bh config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
    ;;
  operator|daprd)
    exe=/jetstream-kv-operator
    [ "$kind" = operator ] || exe=/daprd
    install -D -m 0755 "$binary" "$root$exe"
    # The shared libraries and the dynamic loader, at the paths the binary looks for them.
    for lib in $(ldd "$binary" | grep -o '/[^ ]*'); do
      install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
    done
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    # distroless' users: root, nobody and nonroot (65532), whose home is /home/nonroot.
    mkdir -p "$root/etc" "$root/home/nonroot" "$root/tmp"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$root/etc/group"
    chown 65532:65532 "$root/home/nonroot"
    chmod 1777 "$root/tmp"
  ;;&
  daprd)
    bh config --user 65532:65532 --env HOME=/home/nonroot --entrypoint '["/daprd"]' "$ctr"
    ;;
  operator)
    bh config \
      --label org.opencontainers.image.title="jetstream-kv-operator" \
      --label org.opencontainers.image.description="Provisions the NATS JetStream KV buckets of Dapr state.jetstream Components" \
      --label org.opencontainers.image.licenses="Apache-2.0" \
      --user 65532:65532 \
      --port 8080/tcp \
      --entrypoint '["/jetstream-kv-operator"]' \
      --cmd '["run"]' \
      "$ctr"
    ;;
esac
bh umount "$ctr" >/dev/null
bh commit --quiet "$ctr" "$name" >/dev/null
mkdir -p "$(dirname "$archive")"
rm -f "$archive.tmp"
bh push --quiet "$name" "oci-archive:$archive.tmp:$name" >&2
mv "$archive.tmp" "$archive"
echo "$name"
