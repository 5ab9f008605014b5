#!/usr/bin/env bash
# 00-prereqs.sh VERSION REPO: what kubeadm needs on every node, before `kubeadm init` or
# `kubeadm join` (https://kubernetes.io/docs/setup/production-environment/tools/kubeadm/install-kubeadm/
# and .../container-runtimes/): swap off, the overlay and br_netfilter modules, the
# bridge/forwarding sysctls, containerd with the systemd cgroup driver, and kubeadm,
# kubelet and kubectl of VERSION (vMAJOR.MINOR.PATCH) from REPO (pkgs.k8s.io's repository
# for VERSION's minor, or a mirror of it: flat, its signing key at REPO/Release.key) when
# the image lacks them, the tools kubeadm's preflight wants (iptables, conntrack, socat, ethtool,
# ebtables), and kubeadm's own pause image as containerd's sandbox image.
# With MIRROR (a registry mirror URL; "" for none), each REGISTRY's container images are
# pulled through it first (containerd's /etc/containerd/certs.d/<registry>/hosts.toml).
# Idempotent: run by kubelab as root over SSH on every `up`.
set -euo pipefail
usage="usage: 00-prereqs.sh VERSION REPO [MIRROR REGISTRY...]"
version=${1:?$usage}
repo=${2:?$usage}
mirror=${3:-}
shift 2
[ $# -eq 0 ] || shift

# cloud-init's last stage (and unattended-upgrades) may still hold the dpkg lock when SSH
# first answers: wait for cloud-init, and let apt wait for the lock instead of failing.
if command -v cloud-init >/dev/null; then
    echo "cloud-init: waiting until it is done"
    cloud-init status --wait >/dev/null || echo "warning: cloud-init reported errors (see cloud-init status --long)" >&2
fi

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

apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"; }
# Recommends stay off (small nodes); what kubeadm needs is named explicitly instead.
apt_install() { apt_get install -y -q --no-install-recommends "$@"; }
apt_updated=""
apt_update() { [ -n "$apt_updated" ] || { apt_get update -q; apt_updated=1; }; }

# containerd, and what kubeadm's preflight checks for (the kubelet only recommends
# iptables; Debian's cloud images lack it): command:package.
need=()
for pair in containerd:containerd iptables:iptables conntrack:conntrack socat:socat \
    ethtool:ethtool ebtables:ebtables; do
    PATH=$PATH:/usr/sbin:/sbin command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    apt_update
    apt_install "${need[@]}"
fi

missing=()
for tool in kubeadm kubelet kubectl; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -eq 0 ]; then
    have=$(kubeadm version -o short)
    echo "kubeadm, kubelet, kubectl: present ($have), skipping the install"
    if [ "$have" != "$version" ]; then
        echo "error: the image has kubeadm $have, not $version: run kubelab up with" \
            "--kubernetes-version $have, or use an image without Kubernetes packages" >&2
        exit 1
    fi
else
    echo "kubeadm, kubelet, kubectl $version: installing from $repo (missing: ${missing[*]})"
    apt_update
    apt_install apt-transport-https ca-certificates curl gpg
    install -d -m 0755 /etc/apt/keyrings
    curl -fsSL "${repo}Release.key" |
        gpg --dearmor --yes -o /etc/apt/keyrings/kubernetes-apt-keyring.gpg
    echo "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] $repo /" \
        >/etc/apt/sources.list.d/kubernetes.list
    apt_get update -q
    # The repository's package versions look like 1.34.2-1.1.
    pkg_version=$(apt-cache madison kubeadm | awk -v v="${version#v}-" 'index($3, v) == 1 { print $3; exit }')
    [ -n "$pkg_version" ] || { echo "$repo has no kubeadm $version" >&2; exit 1; }
    apt-mark unhold kubelet kubeadm kubectl >/dev/null 2>&1 || true
    apt_install "kubelet=$pkg_version" "kubeadm=$pkg_version" "kubectl=$pkg_version"
    apt-mark hold kubelet kubeadm kubectl
fi

# containerd: the systemd cgroup driver (kubeadm's default for the kubelet), kubeadm's
# own pause image as the sandbox image (containerd 1.6 defaults to an older one, which a
# node without a registry does not have), and registry hosts read from
# /etc/containerd/certs.d/<registry>/hosts.toml (where MIRROR goes).
pause=$(kubeadm config images list --kubernetes-version "$version" 2>/dev/null | grep '/pause:' || true)
[ -n "$pause" ] || { echo "error: kubeadm names no pause image for $version" >&2; exit 1; }
mkdir -p /etc/containerd
certs_d='config_path = "/etc/containerd/certs.d"'
if ! grep -q 'SystemdCgroup = true' /etc/containerd/config.toml 2>/dev/null ||
    ! grep -qF "sandbox_image = \"$pause\"" /etc/containerd/config.toml ||
    ! grep -qF "$certs_d" /etc/containerd/config.toml; then
    echo "containerd: systemd cgroup driver, sandbox image $pause, registry hosts in /etc/containerd/certs.d"
    containerd config default |
        sed -e 's/SystemdCgroup = false/SystemdCgroup = true/' \
            -e "s#sandbox_image = .*#sandbox_image = \"$pause\"#" \
            -e "s#config_path = \"\"#$certs_d#" >/etc/containerd/config.toml
    grep -qF "sandbox_image = \"$pause\"" /etc/containerd/config.toml ||
        { echo "error: containerd's config has no sandbox_image to set" >&2; exit 1; }
    grep -qF "$certs_d" /etc/containerd/config.toml ||
        { echo "error: containerd's config has no registry config_path to set" >&2; exit 1; }
    systemctl restart containerd
fi
if [ -n "$mirror" ]; then
    for registry in "$@"; do
        echo "registry $registry: through $mirror"
        install -d -m 0755 "/etc/containerd/certs.d/$registry"
        cat >"/etc/containerd/certs.d/$registry/hosts.toml" <<TOML
server = "https://$registry"

[host."$mirror"]
  capabilities = ["pull", "resolve"]
TOML
    done
fi
systemctl enable --now containerd
systemctl enable kubelet
echo "prereqs: done"
