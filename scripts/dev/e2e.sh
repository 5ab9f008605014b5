#!/usr/bin/env bash
# End-to-end test of `kubelab up --driver kvm2` on real VMs (issue 4): inside a network
# namespace this script creates, with a libvirtd started in it, kubelab's own test image
# served over loopback HTTP, QEMU software emulation. Needs root. Every step asserts;
# the namespace, daemons and every object are removed at exit, also on failure.
#
#   scripts/dev/e2e.sh            the whole scenario
#   KEEP_LAB=1 scripts/dev/e2e.sh keep the namespace for debugging (remove it later with
#                                 `scripts/dev/e2e.sh --cleanup`)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
# shellcheck source=scripts/dev/netns-libvirt.sh
. scripts/dev/netns-libvirt.sh
# shellcheck source=scripts/dev/serve-image.sh
. scripts/dev/serve-image.sh

NS=kubelab-e2e
# Every profile of this test starts with "e2e"; its networks with "kubelab-e2e".
PROFILE_PREFIX=e2e
work=/tmp/kubelab-e2e
export KUBELAB_HOME=$work/home
kubelab=$root/target/debug/kubelab

log() { printf '\n[e2e %s] %s\n' "$(date +%T)" "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
pass_count=0
pass() { pass_count=$((pass_count + 1)); log "ok: $*"; }
kl() { lab_exec env KUBELAB_HOME="$KUBELAB_HOME" "$kubelab" "$@"; }

cleanup() {
    local status=$?
    if [ -n "$LAB_HTTP_PID" ]; then kill "$LAB_HTTP_PID" 2>/dev/null || true; fi
    if [ -n "${KEEP_LAB:-}" ] && [ "$status" -ne 0 ]; then
        log "KEEP_LAB set: namespace $NS left running"
        return
    fi
    lab_remove_objects kubelab-e2e
    lab_remove_objects kubelab
    lab_netns_down "$NS" "$PROFILE_PREFIX"
    rm -rf "$work"
}

if [ "${1:-}" = "--cleanup" ]; then
    lab_netns_down "$NS" "$PROFILE_PREFIX"
    exit 0
fi

log "building kubelab and the test image"
cargo build --locked --quiet
image_dir=$(images/testimage/ensure.sh)
qcow2_sha=$(lab_image_sha "$image_dir" disk.qcow2)
iso_sha=$(lab_image_sha "$image_dir" live.iso)

rm -rf "$work"
mkdir -p "$work"
lab_netns_up "$NS"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "serving $image_dir on 127.0.0.1:8099 inside the namespace"
lab_serve_image "$image_dir" 8099 "$work/http.log"
base=http://127.0.0.1:8099

log "a network and a domain kubelab did not create, which must survive delete --all"
cat >"$work/foreign-net.xml" <<XML
<network><name>e2e-foreign-net</name><bridge name='e2efgn0'/>
<ip address='10.250.1.1' netmask='255.255.255.0'/></network>
XML
cat >"$work/foreign-dom.xml" <<XML
<domain type='qemu'><name>e2e-foreign</name><memory unit='MiB'>64</memory>
<os><type arch='x86_64'>hvm</type></os></domain>
XML
lab_virsh net-define "$work/foreign-net.xml" >/dev/null
lab_virsh net-start e2e-foreign-net >/dev/null
lab_virsh define "$work/foreign-dom.xml" >/dev/null

up_flags=(--driver kvm2 --bootstrapper none --cpus 1 --memory 1g --disk 4g)

log "up: 2 nodes, image by URL and digest"
kl -p e2e up "${up_flags[@]}" --nodes 2 --image "$base/disk.qcow2" --image-sha256 "$qcow2_sha" \
    --timings | tee "$work/up1.txt"
pass "up --nodes 2"

[ "$(kl -p e2e ssh -- hostname)" = e2e ] || fail "ssh into the control plane"
[ "$(kl -p e2e ssh e2e-m02 -- hostname)" = e2e-m02 ] || fail "ssh into e2e-m02"
pass "ssh into both nodes with the pinned host key"

ip1=$(kl -p e2e ip)
ip2=$(kl -p e2e ip e2e-m02)
kl -p e2e ssh -- ping -c 1 -W 5 "$ip2" >/dev/null || fail "node 1 cannot reach node 2 at $ip2"
pass "node 1 reaches node 2 over the host-only network ($ip1 -> $ip2)"

kl -p e2e status -o json >"$work/status.json"
python3 - "$work/status.json" "$ip1" "$ip2" <<'PY'
import json, sys
status = json.load(open(sys.argv[1]))
nodes = status["nodes"]
assert [n["name"] for n in nodes] == ["e2e", "e2e-m02"], nodes
assert [n["role"] for n in nodes] == ["control-plane", "worker"], nodes
assert all(n["state"] == "running" for n in nodes), nodes
assert [n["ip"] for n in nodes] == sys.argv[2:4], nodes
assert all(n["ssh_port"] == 22 for n in nodes), nodes
assert status["driver"] == "kvm2", status
PY
pass "status -o json"

log "down, then up again: same addresses"
kl -p e2e down
kl -p e2e status -o json | python3 -c \
    'import json,sys; s=json.load(sys.stdin); assert all(n["state"]=="stopped" for n in s["nodes"]), s'
kl -p e2e up
[ "$(kl -p e2e ip)" = "$ip1" ] && [ "$(kl -p e2e ip e2e-m02)" = "$ip2" ] || fail "addresses changed"
[ "$(kl -p e2e ssh e2e-m02 -- hostname)" = e2e-m02 ] || fail "ssh after restart"
pass "down/up keeps the addresses"

if kl -p e2e up --nodes 3 2>"$work/contradict.txt"; then fail "up --nodes 3 on a 2-node profile"; fi
grep -q "was created with --nodes 2" "$work/contradict.txt" || fail "contradiction message"
pass "contradicting flags are refused"

log "node add, node delete"
kl -p e2e node add
[ "$(kl -p e2e ssh e2e-m03 -- hostname)" = e2e-m03 ] || fail "ssh into the added node"
kl -p e2e node delete e2e-m03
if lab_virsh dominfo e2e-m03 >/dev/null 2>&1; then fail "e2e-m03 still defined"; fi
[ "$(kl -p e2e status -o json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["nodes"]))')" = 2 ] \
    || fail "status after node delete"
pass "node add / node delete"

log "iso image: live ISO + blank data disk"
kl -p e2e-iso up "${up_flags[@]}" --image "$base/live.iso" --image-sha256 "$iso_sha"
[ "$(kl -p e2e-iso ssh -- hostname)" = e2e-iso ] || fail "ssh into the iso node"
kl -p e2e-iso ssh -- lsblk -dno SIZE /dev/vda | grep -q 4G || fail "data disk is not 4G"
kl -p e2e-iso delete
pass "up with the iso image"

log "kill -9 of up mid-boot, then up converges"
kl -p e2e-kill up "${up_flags[@]}" --image "$base/disk.qcow2" --image-sha256 "$qcow2_sha" \
    >"$work/kill.txt" 2>&1 &
up_pid=$!
deadline=$((SECONDS + 300))
until [ "$(lab_virsh domstate e2e-kill 2>/dev/null)" = running ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "e2e-kill never started"
    sleep 0.5
done
# The namespaced `kubelab` is a child of `ip netns exec`: kill the real process.
pkill -KILL -f "$kubelab -p e2e-kill up" || true
wait "$up_pid" 2>/dev/null || true
kl -p e2e-kill up
[ "$(kl -p e2e-kill ssh -- hostname)" = e2e-kill ] || fail "ssh after the resumed up"
pass "an up killed mid-boot is resumed"

log "delete --all leaves nothing of kubelab's and keeps the rest"
kl delete --all
[ -z "$(lab_virsh list --all --name | grep '^e2e' | grep -v '^e2e-foreign$' || true)" ] \
    || fail "domains left: $(lab_virsh list --all --name)"
[ -z "$(lab_virsh net-list --all --name | grep '^kubelab-' || true)" ] \
    || fail "networks left: $(lab_virsh net-list --all --name)"
if lab_virsh pool-info kubelab >/dev/null 2>&1; then
    lab_virsh pool-refresh kubelab >/dev/null
    [ -z "$(lab_virsh vol-list kubelab --name 2>/dev/null | grep -v '^$' || true)" ] \
        || fail "volumes left: $(lab_virsh vol-list kubelab)"
fi
[ -z "$(ls -A "$KUBELAB_HOME/profiles" 2>/dev/null)" ] || fail "profile files left"
lab_virsh dominfo e2e-foreign >/dev/null || fail "the foreign domain was removed"
lab_virsh net-info e2e-foreign-net >/dev/null || fail "the foreign network was removed"
pass "delete --all"

lab_virsh undefine e2e-foreign >/dev/null
lab_virsh net-destroy e2e-foreign-net >/dev/null
lab_virsh net-undefine e2e-foreign-net >/dev/null
echo "e2e: $pass_count passed, 0 failed"
