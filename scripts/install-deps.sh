#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages kubelab needs, converging from any starting package
# set (the machine image's included), then checks that every command it promises is there.
#   scripts/install-deps.sh          build + run (libvirt, QEMU, qemu-img, dnsmasq)
#   scripts/install-deps.sh --test   also what the test suite uses (sshd, xorriso, debootstrap,
#                                    kubectl, and dpkg-dev/apt-utils/gpg for the test mirror)
#
# Why a loop: one apt call can remove what an earlier plan counted as present (bookworm's
# qemu-system-x86 removes a backported qemu-utils: shared/ENVIRONMENT.md), so the plan is
# made again after every apt call. All of QEMU's packages are kept at one origin: the
# newest version the configured archives offer, downgrading a stray one if needed.
# A second run with nothing to do makes no apt call at all.
set -euo pipefail

# command -> the Debian package that provides it.
declare -A run_cmds=(
    [qemu-img]=qemu-utils [qemu-system-x86_64]=qemu-system-x86 [virsh]=libvirt-clients
    [libvirtd]=libvirt-daemon-system [virtlogd]=libvirt-daemon-system [dnsmasq]=dnsmasq-base
    [pkg-config]=pkg-config [cc]=gcc [curl]=curl
)
declare -A test_cmds=(
    [sshd]=openssh-server [ssh]=openssh-client [ssh-keygen]=openssh-client [xorriso]=xorriso
    [isoinfo]=genisoimage [debootstrap]=debootstrap [ip]=iproute2 [python3]=python3
    [sfdisk]=fdisk [mksquashfs]=squashfs-tools [extlinux]=extlinux [mkfs.ext4]=e2fsprogs
    [mkfs.vfat]=dosfstools [blkid]=util-linux [unshare]=util-linux [kubectl]=kubernetes-client
    [dpkg-scanpackages]=dpkg-dev [apt-ftparchive]=apt-utils [gpg]=gpg [iptables]=iptables
    [nsenter]=util-linux [mountpoint]=util-linux [ps]=procps [virt-ssh-helper]=libvirt-daemon
)
# Packages that provide no command but files the build or the image recipe needs.
run_pkgs=(libvirt-dev libssl-dev ca-certificates)
test_pkgs=(syslinux-common isolinux)
# QEMU's packages: kept at one version origin.
qemu_source=qemu

declare -A cmds
for c in "${!run_cmds[@]}"; do cmds[$c]=${run_cmds[$c]}; done
pkgs=("${run_pkgs[@]}")
if [[ "${1:-}" == "--test" ]]; then
    for c in "${!test_cmds[@]}"; do cmds[$c]=${test_cmds[$c]}; done
    pkgs+=("${test_pkgs[@]}")
fi

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive

log() { echo "install-deps: $*" >&2; }

# has CMD: CMD is on PATH (sbin included: libvirtd, sshd).
has() { PATH=$PATH:/usr/sbin:/sbin command -v "$1" >/dev/null; }

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# archive_version PKG: the newest version of PKG the configured archives offer (not the
# dpkg status file), empty when none does.
archive_version() { apt-cache madison "$1" 2>/dev/null | awk -F'|' 'NR==1 {gsub(/ /, "", $2); print $2}'; }

# plan: prints the apt arguments still needed, one a line; nothing when converged.
plan() {
    local c p pkg ver
    declare -A want=()
    for c in "${!cmds[@]}"; do has "$c" || want[${cmds[$c]}]=1; done
    for p in "${pkgs[@]}"; do installed "$p" || want[$p]=1; done
    # QEMU at one origin: every installed or wanted QEMU package at the archive's version.
    if ! installed qemu-system-x86; then want[qemu-system-x86]=1; fi
    while read -r pkg src ver; do
        [[ "$src" == "$qemu_source" ]] || continue
        [[ "$(archive_version "$pkg")" == "$ver" ]] || want[$pkg]=1
    done < <(dpkg-query -W -f='${db:Status-Abbrev} ${Package} ${source:Package} ${Version}\n' 2>/dev/null |
        awk '$1 == "ii" {print $2, $3, $4}')
    for pkg in "${!want[@]}"; do
        if [[ "$(apt-cache show "$pkg" 2>/dev/null | awk '/^Source:/ {print $2; exit}')" == "$qemu_source"* ]] ||
            [[ "$pkg" == qemu-* ]]; then
            ver=$(archive_version "$pkg")
            if [[ -n "$ver" ]]; then echo "$pkg=$ver"; continue; fi
        fi
        echo "$pkg"
    done | sort
}

updated=""
for round in 1 2 3 4; do
    todo=$(plan)
    [[ -n "$todo" ]] || break
    if [[ -z "$updated" ]]; then
        "${sudo_cmd[@]}" apt-get update -qq
        updated=1
        todo=$(plan)
        [[ -n "$todo" ]] || break
    fi
    log "round $round: installing $(echo "$todo" | tr '\n' ' ')"
    # shellcheck disable=SC2086 # one package a word
    "${sudo_cmd[@]}" apt-get install -y -qq --allow-downgrades $todo >&2
done

# The promise: every command present, every package installed, QEMU at one origin.
missing=()
for c in "${!cmds[@]}"; do has "$c" || missing+=("$c (package ${cmds[$c]})"); done
for p in "${pkgs[@]}"; do installed "$p" || missing+=("package $p"); done
left=$(plan)
if [[ ${#missing[@]} -gt 0 || -n "$left" ]]; then
    log "failed: still missing after installing:"
    for m in "${missing[@]}"; do log "  $m"; done
    [[ -z "$left" ]] || log "  not converged: $(echo "$left" | tr '\n' ' ')"
    exit 1
fi
if ! pkg-config --exists libvirt; then
    log "failed: pkg-config finds no libvirt (package libvirt-dev)"
    exit 1
fi
if ! command -v cargo >/dev/null; then
    log "failed: cargo not found; install Rust 1.89 or newer (https://rustup.rs)"
    exit 1
fi
log "ok: $(qemu-img --version | head -1); $(PATH=$PATH:/usr/sbin virsh --version 2>/dev/null | sed 's/^/libvirt /')"
