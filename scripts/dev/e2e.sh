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
# shellcheck source=scripts/dev/remote-lab.sh
. scripts/dev/remote-lab.sh

NS=kubelab-e2e
# The client of the remote-libvirt checks: reaches $NS (the libvirt host) only over SSH.
CLIENT_NS=kubelab-e2e-client
# Every profile of this test starts with "e2e"; its networks with "kubelab-e2e".
PROFILE_PREFIX=e2e
work=/tmp/kubelab-e2e
remote_dir=$work-remote
export KUBELAB_HOME=$work/home
# kubectl's discovery cache stays in the test's directory, not the host's ~/.kube.
export KUBECACHEDIR=$work/kube-cache
kubelab=$root/target/debug/kubelab

log() { printf '\n[e2e %s] %s\n' "$(date +%T)" "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
pass_count=0
pass() { pass_count=$((pass_count + 1)); log "ok: $*"; }
kl() { lab_exec env KUBELAB_HOME="$KUBELAB_HOME" "$kubelab" "$@"; }
# assert_clock PROFILE NODE: the node's clock is within 2 s of the host's (the host's read
# before and after asking it, so SSH's own time does not count against it).
assert_clock() {
    local before guest after
    before=$(date +%s.%N)
    guest=$(kl -p "$1" ssh "$2" -- date +%s.%N)
    after=$(date +%s.%N)
    python3 -c 'import sys; b, g, a = map(float, sys.argv[1:]); sys.exit(not (b - 2 <= g <= a + 2))' \
        "$before" "$guest" "$after" || fail "$2's clock $guest is not within 2 s of the host's ($before..$after)"
}

# Host libvirt objects named like kubelab's (a domain, a network, a pool directory with a
# volume), planted where the host's libvirtd keeps them before the lab starts and compared
# byte for byte after it is gone: the harness's private libvirtd must never load, change
# or remove them. They are removed again at exit (they are this test's own).
host_canaries=(/etc/libvirt/qemu/kubelab-e2e-canary.xml
    /etc/libvirt/qemu/networks/kubelab-e2e-canary.xml
    /var/lib/libvirt/images/kubelab-e2e-canary/node-canary.qcow2)
host_canary_plant() {
    mkdir -p /etc/libvirt/qemu/networks /var/lib/libvirt/images/kubelab-e2e-canary
    cat >"${host_canaries[0]}" <<XML
<domain type='qemu'><name>kubelab-e2e-canary</name><memory unit='MiB'>64</memory>
<os><type arch='x86_64'>hvm</type></os></domain>
XML
    cat >"${host_canaries[1]}" <<XML
<network><name>kubelab-e2e-canary</name><bridge name='klcanary0'/></network>
XML
    head -c 65536 /dev/urandom >"${host_canaries[2]}"
    sha256sum "${host_canaries[@]}" >"$work/canaries.sha256"
}
host_canary_check_and_remove() {
    local rc=0
    if [ -f "$work/canaries.sha256" ]; then
        sha256sum --quiet -c "$work/canaries.sha256" || { log "FAIL: host libvirt objects changed"; rc=1; }
    fi
    rm -rf "${host_canaries[@]}" /var/lib/libvirt/images/kubelab-e2e-canary "$work/canaries.sha256"
    return "$rc"
}

cleanup() {
    local status=$?
    for pid in "$LAB_HTTP_PID" "$LAB_MIRROR_PID"; do
        if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
    done
    if [ -n "${KEEP_LAB:-}" ] && [ "$status" -ne 0 ]; then
        log "KEEP_LAB set: namespace $NS left running"
        host_canary_check_and_remove || true
        return
    fi
    lab_remote_down "$NS" "$CLIENT_NS" "$remote_dir" || status=1
    lab_netns_down "$NS"
    host_canary_check_and_remove || status=1
    rm -rf "$work"
    exit "$status"
}

if [ "${1:-}" = "--cleanup" ]; then
    lab_remote_down "$NS" "$CLIENT_NS" "$remote_dir" || true
    lab_netns_down "$NS"
    exit 0
fi

log "building kubelab and the test image"
cargo build --locked --quiet
image_dir=$(images/testimage/ensure.sh)
qcow2_sha=$(lab_image_sha "$image_dir" disk.qcow2)
# The bare image (no Kubernetes, none of kubeadm's preflight tools) and the test mirror
# it installs them from (scripts/dev/apt-repo.sh).
bare_dir=$(KUBELAB_TEST_IMAGE_VARIANT=bare images/testimage/ensure.sh)
bare_sha=$(lab_image_sha "$bare_dir" disk.qcow2)
mirror_dir=$(scripts/dev/apt-repo.sh "$bare_dir")
iso_sha=$(lab_image_sha "$image_dir" live.iso)

rm -rf "$work"
mkdir -p "$work"
host_canary_plant
lab_netns_up "$NS"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "serving $image_dir on 127.0.0.1:8099 inside the namespace"
lab_serve_image "$image_dir" 8099 "$work/http.log"
base=http://127.0.0.1:8099
mkdir -p "$work/mirror"
ln -s "$mirror_dir/debian" "$mirror_dir/k8s" "$mirror_dir/registry" "$work/mirror/"
ln -s "$bare_dir" "$work/mirror/bare"
lab_serve_mirror "$work/mirror" "$work/mirror.log"
mirror=http://$LAB_MIRROR_ADDR:8098

for kind in dominfo net-info; do
    if lab_virsh "$kind" kubelab-e2e-canary >/dev/null 2>&1; then fail "the lab's libvirtd sees the host's $kind"; fi
done
pass "the lab's libvirtd sees none of the host's libvirt objects"

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

log "snapshots: the clean snapshot up took, reset, a save cut short by kill -9"
kl -p e2e snapshot list -o json >"$work/snapshots.json"
python3 - "$work/snapshots.json" <<'PY'
import json, sys
snaps = json.load(open(sys.argv[1]))
assert [s["name"] for s in snaps] == ["clean"], snaps
clean = snaps[0]
assert clean["nodes"] == ["e2e", "e2e-m02"] and clean["memory"] and clean["complete"], clean
assert clean["disk_bytes"] > 0, clean
print(f"clean snapshot: {clean['disk_bytes'] / 2**20:.1f} MiB for 2 nodes")
PY
kl -p e2e reset | tee "$work/reset-after-up.txt"
grep -q "restored snapshot clean: every node runs, clocks set" "$work/reset-after-up.txt" || fail "reset right after up"
pass "up took the clean snapshot (2 nodes, memory included); reset right after up"

for node in e2e e2e-m02; do
    kl -p e2e ssh "$node" -- 'echo changed | sudo tee /var/tmp/kubelab-e2e-changed >/dev/null'
done
kl -p e2e reset --wait >"$work/reset.txt"
cat "$work/reset.txt"
for node in e2e e2e-m02; do
    kl -p e2e ssh "$node" -- test ! -e /var/tmp/kubelab-e2e-changed || fail "the change on $node survived reset"
    assert_clock e2e "$node"
done
pass "reset: the change on every node is gone, SSH answers with the pinned keys, clocks within 2 s"

# kill -9 while both nodes are paused for a save: the next command discards the half-made
# snapshot and resumes the nodes. Started as a plain command so that $! is kubelab's PID.
"${LAB_EXEC[@]}" env KUBELAB_HOME="$KUBELAB_HOME" "$kubelab" -p e2e snapshot save cut \
    >"$work/save-cut.txt" 2>&1 &
save_pid=$!
deadline=$((SECONDS + 120))
until [ "$(lab_virsh domstate e2e 2>/dev/null)" = paused ]; do
    kill -0 "$save_pid" 2>/dev/null || fail "the save ended before e2e was seen paused: $(cat "$work/save-cut.txt")"
    [ "$SECONDS" -lt "$deadline" ] || fail "e2e never paused for the save"
    sleep 0.05
done
[ "$(cat "/proc/$save_pid/comm")" = kubelab ] || fail "pid $save_pid is not kubelab"
kill -KILL "$save_pid"
wait "$save_pid" 2>/dev/null || true
kl -p e2e snapshot list >"$work/after-cut.txt" 2>&1
grep -q 'an interrupted save of snapshot "cut" is discarded' "$work/after-cut.txt" || fail "no repair: $(cat "$work/after-cut.txt")"
if grep -q "^cut " "$work/after-cut.txt"; then fail "the cut save is listed"; fi
for node in e2e e2e-m02; do
    [ "$(lab_virsh domstate "$node")" = running ] || fail "$node not resumed after the repair"
    if lab_virsh snapshot-list "$node" --name | grep -q kubelab-cut; then fail "$node keeps part of the cut save"; fi
done
[ "$(kl -p e2e ssh e2e-m02 -- hostname)" = e2e-m02 ] || fail "ssh after the repair"
pass "a save killed while the nodes were paused is discarded and the nodes resumed by the next command"

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

kl -p e2e logs e2e-m02 >"$work/logs.txt"
grep -q "Linux version" "$work/logs.txt" || fail "logs: no serial console"
grep -q "Cloud-init v" "$work/logs.txt" || fail "logs: no cloud-init output"
pass "logs (serial console and cloud-init output)"

# down/up (same addresses after a cold start) runs on the remote cluster below: the same
# driver code, through libvirt's SSH transport.

if kl -p e2e up --nodes 3 2>"$work/contradict.txt"; then fail "up --nodes 3 on a 2-node profile"; fi
grep -q "was created with --nodes 2" "$work/contradict.txt" || fail "contradiction message"
pass "contradicting flags are refused"

log "node add, node delete"
kl -p e2e node add 2>&1 | tee "$work/node-add.txt"
[ "$(kl -p e2e ssh e2e-m03 -- hostname)" = e2e-m03 ] || fail "ssh into the added node"
grep -q 'snapshot "clean" holds other nodes' "$work/node-add.txt" || fail "node add did not say clean is stale"
if kl -p e2e reset -o json >"$work/reset-stale.json" 2>/dev/null; then fail "reset with another node set"; fi
grep -q '"reason": "SNAP_NODES_CHANGED"' "$work/reset-stale.json" || fail "$(cat "$work/reset-stale.json")"
kl -p e2e node delete e2e-m03
if lab_virsh dominfo e2e-m03 >/dev/null 2>&1; then fail "e2e-m03 still defined"; fi
[ "$(kl -p e2e status -o json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["nodes"]))')" = 2 ] \
    || fail "status after node delete"
pass "node add / node delete; reset refuses a snapshot of another node set"

log "iso image: live ISO + blank data disk"
kl -p e2e-iso up "${up_flags[@]}" --image "$base/live.iso" --image-sha256 "$iso_sha"
[ "$(kl -p e2e-iso ssh -- hostname)" = e2e-iso ] || fail "ssh into the iso node"
kl -p e2e-iso ssh -- lsblk -dno SIZE /dev/vda | grep -q 4G || fail "data disk is not 4G"
kl -p e2e-iso delete
pass "up with the iso image"

log "kill -9 of up mid-boot, then up converges"
# Started as a plain command, so that $! is kubelab's own PID (nsenter and `ip netns exec`
# exec, they do not fork).
"${LAB_EXEC[@]}" env KUBELAB_HOME="$KUBELAB_HOME" "$kubelab" -p e2e-kill up "${up_flags[@]}" \
    --image "$base/disk.qcow2" --image-sha256 "$qcow2_sha" >"$work/kill.txt" 2>&1 &
up_pid=$!
deadline=$((SECONDS + 300))
until [ "$(lab_virsh domstate e2e-kill 2>/dev/null)" = running ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "e2e-kill never started"
    sleep 0.5
done
[ "$(cat "/proc/$up_pid/comm")" = kubelab ] || fail "pid $up_pid is not kubelab"
kill -KILL "$up_pid"
wait "$up_pid" 2>/dev/null || true
# The VM boots on. A new up waits for its SSH; the VM is paused under it: the up fails
# at once, naming it, instead of waiting out its 3600 s deadline.
"${LAB_EXEC[@]}" env KUBELAB_HOME="$KUBELAB_HOME" "$kubelab" -p e2e-kill up --ssh-timeout 3600 \
    >"$work/paused.txt" 2>&1 &
up_pid=$!
until grep -q "^e2e-kill: waiting for SSH" "$work/paused.txt"; do
    kill -0 "$up_pid" 2>/dev/null || fail "the second up ended early: $(cat "$work/paused.txt")"
    sleep 0.1
done
lab_virsh suspend e2e-kill >/dev/null
if wait "$up_pid"; then fail "up succeeded with its VM paused"; fi
grep -q "node e2e-kill's VM is paused" "$work/paused.txt" || fail "$(cat "$work/paused.txt")"
grep -q "hint (GUEST_VM_DOWN)" "$work/paused.txt" || fail "no GUEST_VM_DOWN: $(cat "$work/paused.txt")"
pass "up stops waiting for a VM that was paused (GUEST_VM_DOWN with its console tail, not the 3600 s deadline)"
lab_virsh resume e2e-kill >/dev/null
kl -p e2e-kill up
[ "$(kl -p e2e-kill ssh -- hostname)" = e2e-kill ] || fail "ssh after the resumed up"
pass "an up killed mid-boot is resumed"

log "a libvirtd that stops answering on an open connection: the keepalive ends the wait"
# The relay passes the connection's opening on and swallows the first capabilities call,
# then forwards nothing: the daemon seems alive (its socket stays open) but never answers.
"${LAB_EXEC[@]}" python3 "$root/scripts/dev/silent-relay.py" "$work/relay.sock" /run/libvirt/libvirt-sock \
    >"$work/relay.log" 2>&1 &
relay_pid=$!
until grep -q '^ready$' "$work/relay.log"; do
    kill -0 "$relay_pid" 2>/dev/null || fail "the relay did not start: $(cat "$work/relay.log")"
    sleep 0.1
done
if kl -p e2e-silent -o json up "${up_flags[@]}" --image "$base/disk.qcow2" --image-sha256 "$qcow2_sha" \
    --libvirt-uri "qemu+unix:///system?socket=$work/relay.sock" >"$work/silent.json" 2>&1; then
    fail "up through a silent libvirtd succeeded"
fi
grep -q '^silent$' "$work/relay.log" || fail "the relay never went silent: $(cat "$work/relay.log")"
grep -q '"reason": "DRV_CALL_TIMEOUT"' "$work/silent.json" || fail "$(cat "$work/silent.json")"
grep -q 'while kubelab tried to read the capabilities' "$work/silent.json" || fail "not the keepalive: $(cat "$work/silent.json")"
[ ! -e "$KUBELAB_HOME/profiles/e2e-silent" ] || fail "the failed up left its profile"
wait "$relay_pid" || true
pass "a libvirt call on a connection whose daemon went silent fails with DRV_CALL_TIMEOUT (keepalive), nothing made"

# ---- kubeadm bootstrapper (issue 5) ------------------------------------------------
# The test image's kubeadm, kubectl, kubelet and API server are TEST-ONLY stand-ins
# (images/testimage/files/k8s-standin/); the host side (CA, token, CA hash, configs,
# scripts over SSH, kubeconfig merge) is kubelab's real code, read by a real kubectl.
log "kubeadm: up --nodes 3, merged context, parallel joins, node add/delete, delete"
kcfg=$work/kubeconfig
cat >"$kcfg" <<'YAML'
apiVersion: v1
kind: Config
clusters:
- name: other
  cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}
users:
- name: other
  user: {token: other-token}
contexts:
- name: other
  context: {cluster: other, user: other}
current-context: other
YAML
chmod 0600 "$kcfg"
klk() { lab_exec env KUBELAB_HOME="$KUBELAB_HOME" KUBECONFIG="$kcfg" "$kubelab" "$@"; }
kctl() { lab_exec env KUBECONFIG="$kcfg" kubectl "$@"; }
kctl config view --raw -o json >"$work/kubeconfig-before.json"
k8s_flags=(--driver kvm2 --bootstrapper kubeadm --cpus 1 --memory 1g --disk 4g)

# The bare image (no Kubernetes, none of kubeadm's preflight tools) baked once: apt
# installs containerd, kubeadm's preflight tools and the Kubernetes packages from the test
# mirror, the stand-ins pull kubeadm's and the CNI's images from its registry.
log "image bake: the bare image with Kubernetes from the test mirror"
klk image bake --driver kvm2 --from "$mirror/bare/disk.qcow2" --from-sha256 "$bare_sha" \
    --kubernetes-repo "$mirror/k8s/" --registry-mirror "$mirror/registry" | tee "$work/bake.txt"
grep -q "^baked baked:v1.34.2 " "$work/bake.txt" || fail "bake: $(cat "$work/bake.txt")"
for fetched in "GET /k8s/InRelease" "kubeadm_1.34.2-1.1_amd64.deb" "GET /debian/.*iptables_" \
    "GET /registry/v2/kube-apiserver/manifests/v1.34.2" "GET /registry/v2/flannel-io/flannel/manifests/v0.26.7"; do
    grep -q "$fetched" "$work/mirror.log" || fail "the bake did not fetch $fetched from the mirror"
done
klk image list -o json >"$work/images.json"
python3 - "$work/images.json" "$bare_sha" <<'PY'
import json, sys
baked = json.load(open(sys.argv[1]))["baked"]
assert len(baked) == 1, baked
b = baked[0]["baked"]
assert b["kubernetes_version"] == "v1.34.2" and b["driver"] == "kvm2", b
assert b["base"]["sha256"] == sys.argv[2], b
assert b["packages"]["kubeadm"] == "1.34.2-1.1" and b["packages"]["containerd"].startswith("1.6."), b
assert len(b["images"]) == 9 and "registry.k8s.io/pause:3.10.1" in b["images"], b
assert all(d.startswith("sha256:") for d in b["images"].values()), b
print(f"baked: {baked[0]['image']['size_bytes'] / 2**20:.0f} MiB, {len(b['packages'])} packages, {len(b['images'])} images")
PY
klk list -o json | python3 -c 'import json,sys; assert not [p for p in json.load(sys.stdin) if p["name"].startswith("bake-")]' \
    || fail "the bake left a profile: $(klk list)"
[ -z "$(lab_virsh list --all --name | grep '^bake-' || true)" ] || fail "the bake left a VM"
pass "image bake: installed and pulled from the mirror once; the manifest lists kubeadm, containerd and 9 images; no profile or VM left"

# Offline from here: the namespace has no uplink, so the VMs can reach only its own
# addresses (the mirror among them); they may open no TCP connection to any of them
# (nodes still talk to each other over their bridges, and the host to them).
offline=(INPUT ! -i lo -p tcp -m conntrack --ctstate NEW -j REJECT)
lab_exec iptables -I "${offline[@]}"
mirror_requests=$(wc -l <"$work/mirror.log")
log "kubeadm: up --nodes 3 of the bare image, offline: the baked image is used, merged context, parallel joins"
klk -p e2e-k8s up "${k8s_flags[@]}" --nodes 3 --image "$mirror/bare/disk.qcow2" \
    --image-sha256 "$bare_sha" --timings 2>&1 | tee "$work/up-k8s.txt"
grep -q "^using baked:v1.34.2 (sha256:" "$work/up-k8s.txt" || fail "up did not say it uses the baked image"
for phase in init join ready; do
    grep -Eq "^  e2e-k8s[a-z0-9-]* +$phase " "$work/up-k8s.txt" || fail "--timings lacks $phase"
done
if grep -Eq "^  e2e-k8s[a-z0-9-]* +prereqs " "$work/up-k8s.txt"; then fail "--timings has a prereqs phase"; fi
k8s_log=$KUBELAB_HOME/profiles/e2e-k8s/kubelab.log
for node in e2e-k8s e2e-k8s-m02 e2e-k8s-m03; do
    grep -q "\[$node\] prereqs: in the baked image, not run" "$k8s_log" || fail "$node ran its prereqs"
done
[ "$(wc -l <"$work/mirror.log")" = "$mirror_requests" ] || fail "the offline up reached the mirror"
if klk -p e2e-k8s ssh e2e-k8s-m02 -- curl -fsS -m 5 -o /dev/null "$mirror/k8s/Release.key"; then
    fail "a node reached the mirror: the egress is not cut"
fi
pass "up --nodes 3 offline from the baked image: no prereqs phase, not one request to the mirror"

# The manifest against what a node of the baked image holds.
python3 - "$work/images.json" >"$work/manifest.txt" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))["baked"][0]["baked"]
for name, version in sorted(b["packages"].items()):
    print("package", name, version)
for ref, digest in sorted(b["images"].items()):
    print("image", ref, digest)
PY
# shellcheck disable=SC2016
klk -p e2e-k8s ssh e2e-k8s-m03 -- \
    "dpkg-query -W -f='package \${Package} \${Version}\n' $(awk '$1 == "package" {print $2}' "$work/manifest.txt" | tr '\n' ' ');
     for ref in $(awk '$1 == "image" {print $2}' "$work/manifest.txt" | tr '\n' ' '); do
         printf 'image %s ' \$ref; sudo crictl inspecti -o json \$ref | tr -d ' \n'; echo; done" >"$work/guest.txt"
python3 - "$work/manifest.txt" "$work/guest.txt" <<'PY'
import json, sys
want = open(sys.argv[1]).read().splitlines()
have = []
for line in open(sys.argv[2]).read().splitlines():
    kind, name, rest = line.split(" ", 2)
    if kind == "image":
        rest = json.loads(rest)["status"]["repoDigests"][0].split("@")[1]
    have.append(f"{kind} {name} {rest}")
assert sorted(have) == sorted(want), (sorted(have), sorted(want))
print(f"{len(want)} manifest entries match e2e-k8s-m03")
PY
pass "the baked image's manifest matches what a node holds (dpkg versions, image digests)"

[ "$(kctl config current-context)" = e2e-k8s ] || fail "current context: $(kctl config current-context)"
kctl config get-contexts -o name | sort | tr '\n' ' ' | grep -qx 'e2e-k8s other ' \
    || fail "contexts: $(kctl config get-contexts -o name)"
ready=$(kctl get nodes -o jsonpath='{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status} {end}')
[ "$ready" = "e2e-k8s=True e2e-k8s-m02=True e2e-k8s-m03=True " ] || fail "nodes: $ready"
pass "kubectl: context e2e-k8s current beside 'other'; 3 nodes Ready over the host-only address"

# An API object and a file on every node, then reset: all gone, every node Ready again.
klk -p e2e-k8s ssh -- sudo kubectl --kubeconfig /etc/kubernetes/admin.conf run before-reset \
    --image=registry.k8s.io/pause:3.10.1
kctl get pod before-reset >/dev/null || fail "the pod before-reset was not created"
for node in e2e-k8s e2e-k8s-m02 e2e-k8s-m03; do
    klk -p e2e-k8s ssh "$node" -- 'sudo touch /var/tmp/kubelab-e2e-changed'
done
kubeconfig_before_reset=$(sha256sum "$kcfg")
klk -p e2e-k8s reset | tee "$work/reset-k8s.txt"
if kctl get pod before-reset >/dev/null 2>&1; then fail "the pod before-reset survived reset"; fi
for node in e2e-k8s e2e-k8s-m02 e2e-k8s-m03; do
    klk -p e2e-k8s ssh "$node" -- test ! -e /var/tmp/kubelab-e2e-changed || fail "the change on $node survived reset"
    assert_clock e2e-k8s "$node"
done
ready=$(kctl get nodes -o jsonpath='{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status} {end}')
[ "$ready" = "e2e-k8s=True e2e-k8s-m02=True e2e-k8s-m03=True " ] || fail "nodes after reset: $ready"
[ "$(sha256sum "$kcfg")" = "$kubeconfig_before_reset" ] || fail "reset changed the kubeconfig"
pass "kubeadm reset: the pod and every node's change gone, 3 nodes Ready, clocks set, kubeconfig unchanged"

standalone=$(klk -p e2e-k8s kubeconfig --path)
server=$(kctl --kubeconfig "$standalone" config view -o jsonpath='{.clusters[0].cluster.server}')
[ "$server" = "https://$(klk -p e2e-k8s ip):6443" ] || fail "standalone kubeconfig server: $server"
kctl config use-context other >/dev/null
klk -p e2e-k8s kubeconfig --update
[ "$(kctl config current-context)" = e2e-k8s ] || fail "kubeconfig --update did not make e2e-k8s current"
pass "kubeconfig --path names the standalone copy; --update merges it again"

python3 - "$KUBELAB_HOME/profiles/e2e-k8s/kubelab.log" <<'PY'
import re, sys
from datetime import datetime
spans = {}  # node -> [start of 30-join.sh, its exit]
for line in open(sys.argv[1]):
    m = re.match(r"(\S+Z) \[(e2e-k8s-m0[23])\] (\$ 30-join.sh|exit: )", line)
    if not m:
        continue
    ts = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ")
    span = spans.get(m.group(2))
    if m.group(3).startswith("$"):
        spans.setdefault(m.group(2), [ts])
    elif span is not None and len(span) == 1:
        span.append(ts)
(a0, a1), (b0, b1) = spans["e2e-k8s-m02"], spans["e2e-k8s-m03"]
assert a0 < b1 and b0 < a1, f"joins did not overlap: m02 {a0}..{a1}, m03 {b0}..{b1}"
print(f"joins: m02 {a0.time()}..{a1.time()}, m03 {b0.time()}..{b1.time()}")
PY
pass "the joins of e2e-k8s-m02 and e2e-k8s-m03 ran in parallel (log timestamps)"

klk -p e2e-k8s node add --timings | tee "$work/node-add-k8s.txt"
grep -q "added e2e-k8s-m04" "$work/node-add-k8s.txt" || fail "node add did not add e2e-k8s-m04"
[ "$(kctl get node e2e-k8s-m04 -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ] \
    || fail "e2e-k8s-m04 is not Ready"
klk -p e2e-k8s node delete e2e-k8s-m04
if kctl get node e2e-k8s-m04 >/dev/null 2>&1; then fail "e2e-k8s-m04 still in the cluster"; fi
grep -q "node/e2e-k8s-m04 drained" "$KUBELAB_HOME/profiles/e2e-k8s/kubelab.log" || fail "no drain"
pass "node add joins a Ready worker; node delete drains it and removes it from the cluster"

# A pod that never terminates (stand-in: annotation kubelab.io/never-terminates) lands on
# the first schedulable worker, e2e-k8s-m02: its drain times out, the node goes anyway.
klk -p e2e-k8s ssh -- sudo kubectl --kubeconfig /etc/kubernetes/admin.conf run stuck \
    --image=registry.k8s.io/pause:3.10.1 --annotations=kubelab.io/never-terminates=true
[ "$(kctl get pod stuck -o jsonpath='{.spec.nodeName}')" = e2e-k8s-m02 ] || fail "stuck pod not on m02"
klk -p e2e-k8s node delete e2e-k8s-m02
if kctl get node e2e-k8s-m02 >/dev/null 2>&1; then fail "e2e-k8s-m02 still in the cluster"; fi
grep -q "e2e-k8s-m02 did not drain within 60s: deleting it anyway" "$KUBELAB_HOME/profiles/e2e-k8s/kubelab.log" \
    || fail "no drain timeout for e2e-k8s-m02"
pass "node delete of a node whose drain never finishes: deleted after the drain's timeout"

klk -p e2e-k8s delete
kctl config view --raw -o json >"$work/kubeconfig-after.json"
cmp -s "$work/kubeconfig-before.json" "$work/kubeconfig-after.json" \
    || fail "kubeconfig differs after delete: $(diff "$work/kubeconfig-before.json" "$work/kubeconfig-after.json")"
pass "delete removed exactly the profile's entries and made 'other' current again"
lab_exec iptables -D "${offline[@]}"

log "image export / rm / import of the baked image; the next cluster boots the imported one"
baked_sha=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["baked"][0]["image"]["sha256"])' "$work/images.json")
klk image export "$work/baked.tar" baked:v1.34.2
klk image rm "$baked_sha"
klk image list -o json >"$work/images-none.json"
python3 -c 'import json,sys; assert json.load(open(sys.argv[1]))["baked"] == []' "$work/images-none.json" \
    || fail "image rm left the baked image"
klk image import "$work/baked.tar"
klk image list -o json >"$work/images-imported.json"
python3 - "$work/images.json" "$work/images-imported.json" <<'PY'
import json, sys
before, after = (json.load(open(p))["baked"] for p in sys.argv[1:3])
assert [b["baked"] for b in after] == [b["baked"] for b in before], (before, after)
assert [b["image"]["sha256"] for b in after] == [b["image"]["sha256"] for b in before]
PY
pass "export, rm, import: the same baked image (digest and manifest) is back in the cache"

log "kubeadm, one node: the control plane takes user pods; an init that failed after admin.conf is retried"
# A host route over flannel's default pod subnet: the new cluster's pods must avoid it.
lab_exec ip route add 10.244.0.0/16 dev lo
klk -p e2e-one up "${k8s_flags[@]}" --nodes 1 --image baked:v1.34.2 | tee "$work/up-one.txt"
python3 - "$KUBELAB_HOME/profiles/e2e-one/profile.json" <<'PY'
import json, sys
state = json.load(open(sys.argv[1]))
assert state["pod_cidr"] == "10.245.0.0/16", state
assert state["service_cidr"] == "10.96.0.0/12", state
PY
pass "pod subnet chosen clear of the host's routes (10.244.0.0/16 taken: 10.245.0.0/16)"
klk -p e2e-one ssh -- sudo kubectl --kubeconfig /etc/kubernetes/admin.conf run web --image=registry.k8s.io/pause:3.10.1
[ "$(kctl --context e2e-one get pod web -o jsonpath='{.spec.nodeName}')" = e2e-one ] \
    || fail "the pod was not scheduled on the control plane: $(kctl --context e2e-one get pod web -o json)"
pass "a user pod is scheduled on a 1-node cluster (control plane untainted)"
# Undo init by hand, then make kubeadm's addon phase (after admin.conf) fail once.
klk -p e2e-one ssh -- 'sudo kubeadm reset --force >/dev/null && sudo rm /var/lib/kubelab/kubeadm-init.done &&
    sudo mkdir -p /etc/kubelab-standin && echo addon | sudo tee /etc/kubelab-standin/fail-phase >/dev/null'
if klk -p e2e-one up 2>"$work/phase-fail.txt"; then fail "up succeeded despite the failing addon phase"; fi
grep -q "error execution phase addon" "$work/phase-fail.txt" || fail "no addon failure: $(cat "$work/phase-fail.txt")"
klk -p e2e-one ssh -- test -f /etc/kubernetes/admin.conf || fail "admin.conf was not written before the failure"
klk -p e2e-one up
klk -p e2e-one ssh -- test -f /var/lib/kubelab/kubeadm-init.done || fail "no init marker after the retry"
grep -q "a previous kubeadm init did not finish: kubeadm reset" "$KUBELAB_HOME/profiles/e2e-one/kubelab.log" \
    || fail "the retry did not reset the half-done init"
[ "$(kctl --context e2e-one get nodes -o jsonpath='{.items[0].status.conditions[?(@.type=="Ready")].status}')" = True ] \
    || fail "e2e-one not Ready after the retried init"
pass "an init that failed after writing admin.conf is reset and retried by the next up"
klk -p e2e-one up
grep -q "control plane already initialized (kubelab's marker): creating this run's join token" \
    "$KUBELAB_HOME/profiles/e2e-one/kubelab.log" || fail "an up of an initialized cluster did not make a fresh token"
pass "up of an initialized control plane only creates this run's join token"
# An image's kubeadm of another version than the profile's is an error, not a warning.
if klk -p e2e-one ssh -- sudo bash -s v1.34.1 https://mirror.invalid/ \
    <scripts/node/00-prereqs.sh >"$work/mismatch.txt" 2>&1; then
    fail "00-prereqs.sh accepted kubeadm v1.34.2 for v1.34.1"
fi
grep -q "error: the image has kubeadm v1.34.2, not v1.34.1" "$work/mismatch.txt" || fail "$(cat "$work/mismatch.txt")"
pass "a preinstalled kubeadm of another version stops the prereqs with an error"
klk -p e2e-one delete
# ---- end of the kubeadm section ------------------------------------------------------

log "remote libvirt host: a client namespace that reaches $NS only over SSH (issue 15)"
# The lab's libvirtd is the remote host; the client has its own kubelab home and
# kubeconfig, and no route to the host-only networks (10.244.0.0/16 is still routed on
# the server only: the pod subnet must be chosen clear of the *server's* routes).
lab_remote_up "$NS" "$CLIENT_NS" "$remote_dir"
client_home=$remote_dir/home
rkcfg=$remote_dir/kubeconfig
klr() { lab_client_exec env KUBELAB_HOME="$client_home" KUBECONFIG="$rkcfg" "$kubelab" "$@"; }
rflags=(--libvirt-uri "$LAB_REMOTE_URI" "${k8s_flags[@]}")
klr image import "$work/baked.tar"
klr -p e2e-remote up "${rflags[@]}" --nodes 2 --image baked:v1.34.2 | tee "$work/up-remote.txt"
grep -q "keep \`kubelab -p e2e-remote tunnel\` running" "$work/up-remote.txt" || fail "up did not name the tunnel"
python3 - "$client_home/profiles/e2e-remote/profile.json" "$LAB_REMOTE_URI" <<'PY'
import json, sys
state, uri = json.load(open(sys.argv[1])), sys.argv[2]
assert state["libvirt_uri"] == uri, state
assert [n["host"] for n in state["nodes"]] == [uri, uri], state["nodes"]
assert 1024 <= state["tunnel_port"] <= 65535, state
assert state["pod_cidr"] == "10.245.0.0/16", state
PY
grep -q "^10.254.9.1 ssh-ed25519 " "$client_home/profiles/e2e-remote/libvirt_known_hosts" \
    || fail "the server's key is not pinned: $(cat "$client_home/profiles/e2e-remote/libvirt_known_hosts")"
for node in e2e-remote e2e-remote-m02; do
    lab_virsh dumpxml "$node" >"$work/$node.xml"
    if grep -F -e "$remote_dir" -e "$work" "$work/$node.xml"; then fail "$node's domain XML names a client path"; fi
done
pass "up --nodes 2 on the remote host: nodes and key pinned in the profile, pod subnet clear of the server's routes, no client path in the domain XML"

klr doctor --driver kvm2 --libvirt-uri "$LAB_REMOTE_URI" -o json >"$work/doctor-remote.json" || true
python3 - "$work/doctor-remote.json" <<'PY'
import json, sys
checks = {(c["scope"], c["name"]): c for c in json.load(open(sys.argv[1]))["checks"]}
host = checks[("kvm2", "libvirt host")]
assert host["state"] == "ok" and "10.254.9.1" in host["message"], host
accel = checks[("kvm2", "acceleration")]
assert accel["state"] == "warn" and "itself a VM" in accel["message"], accel
PY
pass "doctor --libvirt-uri on the client: the libvirt host's key, tools and CPU checked on it over SSH"

rip2=$(klr -p e2e-remote ip e2e-remote-m02)
if lab_client_exec ip route get "$rip2" >/dev/null 2>&1; then fail "the client has a route to $rip2"; fi
[ "$(klr -p e2e-remote ssh -- hostname)" = e2e-remote ] || fail "ssh into the remote control plane"
[ "$(klr -p e2e-remote ssh e2e-remote-m02 -- hostname)" = e2e-remote-m02 ] || fail "ssh into e2e-remote-m02"
line=$(klr -p e2e-remote ssh --print-command e2e-remote-m02 -- hostname)
case $line in *" -J root@10.254.9.1 "*) ;; *) fail "no ssh -J in: $line" ;; esac
[ "$(lab_client_exec sh -c "$line")" = e2e-remote-m02 ] || fail "the printed command did not reach e2e-remote-m02: $line"
pass "ssh into both remote nodes through the libvirt host (no route from the client to $rip2); the printed ssh -J line works"

tunnel_port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tunnel_port"])' \
    "$client_home/profiles/e2e-remote/profile.json")
"${LAB_CLIENT_EXEC[@]}" env KUBELAB_HOME="$client_home" "$kubelab" -p e2e-remote tunnel \
    >"$work/tunnel.txt" 2>&1 &
tunnel_pid=$!
deadline=$((SECONDS + 30))
until lab_client_exec bash -c "exec 3<>/dev/tcp/127.0.0.1/$tunnel_port" 2>/dev/null; do
    kill -0 "$tunnel_pid" 2>/dev/null || fail "kubelab tunnel ended: $(cat "$work/tunnel.txt")"
    [ "$SECONDS" -lt "$deadline" ] || fail "kubelab tunnel did not listen on $tunnel_port"
    sleep 0.1
done
server=$(lab_client_exec env KUBECONFIG="$rkcfg" kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
[ "$server" = "https://127.0.0.1:$tunnel_port" ] || fail "the kubeconfig's server is $server"
ready=$(lab_client_exec env KUBECONFIG="$rkcfg" KUBECACHEDIR="$remote_dir/kube-cache" kubectl get nodes \
    -o jsonpath='{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status} {end}')
[ "$ready" = "e2e-remote=True e2e-remote-m02=True " ] || fail "nodes through the tunnel: $ready"
[ "$(cat "/proc/$tunnel_pid/comm")" = kubelab ] || fail "pid $tunnel_pid is not kubelab"
kill "$tunnel_pid"
wait "$tunnel_pid" 2>/dev/null || true
pass "kubectl get nodes from the client through kubelab tunnel (127.0.0.1:$tunnel_port, TLS verified)"

klr -p e2e-remote logs e2e-remote-m02 >"$work/logs-remote.txt"
grep -q "Linux version" "$work/logs-remote.txt" || fail "remote logs: no serial console"
pass "logs of a remote node: its serial console read through libvirt"

# Snapshots live on the server (internal qcow2 snapshots): reset from the client.
klr -p e2e-remote ssh e2e-remote-m02 -- 'sudo touch /var/tmp/kubelab-e2e-changed'
klr -p e2e-remote reset | tee "$work/reset-remote.txt"
grep -q "restored snapshot clean" "$work/reset-remote.txt" || fail "remote reset: $(cat "$work/reset-remote.txt")"
klr -p e2e-remote ssh e2e-remote-m02 -- test ! -e /var/tmp/kubelab-e2e-changed || fail "the change survived the remote reset"
pass "reset of the remote cluster: the server's snapshots restored, the change gone"

# An added node records its host too; it joins through the jump like the others.
klr -p e2e-remote node add | tee "$work/node-add-remote.txt"
grep -q "added e2e-remote-m03" "$work/node-add-remote.txt" || fail "node add: $(cat "$work/node-add-remote.txt")"
python3 - "$client_home/profiles/e2e-remote/profile.json" "$LAB_REMOTE_URI" <<'PY'
import json, sys
nodes = json.load(open(sys.argv[1]))["nodes"]
assert [n["name"] for n in nodes][-1] == "e2e-remote-m03" and nodes[-1]["host"] == sys.argv[2], nodes
PY
[ "$(klr -p e2e-remote ssh e2e-remote-m03 -- hostname)" = e2e-remote-m03 ] || fail "ssh into the added remote node"
klr -p e2e-remote node delete e2e-remote-m03
if lab_virsh dominfo e2e-remote-m03 >/dev/null 2>&1; then fail "e2e-remote-m03 still defined on the server"; fi
pass "node add / node delete on the remote host: the added node's host recorded, reached through the jump"

rip1=$(klr -p e2e-remote ip)
klr -p e2e-remote down
klr -p e2e-remote status -o json | python3 -c \
    'import json,sys; s=json.load(sys.stdin); assert all(n["state"]=="stopped" for n in s["nodes"]), s'
klr -p e2e-remote up
[ "$(klr -p e2e-remote ip)" = "$rip1" ] && [ "$(klr -p e2e-remote ip e2e-remote-m02)" = "$rip2" ] \
    || fail "addresses changed"
[ "$(klr -p e2e-remote ssh e2e-remote-m02 -- hostname)" = e2e-remote-m02 ] || fail "ssh after restart"
pass "down/up of the remote cluster keeps the addresses"

log "the libvirt host's SSH key changes"
lab_remote_rekey "$remote_dir"
if klr -p e2e-remote ssh -- true >"$work/rekey-libvirt.txt" 2>&1; then fail "ssh with a changed host key"; fi
grep -q "Host key verification failed" "$work/rekey-libvirt.txt" || fail "$(cat "$work/rekey-libvirt.txt")"
if klr -p e2e-other up "${rflags[@]}" --image baked:v1.34.2 >"$work/rekey-up.txt" 2>&1; then
    fail "up of a new profile at a host whose key changed"
fi
[ ! -e "$client_home/profiles/e2e-other" ] || fail "the refused up left a profile"
# The user accepts the new key for their own use: libvirt connects, kubelab's pin still
# refuses (its own SSH, and the user's ssh through the profile's ssh_config).
cp "$remote_dir/client-ssh/known_hosts" "$remote_dir/known_hosts.orig"
new_key=$(cut -d' ' -f1,2 "$remote_dir/ssh_host_ed25519_key.pub")
echo "$LAB_REMOTE_HOST $new_key" >"$remote_dir/client-ssh/known_hosts"
for cmd in up tunnel; do
    if klr -p e2e-remote "$cmd" -o json >"$work/rekey-$cmd.json" 2>&1; then fail "$cmd past the pinned key"; fi
    grep -q '"reason": "GUEST_JUMP_HOSTKEY"' "$work/rekey-$cmd.json" || fail "$cmd: $(cat "$work/rekey-$cmd.json")"
done
if klr -p e2e-remote ssh -- true 2>"$work/rekey-ssh.txt"; then fail "ssh past the pinned key"; fi
grep -q "Host key verification failed" "$work/rekey-ssh.txt" || fail "$(cat "$work/rekey-ssh.txt")"
cp "$remote_dir/known_hosts.orig" "$remote_dir/client-ssh/known_hosts"
lab_remote_restore_key "$remote_dir"
pass "a libvirt host whose key changed is refused: by libvirt's ssh (known_hosts) and by kubelab's pin"

klr -p e2e-remote delete
for kind in list net-list; do
    [ -z "$(lab_virsh "$kind" --all --name | grep e2e-remote || true)" ] || fail "left on the server: $(lab_virsh "$kind" --all --name)"
done
lab_virsh pool-refresh kubelab >/dev/null
# The client home's volumes: its nodes' disks, seeds and console logs, and its base image.
vols=$(lab_virsh vol-list kubelab | awk '{print $1}')
[ -n "$vols" ] || fail "no volume listed: the server home's cluster still has some"
if grep -e e2e-remote -e "$baked_sha" <<<"$vols"; then fail "volumes left on the server"; fi
[ ! -e "$client_home/profiles/e2e-remote" ] || fail "the profile directory is left"
pass "delete of the remote cluster leaves nothing on the server"
lab_remote_down "$NS" "$CLIENT_NS" "$remote_dir"

log "delete --all leaves nothing of kubelab's and keeps the rest"
kl delete --all
[ -z "$(lab_virsh list --all --name | grep '^e2e' | grep -v '^e2e-foreign$' || true)" ] \
    || fail "domains left: $(lab_virsh list --all --name)"
[ -z "$(lab_virsh net-list --all --name | grep '^kubelab-' || true)" ] \
    || fail "networks left: $(lab_virsh net-list --all --name)"
if lab_virsh pool-info kubelab >/dev/null 2>&1; then
    lab_virsh pool-refresh kubelab >/dev/null
    [ -z "$(lab_virsh vol-list kubelab | awk '{print $1}')" ] || fail "volumes left: $(lab_virsh vol-list kubelab)"
fi
[ -z "$(ls -A "$KUBELAB_HOME/profiles" 2>/dev/null)" ] || fail "profile files left"
lab_virsh dominfo e2e-foreign >/dev/null || fail "the foreign domain was removed"
lab_virsh net-info e2e-foreign-net >/dev/null || fail "the foreign network was removed"
pass "delete --all"

lab_virsh undefine e2e-foreign >/dev/null
lab_virsh net-destroy e2e-foreign-net >/dev/null
lab_virsh net-undefine e2e-foreign-net >/dev/null

lab_netns_down "$NS"
host_canary_check_and_remove || fail "the host's libvirt objects changed during the e2e"
pass "the host's kubelab-named domain, network and volume are unchanged byte for byte"
echo "e2e: $pass_count passed, 0 failed"
