#!/usr/bin/env bash
# kubelab's main job, end to end, on a fresh Debian/Ubuntu machine (run as root):
# installs the host packages, builds kubelab, then
#   kubelab up --nodes 2 (kubeadm)  ->  kubectl get nodes -o wide through the context kubelab
#   merged into a private KUBECONFIG  ->  kubelab ssh into the worker  ->  kubelab reset (back
#   to the clean snapshot up took)  ->  kubelab delete
#   (the context is gone, the previous one is current again).
# Every step is checked; the script exits non-zero when one fails.
#
# Two modes:
# - default (no internet needed beyond the package archives): kubelab's own small test
#   image, built from Debian packages and cached in /var/cache/kubelab. Kubernetes in it
#   is a TEST-ONLY stand-in for kubeadm/kubelet/the API server (images/testimage/files/
#   k8s-standin/): everything on the host side is kubelab's real code. So that a demo never
#   touches the machine's own networks or libvirt, it runs in a network namespace with its
#   own private libvirtd (the same sandbox as the end-to-end tests); KEEP_LAB=1 keeps the
#   cluster and the namespace (then: `nsenter --mount=/run/kubelab-lab/kubelab-demo/mnt
#   ip netns exec kubelab-demo bash`, and `scripts/dev/e2e.sh`'s lab_netns_down to remove it).
# - KUBELAB_QUICKSTART=real: the same steps with the default image (Debian 12 genericcloud)
#   and real Kubernetes from pkgs.k8s.io, on the host's own libvirtd (qemu:///system must
#   answer) with internet access from the VMs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
mode=${KUBELAB_QUICKSTART:-test}
case $mode in test | real) ;; *)
    echo "quickstart: KUBELAB_QUICKSTART must be 'test' or 'real', not '$mode'" >&2
    exit 2
    ;;
esac

scripts/install-deps.sh --test
cargo build --release --locked
kubelab=$root/target/release/kubelab
work=$(mktemp -d /tmp/kubelab-demo.XXXXXX)
export KUBELAB_HOME=${KUBELAB_HOME:-$work/home}
export KUBECONFIG=$work/kubeconfig
# kubectl's discovery cache stays in the demo's directory, not ~/.kube.
export KUBECACHEDIR=$work/kube-cache
P=demo

say() { printf '\n### %s\n' "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

# A kubeconfig that already holds a context, as a user's would: kubelab must leave it and
# make it current again on delete.
cat >"$KUBECONFIG" <<'YAML'
apiVersion: v1
kind: Config
clusters:
- name: my-other-cluster
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: my-other-user
  user: {token: not-a-real-token}
contexts:
- name: my-other-context
  context: {cluster: my-other-cluster, user: my-other-user}
current-context: my-other-context
YAML
chmod 0600 "$KUBECONFIG"

if [ "$mode" = test ]; then
    image_dir=$(images/testimage/ensure.sh)
    # shellcheck source=scripts/dev/netns-libvirt.sh
    . scripts/dev/netns-libvirt.sh
    # shellcheck source=scripts/dev/serve-image.sh
    . scripts/dev/serve-image.sh
    NS=kubelab-demo
    lab_netns_up "$NS"
    finish() {
        local rc=$?
        if [ -n "$LAB_HTTP_PID" ]; then kill "$LAB_HTTP_PID" 2>/dev/null || true; fi
        if [ -z "${KEEP_LAB:-}" ]; then
            lab_netns_down "$NS"
            rm -rf "$work"
        fi
        exit "$rc"
    }
    trap finish EXIT
    lab_serve_image "$image_dir" 8099 "$work/http.log"
    run() { lab_exec env KUBELAB_HOME="$KUBELAB_HOME" KUBECONFIG="$KUBECONFIG" "$@"; }
    image_flags=(--image http://127.0.0.1:8099/disk.qcow2
        --image-sha256 "$(lab_image_sha "$image_dir" disk.qcow2)" --cpus 1 --memory 1g --disk 4g)
    cat >&2 <<'EOF'

########################################################################################
# NOTE: this demo runs kubelab's own test image. Kubernetes in it is a TEST-ONLY
# stand-in for kubeadm, kubelet and the API server (no containers run): the nodes, the
# kubeconfig, the certificates, SSH and every host-side step are real kubelab.
# For real Kubernetes from pkgs.k8s.io: KUBELAB_QUICKSTART=real scripts/quickstart.sh
########################################################################################
EOF
else
    virsh -c qemu:///system version >/dev/null ||
        fail "libvirtd does not answer on qemu:///system: start it (systemctl start libvirtd)"
    trap 'rm -rf "$work"' EXIT
    run() { "$@"; }
    image_flags=()
fi

# Shows each command as a user would type it, then runs it.
kl() {
    printf '\n$ kubelab %s\n' "$*" >&2
    run "$kubelab" "$@"
}
kctl() {
    printf '\n$ kubectl %s\n' "$*" >&2
    run kubectl "$@"
}

kl -p "$P" up --driver kvm2 --nodes 2 --bootstrapper kubeadm "${image_flags[@]}" --timings
[ "$(run kubectl config current-context)" = "$P" ] || fail "context $P is not current"
kctl get nodes -o wide
ready=$(run kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status} {end}')
[ "$ready" = "$P=True $P-m02=True " ] || fail "nodes not Ready: $ready"
kl -p "$P" status
kl -p "$P" ssh "$P-m02" -- hostname
[ "$(run "$kubelab" -p "$P" ssh "$P-m02" -- hostname)" = "$P-m02" ] || fail "ssh into the worker"
kl -p "$P" ssh --print-command
# Back to clean in seconds: the snapshot `up` took once every node was Ready.
run "$kubelab" -p "$P" ssh "$P-m02" -- 'sudo touch /var/tmp/quickstart-was-here'
kl -p "$P" reset
run "$kubelab" -p "$P" ssh "$P-m02" -- test ! -e /var/tmp/quickstart-was-here || fail "reset kept the change"
ready=$(run kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status} {end}')
[ "$ready" = "$P=True $P-m02=True " ] || fail "nodes not Ready after reset: $ready"
if [ -n "${KEEP_LAB:-}" ]; then
    say "KEEP_LAB set: cluster $P kept (KUBECONFIG=$KUBECONFIG, KUBELAB_HOME=$KUBELAB_HOME)"
    exit 0
fi
kl -p "$P" delete
kctl config get-contexts
[ "$(run kubectl config current-context)" = my-other-context ] || fail "the previous context is not current"
if run kubectl config get-contexts "$P" >/dev/null 2>&1; then fail "context $P left behind"; fi
say "quickstart passed: 2-node cluster up, kubectl saw both nodes Ready, ssh, reset undid a change, delete restored the previous context"
