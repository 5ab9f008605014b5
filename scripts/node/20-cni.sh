#!/usr/bin/env bash
# 20-cni.sh STAGE: applies the cluster's CNI manifest (STAGE/cni.yaml, kubelab's
# scripts/node/cni/flannel.yaml with the pod subnet filled in). `kubectl apply` is
# idempotent.
set -euo pipefail
stage=${1:?usage: 20-cni.sh STAGE}
kubectl --kubeconfig /etc/kubernetes/admin.conf apply -f "$stage/cni.yaml"
echo "cni: done"
