# shellcheck shell=bash
# Test harness for a remote libvirt host (issue 15): the lab namespace made by
# netns-libvirt.sh becomes a "server" running libvirtd and an sshd, and a second network
# namespace, the "client", is joined to it by one veth. The client reaches the server only
# by SSH: it has no default route and no route to the server's libvirt networks.
# Sourced after netns-libvirt.sh by scripts that set `set -euo pipefail`.
#
#   lab_remote_up SERVER_NS CLIENT_NS DIR
#                           SERVER_NS made by lab_netns_up, DIR an absolute path that does
#                           not exist yet; creates CLIENT_NS, the veth
#                           (server 10.254.9.1/30, client 10.254.9.2/30), keys and an
#                           sshd_config in DIR, starts sshd in the server's namespaces and
#                           a persistent mount namespace for the client in which ~root/.ssh
#                           is DIR/client-ssh (the client key, the server's host key in
#                           known_hosts): bound over /root/.ssh, or where the host has
#                           none (or LAB_REMOTE_HOME_VIA_PASSWD is set) through a private
#                           /etc/passwd whose root home is DIR/client-home. Sets
#                           LAB_CLIENT_EXEC, LAB_REMOTE_HOST, LAB_REMOTE_URI; leaves LAB_EXEC
#                           and the other lab_dirs globals pointing at SERVER_NS.
#   lab_client_exec CMD...  run CMD inside the client's namespaces (LAB_CLIENT_EXEC is the
#                           same prefix as an array, for `"${LAB_CLIENT_EXEC[@]}" cmd &`)
#   lab_remote_rekey DIR    restart sshd with a new host key (the client's known_hosts keeps
#                           the old one: "host key changed")
#   lab_remote_restore_key DIR
#                           restart sshd with the original host key
#   lab_remote_down SERVER_NS CLIENT_NS DIR
#                           stop sshd and what it started (by PID), delete CLIENT_NS (and
#                           so the veth), its mount namespace and DIR; idempotent, safe on
#                           a partial setup (for cleanup traps)
#
# The host's /root/.ssh, /etc/passwd, /etc/ssh and /run/sshd are never changed: sshd runs
# in a mount namespace nested in the server's whose /run is a tmpfs holding only its
# privilege separation directory /run/sshd and the lab's private /run/libvirt; the client's
# key and known host are ~root/.ssh only inside the client's mount namespace.

LAB_REMOTE_HOST=10.254.9.1
LAB_REMOTE_CLIENT_ADDR=10.254.9.2
LAB_REMOTE_URI=qemu+ssh://root@$LAB_REMOTE_HOST/system
LAB_REMOTE_VETH_SERVER=klr-srv
LAB_REMOTE_VETH_CLIENT=klr-cli
# Seconds to wait for sshd to answer.
LAB_REMOTE_TIMEOUT=${LAB_REMOTE_TIMEOUT:-20}
LAB_CLIENT_STATE_DIR=""
LAB_CLIENT_EXEC=()

lab_client_exec() { "${LAB_CLIENT_EXEC[@]}" "$@"; }

# lab_remote_netns_exists NAME: network namespace NAME exists (the exact name).
# awk reads all of the list: no early exit, no SIGPIPE for ip under pipefail.
lab_remote_netns_exists() { ip netns list | awk -v n="$1" '$1 == n { found = 1 } END { exit !found }'; }

# lab_remote_client_dirs CLIENT_NS: the client's state paths (its mount namespace file).
lab_remote_client_dirs() {
    LAB_CLIENT_STATE_DIR=/run/kubelab-lab/$1
    LAB_CLIENT_EXEC=(nsenter "--mount=$LAB_CLIENT_STATE_DIR/mnt" ip netns exec "$1")
}

# lab_remote_server_exec SERVER_NS: prints nothing, sets LAB_REMOTE_SERVER_EXEC to the
# server's LAB_EXEC prefix without touching LAB_EXEC and the other lab_dirs globals.
lab_remote_server_exec() {
    LAB_REMOTE_SERVER_EXEC=(nsenter "--mount=/run/kubelab-lab/$1/mnt" ip netns exec "$1")
}

# lab_remote_descendants PID: the PIDs of PID's descendants, children first.
lab_remote_descendants() {
    local c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        echo "$c"
        lab_remote_descendants "$c"
    done
}

# lab_remote_sshd_stop DIR: stops the sshd lab_remote_sshd_start started, and the
# sessions it started (by PID, recorded in DIR/sshd.lab-pid).
lab_remote_sshd_stop() {
    local dir=$1 pid kids k
    [ -s "$dir/sshd.lab-pid" ] || return 0
    pid=$(cat "$dir/sshd.lab-pid")
    if ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$dir/sshd.lab-pid"
        return 0
    fi
    # Still ours (not a reused PID): sshd, or a step of its launch, whose arguments name
    # the config.
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != sshd ] &&
        ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/sshd_config"; then
        lab_log "process $pid is not the lab's sshd any more: left alone"
        rm -f "$dir/sshd.lab-pid"
        return 0
    fi
    kids=$(lab_remote_descendants "$pid")
    lab_log "stopping sshd $pid and its sessions (${kids//$'\n'/ })"
    lab_stop_pid "$pid" sshd
    # A session may end by itself meanwhile.
    for k in $kids; do lab_stop_pid "$k" "sshd session" || true; done
    if kill -0 "$pid" 2>/dev/null; then
        lab_log "sshd ($pid) did not exit"
        return 1
    fi
    rm -f "$dir/sshd.lab-pid"
}

# lab_remote_sshd_start DIR: starts sshd with DIR/sshd_config in the server's namespaces
# and waits until its banner answers from the client.
lab_remote_sshd_start() {
    local dir=$1 server pid deadline
    server=$(cat "$dir/server-ns")
    lab_remote_server_exec "$server"
    mkdir -p "$dir/hold-libvirt"
    # Debian's sshd insists on /run/sshd (its privilege separation chroot). Rather than
    # create it in the host's /run, sshd gets a mount namespace of its own (nested in the
    # server's, so it and its sessions use the lab's private libvirtd) whose /run is a tmpfs
    # with /run/sshd and the lab's /run/libvirt. Every step execs: $! is sshd itself.
    # shellcheck disable=SC2016 # expanded by the inner bash
    "${LAB_REMOTE_SERVER_EXEC[@]}" unshare --mount --propagation private bash -c '
        set -e
        hold=$1/hold-libvirt
        shift
        mount --bind /run/libvirt "$hold"
        mount -t tmpfs -o mode=0755,size=1m kubelab-sshd-run /run
        mkdir -m 0755 /run/sshd /run/libvirt
        mount --move "$hold" /run/libvirt
        exec "$@"' lab-sshd "$dir" /usr/sbin/sshd -D -e -f "$dir/sshd_config" >>"$dir/sshd.log" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/sshd.lab-pid"
    deadline=$((SECONDS + LAB_REMOTE_TIMEOUT))
    # The banner, read from the client: sshd listens, and the veth carries it.
    # shellcheck disable=SC2016
    until lab_client_exec timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/22" && read -r l <&3 && [[ $l == SSH-2.0-* ]]' \
        banner "$LAB_REMOTE_HOST" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            lab_log "sshd ($pid) exited; its log:"
            sed 's/^/    /' "$dir/sshd.log" >&2
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            lab_log "sshd ($pid) did not answer on $LAB_REMOTE_HOST:22 within ${LAB_REMOTE_TIMEOUT}s"
            return 1
        fi
        sleep 0.2
    done
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != sshd ]; then
        lab_log "process $pid is not sshd"
        return 1
    fi
    lab_log "sshd $pid answers on $LAB_REMOTE_HOST:22 (server namespace $server)"
}

# lab_remote_use_host_key DIR NAME: restarts sshd with the host key DIR/host-keys/NAME.
lab_remote_use_host_key() {
    local dir=$1 name=$2
    [ -s "$dir/host-keys/$name" ] || { lab_log "no host key $name in $dir"; return 1; }
    lab_remote_sshd_stop "$dir"
    install -m 0600 "$dir/host-keys/$name" "$dir/ssh_host_ed25519_key"
    install -m 0644 "$dir/host-keys/$name.pub" "$dir/ssh_host_ed25519_key.pub"
    lab_remote_sshd_start "$dir"
}

# lab_remote_rekey DIR: a new host key (the client's known_hosts keeps the original).
# Open sessions end with the old sshd: a client that keeps its connection must reconnect.
lab_remote_rekey() {
    local dir=$1
    rm -f "$dir/host-keys/new" "$dir/host-keys/new.pub"
    ssh-keygen -q -t ed25519 -N '' -C kubelab-lab-server-new -f "$dir/host-keys/new"
    lab_remote_use_host_key "$dir" new
    lab_log "sshd now has host key $(ssh-keygen -l -f "$dir/ssh_host_ed25519_key.pub" | awk '{print $2}')"
}

# lab_remote_restore_key DIR: back to the original host key (the one known_hosts has).
lab_remote_restore_key() {
    lab_remote_use_host_key "$1" orig
}

# lab_remote_client_mounts DIR: the client's persistent mount namespace, where root's
# ~/.ssh is DIR/client-ssh. OpenSSH finds ~ in the passwd entry, never in $HOME.
lab_remote_client_mounts() {
    local dir=$1
    mkdir -p "$LAB_CLIENT_STATE_DIR"
    # A namespace file can only be bound on a private mount.
    mount --bind "$LAB_CLIENT_STATE_DIR" "$LAB_CLIENT_STATE_DIR"
    mount --make-private "$LAB_CLIENT_STATE_DIR"
    touch "$LAB_CLIENT_STATE_DIR/mnt"
    unshare "--mount=$LAB_CLIENT_STATE_DIR/mnt" --propagation private true
    if [ -d /root/.ssh ] && [ -z "${LAB_REMOTE_HOME_VIA_PASSWD:-}" ]; then
        nsenter "--mount=$LAB_CLIENT_STATE_DIR/mnt" mount --bind "$dir/client-ssh" /root/.ssh
    else
        # No /root/.ssh to bind over, and creating one would change the host: in the
        # client only, /etc/passwd is a copy in which root's home is DIR/client-home.
        mkdir -p "$dir/client-home"
        ln -s ../client-ssh "$dir/client-home/.ssh"
        awk -F: -v OFS=: -v home="$dir/client-home" '$1 == "root" { $6 = home } { print }' \
            /etc/passwd >"$dir/passwd"
        chmod 0644 "$dir/passwd"
        nsenter "--mount=$LAB_CLIENT_STATE_DIR/mnt" mount --bind "$dir/passwd" /etc/passwd
    fi
}

lab_remote_up() {
    local server=$1 client=$2 dir=$3 hostkey
    lab_remote_client_dirs "$client"
    case $dir in
    "" | /*[[:space:]]* | [!/]*)
        lab_log "refusing: DIR must be an absolute path without blanks (it goes into sshd_config): $dir"
        return 1
        ;;
    esac
    if [ ! -e "/run/kubelab-lab/$server/mnt" ] || ! lab_remote_netns_exists "$server"; then
        lab_log "refusing: server namespace $server was not made by lab_netns_up"
        return 1
    fi
    if lab_remote_netns_exists "$client" || [ -e "$LAB_CLIENT_STATE_DIR" ] || [ -e "$dir" ]; then
        lab_log "refusing: $client or $dir already exists (remove them with lab_remote_down)"
        return 1
    fi
    lab_remote_server_exec "$server"
    mkdir -p "$dir/host-keys" "$dir/client-ssh"
    chmod 0700 "$dir" "$dir/client-ssh"
    echo "$server" >"$dir/server-ns"

    # The network: one veth, no default route in the client.
    ip netns add "$client"
    ip -n "$client" link set lo up
    ip -n "$server" link add "$LAB_REMOTE_VETH_SERVER" type veth peer name "$LAB_REMOTE_VETH_CLIENT" netns "$client"
    ip -n "$server" addr add "$LAB_REMOTE_HOST/30" dev "$LAB_REMOTE_VETH_SERVER"
    ip -n "$server" link set "$LAB_REMOTE_VETH_SERVER" up
    ip -n "$client" addr add "$LAB_REMOTE_CLIENT_ADDR/30" dev "$LAB_REMOTE_VETH_CLIENT"
    ip -n "$client" link set "$LAB_REMOTE_VETH_CLIENT" up
    if ip -n "$client" route show default | grep -q .; then
        lab_log "the client namespace $client has a default route"
        return 1
    fi

    # Keys: the server's host key (kept as host-keys/orig for lab_remote_restore_key), the
    # client's user key, authorized for root.
    ssh-keygen -q -t ed25519 -N '' -C kubelab-lab-server -f "$dir/host-keys/orig"
    install -m 0600 "$dir/host-keys/orig" "$dir/ssh_host_ed25519_key"
    install -m 0644 "$dir/host-keys/orig.pub" "$dir/ssh_host_ed25519_key.pub"
    ssh-keygen -q -t ed25519 -N '' -C kubelab-lab-client -f "$dir/client-ssh/id_ed25519"
    install -m 0600 "$dir/client-ssh/id_ed25519.pub" "$dir/authorized_keys"
    hostkey=$(awk '{print $1, $2}' "$dir/host-keys/orig.pub")
    echo "$LAB_REMOTE_HOST $hostkey" >"$dir/client-ssh/known_hosts"
    chmod 0600 "$dir/client-ssh/id_ed25519" "$dir/client-ssh/id_ed25519.pub" "$dir/client-ssh/known_hosts"

    # No Include of /etc/ssh: every setting is here.
    cat >"$dir/sshd_config" <<EOF
ListenAddress $LAB_REMOTE_HOST
Port 22
HostKey $dir/ssh_host_ed25519_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
UseDNS no
PrintMotd no
LogLevel VERBOSE
EOF

    lab_remote_client_mounts "$dir"
    # shellcheck disable=SC2016 # expanded by the inner sh
    if ! lab_client_exec sh -c 'cmp -s "$(getent passwd root | cut -d: -f6)/.ssh/known_hosts" "$1"' \
        known-hosts "$dir/client-ssh/known_hosts"; then
        lab_log "the client's ~root/.ssh is not $dir/client-ssh"
        return 1
    fi
    lab_remote_sshd_start "$dir"
    lab_log "client namespace $client reaches $LAB_REMOTE_URI"
}

lab_remote_down() {
    local server=$1 client=$2 dir=$3 pid rc=0
    lab_remote_client_dirs "$client"
    # Go on if sshd resists: the rest is cleaned all the same, the failure reported.
    if [ -d "$dir" ]; then lab_remote_sshd_stop "$dir" || rc=1; fi
    if lab_remote_netns_exists "$client"; then
        # Whatever still runs in the client namespace was started by this test.
        for pid in $(ip netns pids "$client"); do
            lab_log "stopping leftover process $pid ($(cat "/proc/$pid/comm" 2>/dev/null)) in $client"
            lab_stop_pid "$pid" leftover
        done
        # Deleting the namespace deletes the veth, both ends.
        ip netns delete "$client"
    fi
    # A veth left in the server by a setup that failed before the client had its end.
    if lab_remote_netns_exists "$server" && ip -n "$server" link show "$LAB_REMOTE_VETH_SERVER" >/dev/null 2>&1; then
        ip -n "$server" link delete "$LAB_REMOTE_VETH_SERVER"
    fi
    if [ -e "$LAB_CLIENT_STATE_DIR/mnt" ]; then
        umount "$LAB_CLIENT_STATE_DIR/mnt" 2>/dev/null || true
    fi
    if mountpoint -q "$LAB_CLIENT_STATE_DIR" 2>/dev/null; then umount "$LAB_CLIENT_STATE_DIR"; fi
    rm -rf "$LAB_CLIENT_STATE_DIR" "$dir"
    lab_log "client namespace $client and $dir removed"
    return "$rc"
}
