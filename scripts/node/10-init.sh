#!/usr/bin/env bash
# 10-init.sh STAGE TOKEN: makes this node the control plane with `kubeadm init --config`
# (https://kubernetes.io/docs/reference/setup-tools/kubeadm/kubeadm-init/), using the
# cluster CA kubelab generated on the host: kubeadm signs every other certificate with
# a CA it finds at /etc/kubernetes/pki/ca.{crt,key} ("Custom certificates",
# https://kubernetes.io/docs/tasks/administer-cluster/kubeadm/kubeadm-certs/).
# STAGE holds ca.crt, ca.key and kubeadm-init.yaml, uploaded by kubelab; TOKEN is this
# run's bootstrap token (also in kubeadm-init.yaml).
#
# Idempotent. Init counts as done only once kubelab's marker exists, written after
# `kubeadm init` succeeded: kubeadm writes admin.conf early (its kubeconfig phase, before
# etcd, the control plane, the bootstrap token and the addons), so admin.conf proves
# nothing. Without the marker, whatever an earlier attempt left is reset and init runs
# again. With it, only TOKEN is created, for the workers that join on this run.
set -euo pipefail
stage=${1:?usage: 10-init.sh STAGE TOKEN}
token=${2:?usage: 10-init.sh STAGE TOKEN}
pki=/etc/kubernetes/pki
marker=/var/lib/kubelab/kubeadm-init.done

if [ -f "$marker" ]; then
    echo "control plane already initialized (kubelab's marker): creating this run's join token"
    kubeadm token create "$token" --ttl 24h0m0s --description "kubelab: joins of this up"
else
    if [ -e /etc/kubernetes/admin.conf ] || [ -n "$(ls -A /etc/kubernetes/manifests 2>/dev/null)" ] ||
        [ -d /var/lib/etcd/member ]; then
        echo "a previous kubeadm init did not finish: kubeadm reset"
        kubeadm reset --force
    fi
    install -d -m 0755 /etc/kubernetes "$pki"
    install -m 0644 "$stage/ca.crt" "$pki/ca.crt"
    install -m 0600 "$stage/ca.key" "$pki/ca.key"
    kubeadm init --config "$stage/kubeadm-init.yaml"
    install -d -m 0755 "$(dirname "$marker")"
    date -u +%FT%TZ >"$marker"
fi
# The CA key stays only where kubeadm keeps it.
rm -f "$stage/ca.key"
echo "init: done"
