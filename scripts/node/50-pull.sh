#!/usr/bin/env bash
# 50-pull.sh VERSION MIRROR IMAGE...: `kubelab image bake`'s pulls, after 00-prereqs.sh:
# kubeadm's images for VERSION (`kubeadm config images pull`) and each IMAGE (the CNI's,
# `crictl pull`), so that a node booting the baked image pulls nothing. MIRROR (a
# registry mirror URL, or "" for none) is written as the first host of every registry
# those images come from (containerd's /etc/containerd/certs.d/<registry>/hosts.toml,
# read through the config_path 00-prereqs.sh set); 55-clean.sh removes it again.
set -euo pipefail
version=${1:?usage: 50-pull.sh VERSION MIRROR IMAGE...}
mirror=${2?usage: 50-pull.sh VERSION MIRROR IMAGE...}
shift 2

kube_images=$(kubeadm config images list --kubernetes-version "$version")
if [ -n "$mirror" ]; then
    for registry in $(printf '%s\n' $kube_images "$@" | cut -d/ -f1 | sort -u); do
        echo "registry $registry: mirror $mirror"
        install -d -m 0755 "/etc/containerd/certs.d/$registry"
        cat >"/etc/containerd/certs.d/$registry/hosts.toml" <<TOML
server = "https://$registry"

[host."$mirror"]
  capabilities = ["pull", "resolve"]
TOML
    done
fi

echo "pulling kubeadm's images for $version"
kubeadm config images pull --kubernetes-version "$version"
for image in "$@"; do
    echo "pulling $image"
    crictl pull "$image"
done
echo "pull: done"
