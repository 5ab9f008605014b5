#!/usr/bin/env bash
# 10-init.sh STAGE: makes this node the control plane with `kubeadm init --config`
# (https://kubernetes.io/docs/reference/setup-tools/kubeadm/kubeadm-init/), using the
# cluster CA kubelab generated on the host: kubeadm signs every other certificate with
# a CA it finds at /etc/kubernetes/pki/ca.{crt,key} ("Custom certificates",
# https://kubernetes.io/docs/tasks/administer-cluster/kubeadm/kubeadm-certs/).
# STAGE holds ca.crt, ca.key and kubeadm-init.yaml, uploaded by kubelab.
# Idempotent: skipped once admin.conf exists; a half-done init is reset first.
set -euo pipefail
stage=${1:?usage: 10-init.sh STAGE}
pki=/etc/kubernetes/pki

if [ -f /etc/kubernetes/admin.conf ]; then
    echo "control plane already initialized: skipping kubeadm init"
else
    if [ -n "$(ls -A /etc/kubernetes/manifests 2>/dev/null)" ]; then
        echo "a previous kubeadm init did not finish: kubeadm reset"
        kubeadm reset --force
    fi
    install -d -m 0755 /etc/kubernetes "$pki"
    install -m 0644 "$stage/ca.crt" "$pki/ca.crt"
    install -m 0600 "$stage/ca.key" "$pki/ca.key"
    kubeadm init --config "$stage/kubeadm-init.yaml"
fi
# The CA key stays only where kubeadm keeps it.
rm -f "$stage/ca.key"
echo "init: done"
