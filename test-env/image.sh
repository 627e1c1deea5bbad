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
# printed on stdout. buildah's storage lives in the cache, a folder of its own per build (under
# JKO_BUILDAH_STORE), removed after it: two checkouts building at once never share one.
#
# For another platform (test-env/release.sh's arm64 image), JKO_IMAGE_PLATFORM names it
# (linux/amd64 or linux/arm64; default: this machine's) and JKO_IMAGE_SYSROOT the root the binary
# was linked in, whose libraries go into the image (default: /).
set -euo pipefail
kind=$1 binary=$2 archive=$3
cache=${JKO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jetstream-kv-operator}
store=${JKO_BUILDAH_STORE:-$cache/buildah}/build-$$
platform=${JKO_IMAGE_PLATFORM:-linux/$(dpkg --print-architecture)}
sysroot=${JKO_IMAGE_SYSROOT:-}
case $platform in
  linux/amd64) multiarch=x86_64-linux-gnu ;;
  linux/arm64) multiarch=aarch64-linux-gnu ;;
  *) echo "image.sh: unknown platform '$platform' (linux/amd64 or linux/arm64)" >&2; exit 2 ;;
esac
bh() { buildah --root "$store/root" --runroot "$store/run" --storage-driver overlay "$@"; }

tag=$(sha256sum "$binary" | cut -c1-12)
case $kind in
  operator) name="localhost/jetstream-kv-operator:$tag" ;;
  pause) name="localhost/pause:$tag" ;;
  daprd) name="localhost/daprd:$tag" ;;
  *) echo "image.sh: unknown image '$kind'" >&2; exit 2 ;;
esac

ctr=$(bh from --name "jko-image-$$" --platform "$platform" scratch)
cleanup() {
  bh rm "$ctr" >/dev/null 2>&1 || true
  bh rmi -a -f >/dev/null 2>&1 || true
  rm -rf "$store" 2>/dev/null || true
}
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
    # The shared libraries the binary needs (its ELF NEEDED entries, and theirs), from the
    # sysroot's multiarch folder, and the dynamic loader, at the paths the loader looks for them
    # (what ldd lists; read from the ELF headers so that it works for another architecture too).
    # A static binary (daprd is built without cgo) has neither.
    loader=$(readelf -l "$binary" | sed -n 's/.*Requesting program interpreter: \(.*\)]$/\1/p')
    [ -z "$loader" ] || install -D -m 0755 "$(readlink -f "$sysroot$loader")" "$root$loader"
    todo=("$binary") done=" "
    [ -n "$loader" ] || todo=()
    while [ ${#todo[@]} -gt 0 ]; do
      elf=${todo[0]} todo=("${todo[@]:1}")
      for lib in $(readelf -d "$elf" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p'); do
        case "$done" in *" $lib "*) continue ;; esac
        done="$done$lib "
        [ "$lib" != "$(basename "$loader")" ] || continue
        src=""
        for dir in "$sysroot/lib/$multiarch" "$sysroot/usr/lib/$multiarch"; do
          [ -e "$dir/$lib" ] && { src=$(readlink -f "$dir/$lib"); break; }
        done
        [ -n "$src" ] || { echo "image.sh: $lib (needed by $elf) is not in $sysroot/lib/$multiarch" >&2; exit 1; }
        install -D -m 0755 "$src" "$root/lib/$multiarch/$lib"
        todo+=("$src")
      done
    done
    install -D -m 0644 "$sysroot/etc/ssl/certs/ca-certificates.crt" "$root/etc/ssl/certs/ca-certificates.crt"
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
# SOURCE_DATE_EPOCH (test-env/release.sh: the commit's time) fixes the image's creation time and
# its files' times: the same binary then makes the same image, to the digest.
bh commit --quiet ${SOURCE_DATE_EPOCH:+--timestamp "$SOURCE_DATE_EPOCH"} "$ctr" "$name" >/dev/null
mkdir -p "$(dirname "$archive")"
rm -f "$archive.tmp"
bh push --quiet "$name" "oci-archive:$archive.tmp:$name" >&2
mv "$archive.tmp" "$archive"
echo "$name"
