#!/usr/bin/env bash
# 25-token.sh TOKEN: creates the bootstrap token TOKEN (made on the host) for one
# `kubelab node add`, valid one hour
# (https://kubernetes.io/docs/reference/setup-tools/kubeadm/kubeadm-token/).
set -euo pipefail
token=${1:?usage: 25-token.sh TOKEN}
kubeadm token create "$token" --ttl 1h --description "kubelab: node add"
echo "token: created"
