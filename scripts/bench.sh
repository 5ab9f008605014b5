#!/usr/bin/env bash
# Benchmarks. Usage: scripts/bench.sh download [SIZE_MIB] | up | bootstrap | reset | bake
#
# download: serves a SIZE_MIB (default 1024) file of random bytes from a loopback HTTP
# server (python3 -m http.server on 127.0.0.1), then times, best of RUNS (default 3):
#   kubelab image pull URL --sha256 HEX     (download + verify + store in the cache)
#   curl -o FILE URL && sha256sum FILE      (the same work done sequentially)
# and prints both throughputs in MiB/s and the ratio kubelab/curl (target: >= 0.9).
#
# up (root; run it under `flock /run/kubelab-lab.lock`, one libvirtd per machine): inside a
# network namespace with its own libvirtd (scripts/dev/netns-libvirt.sh), the test image
# served over loopback HTTP, QEMU TCG, for 1 and 2 nodes (1 vCPU, 1 GiB each):
#   kubelab up --bootstrapper none   wall time until every node answers SSH
#   the floor                        the same networks, overlays, seeds and domain XML
#                                    (dumped from kubelab's), prepared beforehand; then
#                                    `virsh define` + `virsh start` of every node in
#                                    parallel, timed to each node's first SSH login
#   kubelab delete                   wall time
# A first `up` (then `down`) warms the image cache, the pool's base volume and libvirtd's
# QEMU capability cache, so both sides start from the same warm state. Prints a table
# with the ratio kubelab/floor (target <= 1.1) and the delete time (target < 2 s).
#
# reset (root, like up): for 2 and 3 nodes with kubeadm (the test image's TEST-ONLY
# stand-in), a cold `kubelab up` (which ends by taking the `clean` snapshot: shown apart),
# a file written on every node, then `kubelab reset` (revert, resume, clocks set, SSH and
# every node Ready): both wall times side by side with the ratio reset/up (target <=
# 0.10), and the snapshot's disk cost per node.
#
# bake (root, like up): the bare test image (no Kubernetes) and the test mirror
# (scripts/dev/apt-repo.sh: packages and a registry) served in the namespace; `kubelab up
# --nodes 3` with kubeadm from the base image (every node installs and pulls from the
# mirror), `kubelab image bake` of the same base, and `kubelab up --nodes 3` from the baked
# image: the two ups side by side with their ratio, the bake's own time, and the
# prereqs time per node from --timings.
#
# CARGO_FLAGS (e.g. --no-default-features) is passed to `cargo build --release`.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work="$root/target/bench"

die() { echo "bench: $*" >&2; exit 1; }

now() { date +%s.%N; }

# secs_between T0 T1: T1 - T0 in seconds.
secs_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# build_kubelab: the release binary, built with CARGO_FLAGS; sets `kubelab`.
build_kubelab() {
    local -a flags
    read -ra flags <<<"${CARGO_FLAGS:-}"
    (cd "$root" && cargo build --release "${flags[@]}" >&2)
    kubelab="$root/target/release/kubelab"
}

# mib_per_s BYTES SECONDS
mib_per_s() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", b / 1048576 / s }'; }

# free_port: a TCP port nobody listens on right now (the kernel picks it).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

cmd_download() {
    local size_mib=${1:-1024} runs=${RUNS:-3}
    command -v curl >/dev/null || die "curl is missing"
    command -v python3 >/dev/null || die "python3 is missing"
    build_kubelab

    mkdir -p "$work/www"
    local file="$work/www/bench.img"
    if [[ ! -f $file || $(stat -c %s "$file") -ne $((size_mib * 1048576)) ]]; then
        echo "creating a ${size_mib} MiB test file" >&2
        head -c "$((size_mib * 1048576))" /dev/urandom >"$file"
    fi
    local bytes digest
    bytes=$(stat -c %s "$file")
    digest=$(sha256sum "$file" | cut -d' ' -f1)

    local port
    port=$(free_port)
    python3 -m http.server "$port" --bind 127.0.0.1 --directory "$work/www" >/dev/null 2>&1 &
    server_pid=$! # global: the EXIT trap runs after this function returns
    trap 'kill "$server_pid" 2>/dev/null || true' EXIT
    local url="http://127.0.0.1:$port/bench.img" i
    for i in $(seq 100); do
        curl -sfI "$url" >/dev/null && break
        [[ $i -eq 100 ]] && die "HTTP server did not start"
        sleep 0.1
    done

    local best_k=0 best_c=0 t0 t1 secs
    for i in $(seq "$runs"); do
        rm -rf "${work:?}/home" "${work:?}/curl.img"
        t0=$(now)
        KUBELAB_HOME="$work/home" "$kubelab" image pull "$url" --sha256 "$digest" >/dev/null 2>&1 \
            || die "kubelab pull failed"
        t1=$(now)
        secs=$(secs_between "$t0" "$t1")
        best_k=$(awk -v x="$best_k" -v y="$(mib_per_s "$bytes" "$secs")" 'BEGIN { print (y > x) ? y : x }')

        t0=$(now)
        curl -sf -o "$work/curl.img" "$url"
        local got
        got=$(sha256sum "$work/curl.img" | cut -d' ' -f1)
        t1=$(now)
        [[ $got == "$digest" ]] || die "curl download does not match"
        secs=$(secs_between "$t0" "$t1")
        best_c=$(awk -v x="$best_c" -v y="$(mib_per_s "$bytes" "$secs")" 'BEGIN { print (y > x) ? y : x }')
        echo "run $i: kubelab best ${best_k} MiB/s, curl+sha256sum best ${best_c} MiB/s" >&2
    done
    rm -rf "${work:?}/home" "${work:?}/curl.img"

    echo "size:                ${size_mib} MiB (best of $runs)"
    echo "kubelab image pull:  ${best_k} MiB/s"
    echo "curl + sha256sum:    ${best_c} MiB/s"
    echo "ratio kubelab/curl:  $(awk -v k="$best_k" -v c="$best_c" 'BEGIN { printf "%.2f", k / c }')"
}

# --- up -------------------------------------------------------------------------------

BENCH_NS="kubelab-bench"
BENCH_PORT=8097
# Every profile of the bench starts with this; its networks with "kubelab-$BENCH_PREFIX".
BENCH_PREFIX=bench
# The pool's directory inside the lab's mount namespace.
BENCH_POOL=/var/lib/libvirt/images/kubelab

# kl ARGS...: kubelab inside the namespace, with the bench's home.
kl() { lab_exec env KUBELAB_HOME="$work/home" "$kubelab" "$@"; }

bench_cleanup() {
    local pid
    for pid in "${LAB_HTTP_PID:-}" "${LAB_MIRROR_PID:-}"; do
        if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; fi
    done
    lab_netns_down "$BENCH_NS"
}

# bench_kubelab_up PROFILE NODES: runs `kubelab up`, prints its wall time.
bench_kubelab_up() {
    local profile=$1 nodes=$2 t0 t1
    t0=$(now)
    kl -p "$profile" up --driver kvm2 --bootstrapper none --cpus 1 --memory 1g --disk 4g \
        --nodes "$nodes" --image "$image_url" --image-sha256 "$image_sha" --timings \
        >"$work/$profile-up.txt" 2>&1 || { cat "$work/$profile-up.txt" >&2; die "kubelab up failed"; }
    t1=$(now)
    secs_between "$t0" "$t1"
}

# bench_kubelab_delete PROFILE: runs `kubelab delete`, prints its wall time.
bench_kubelab_delete() {
    local t0 t1
    t0=$(now)
    kl -p "$1" delete >"$work/$1-delete.txt" 2>&1 || { cat "$work/$1-delete.txt" >&2; die "kubelab delete failed"; }
    t1=$(now)
    secs_between "$t0" "$t1"
}

# bench_home_id: the bench home's id, part of every volume name kubelab makes.
bench_home_id() { tr -d '\n' <"$work/home/home-id"; }

# bench_capture PROFILE DIR: saves what the floor needs of the running cluster: each
# node's domain XML, seed ISO, disk size and address, the networks' XML, the user key and
# known_hosts. Writes DIR/nodes (name ip, one a line).
bench_capture() {
    local profile=$1 dir=$2 node ip net pdir="$work/home/profiles/$1"
    mkdir -p "$dir"
    cp "$pdir/id_ed25519" "$pdir/known_hosts" "$dir/"
    kl -p "$profile" status -o json | python3 -c \
        'import json,sys; [print(n["name"], n["ip"]) for n in json.load(sys.stdin)["nodes"]]' >"$dir/nodes"
    while read -r -u 3 node ip; do
        lab_virsh dumpxml --inactive "$node" | grep -v '<uuid>' >"$dir/$node.xml"
        lab_exec cat "$BENCH_POOL/node-$(bench_home_id)-$node-seed.iso" >"$dir/$node-seed.iso"
        lab_virsh vol-info --bytes --pool kubelab "node-$(bench_home_id)-$node.qcow2" |
            awk '/^Capacity:/ {print $2}' >"$dir/$node.capacity"
    done 3<"$dir/nodes"
    for net in $(lab_names net-list "kubelab-$profile"); do
        lab_virsh net-dumpxml --inactive "$net" | grep -v '<uuid>' >"$dir/net-$net.xml"
    done
}

# bench_floor_prepare DIR: recreates, untimed, the networks, overlays and seeds of DIR.
bench_floor_prepare() {
    local dir=$1 node ip f base log
    base=$(lab_virsh vol-list kubelab | awk '$1 ~ /^base-/ {print $2; exit}')
    [[ -n $base ]] || die "no base volume in the pool"
    for f in "$dir"/net-*.xml; do
        lab_virsh net-define "$f" >/dev/null
        lab_virsh net-start "$(basename "$f" .xml | cut -c5-)" >/dev/null
    done
    while read -r -u 3 node ip; do
        lab_virsh vol-create-as kubelab "node-$(bench_home_id)-$node.qcow2" "$(cat "$dir/$node.capacity")" \
            --format qcow2 --backing-vol "$base" --backing-vol-format qcow2 >/dev/null
        lab_virsh vol-create-as kubelab "node-$(bench_home_id)-$node-seed.iso" "$(stat -c %s "$dir/$node-seed.iso")" \
            --format raw >/dev/null
        lab_virsh vol-upload --pool kubelab "node-$(bench_home_id)-$node-seed.iso" "$dir/$node-seed.iso"
        # The serial log's directory went with the profile.
        log=$(grep -o "<log file='[^']*'" "$dir/$node.xml" | cut -d"'" -f2 || true)
        if [[ -n $log ]]; then mkdir -p "$(dirname "$log")"; fi
    done 3<"$dir/nodes"
}

# bench_floor_node DIR NODE IP: define, start, wait for port 22 (a bash connect every
# 0.2 s inside the namespace: cheap, like kubelab's poll; an ssh process per attempt
# would take CPU from the booting guests), then try to log in every 0.2 s until it
# succeeds (at most 15 minutes in all); prints the time it succeeded.
bench_floor_node() {
    local dir=$1 node=$2 ip=$3 deadline=$((SECONDS + 900))
    lab_virsh define "$dir/$node.xml" >/dev/null
    lab_virsh start "$node" >/dev/null
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 900 "${LAB_EXEC[@]}" bash -c \
        'until (exec 3<>"/dev/tcp/$0/22") 2>/dev/null; do sleep 0.2; done' "$ip" ||
        die "$node: port 22 never opened"
    until lab_exec ssh -n -q -i "$dir/id_ed25519" -o BatchMode=yes -o ConnectTimeout=2 \
        -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$dir/known_hosts" \
        "kubelab@$ip" true 2>/dev/null; do
        [[ $SECONDS -lt $deadline ]] || die "$node: no SSH login within 15 minutes"
        sleep 0.2
    done
    now
}

# bench_floor DIR: boots DIR's nodes by hand in parallel; prints the wall time until the
# last one answered SSH, then removes them.
bench_floor() {
    local dir=$1 node ip net t0 end last=0 pids=()
    bench_floor_prepare "$dir"
    t0=$(now)
    while read -r -u 3 node ip; do
        bench_floor_node "$dir" "$node" "$ip" >"$dir/$node.ready" &
        pids+=($!)
    done 3<"$dir/nodes"
    for pid in "${pids[@]}"; do wait "$pid" || die "the floor's node did not answer SSH in time"; done
    while read -r -u 3 node ip; do
        end=$(cat "$dir/$node.ready")
        last=$(awk -v x="$last" -v y="$end" 'BEGIN { print (y > x) ? y : x }')
    done 3<"$dir/nodes"
    secs_between "$t0" "$last"
    while read -r -u 3 node ip; do
        lab_virsh destroy "$node" >/dev/null
        lab_virsh undefine "$node" >/dev/null
        lab_virsh vol-delete --pool kubelab "node-$(bench_home_id)-$node.qcow2" >/dev/null
        lab_virsh vol-delete --pool kubelab "node-$(bench_home_id)-$node-seed.iso" >/dev/null
    done 3<"$dir/nodes"
    for net in $(lab_names net-list "kubelab-$(basename "$dir")"); do
        lab_virsh net-destroy "$net" >/dev/null
        lab_virsh net-undefine "$net" >/dev/null
    done
}

# bench_lab: the namespace with its libvirtd, the test image served in it; sets
# image_url and image_sha, and tears everything down at exit.
bench_lab() {
    [[ $(id -u) -eq 0 ]] || die "needs root (network namespace, libvirtd)"
    build_kubelab
    # shellcheck source=SCRIPTDIR/dev/netns-libvirt.sh
    . "$root/scripts/dev/netns-libvirt.sh"
    # shellcheck source=SCRIPTDIR/dev/serve-image.sh
    . "$root/scripts/dev/serve-image.sh"
    local image_dir
    image_dir=$("$root/images/testimage/ensure.sh")
    image_sha=$(lab_image_sha "$image_dir" disk.qcow2)
    image_url="http://127.0.0.1:$BENCH_PORT/disk.qcow2"

    rm -rf "${work:?}/home" "${work:?}/$BENCH_PREFIX"*
    mkdir -p "$work"
    lab_netns_up "$BENCH_NS"
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    lab_serve_image "$image_dir" "$BENCH_PORT" "$work/http.log"
}

cmd_up() {
    bench_lab
    # The warm-up profile stays (stopped): `delete` keeps the pool's base volume only
    # while another profile uses the image.
    echo "warm-up: kubelab up + down (cache, base volume, libvirtd's capabilities)" >&2
    local warm
    warm=$(bench_kubelab_up "${BENCH_PREFIX}0" 1)
    kl -p "${BENCH_PREFIX}0" down >/dev/null
    echo "warm-up up took ${warm} s" >&2

    local n up del floor rows=()
    for n in 1 2; do
        echo "$n node(s): kubelab up" >&2
        up=$(bench_kubelab_up "$BENCH_PREFIX$n" "$n")
        bench_capture "$BENCH_PREFIX$n" "$work/$BENCH_PREFIX$n"
        del=$(bench_kubelab_delete "$BENCH_PREFIX$n")
        echo "$n node(s): kubelab up ${up} s, delete ${del} s; the floor" >&2
        floor=$(bench_floor "$work/$BENCH_PREFIX$n")
        echo "$n node(s): floor ${floor} s" >&2
        rows+=("$(awk -v n="$n" -v k="$up" -v f="$floor" -v d="$del" 'BEGIN {
            printf "%-6s %10.1f %8.1f %6.2f %9.1f %8.1f", n, k, f, k / f, k - f, d }')")
        sed -n '/^timings:/,$p' "$work/$BENCH_PREFIX$n-up.txt" >&2
    done
    echo "nodes  kubelab_up    floor  ratio  overhead   delete   (seconds; targets: ratio <= 1.1, delete < 2)"
    printf '%s\n' "${rows[@]}"
}

# bootstrap: `kubelab up --nodes 3 --bootstrapper kubeadm` (the test image's TEST-ONLY
# kubeadm stand-in: the host side, SSH scripts and waits are kubelab's real code) and the
# duration of each bootstrap phase per node, from --timings.
cmd_bootstrap() {
    bench_lab
    # The cluster's context goes into the bench's own kubeconfig, not the user's.
    export KUBECONFIG=$work/kubeconfig
    local t0 t1
    t0=$(now)
    kl -p "${BENCH_PREFIX}k8s" up --driver kvm2 --bootstrapper kubeadm --cpus 1 --memory 1g \
        --disk 4g --nodes 3 --image "$image_url" --image-sha256 "$image_sha" --timings \
        >"$work/k8s-up.txt" 2>&1 || { cat "$work/k8s-up.txt" >&2; die "kubelab up failed"; }
    t1=$(now)
    sed -n '/^timings:/,$p' "$work/k8s-up.txt"
    echo "3 nodes with kubeadm: up $(secs_between "$t0" "$t1") s, delete $(bench_kubelab_delete "${BENCH_PREFIX}k8s") s"
}

cmd_reset() {
    bench_lab
    # The bench's own kubeconfig, fresh: its home is new each run, so are its entries.
    export KUBECONFIG=$work/kubeconfig
    rm -f "$KUBECONFIG"
    local n i node profile t0 t1 up reset snap rows=()
    for n in 2 3; do
        profile="${BENCH_PREFIX}r$n"
        echo "$n nodes: cold kubelab up (kubeadm)" >&2
        t0=$(now)
        kl -p "$profile" up --driver kvm2 --bootstrapper kubeadm --cpus 1 --memory 1g --disk 4g \
            --nodes "$n" --image "$image_url" --image-sha256 "$image_sha" --timings \
            >"$work/$profile-up.txt" 2>&1 || { cat "$work/$profile-up.txt" >&2; die "kubelab up failed"; }
        t1=$(now)
        up=$(secs_between "$t0" "$t1")
        snap=$(awk '$1 == "all" && $2 == "snapshot" { sub("s", "", $3); print $3 }' "$work/$profile-up.txt")
        for i in $(seq 0 $((n - 1))); do
            node=$profile; [[ $i -eq 0 ]] || node=$(printf '%s-m%02d' "$profile" $((i + 1)))
            kl -p "$profile" ssh "$node" -- 'sudo touch /var/tmp/bench-changed' >/dev/null
        done
        echo "$n nodes: kubelab reset" >&2
        t0=$(now)
        kl -p "$profile" reset >"$work/$profile-reset.txt" 2>&1 || { cat "$work/$profile-reset.txt" >&2; die "reset failed"; }
        t1=$(now)
        reset=$(secs_between "$t0" "$t1")
        kl -p "$profile" ssh -- test ! -e /var/tmp/bench-changed || die "reset left the change"
        local disk
        disk=$(kl -p "$profile" snapshot list -o json | python3 -c \
            'import json, sys; s = json.load(sys.stdin)[0]; print("%.1f" % (s["disk_bytes"] / len(s["nodes"]) / 2**20))')
        sed -n '/^timings:/,$p' "$work/$profile-reset.txt" >&2
        rows+=("$(awk -v n="$n" -v u="$up" -v s="$snap" -v r="$reset" -v d="$disk" 'BEGIN {
            printf "%-6s %8.1f %9.1f %8.1f %6.3f %11s", n, u, s, r, r / u, d }')")
        bench_kubelab_delete "$profile" >/dev/null
    done
    echo "nodes  cold_up  snapshot    reset  ratio  MiB/node   (seconds; up includes its snapshot; target: ratio <= 0.10)"
    printf '%s\n' "${rows[@]}"
}

cmd_bake() {
    bench_lab
    export KUBECONFIG=$work/kubeconfig
    rm -f "$KUBECONFIG"
    local bare_dir bare_sha mirror_dir mirror t0 t1 base bake baked prereqs
    bare_dir=$(KUBELAB_TEST_IMAGE_VARIANT=bare "$root/images/testimage/ensure.sh")
    bare_sha=$(lab_image_sha "$bare_dir" disk.qcow2)
    mirror_dir=$("$root/scripts/dev/apt-repo.sh" "$bare_dir")
    rm -rf "$work/mirror"
    mkdir -p "$work/mirror"
    ln -s "$mirror_dir/debian" "$mirror_dir/k8s" "$mirror_dir/registry" "$work/mirror/"
    ln -s "$bare_dir" "$work/mirror/bare"
    lab_serve_mirror "$work/mirror" "$work/mirror.log"
    mirror=http://$LAB_MIRROR_ADDR:8098
    local flags=(--driver kvm2 --bootstrapper kubeadm --cpus 1 --memory 1g --disk 4g --nodes 3
        --image "$mirror/bare/disk.qcow2" --image-sha256 "$bare_sha" --kubernetes-repo "$mirror/k8s/"
        --registry-mirror "$mirror/registry" --timings --no-snapshot)
    # bench_up PROFILE ARGS...: `kubelab up ARGS`, prints its wall time.
    bench_up() {
        local profile=$1 t0 t1
        shift
        t0=$(now)
        kl -p "$profile" up "$@" >"$work/$profile-up.txt" 2>&1 ||
            { cat "$work/$profile-up.txt" >&2; die "kubelab up failed"; }
        t1=$(now)
        secs_between "$t0" "$t1"
    }
    echo "3 nodes from the base image (each installs and pulls)" >&2
    base=$(bench_up "${BENCH_PREFIX}base" "${flags[@]}" --no-baked)
    prereqs=$(awk '$2 == "prereqs" { sub("s", "", $3); t += $3; n++ } END { printf "%.1f", t / n }' \
        "$work/${BENCH_PREFIX}base-up.txt")
    bench_kubelab_delete "${BENCH_PREFIX}base" >/dev/null
    echo "image bake of the same base" >&2
    t0=$(now)
    kl image bake --driver kvm2 --from "$mirror/bare/disk.qcow2" --from-sha256 "$bare_sha" \
        --kubernetes-repo "$mirror/k8s/" --registry-mirror "$mirror/registry" >"$work/bake.txt" 2>&1 ||
        { cat "$work/bake.txt" >&2; die "kubelab image bake failed"; }
    t1=$(now)
    bake=$(secs_between "$t0" "$t1")
    echo "3 nodes from the baked image" >&2
    baked=$(bench_up "${BENCH_PREFIX}baked" "${flags[@]}")
    grep -q "^using baked:" "$work/${BENCH_PREFIX}baked-up.txt" || die "up did not use the baked image"
    if grep -q " prereqs " "$work/${BENCH_PREFIX}baked-up.txt"; then die "the baked up ran prereqs"; fi
    sed -n '/^timings:/,$p' "$work/${BENCH_PREFIX}base-up.txt" "$work/${BENCH_PREFIX}baked-up.txt" >&2
    bench_kubelab_delete "${BENCH_PREFIX}baked" >/dev/null
    echo "nodes  base_up  baked_up  ratio  prereqs/node  bake   (seconds; kubeadm stand-in, TCG)"
    awk -v b="$base" -v k="$baked" -v p="$prereqs" -v m="$bake" 'BEGIN {
        printf "3      %7.1f  %8.1f  %5.2f  %12.1f  %5.1f\n", b, k, k / b, p, m }'
}

case ${1:-} in
download) shift; cmd_download "$@" ;;
up) shift; cmd_up "$@" ;;
bootstrap) shift; cmd_bootstrap "$@" ;;
reset) shift; cmd_reset "$@" ;;
bake) shift; cmd_bake "$@" ;;
*) die "usage: $0 download [SIZE_MIB] | up | bootstrap | reset | bake" ;;
esac
