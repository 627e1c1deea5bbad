#!/usr/bin/env bash
# Builds a past release of the operator from its commit in this repository's history (by default
# UPGRADE_FROM_VERSION of test-env/releases.env, the one tests/upgrade.rs upgrades from): its
# binary, its container image (test-env/image.sh, as for this checkout) and its Helm chart, and
# prints the environment naming them:
#
#   eval "$(test-env/release-image.sh)"          the release tests/upgrade.rs starts from
#   eval "$(test-env/release-image.sh 0.1.0)"    a given release (RELEASE_0_1_0_COMMIT)
#
# The sources are `git archive` of the commit (no checkout or worktree is touched), built with a
# target folder of their own; built once per commit and kept in the cache
# ($JKO_CACHE/releases/<version>-<commit>/: the binary, the image archive, the chart), the build
# folder removed once the binary is kept. Not under $JKO_CACHE/images: operator-image.sh deletes
# older archives there. Progress goes to stderr; only `export` lines go to stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=releases.env
source "$here/releases.env"
cache=${JKO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jetstream-kv-operator}
export JKO_CACHE=$cache
version=${1:-$UPGRADE_FROM_VERSION}
var="RELEASE_${version//./_}_COMMIT"
commit=${!var:-}
if [ -z "$commit" ]; then
  echo "release-image.sh: no $var in test-env/releases.env" >&2
  exit 2
fi
step() { printf '==> %s\n' "$*" >&2; }
if ! git -C "$repo" cat-file -e "$commit^{commit}" 2>/dev/null; then
  echo "release-image.sh: commit $commit (release $version) is not in this clone's history" \
    "(a shallow clone? git fetch --unshallow)" >&2
  exit 1
fi
# The commit is the release it is said to be.
if ! git -C "$repo" show "$commit:Cargo.toml" | grep -qx "version = \"$version\""; then
  echo "release-image.sh: Cargo.toml of $commit is not version $version" >&2
  exit 1
fi

dir="$cache/releases/$version-${commit:0:12}"
bin="$dir/jetstream-kv-operator"
t=$(date +%s)
if [ -x "$bin" ]; then
  step "the operator $version (commit ${commit:0:12}) is built ($bin)"
else
  step "building the operator $version from commit ${commit:0:12} (git archive, cargo build --profile image with a target folder of its own; cold: several minutes on 2 cores)"
  work="$dir/build"
  rm -rf "$work/src"
  mkdir -p "$work/src"
  git -C "$repo" archive "$commit" | tar -x -C "$work/src"
  (cd "$work/src" && CARGO_TARGET_DIR="$work/target" cargo build --profile image --locked \
    --bin jetstream-kv-operator) >&2
  cp "$work/target/image/jetstream-kv-operator" "$bin.tmp"
  mv "$bin.tmp" "$bin"
  rm -rf "$work"
  printf '    built in %ss\n' "$(( $(date +%s) - t ))" >&2
fi
chart="$dir/chart"
if [ ! -s "$chart/Chart.yaml" ]; then
  rm -rf "$chart.tmp" && mkdir -p "$chart.tmp"
  git -C "$repo" archive "$commit" charts/jetstream-kv-operator | tar -x -C "$chart.tmp"
  mv "$chart.tmp/charts/jetstream-kv-operator" "$chart"
  rm -rf "$chart.tmp"
fi
tag=$(sha256sum "$bin" | cut -c1-12)
recipe=$(sha256sum "$here/image.sh" | cut -c1-8)
archive="$dir/image-$tag-$recipe.tar"
if [ ! -s "$archive" ]; then
  step "building the image of the operator $version (buildah, from scratch)"
  "$here/image.sh" operator "$bin" "$archive" >/dev/null
  find "$dir" -maxdepth 1 -name 'image-*.tar' ! -name "$(basename "$archive")" -delete
fi
printf '    image localhost/jetstream-kv-operator:%s of the operator %s, chart %s (%ss)\n' \
  "$tag" "$version" "$chart" "$(( $(date +%s) - t ))" >&2
echo "export JKO_RELEASE_VERSION='$version'"
echo "export JKO_RELEASE_COMMIT='$commit'"
echo "export JKO_RELEASE_CHART='$chart'"
echo "export JKO_RELEASE_IMAGE_ARCHIVE='$archive'"
echo "export JKO_RELEASE_IMAGE='localhost/jetstream-kv-operator:$tag'"
