#!/usr/bin/env bash
# 55-clean.sh USER: `kubelab image bake`'s last step before the power-off: makes the guest
# fit to be cloned into many nodes. Each clone boots with its own cloud-init seed, so
# everything one instance made for itself goes: cloud-init's instance state and logs
# (the clone's seed runs anew), the SSH host keys (the seed brings the key kubelab made
# for the node), the machine id (systemd makes a new one at first boot; two nodes with
# one id would share DHCP client ids and kubelet identities), the bake VM's user key,
# shell history, logs, apt's package lists and the bake's registry mirror.
set -euo pipefail
user=${1:?usage: 55-clean.sh USER}

echo "registry mirrors of the bake"
rm -f /etc/containerd/certs.d/*/hosts.toml
echo "apt lists and archives"
apt-get clean
rm -rf /var/lib/apt/lists/*
echo "cloud-init state and logs"
if command -v cloud-init >/dev/null; then
    cloud-init clean --logs --seed
fi
rm -rf /var/lib/cloud/instances /var/lib/cloud/instance
echo "SSH host keys, the machine id, the bake's user key, history"
rm -f /etc/ssh/ssh_host_*
truncate -s 0 /etc/machine-id
rm -f /var/lib/dbus/machine-id
rm -f "/home/$user/.ssh/authorized_keys" "/home/$user/.bash_history" /root/.bash_history
echo "logs"
if command -v journalctl >/dev/null; then
    journalctl --rotate >/dev/null 2>&1 || true
    journalctl --vacuum-time=1s >/dev/null 2>&1 || true
fi
find /var/log -type f \( -name '*.gz' -o -name '*.[0-9]' -o -name '*.old' \) -delete
find /var/log -type f -exec truncate -s 0 {} +
rm -rf /tmp/* /var/tmp/*
sync
echo "done"
