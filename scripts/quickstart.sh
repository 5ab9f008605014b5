#!/usr/bin/env bash
# kubelab's main job, end to end, on a fresh Debian/Ubuntu machine (run as root):
# installs the host packages, builds kubelab and kubelab's own small test image (from
# Debian packages, cached in /var/cache/kubelab), then runs `kubelab up --nodes 2` on it,
# shows `status`, runs a command on each node over verified SSH and deletes the cluster.
#
# It needs no internet beyond the package archives. So that a demo never touches the
# machine's own networks, it runs in a network namespace with its own libvirtd (the
# same sandbox as the end-to-end tests); KEEP_LAB=1 keeps the cluster and the namespace
# (then: `ip netns exec kubelab-demo bash` and use kubelab there).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

scripts/install-deps.sh --test
cargo build --release --locked
kubelab=$root/target/release/kubelab
image_dir=$(images/testimage/ensure.sh)

# shellcheck source=scripts/dev/netns-libvirt.sh
. scripts/dev/netns-libvirt.sh
# shellcheck source=scripts/dev/serve-image.sh
. scripts/dev/serve-image.sh

NS=kubelab-demo
export KUBELAB_HOME=${KUBELAB_HOME:-/var/tmp/kubelab-demo}
lab_netns_up "$NS"
finish() {
    if [ -n "$LAB_HTTP_PID" ]; then kill "$LAB_HTTP_PID" 2>/dev/null || true; fi
    if [ -z "${KEEP_LAB:-}" ]; then
        lab_exec env KUBELAB_HOME="$KUBELAB_HOME" "$kubelab" delete --all || true
        lab_netns_down "$NS" demo
    fi
}
trap finish EXIT
lab_serve_image "$image_dir" 8099 /tmp/kubelab-demo-http.log

# Shows each kubelab command as a user would type it, then runs it in the namespace.
kl() {
    printf '\n$ kubelab %s\n' "$*" >&2
    lab_exec env KUBELAB_HOME="$KUBELAB_HOME" "$kubelab" "$@"
}
kl -p demo up --driver kvm2 --nodes 2 --cpus 1 --memory 1g --bootstrapper none \
    --image http://127.0.0.1:8099/disk.qcow2 \
    --image-sha256 "$(lab_image_sha "$image_dir" disk.qcow2)" --timings
kl -p demo status
kl -p demo ssh -- uname -a
kl -p demo ssh demo-m02 -- cat /etc/hostname
kl -p demo ssh --print-command
