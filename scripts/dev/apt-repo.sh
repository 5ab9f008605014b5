#!/usr/bin/env bash
# Builds the test mirror that the bare test image installs Kubernetes from (issue: the
# install path runs in CI), and prints its directory:
#   k8s/     a pkgs.k8s.io-style flat repository, signed with a throwaway key
#            (Release.key, InRelease, Release.gpg): the TEST-ONLY stand-ins packaged under
#            the real names and versions (kubeadm, kubelet, kubectl 1.34.2-1.1,
#            kubernetes-cni, cri-tools; kubelet only Recommends iptables & co., like the
#            real one, so `--no-install-recommends` drops them), plus the stand-ins'
#            support module (kubelab-test-standin)
#   registry/ the container images a node pulls, as a read-only registry (build_registry)
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
cni=$repo_root/scripts/node/cni/flannel.yaml
cache=${KUBELAB_APT_REPO_CACHE:-/var/cache/kubelab/apt-repo}
image_dir=${1:?usage: apt-repo.sh BARE_IMAGE_DIR}
readonly K8S_VERSION=1.34.2-1.1
readonly DEBIAN_WANTED=(containerd runc iptables conntrack socat ethtool ebtables curl gpg
    apt-transport-https ca-certificates)

log() { printf '[apt-repo %s] %s\n' "$(date +%T)" "$*" >&2; }

inputs_hash() {
    { cat "$0" "$image_dir/packages.txt" "$cni"; find "$standin" -type f -print0 | LC_ALL=C sort -z |
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
    printf 'kubelab test stand-in: no CNI plugins\n' >"$work/bin/cni-placeholder"
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
    deb kubernetes-cni 1.7.1-1.1 "" "" "$work/bin/cni-placeholder:opt/cni/bin/.kubelab-stand-in"
    deb cri-tools 1.34.0-1.1 "kubelab-test-standin" "" "$standin/crictl:usr/bin/crictl"
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

# A read-only registry of the images a node needs (kubeadm's for the stand-ins' version,
# the CNI's), as static files in the layout of the registry API's GET paths
# (registry/v2/<repository>/manifests/<tag>): enough for the stand-ins' pulls, which
# record the manifest's sha256 (see standin.py). The manifests are well-formed OCI image
# manifests of made-up blobs; no blob is served.
build_registry() {
    python3 - "$standin" "$cni" "$out/registry" <<'PY'
import hashlib, json, os, re, sys
sys.path.insert(0, sys.argv[1])
import standin
refs = standin.images(standin.VERSION)
refs += sorted(set(re.findall(r"^\s*image:\s*(\S+)\s*$", open(sys.argv[2]).read(), re.M)))
for ref in refs:
    registry, repo, tag = standin.split_ref(ref)
    blob = lambda kind: {"mediaType": kind, "size": 2,
                         "digest": "sha256:" + hashlib.sha256((ref + kind).encode()).hexdigest()}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": blob("application/vnd.oci.image.config.v1+json"),
                "layers": [blob("application/vnd.oci.image.layer.v1.tar+gzip")]}
    path = os.path.join(sys.argv[3], "v2", repo, "manifests", tag)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(manifest, f)
PY
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
    build_registry
    build_debian
    touch "$out/.complete"
    chmod -R a+rX "$out"
    rm -rf "$dest"
    mv -T "$out" "$dest"
    trap 'rm -rf "$work"' EXIT
    echo "$dest"
}

main "$@"
