#!/usr/bin/env bash
# Prints the directory of the built test image for the current recipe, building
# it first when the cache has none. The cache lives outside the repository:
#   ${KUBELAB_TEST_IMAGE_CACHE:-/var/cache/kubelab/testimage}/<recipe sha256>/
# KUBELAB_TEST_IMAGE_VARIANT=bare builds and caches the variant without Kubernetes
# (build.sh); the variant is part of the hash.
# The recipe hash covers build.sh and files/ (names and contents), so changing
# the recipe builds a new image while CI on the same machine reuses the old one.
# Build logs go to stderr; stdout is only the path.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${KUBELAB_TEST_IMAGE_CACHE:-/var/cache/kubelab/testimage}

recipe_hash() {
    (
        cd "$here"
        find build.sh files -type f -print0 | LC_ALL=C sort -z |
            while IFS= read -r -d '' f; do
                printf '%s\0' "$f"
                cat -- "$f"
            done
        printf 'variant=%s\0' "${KUBELAB_TEST_IMAGE_VARIANT:-standard}"
    ) | sha256sum | cut -d' ' -f1
}

main() {
    local hash dest tmp
    hash=$(recipe_hash)
    dest=$cache/$hash
    if [ -f "$dest/SHA256SUMS" ]; then
        echo "$dest"
        return
    fi
    mkdir -p "$cache"
    chmod 0755 "$cache"
    exec 9>"$cache/.lock"
    echo "test image $hash not cached: waiting for the build lock" >&2
    flock -w 3600 9 || { echo "timed out waiting for $cache/.lock" >&2; exit 1; }
    if [ ! -f "$dest/SHA256SUMS" ]; then
        # A build in the cache's filesystem so the final rename is atomic.
        tmp=$(mktemp -d "$cache/.build-$hash.XXXXXX")
        trap 'rm -rf "$tmp"' EXIT
        echo "building test image $hash (log: $cache/$hash.build.log)" >&2
        if ! "$here/build.sh" "$tmp" 2>"$cache/$hash.build.log" >&2; then
            tail -n 30 "$cache/$hash.build.log" >&2
            echo "test image build failed (log: $cache/$hash.build.log)" >&2
            exit 1
        fi
        # QEMU (user libvirt-qemu) must be able to reach the image.
        chmod 0755 "$tmp"
        mv -T "$tmp" "$dest"
        trap - EXIT
    fi
    echo "$dest"
}

main "$@"
