#!/usr/bin/env bash
# 50-pull.sh VERSION IMAGE...: `kubelab image bake`'s pulls, after 00-prereqs.sh (which
# set the registry mirror, if any): kubeadm's images for VERSION (`kubeadm config images
# pull`) and each IMAGE (the CNI's, `crictl pull`), so that a node booting the baked
# image pulls nothing.
set -euo pipefail
version=${1:?usage: 50-pull.sh VERSION IMAGE...}
shift

echo "pulling kubeadm's images for $version"
kubeadm config images pull --kubernetes-version "$version"
for image in "$@"; do
    echo "pulling $image"
    crictl pull "$image"
done
echo "done"
