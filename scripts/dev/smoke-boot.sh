#!/usr/bin/env bash
# Smoke test of the test image and the namespace harness: boots the cached
# test image under libvirt with QEMU TCG inside a private network namespace,
# on an isolated libvirt network with a static address, and waits until SSH
# (strict host-key checking against a host key injected by cloud-init) works
# and cloud-init is done. Prints the timings. Cleans up on exit.
#
# Usage: scripts/dev/smoke-boot.sh   (root)
# Env:   SMOKE_VARIANT=disk|iso (default disk), SMOKE_VCPUS (2), SMOKE_MEMORY_MIB (1536),
#        SMOKE_BOOT_TIMEOUT seconds until SSH must answer (600),
#        SMOKE_GUEST_CMD a command run in the guest (output shown) before clean-up
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=SCRIPTDIR/netns-libvirt.sh
. "$here/netns-libvirt.sh"

variant=${SMOKE_VARIANT:-disk}
vcpus=${SMOKE_VCPUS:-2}
memory_mib=${SMOKE_MEMORY_MIB:-1536}
boot_timeout=${SMOKE_BOOT_TIMEOUT:-600}
netns=klsmoke$$
prefix=klsmoke$$-
vm=${prefix}vm
# QEMU runs as libvirt-qemu: everything it opens lives in a world-readable
# pool directory, never under /root or a 0700 temp dir. Both paths are inside the lab's
# private mount namespace (scripts/dev/netns-libvirt.sh).
pool_dir=/var/lib/libvirt/images/${prefix}pool
console_log=/var/log/libvirt/qemu/${vm}-console.log
host_ip=10.213.7.1 guest_ip=10.213.7.10 mac=52:54:00:6b:6c:0a

log() { printf '[smoke %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

keys=""
finish() {
    local rc=$?
    # The trap may run inside a command's 2>/dev/null: restore stderr.
    exec 2>&3
    if [ -n "$LAB_NETNS" ] && lab_exec test -f "$console_log" 2>/dev/null; then
        lab_exec cat "$console_log" >"/tmp/${vm}-console.log"
        log "serial console log: /tmp/${vm}-console.log"
    fi
    lab_netns_down "$netns" || rc=1
    [ -n "$keys" ] && rm -rf "$keys"
    exit "$rc"
}

write_seed() {
    local dir=$keys/seed
    mkdir -p "$dir"
    cat >"$dir/meta-data" <<EOF
instance-id: $vm
local-hostname: smoke
EOF
    cat >"$dir/network-config" <<EOF
version: 2
ethernets:
  lab0:
    match:
      macaddress: "$mac"
    addresses: [$guest_ip/24]
EOF
    cat >"$dir/user-data" <<EOF
#cloud-config
hostname: smoke
manage_etc_hosts: true
users:
  - name: lab
    shell: /bin/bash
    sudo: "ALL=(ALL) NOPASSWD:ALL"
    lock_passwd: true
    ssh_authorized_keys:
      - $(cat "$keys/user.pub")
ssh_keys:
  ed25519_private: |
$(sed 's/^/    /' "$keys/host")
  ed25519_public: $(cat "$keys/host.pub")
write_files:
  - path: /etc/ssh/sshd_config.d/10-kubelab.conf
    content: "PasswordAuthentication no\n"
cloud_init_modules: [write_files, set_hostname, update_hostname, update_etc_hosts, users_groups, ssh]
cloud_config_modules: []
cloud_final_modules: [final_message]
EOF
    lab_exec genisoimage -quiet -o "$pool_dir/seed.iso" -V cidata -J -R "$dir"
}

# disk_xml: the devices that differ between the disk and the live ISO variant.
disk_xml() {
    if [ "$variant" = iso ]; then
        cat <<EOF
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='$image_dir/live.iso'/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$pool_dir/data.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
EOF
    else
        cat <<EOF
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$pool_dir/root.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
EOF
    fi
}

domain_xml() {
    cat <<EOF
<domain type='qemu'>
  <name>$vm</name>
  <memory unit='MiB'>$memory_mib</memory>
  <vcpu>$vcpus</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <boot dev='$([ "$variant" = iso ] && echo cdrom || echo hd)'/>
  </os>
  <features><acpi/><apic/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <devices>
$(disk_xml)
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='$pool_dir/seed.iso'/>
      <target dev='hdd' bus='ide'/>
      <readonly/>
    </disk>
    <interface type='network'>
      <source network='${prefix}net'/>
      <mac address='$mac'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'>
      <log file='$console_log' append='off'/>
      <target port='0'/>
    </serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
  </devices>
</domain>
EOF
}

network_xml() {
    cat <<EOF
<network>
  <name>${prefix}net</name>
  <bridge name='klsm$$' stp='off'/>
  <dns enable='no'/>
  <ip address='$host_ip' prefix='24'/>
</network>
EOF
}

lab_ssh() {
    lab_exec ssh -q -i "$keys/user" -o BatchMode=yes -o ConnectTimeout=5 \
        -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$keys/known_hosts" \
        "lab@$guest_ip" "$@"
}

main() {
    [ "$(id -u)" -eq 0 ] || die "must run as root"
    local t0 t_define t_started t_ssh t_ci deadline
    image_dir=$("$repo/images/testimage/ensure.sh")
    log "image: $image_dir ($variant)"
    lab_netns_up "$netns"
    exec 3>&2
    trap finish EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    keys=$(mktemp -d /tmp/klsmoke-keys.XXXXXX)
    ssh-keygen -q -t ed25519 -N '' -C smoke-user -f "$keys/user"
    ssh-keygen -q -t ed25519 -N '' -C smoke-host -f "$keys/host"
    echo "$guest_ip $(cut -d' ' -f1,2 "$keys/host.pub")" >"$keys/known_hosts"

    lab_virsh pool-define-as "${prefix}pool" dir --target "$pool_dir" >/dev/null
    lab_virsh pool-build "${prefix}pool" >/dev/null
    lab_virsh pool-start "${prefix}pool" >/dev/null
    lab_exec chmod 0755 "$pool_dir"
    if [ "$variant" = iso ]; then
        lab_exec qemu-img create -q -f qcow2 "$pool_dir/data.qcow2" 4G
    else
        lab_exec qemu-img create -q -f qcow2 -F qcow2 -b "$image_dir/disk.qcow2" "$pool_dir/root.qcow2"
    fi
    write_seed

    network_xml >"$keys/net.xml"
    lab_virsh net-define "$keys/net.xml" >/dev/null
    lab_virsh net-start "${prefix}net" >/dev/null
    domain_xml >"$keys/domain.xml"
    t0=$SECONDS
    lab_virsh define "$keys/domain.xml" >/dev/null
    t_define=$((SECONDS - t0))
    t0=$SECONDS
    lab_virsh start "$vm" >/dev/null
    t_started=$((SECONDS - t0))
    log "virsh define took ${t_define}s, virsh start ${t_started}s"

    deadline=$((t0 + boot_timeout))
    until lab_ssh true 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || die "no SSH within ${boot_timeout}s (see the console log)"
        [ "$(lab_virsh domstate "$vm")" = running ] || die "domain $vm is $(lab_virsh domstate "$vm")"
        sleep 2
    done
    t_ssh=$((SECONDS - t0))
    log "SSH ready ${t_ssh}s after virsh start"
    lab_ssh cloud-init status --wait >/dev/null || die "cloud-init reported an error"
    t_ci=$((SECONDS - t0))
    [ "$(lab_ssh sudo -n hostname)" = smoke ] || die "hostname or sudo not set up"
    log "cloud-init done ${t_ci}s after virsh start"
    if [ -n "${SMOKE_GUEST_CMD:-}" ]; then lab_ssh "$SMOKE_GUEST_CMD" >&2 || log "guest command failed"; fi
    printf 'variant=%s libvirtd_ready=%ss define=%ss start=%ss ssh=%ss cloud_init=%ss\n' \
        "$variant" "$LAB_READY_SECONDS" "$t_define" "$t_started" "$t_ssh" "$t_ci"
}

main "$@"
