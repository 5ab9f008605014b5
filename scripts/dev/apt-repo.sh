#!/usr/bin/env bash
# Builds the test mirror that the bare test image installs Kubernetes from (issue: the
# install path runs in CI), and prints its directory:
#   k8s/     a pkgs.k8s.io-style flat repository, signed with a throwaway key
#            (Release.key, InRelease, Release.gpg): the TEST-ONLY stand-ins packaged under
#            the real names and versions (kubeadm, kubelet, kubectl 1.34.2-1.1,
#            kubernetes-cni, cri-tools; kubelet only Recommends iptables & co., like the
#            real one, so `--no-install-recommends` drops them), plus the stand-ins'
#            support module (kubelab-test-standin)
#   debian/  Debian's own containerd, runc, iptables, conntrack, socat, ethtool, ebtables,
#            curl, gpg and their dependencies that the bare image lacks, fetched with
#            `apt-get download` from the host's archive (same release as the image),
#            indexed as a flat repository (the bare image trusts it: `[trusted=yes]`)
# Cached in ${KUBELAB_APT_REPO_CACHE:-/var/cache/kubelab/apt-repo}/<hash of its inputs>/.
#
# Usage: scripts/dev/apt-repo.sh BARE_IMAGE_DIR   (root; needs dpkg-dev, apt-utils, gpg)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$here/../.." && pwd)
standin=$repo_root/images/testimage/files/k8s-standin
cache=${KUBELAB_APT_REPO_CACHE:-/var/cache/kubelab/apt-repo}
image_dir=${1:?usage: apt-repo.sh BARE_IMAGE_DIR}
readonly K8S_VERSION=1.34.2-1.1
readonly DEBIAN_WANTED=(containerd runc iptables conntrack socat ethtool ebtables curl gpg
    apt-transport-https ca-certificates)

log() { printf '[apt-repo %s] %s\n' "$(date +%T)" "$*" >&2; }

inputs_hash() {
    { cat "$0" "$image_dir/packages.txt"; find "$standin" -type f -print0 | LC_ALL=C sort -z |
        xargs -0 cat; } | sha256sum | cut -d' ' -f1
}

# deb NAME VERSION DEPENDS RECOMMENDS SRC:DEST...: builds NAME_VERSION_amd64.deb in $out.
deb() {
    local name=$1 version=$2 depends=$3 recommends=$4 dir file
    shift 4
    dir=$work/pkg/$name
    mkdir -p "$dir/DEBIAN"
    for file in "$@"; do
        install -D -m "$([[ ${file#*:} == */bin/* ]] && echo 0755 || echo 0644)" "${file%%:*}" "$dir/${file#*:}"
    done
    {
        echo "Package: $name"
        echo "Version: $version"
        echo "Architecture: amd64"
        echo "Maintainer: kubelab tests <kubelab@localhost>"
        [ -z "$depends" ] || echo "Depends: $depends"
        [ -z "$recommends" ] || echo "Recommends: $recommends"
        echo "Description: TEST-ONLY kubelab stand-in for $name (never for a real cluster)"
    } >"$dir/DEBIAN/control"
    dpkg-deb --root-owner-group -Zgzip --build "$dir" "$out/k8s/${name}_${version}_amd64.deb" >/dev/null
}

build_k8s() {
    local units=$work/units
    mkdir -p "$out/k8s" "$units" "$work/bin"
    sed 's#/usr/local/bin/kubelet#/usr/bin/kubelet#' "$standin/kubelet.service" >"$units/kubelet.service"
    printf '#!/bin/sh\necho "crictl version v1.34.0 (kubelab test stand-in)"\n' >"$work/bin/crictl"
    deb kubelab-test-standin 1.0 "python3, python3-yaml, openssl" "" \
        "$standin/standin.py:usr/local/lib/kubelab-standin/standin.py" \
        "$standin/kubelab-apiserver-standin.service:lib/systemd/system/kubelab-apiserver-standin.service"
    deb kubelet "$K8S_VERSION" "iproute2, mount, kubernetes-cni (>= 1.2.0)" \
        "iptables, conntrack, ebtables, ethtool, socat" \
        "$standin/kubelet:usr/bin/kubelet" "$units/kubelet.service:lib/systemd/system/kubelet.service"
    deb kubectl "$K8S_VERSION" "kubelab-test-standin" "" "$standin/kubectl:usr/bin/kubectl"
    deb kubeadm "$K8S_VERSION" \
        "kubelet (>= 1.33.0), kubectl (>= 1.33.0), kubernetes-cni (>= 1.2.0), cri-tools (>= 1.30.0), kubelab-test-standin" "" \
        "$standin/kubeadm:usr/bin/kubeadm"
    deb kubernetes-cni 1.7.1-1.1 "" "" "$work/bin/crictl:opt/cni/bin/.kubelab-stand-in"
    deb cri-tools 1.34.0-1.1 "" "" "$work/bin/crictl:usr/bin/crictl"
    (cd "$out/k8s" && dpkg-scanpackages -m . /dev/null 2>/dev/null >Packages &&
        apt-ftparchive -o APT::FTPArchive::Release::Origin=kubelab-test release . >Release)
    export GNUPGHOME=$work/gnupg
    mkdir -m 0700 "$GNUPGHOME"
    gpg -q --batch --pinentry-mode loopback --passphrase '' \
        --quick-gen-key "kubelab test repository <kubelab@localhost>" ed25519 sign never
    gpg -q --batch --armor --export >"$out/k8s/Release.key"
    gpg -q --batch --clearsign -o "$out/k8s/InRelease" "$out/k8s/Release"
    gpg -q --batch -abs -o "$out/k8s/Release.gpg" "$out/k8s/Release"
}

build_debian() {
    local have pkg need=()
    mkdir -p "$out/debian"
    have=$(awk '{print $1}' "$image_dir/packages.txt" | sed 's/:.*//' | sort -u)
    # Every package the wanted ones depend on (no recommends), less what the image has and
    # the virtual names (no candidate to download).
    while read -r pkg; do
        grep -qx -- "$pkg" <<<"$have" && continue
        apt-cache show --no-all-versions "$pkg" >/dev/null 2>&1 || continue
        need+=("$pkg")
    done < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
        --no-breaks --no-replaces --no-enhances "${DEBIAN_WANTED[@]}" | grep -v '^ ' | grep -v '^<' | sort -u)
    log "downloading ${#need[@]} Debian packages: ${need[*]}"
    (cd "$out/debian" && apt-get -q -o APT::Sandbox::User=root download "${need[@]}" >&2)
    (cd "$out/debian" && dpkg-scanpackages -m . /dev/null 2>/dev/null >Packages &&
        apt-ftparchive release . >Release)
}

main() {
    local hash dest
    [ -f "$image_dir/packages.txt" ] || { log "no $image_dir/packages.txt"; exit 1; }
    hash=$(inputs_hash)
    dest=$cache/$hash
    if [ -f "$dest/.complete" ]; then
        echo "$dest"
        return
    fi
    mkdir -p "$cache"
    work=$(mktemp -d)
    out=$(mktemp -d "$cache/.build-$hash.XXXXXX")
    trap 'rm -rf "$work" "$out"' EXIT
    log "building the test mirror $hash"
    build_k8s
    build_debian
    touch "$out/.complete"
    chmod -R a+rX "$out"
    rm -rf "$dest"
    mv -T "$out" "$dest"
    trap 'rm -rf "$work"' EXIT
    echo "$dest"
}

main "$@"
