#!/usr/bin/env bash
# 40-leave.sh NODE TIMEOUT: on the control plane, drains NODE and deletes it from the
# cluster before kubelab deletes its VM
# (https://kubernetes.io/docs/reference/kubectl/generated/kubectl_drain/). A node the
# cluster does not know is left alone.
set -euo pipefail
node=${1:?usage: 40-leave.sh NODE TIMEOUT}
timeout=${2:?usage: 40-leave.sh NODE TIMEOUT}
kubectl() { command kubectl --kubeconfig /etc/kubernetes/admin.conf "$@"; }

if kubectl get node "$node" >/dev/null 2>&1; then
    kubectl drain "$node" --ignore-daemonsets --delete-emptydir-data --force --timeout="$timeout"
    kubectl delete node "$node"
else
    echo "$node is not in the cluster: nothing to drain"
fi
echo "leave: done"
