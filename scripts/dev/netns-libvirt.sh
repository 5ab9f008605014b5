# shellcheck shell=bash
# Test harness: a private network namespace and a private mount namespace with their own
# virtlogd + libvirtd, so every VM, bridge, DHCP server and SSH connection of a test stays
# inside them, and the test's libvirtd never sees a host libvirt object.
# Sourced by the e2e, smoke and bench scripts (which set `set -euo pipefail`).
#
#   lab_netns_up NAME       create network namespace NAME and a persistent mount namespace
#                           whose /etc/libvirt, /var/lib/libvirt, /var/log/libvirt,
#                           /var/cache/libvirt and /run/libvirt are private directories;
#                           start the daemons in them
#   lab_exec CMD...         run CMD inside both namespaces (LAB_EXEC is the same prefix as
#                           an array, for `"${LAB_EXEC[@]}" cmd &` whose $! is cmd itself)
#   lab_virsh ARGS...       virsh -c qemu:///system inside them
#   lab_cleanup_on_exit NAME
#                           run lab_netns_down on exit, failure or interrupt
#   lab_netns_down NAME     stop the daemons and what runs in the namespace (by PID),
#                           delete both namespaces and the private directories
#
# The host's libvirt (its config, objects, socket, running daemon if any) is never read,
# changed or stopped: the private directories start with the host's *.conf files only
# (no domain, network, pool or secret definitions). /dev/kvm is left as it is.

LAB_NETNS=""
# This file's directory (for reaper.py), fixed when the file is sourced.
LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Per-namespace state: pid files, the mount namespace file, /run/libvirt (tmpfs).
LAB_STATE_DIR=""
# Per-namespace disk-backed state: /var/lib/libvirt (VM disks), /var/log/libvirt.
LAB_DATA_DIR=""
LAB_URI=qemu:///system
LAB_EXEC=()
# libvirt's QEMU capability cache, kept between runs (the first probe of a QEMU takes a
# minute or two): the harness's own, never the host's /var/cache/libvirt.
LAB_CAPS_CACHE=${LAB_CAPS_CACHE:-/var/cache/kubelab/lab-libvirt-cache}
# Seconds lab_netns_up waits for libvirtd to answer; the first answer after a
# QEMU upgrade includes probing QEMU's capabilities.
LAB_START_TIMEOUT=${LAB_START_TIMEOUT:-240}
# Seconds, measured by lab_netns_up: daemon start until `virsh version` answered.
LAB_READY_SECONDS=""
# The libvirt directories the private mount namespace replaces.
LAB_PRIVATE_PATHS=(/etc/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt /run/libvirt)

lab_log() { printf '[lab %s] %s\n' "$(date +%T)" "$*" >&2; }

lab_exec() { "${LAB_EXEC[@]}" "$@"; }

lab_virsh() { lab_exec virsh -q -c "$LAB_URI" "$@"; }

# lab_dirs NAME: sets the state paths of namespace NAME.
lab_dirs() {
    LAB_NETNS=$1
    LAB_STATE_DIR=/run/kubelab-lab/$1
    LAB_DATA_DIR=/var/tmp/kubelab-lab/$1
    LAB_EXEC=(nsenter "--mount=$LAB_STATE_DIR/mnt" ip netns exec "$1")
}

# lab_wait_gone PID SECONDS: polls until PID has exited; fails after SECONDS.
lab_wait_gone() {
    local pid=$1 deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# lab_stop_pid PID NAME: TERM, then KILL if it does not exit within 20 s.
lab_stop_pid() {
    local pid=$1 what=$2
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid"
    if ! lab_wait_gone "$pid" 20; then
        lab_log "$what ($pid) ignored TERM: killing"
        kill -KILL "$pid" 2>/dev/null || true
        lab_wait_gone "$pid" 5 || lab_log "$what ($pid) still alive"
    fi
}

# lab_private_mounts: the persistent mount namespace with private libvirt directories.
lab_private_mounts() {
    local p dir
    mkdir -p "$LAB_STATE_DIR" "$LAB_DATA_DIR" "$LAB_CAPS_CACHE"
    # A namespace file can only be bound on a private mount.
    mount --bind "$LAB_STATE_DIR" "$LAB_STATE_DIR"
    mount --make-private "$LAB_STATE_DIR"
    mkdir -p "$LAB_STATE_DIR/run" "$LAB_DATA_DIR/etc" "$LAB_DATA_DIR/lib/dnsmasq" \
        "$LAB_DATA_DIR/lib/images" "$LAB_DATA_DIR/log/qemu"
    # The host's daemon settings, none of its objects.
    find /etc/libvirt -maxdepth 1 -type f -name '*.conf' -exec cp -p {} "$LAB_DATA_DIR/etc/" \;
    chmod 0755 "$LAB_DATA_DIR" "$LAB_DATA_DIR/lib" "$LAB_DATA_DIR/lib/images"
    for p in "${LAB_PRIVATE_PATHS[@]}"; do mkdir -p "$p"; done
    touch "$LAB_STATE_DIR/mnt"
    unshare "--mount=$LAB_STATE_DIR/mnt" --propagation private true
    lab_kvm_group_view
    for p in "${LAB_PRIVATE_PATHS[@]}"; do
        case $p in
        /etc/libvirt) dir=$LAB_DATA_DIR/etc ;;
        /var/lib/libvirt) dir=$LAB_DATA_DIR/lib ;;
        /var/log/libvirt) dir=$LAB_DATA_DIR/log ;;
        /var/cache/libvirt) dir=$LAB_CAPS_CACHE ;;
        /run/libvirt) dir=$LAB_STATE_DIR/run ;;
        esac
        nsenter "--mount=$LAB_STATE_DIR/mnt" mount --bind "$dir" "$p"
    done
}

# lab_kvm_group_view: where /dev/kvm's group is not kvm (a host finding, reported, never
# changed), libvirt's QEMU user cannot open it, libvirt judges KVM unusable while QEMU's
# own probe says it works, and re-probes QEMU on every call (minutes per `up`). Inside the
# lab's mount namespace only, /etc/group is a copy in which that user is also a member of
# /dev/kvm's group, as on a host set up correctly. The host's files stay as they are.
lab_kvm_group_view() {
    local gid
    [ -e /dev/kvm ] && [ "$(stat -c %G /dev/kvm)" != kvm ] || return 0
    gid=$(stat -c %g /dev/kvm)
    lab_log "finding: /dev/kvm belongs to group $(stat -c %G /dev/kvm), not kvm; the lab's" \
        "private /etc/group adds libvirt-qemu to it (the host's business: chgrp kvm /dev/kvm)"
    awk -F: -v OFS=: -v gid="$gid" '$3 == gid && $4 !~ /(^|,)libvirt-qemu(,|$)/ {
        $4 = ($4 == "") ? "libvirt-qemu" : $4 ",libvirt-qemu" } { print }' /etc/group >"$LAB_DATA_DIR/group"
    chmod 0644 "$LAB_DATA_DIR/group"
    nsenter "--mount=$LAB_STATE_DIR/mnt" mount --bind "$LAB_DATA_DIR/group" /etc/group
}

lab_netns_up() {
    local name=$1 pid deadline started
    lab_dirs "$name"
    if ip netns list | grep -qw -- "$name" || [ -e "$LAB_STATE_DIR" ]; then
        lab_log "refusing: namespace $name already exists (remove it with lab_netns_down $name)"
        return 1
    fi
    ip netns add "$name"
    ip netns exec "$name" ip link set lo up
    lab_private_mounts
    started=$SECONDS
    lab_exec virtlogd -d -p "$LAB_STATE_DIR/virtlogd.pid"
    # Under a subreaper, as under a real init: exited QEMUs are reaped at once (reaper.py).
    lab_exec "$LAB_DIR/reaper.py" libvirtd -d -p "$LAB_STATE_DIR/libvirtd.pid" &
    deadline=$((SECONDS + LAB_START_TIMEOUT))
    until lab_exec virsh -c "$LAB_URI" version >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            lab_log "libvirtd did not answer within ${LAB_START_TIMEOUT}s"
            lab_netns_down "$name"
            return 1
        fi
        sleep 0.2
    done
    LAB_READY_SECONDS=$((SECONDS - started))
    for pid in virtlogd libvirtd; do
        if [ ! -s "$LAB_STATE_DIR/$pid.pid" ]; then
            lab_log "$pid wrote no pid file"
            lab_netns_down "$name"
            return 1
        fi
    done
    lab_log "libvirtd $(cat "$LAB_STATE_DIR/libvirtd.pid") answers in namespace $name after ${LAB_READY_SECONDS}s"
}

# lab_names KIND PREFIX: names of libvirt objects of KIND (list|net-list|
# pool-list) starting with PREFIX.
lab_names() {
    local kind=$1 prefix=$2
    lab_virsh "$kind" --all --name 2>/dev/null | while read -r n; do
        case "$n" in "$prefix"*) echo "$n" ;; esac
    done
}

# lab_netns_down NAME: the private libvirtd holds only this test's objects, so nothing is
# undefined one by one: the domains are stopped with their daemon, the namespaces and the
# private directories deleted.
lab_netns_down() {
    local name=$1 pidfile pid p
    lab_dirs "$name"
    if [ -e "$LAB_STATE_DIR/mnt" ] && [ -s "$LAB_STATE_DIR/libvirtd.pid" ] &&
        kill -0 "$(cat "$LAB_STATE_DIR/libvirtd.pid")" 2>/dev/null; then
        for p in $(lab_virsh list --name 2>/dev/null); do lab_virsh destroy "$p" >/dev/null 2>&1 || true; done
    fi
    for pid in libvirtd virtlogd; do
        pidfile=$LAB_STATE_DIR/$pid.pid
        if [ -s "$pidfile" ]; then lab_stop_pid "$(cat "$pidfile")" "$pid"; fi
    done
    if ip netns list | grep -qw -- "$name"; then
        # Whatever still runs in the namespace was started by this test
        # (QEMU or dnsmasq left behind by a killed libvirtd).
        for pid in $(ip netns pids "$name"); do
            lab_log "stopping leftover process $pid ($(cat "/proc/$pid/comm" 2>/dev/null))"
            lab_stop_pid "$pid" leftover
        done
        ip netns delete "$name"
    fi
    if [ -e "$LAB_STATE_DIR/mnt" ]; then
        umount "$LAB_STATE_DIR/mnt" 2>/dev/null || true
    fi
    if mountpoint -q "$LAB_STATE_DIR" 2>/dev/null; then umount "$LAB_STATE_DIR"; fi
    rm -rf "$LAB_STATE_DIR" "$LAB_DATA_DIR"
    lab_log "namespace $name removed"
}

# lab_cleanup_on_exit NAME: tears the lab down when the script exits,
# including after an error (set -e) or SIGINT/SIGTERM.
lab_cleanup_on_exit() {
    # A trap runs inside the redirections of the interrupted command (often
    # 2>/dev/null): log to the stderr of this moment instead.
    exec {LAB_STDERR_FD}>&2
    # Expanded now on purpose: the trap must remember this name.
    # shellcheck disable=SC2064
    trap "exec 2>&$LAB_STDERR_FD; lab_netns_down '$1'" EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
