#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages kubelab needs to build, run and test, skipping apt
# entirely when everything is present (so repeated runs cost nothing).
#   scripts/install-deps.sh          build + run (libvirt, QEMU, qemu-img)
#   scripts/install-deps.sh --test   also what the test suite uses (sshd, xorriso, debootstrap)
set -euo pipefail

# qemu-system-x86 goes first and alone: installing it in one call with the rest once
# failed on a held-package conflict (shared/ENVIRONMENT.md).
first=(qemu-system-x86)
run=(qemu-utils libvirt-daemon-system libvirt-clients libvirt-dev dnsmasq-base pkg-config
     libssl-dev gcc curl ca-certificates)
test=(openssh-server openssh-client xorriso genisoimage debootstrap iproute2 python3 fdisk
      squashfs-tools syslinux-common isolinux extlinux e2fsprogs dosfstools)

want=("${run[@]}")
if [[ "${1:-}" == "--test" ]]; then want+=("${test[@]}"); fi

missing() {
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || echo "$pkg"
    done
}

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi

need_first=$(missing "${first[@]}")
need_rest=$(missing "${want[@]}")
if [[ -n "$need_first$need_rest" ]]; then
    echo "installing: $need_first $need_rest" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    if [[ -n "$need_first" ]]; then
        # shellcheck disable=SC2086 # word splitting of the package list is intended
        "${sudo_cmd[@]}" apt-get install -y -qq $need_first
    fi
    if [[ -n "$need_rest" ]]; then
        # shellcheck disable=SC2086
        "${sudo_cmd[@]}" apt-get install -y -qq $need_rest
    fi
fi

# A real kubectl for the kubeconfig tests (Debian's kubernetes-client), unless one is there.
if [[ "${1:-}" == "--test" ]] && ! command -v kubectl >/dev/null; then
    "${sudo_cmd[@]}" apt-get install -y -qq kubernetes-client
fi

if ! command -v cargo >/dev/null; then
    echo "error: cargo not found; install Rust 1.89 or newer (https://rustup.rs)" >&2
    exit 1
fi
