#!/usr/bin/env bash
# Builds the operator's binary (optimised; see JKO_IMAGE_PROFILE below) from this checkout and its
# container image (from scratch, with test-env/image.sh: the Dockerfile's final stage), as an OCI
# archive for the node's containerd, and prints the environment naming it:
#
#   eval "$(test-env/operator-image.sh)"                  this checkout's image and the release's
#   eval "$(test-env/operator-image.sh --checkout-only)"  this checkout's image only (quick start)
#
# The node tests need both: the release tests/upgrade.rs upgrades from (test-env/release-image.sh,
# built once from its commit) is built here too, so that a node test never runs without it.
#
# The binary is cached by the hash of what it is built from (src/, Cargo.toml, Cargo.lock, the
# profile, rustc's version): a fresh clone of a commit already built skips cargo, whose own
# freshness check follows the checkout's path and files' times and would rebuild the crate (about
# 2 minutes). The archive is cached by the binary's hash and image.sh's.
set -euo pipefail
with_release=true
case ${1:-} in
  "") ;;
  --checkout-only) with_release=false ;;
  *) echo "usage: $0 [--checkout-only]" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
cache=${JKO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jetstream-kv-operator}
export JKO_CACHE=$cache
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
# The `image` profile (Cargo.toml: release without link-time optimisation, incremental) unless
# JKO_IMAGE_PROFILE names another, e.g. `release` for exactly what the Dockerfile builds, or `dev`
# for the test build's own dependencies (no optimised build at all).
profile=${JKO_IMAGE_PROFILE:-image}
# cargo's folder for the profile: `dev` builds into debug/.
out_dir=$profile
[ "$profile" != dev ] || out_dir=debug
t=$(date +%s)
sources=$(cd "$here/.." && {
  rustc -vV
  echo "profile $profile"
  find src Cargo.toml Cargo.lock -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
} | sha256sum | cut -c1-16)
bins="$cache/images/bin"
bin="$bins/jetstream-kv-operator-$profile-$sources"
if [ -x "$bin" ]; then
  printf '==> %s\n' "the operator's binary of these sources is cached ($bin)" >&2
else
  printf '==> %s\n' "building the operator's binary (cargo build --profile $profile)" >&2
  (cd "$here/.." && cargo build --profile "$profile" --locked --bin jetstream-kv-operator) >&2
  mkdir -p "$bins"
  cp "$CARGO_TARGET_DIR/$out_dir/jetstream-kv-operator" "$bin.tmp"
  mv "$bin.tmp" "$bin"
  # Keep the four newest (a few branches' worth).
  ls -t "$bins"/jetstream-kv-operator-* 2>/dev/null | tail -n +5 | xargs -r rm -f
fi
tag=$(sha256sum "$bin" | cut -c1-12)
recipe=$(sha256sum "$here/image.sh" | cut -c1-8)
archive="$cache/images/jetstream-kv-operator-$tag-$recipe.tar"
if [ ! -s "$archive" ]; then
  printf '==> %s\n' "building the operator's image (buildah, from scratch)" >&2
  "$here/image.sh" operator "$bin" "$archive" >/dev/null
  # Archives unused for two days (another checkout may be using its own this very minute: each
  # use below marks its archive).
  find "$cache/images" -name 'jetstream-kv-operator-*.tar' ! -name "$(basename "$archive")" -mtime +1 -delete
fi
touch "$archive" "$bin"
printf '    image localhost/jetstream-kv-operator:%s, %s MB as an archive (%ss)\n' "$tag" \
  "$(( $(stat -c %s "$archive") / 1000000 ))" "$(( $(date +%s) - t ))" >&2
echo "export JKO_OPERATOR_IMAGE_ARCHIVE='$archive'"
echo "export JKO_OPERATOR_IMAGE='localhost/jetstream-kv-operator:$tag'"
if [ "$with_release" = true ]; then
  "$here/release-image.sh"
fi
