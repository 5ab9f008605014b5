# shellcheck shell=bash
# Test harness: a private network namespace with its own virtlogd + libvirtd,
# so every VM, bridge, DHCP server and SSH connection of a test stays inside it.
# Sourced by the e2e and smoke scripts (which set `set -euo pipefail`).
#
#   lab_netns_up NAME       create namespace NAME, start the daemons in it
#   lab_exec CMD...         run CMD inside the namespace
#   lab_virsh ARGS...       virsh -c qemu:///system inside the namespace
#   lab_cleanup_on_exit NAME PREFIX
#                           run lab_netns_down on exit, failure or interrupt
#   lab_netns_down NAME PREFIX
#                           remove the domains, networks and pools whose names
#                           start with PREFIX, stop the daemons, delete NAME
#   lab_remove_objects PREFIX
#                           only the removal part of lab_netns_down
#
# Only one libvirtd can run on a machine (instances in different namespaces
# share /etc/libvirt, /run/libvirt and the control socket), so lab_netns_up
# refuses to start when any libvirtd or virtlogd already runs.

LAB_NETNS=""
# This file's directory (for reaper.py), fixed when the file is sourced.
LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB_STATE_DIR=""
LAB_URI=qemu:///system
# Seconds lab_netns_up waits for libvirtd to answer; the first answer after a
# QEMU upgrade includes probing QEMU's capabilities.
LAB_START_TIMEOUT=${LAB_START_TIMEOUT:-240}
# Seconds, measured by lab_netns_up: daemon start until `virsh version` answered.
LAB_READY_SECONDS=""

lab_log() { printf '[lab %s] %s\n' "$(date +%T)" "$*" >&2; }

lab_exec() { ip netns exec "$LAB_NETNS" "$@"; }

lab_virsh() { lab_exec virsh -q -c "$LAB_URI" "$@"; }

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

lab_netns_up() {
    local name=$1 pid deadline started
    if pgrep -x libvirtd >/dev/null || pgrep -x virtlogd >/dev/null; then
        lab_log "refusing: libvirtd or virtlogd already runs (pids: $(pgrep -x libvirtd) $(pgrep -x virtlogd))," \
            "and only one libvirtd can run per machine"
        return 1
    fi
    if ip netns list | grep -qw -- "$name"; then
        lab_log "refusing: network namespace $name already exists"
        return 1
    fi
    LAB_NETNS=$name
    LAB_STATE_DIR=/run/kubelab-lab/$name
    mkdir -p "$LAB_STATE_DIR"
    ip netns add "$name"
    lab_exec ip link set lo up
    # libvirt judges KVM unusable when /dev/kvm is not group kvm, then drops
    # its capability cache and re-probes QEMU on every call.
    if [ -e /dev/kvm ]; then chgrp kvm /dev/kvm; fi
    # Debian's package creates it; libvirt needs it for every network's dnsmasq files.
    mkdir -p /var/lib/libvirt/dnsmasq
    started=$SECONDS
    lab_exec virtlogd -d -p "$LAB_STATE_DIR/virtlogd.pid"
    # Under a subreaper, as under a real init: exited QEMUs are reaped at once (reaper.py).
    lab_exec "$LAB_DIR/reaper.py" libvirtd -d -p "$LAB_STATE_DIR/libvirtd.pid" &
    deadline=$((SECONDS + LAB_START_TIMEOUT))
    until lab_exec virsh -c "$LAB_URI" version >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            lab_log "libvirtd did not answer within ${LAB_START_TIMEOUT}s"
            lab_teardown "$name"
            return 1
        fi
        sleep 0.2
    done
    LAB_READY_SECONDS=$((SECONDS - started))
    for pid in virtlogd libvirtd; do
        if [ ! -s "$LAB_STATE_DIR/$pid.pid" ]; then
            lab_log "$pid wrote no pid file"
            lab_teardown "$name"
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

lab_remove_objects() {
    local prefix=$1 n v
    for n in $(lab_names list "$prefix"); do
        lab_virsh destroy "$n" >/dev/null 2>&1 || true
        lab_virsh undefine --nvram "$n" >/dev/null 2>&1 ||
            lab_virsh undefine "$n" >/dev/null || lab_log "could not undefine domain $n"
    done
    for n in $(lab_names net-list "$prefix"); do
        lab_virsh net-destroy "$n" >/dev/null 2>&1 || true
        lab_virsh net-undefine "$n" >/dev/null || lab_log "could not undefine network $n"
    done
    for n in $(lab_names pool-list "$prefix"); do
        lab_virsh pool-refresh "$n" >/dev/null 2>&1 || true
        for v in $(lab_virsh vol-list "$n" 2>/dev/null | awk '{print $1}'); do
            lab_virsh vol-delete --pool "$n" "$v" >/dev/null || lab_log "could not delete volume $v"
        done
        lab_virsh pool-destroy "$n" >/dev/null 2>&1 || true
        lab_virsh pool-delete "$n" >/dev/null 2>&1 || lab_log "could not delete pool $n's directory"
        lab_virsh pool-undefine "$n" >/dev/null || lab_log "could not undefine pool $n"
    done
}

lab_netns_down() {
    local name=$1 prefix=$2
    [ -n "$prefix" ] || { lab_log "lab_netns_down needs a name prefix"; return 1; }
    LAB_NETNS=$name
    LAB_STATE_DIR=/run/kubelab-lab/$name
    if [ -s "$LAB_STATE_DIR/libvirtd.pid" ] && kill -0 "$(cat "$LAB_STATE_DIR/libvirtd.pid")" 2>/dev/null; then
        lab_remove_objects "$prefix"
    fi
    lab_teardown "$name"
}

# lab_teardown NAME: stops the daemons by PID and deletes the namespace.
lab_teardown() {
    local name=$1 pidfile pid
    LAB_STATE_DIR=/run/kubelab-lab/$name
    for pid in libvirtd virtlogd; do
        pidfile=$LAB_STATE_DIR/$pid.pid
        if [ -s "$pidfile" ]; then lab_stop_pid "$(cat "$pidfile")" "$pid"; fi
        rm -f "$pidfile"
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
    rmdir "$LAB_STATE_DIR" 2>/dev/null || true
    lab_log "namespace $name removed"
}

# lab_cleanup_on_exit NAME PREFIX: tears the lab down when the script exits,
# including after an error (set -e) or SIGINT/SIGTERM.
lab_cleanup_on_exit() {
    # A trap runs inside the redirections of the interrupted command (often
    # 2>/dev/null): log to the stderr of this moment instead.
    exec {LAB_STDERR_FD}>&2
    # Expanded now on purpose: the trap must remember these names.
    # shellcheck disable=SC2064
    trap "exec 2>&$LAB_STDERR_FD; lab_netns_down '$1' '$2'" EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
