#!/usr/bin/env bash
# 30-join.sh STAGE: joins this node to the cluster as a worker with `kubeadm join
# --config STAGE/kubeadm-join.yaml` (token and CA hash made on the host:
# https://kubernetes.io/docs/reference/setup-tools/kubeadm/kubeadm-join/). kubelab runs
# it once the API server answers. Idempotent: skipped once the kubelet has its
# kubeconfig; a half-done join is reset first.
set -euo pipefail
stage=${1:?usage: 30-join.sh STAGE}

if [ -f /etc/kubernetes/kubelet.conf ]; then
    echo "already joined: skipping kubeadm join"
else
    if [ -e /etc/kubernetes/pki/ca.crt ] || [ -e /etc/kubernetes/bootstrap-kubelet.conf ]; then
        echo "a previous kubeadm join did not finish: kubeadm reset"
        kubeadm reset --force
    fi
    kubeadm join --config "$stage/kubeadm-join.yaml"
fi
# The join config holds the bootstrap token.
rm -f "$stage/kubeadm-join.yaml"
echo "join: done"
