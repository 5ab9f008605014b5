#!/usr/bin/env bash
# 40-leave.sh NODE TIMEOUT: drains NODE and deletes it from the cluster (`node delete`),
# on the control plane. The user asked for the node to go, so nothing here blocks that:
# a NotReady node is not drained (its kubelet cannot confirm that a pod stopped, so a
# drain would only wait), and a drain that cannot finish within TIMEOUT (a
# PodDisruptionBudget, a pod that never terminates) is reported and the node deleted
# anyway; the pods' controllers recreate them elsewhere.
set -euo pipefail
node=${1:?usage: 40-leave.sh NODE TIMEOUT}
timeout=${2:?usage: 40-leave.sh NODE TIMEOUT}
kubectl() { command kubectl --kubeconfig /etc/kubernetes/admin.conf "$@"; }

if kubectl get node "$node" >/dev/null 2>&1; then
    # STATUS is Ready, NotReady, Unknown, maybe with ",SchedulingDisabled".
    status=$(kubectl get node "$node" --no-headers | awk '{print $2}')
    if [ "${status%%,*}" != Ready ]; then
        echo "$node is $status: deleting it without a drain"
    elif ! kubectl drain "$node" --ignore-daemonsets --delete-emptydir-data --force --timeout="$timeout"; then
        echo "warning: $node did not drain within $timeout: deleting it anyway" >&2
    fi
    kubectl delete node "$node"
else
    echo "$node is not in the cluster: nothing to drain"
fi
echo "leave: done"
