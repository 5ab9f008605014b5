#!/usr/bin/env bash
# Builds kubelab's test image from Debian 12 (bookworm) packages only:
#   disk.qcow2  bootable disk (MBR + extlinux, one ext4 partition), compressed
#   live.iso    hybrid live ISO (isolinux + live-boot + squashfs) of the same system
#   vmlinuz, initrd.img  the disk image's kernel and initramfs (for direct-kernel probes)
#   packages.txt, BUILD_INFO, SHA256SUMS
# Both boot to systemd-networkd + cloud-init (NoCloud seed cdrom, label cidata)
# + sshd, without SSH host keys: the seed must provide them (cloud-init ssh_keys)
# or cloud-init generates them.
# For kubelab's kubeadm bootstrapper the image carries TEST-ONLY stand-ins for kubeadm,
# kubectl, the kubelet, containerd and the Kubernetes API (files/k8s-standin/; see
# standin.py): the real server binaries cannot be installed where the tests run.
# The `bare` variant has none of them and none of what kubeadm's preflight looks for, like
# a distribution's cloud image: kubelab's prereqs script installs it all with apt, from
# the test mirror that scripts/dev/apt-repo.sh builds and the e2e serves at
# $TEST_MIRROR_ADDR inside its namespace (the variant's only apt source).
#
# Usage: build.sh [OUT_DIR]   (root; OUT_DIR must be empty or missing)
# Env:   KUBELAB_TEST_IMAGE_NO_ISO=1 skips the live ISO;
#        KUBELAB_TEST_IMAGE_VARIANT=standard (default) | bare.
# Callers normally use ensure.sh, which caches the result.
set -euo pipefail

readonly SUITE=bookworm
readonly MIRROR=http://deb.debian.org/debian
readonly SECURITY_MIRROR=http://deb.debian.org/debian-security
readonly DISK_SIZE=3G
readonly PART_START_SECTOR=2048
# tsc: the HPET clock is slow under TCG. ipv6.disable: without it networkd
# keeps a statically addressed link "configuring" ~12 s waiting for IPv6 router
# advertisements that never come, and systemd-networkd-wait-online (hence
# cloud-init and sshd) waits for it; cloud-init cannot turn RA off for a
# static-only interface.
readonly CMDLINE="console=tty0 console=ttyS0,115200 tsc=reliable clocksource=tsc ipv6.disable=1"
readonly PACKAGES=(
    systemd systemd-sysv udev dbus
    openssh-server cloud-init cloud-guest-utils sudo
    iproute2 iputils-ping
    initramfs-tools zstd linux-image-amd64
    # The Kubernetes stand-ins sign certificates with openssl; kubelab's prereqs
    # script loads kernel modules with modprobe.
    openssl kmod
)
# What kubeadm's preflight looks for (the kubeadm stand-in checks them as kubeadm does);
# the bare variant leaves them to kubelab's prereqs script.
readonly PREFLIGHT_PACKAGES=(iptables conntrack socat ethtool ebtables)
readonly VARIANT=${KUBELAB_TEST_IMAGE_VARIANT:-standard}
# Where the e2e serves the test mirror (scripts/dev/apt-repo.sh): an address of the test
# namespace itself, reached by the VMs through their NAT network.
readonly TEST_MIRROR_ADDR=172.31.255.1:8098

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
files=$here/files
out=${1:-/tmp/kubelab-testimage}

log() { printf '[testimage %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

check_host() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, loop devices, chroot)"
    local tool missing=()
    for tool in debootstrap qemu-img sfdisk losetup mkfs.ext4 extlinux mksquashfs xorriso; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    local f
    for f in /usr/lib/syslinux/mbr/mbr.bin /usr/lib/ISOLINUX/isolinux.bin \
        /usr/lib/ISOLINUX/isohdpfx.bin /usr/lib/syslinux/modules/bios/ldlinux.c32; do
        [ -e "$f" ] || missing+=("$f")
    done
    [ ${#missing[@]} -eq 0 ] || die "missing: ${missing[*]} (apt-get install debootstrap qemu-utils fdisk extlinux syslinux-common isolinux squashfs-tools xorriso)"
}

work=""
loopdev=""
cleanup() {
    set +e
    if [ -n "$work" ]; then
        umount_chroot
        mountpoint -q "$work/mnt" && umount "$work/mnt"
        [ -n "$loopdev" ] && losetup -d "$loopdev"
        rm -rf "$work"
    fi
}

mount_chroot() {
    local root=$work/root
    mount -t proc proc "$root/proc"
    mount -t sysfs sysfs "$root/sys"
    mount --bind /dev "$root/dev"
    mount --bind /dev/pts "$root/dev/pts"
}

umount_chroot() {
    local root=$work/root d
    for d in dev/pts dev sys proc; do
        if mountpoint -q "$root/$d"; then umount "$root/$d"; fi
    done
}

in_root() { chroot "$work/root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }

apt_install() {
    in_root apt-get install -y -q --no-install-recommends \
        -o DPkg::Options::=--force-unsafe-io "$@" >&2
}

bootstrap() {
    local root=$work/root
    log "debootstrap $SUITE (minbase)"
    debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >&2
    # No daemon may start inside the chroot; removed again in finish_root.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"
    install -m 0644 "$files/dpkg-nodoc" "$root/etc/dpkg/dpkg.cfg.d/01-kubelab-nodoc"
    cat >"$root/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
    # The initramfs must hold the guest's drivers, not what the build host uses.
    mkdir -p "$root/etc/initramfs-tools/conf.d"
    printf 'MODULES=list\nCOMPRESS=zstd\n' >"$root/etc/initramfs-tools/conf.d/kubelab.conf"
    grep -v '^#' "$files/initramfs-modules" >>"$root/etc/initramfs-tools/modules"
    mount_chroot
    local packages=("${PACKAGES[@]}")
    if [ "$VARIANT" = standard ]; then packages+=("${PREFLIGHT_PACKAGES[@]}"); fi
    log "installing ${packages[*]}"
    in_root apt-get update -q >&2
    apt_install "${packages[@]}"
}

configure() {
    local root=$work/root
    install -m 0644 "$files/90-kubelab.cfg" "$root/etc/cloud/cloud.cfg.d/90-kubelab.cfg"
    in_root systemctl enable systemd-networkd.service >&2
    # Periodic jobs would compete for the CPU (and dpkg's lock) in test VMs.
    in_root systemctl disable apt-daily.timer apt-daily-upgrade.timer \
        dpkg-db-backup.timer e2scrub_all.timer fstrim.timer >&2
    # sshd must start after cloud-init wrote the host keys.
    # (Before=sshd.service reaches ssh.service through its sshd.service alias.)
    if ! grep -q '^Before=sshd.service' "$root/lib/systemd/system/cloud-init.service" ||
        [ "$(readlink "$root/etc/systemd/system/sshd.service")" != /lib/systemd/system/ssh.service ]; then
        die "cloud-init.service is not ordered before ssh.service"
    fi
    echo localhost >"$root/etc/hostname"
    printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
}

# TEST-ONLY Kubernetes stand-ins (files/k8s-standin/): installed where the real tools
# would be, so kubelab's scripts/node/00-prereqs.sh finds them and skips the install.
install_k8s_standins() {
    local root=$work/root src=$files/k8s-standin tool unit
    log "installing the Kubernetes stand-ins"
    install -d -m 0755 "$root/usr/local/lib/kubelab-standin"
    install -m 0644 "$src/standin.py" "$root/usr/local/lib/kubelab-standin/standin.py"
    for tool in kubeadm kubectl kubelet containerd crictl; do
        install -m 0755 "$src/$tool" "$root/usr/local/bin/$tool"
    done
    for unit in containerd.service kubelet.service kubelab-apiserver-standin.service; do
        install -m 0644 "$src/$unit" "$root/etc/systemd/system/$unit"
    done
    # kubeadm's images in the stand-in image store, as on a node image made with them
    # (digests made up from the names): kubeadm init's ImagePull finds them, offline.
    KUBELAB_STANDIN_ROOT=$root python3 - "$src" <<'PY'
import hashlib, sys
sys.path.insert(0, sys.argv[1])
import standin
standin.save_images({ref: "sha256:" + hashlib.sha256(ref.encode()).hexdigest()
                     for ref in standin.images(standin.VERSION)})
PY
}

trim_kernel() {
    local root=$work/root kver dir
    kver=$(basename "$(ls -d "$root"/lib/modules/*)")
    log "trimming modules of kernel $kver"
    while read -r dir; do
        case "$dir" in '' | '#'*) continue ;; esac
        # Globs in the list (drivers/scsi/*/) expand here on purpose.
        # shellcheck disable=SC2086
        rm -rf "$root/lib/modules/$kver/kernel/"$dir
    done <"$files/trim-modules"
    in_root depmod -a "$kver"
    in_root update-initramfs -u -k "$kver" >&2
    echo "$kver"
}

finish_root() {
    local root=$work/root
    in_root apt-get clean
    rm -f "$root"/etc/ssh/ssh_host_* "$root/usr/sbin/policy-rc.d"
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/lib/cloud/* "$root"/var/log/*.log \
        "$root"/var/cache/debconf/*-old "$root"/tmp/* "$root"/root/.bash_history
    # An empty machine-id makes systemd generate one at first boot, per VM.
    : >"$root/etc/machine-id"
    rm -f "$root/var/lib/dbus/machine-id"
}

build_disk() {
    local kver=$1 root=$work/root raw=$work/disk.raw mnt=$work/mnt uuid
    log "building disk.qcow2"
    uuid=$(cat /proc/sys/kernel/random/uuid)
    truncate -s "$DISK_SIZE" "$raw"
    printf 'label: dos\nstart=%s, type=83, bootable\n' "$PART_START_SECTOR" | sfdisk -q "$raw"
    loopdev=$(losetup --show -f -o $((PART_START_SECTOR * 512)) "$raw")
    # syslinux cannot read 64bit, metadata_csum_seed or orphan_file ext4.
    mkfs.ext4 -q -L root -U "$uuid" -O ^64bit,^metadata_csum_seed,^orphan_file "$loopdev"
    mkdir -p "$mnt"
    mount "$loopdev" "$mnt"
    umount_chroot
    cp -a "$root/." "$mnt/"
    printf 'UUID=%s / ext4 defaults,errors=remount-ro 0 1\n' "$uuid" >"$mnt/etc/fstab"
    mkdir -p "$mnt/boot/extlinux"
    cat >"$mnt/boot/extlinux/extlinux.conf" <<EOF
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  LINUX /boot/vmlinuz-$kver
  INITRD /boot/initrd.img-$kver
  APPEND root=UUID=$uuid ro $CMDLINE
EOF
    extlinux --install "$mnt/boot/extlinux" 2>&1 | grep -v '^/' >&2 || true
    [ -e "$mnt/boot/extlinux/ldlinux.sys" ] || die "extlinux did not install"
    umount "$mnt"
    e2fsck -fy "$loopdev" >/dev/null 2>&1 || [ $? -le 1 ] || die "e2fsck failed on the new filesystem"
    losetup -d "$loopdev"
    loopdev=""
    dd if=/usr/lib/syslinux/mbr/mbr.bin of="$raw" bs=440 count=1 conv=notrunc status=none
    qemu-img convert -c -O qcow2 "$raw" "$out/disk.qcow2"
    rm -f "$raw"
}

build_iso() {
    local kver=$1 root=$work/root iso=$work/iso
    log "building live.iso"
    mount_chroot
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"
    in_root apt-get update -q >&2
    # Its trigger rebuilds the initramfs with live-boot's scripts.
    apt_install live-boot
    finish_root
    umount_chroot
    # live-boot mounts the root itself.
    : >"$root/etc/fstab"
    mkdir -p "$iso/live" "$iso/isolinux"
    cp "$root/boot/vmlinuz-$kver" "$iso/live/vmlinuz"
    cp "$root/boot/initrd.img-$kver" "$iso/live/initrd.img"
    mksquashfs "$root" "$iso/live/filesystem.squashfs" -comp zstd -noappend -no-progress \
        -wildcards -e 'boot/*' >&2
    cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$iso/isolinux/"
    cat >"$iso/isolinux/isolinux.cfg" <<EOF
DEFAULT live
PROMPT 0
TIMEOUT 0
LABEL live
  KERNEL /live/vmlinuz
  INITRD /live/initrd.img
  APPEND boot=live $CMDLINE
EOF
    xorriso -as mkisofs -quiet -o "$out/live.iso" -V KUBELAB_LIVE -J -R \
        -isohybrid-mbr /usr/lib/ISOLINUX/isohdpfx.bin \
        -c isolinux/boot.cat -b isolinux/isolinux.bin \
        -no-emul-boot -boot-load-size 4 -boot-info-table "$iso" >&2
}

main() {
    check_host
    mkdir -p "$out"
    [ -z "$(ls -A "$out")" ] || die "output directory $out is not empty"
    local start kver
    start=$(date +%s)
    work=$(mktemp -d /tmp/kubelab-testimage-build.XXXXXX)
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    mkdir -p "$work/root"
    bootstrap
    configure
    case $VARIANT in
    standard) install_k8s_standins ;;
    bare) printf 'deb [trusted=yes] http://%s/debian ./\n' "$TEST_MIRROR_ADDR" >"$work/root/etc/apt/sources.list" ;;
    *) die "unknown variant $VARIANT (standard or bare)" ;;
    esac
    kver=$(trim_kernel)
    cp "$work/root/boot/vmlinuz-$kver" "$out/vmlinuz"
    cp "$work/root/boot/initrd.img-$kver" "$out/initrd.img"
    # shellcheck disable=SC2016 # dpkg-query's format, not shell
    in_root dpkg-query -W -f '${Package} ${Version}\n' >"$out/packages.txt"
    finish_root
    build_disk "$kver"
    if [ "${KUBELAB_TEST_IMAGE_NO_ISO:-0}" != 1 ] && [ "$VARIANT" = standard ]; then
        build_iso "$kver"
    fi
    cat >"$out/BUILD_INFO" <<EOF
suite=$SUITE
variant=$VARIANT
kernel=$kver
cmdline=$CMDLINE
built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
build_seconds=$(($(date +%s) - start))
EOF
    chmod 0644 "$out"/*
    (cd "$out" && sha256sum -- * >SHA256SUMS)
    log "done in $(($(date +%s) - start)) s: $(du -sh "$out"/* | tr '\t\n' ' ')"
}

main "$@"
