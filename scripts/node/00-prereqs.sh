#!/usr/bin/env bash
# 00-prereqs.sh VERSION: what kubeadm needs on every node, before `kubeadm init` or
# `kubeadm join` (https://kubernetes.io/docs/setup/production-environment/tools/kubeadm/install-kubeadm/
# and .../container-runtimes/): swap off, the overlay and br_netfilter modules, the
# bridge/forwarding sysctls, containerd with the systemd cgroup driver, and kubeadm,
# kubelet and kubectl of VERSION (vMAJOR.MINOR.PATCH) from pkgs.k8s.io when the image
# lacks them. Idempotent: run by kubelab as root over SSH on every `up`.
set -euo pipefail
version=${1:?usage: 00-prereqs.sh VERSION}
minor=${version%.*}

echo "swap: off"
swapoff -a
if grep -Eq '^[^#].*\sswap\s' /etc/fstab; then
    sed -Ei 's/^([^#].*\sswap\s.*)$/# \1/' /etc/fstab
fi

echo "kernel modules: overlay br_netfilter"
printf 'overlay\nbr_netfilter\n' >/etc/modules-load.d/kubelab-k8s.conf
modprobe overlay
modprobe br_netfilter

echo "sysctls: bridged traffic through iptables, IPv4 forwarding"
cat >/etc/sysctl.d/99-kubelab-k8s.conf <<'CONF'
net.bridge.bridge-nf-call-iptables = 1
net.bridge.bridge-nf-call-ip6tables = 1
net.ipv4.ip_forward = 1
CONF
# Written directly: minimal images have no sysctl(8).
for key in net/bridge/bridge-nf-call-iptables net/bridge/bridge-nf-call-ip6tables net/ipv4/ip_forward; do
    if [ -e "/proc/sys/$key" ]; then echo 1 >"/proc/sys/$key"; fi
done

apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

if ! command -v containerd >/dev/null; then
    echo "containerd: installing"
    apt-get update -q
    apt_install containerd
fi
mkdir -p /etc/containerd
if ! grep -q 'SystemdCgroup = true' /etc/containerd/config.toml 2>/dev/null; then
    echo "containerd: systemd cgroup driver"
    containerd config default | sed 's/SystemdCgroup = false/SystemdCgroup = true/' \
        >/etc/containerd/config.toml
    systemctl restart containerd
fi
systemctl enable --now containerd

missing=()
for tool in kubeadm kubelet kubectl; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "kubeadm, kubelet, kubectl: present ($(kubeadm version -o short)), skipping the install"
    if [ "$(kubeadm version -o short)" != "$version" ]; then
        echo "warning: the image has kubeadm $(kubeadm version -o short), not $version" >&2
    fi
else
    echo "kubeadm, kubelet, kubectl $version: installing from pkgs.k8s.io (missing: ${missing[*]})"
    apt-get update -q
    apt_install apt-transport-https ca-certificates curl gpg
    install -d -m 0755 /etc/apt/keyrings
    curl -fsSL "https://pkgs.k8s.io/core:/stable:/$minor/deb/Release.key" |
        gpg --dearmor --yes -o /etc/apt/keyrings/kubernetes-apt-keyring.gpg
    echo "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/$minor/deb/ /" \
        >/etc/apt/sources.list.d/kubernetes.list
    apt-get update -q
    # The repository's package versions look like 1.34.2-1.1.
    pkg_version=$(apt-cache madison kubeadm | awk -v v="${version#v}-" 'index($3, v) == 1 { print $3; exit }')
    [ -n "$pkg_version" ] || { echo "pkgs.k8s.io has no kubeadm $version" >&2; exit 1; }
    apt-mark unhold kubelet kubeadm kubectl >/dev/null 2>&1 || true
    apt_install "kubelet=$pkg_version" "kubeadm=$pkg_version" "kubectl=$pkg_version"
    apt-mark hold kubelet kubeadm kubectl
fi
systemctl enable kubelet
echo "prereqs: done"
