#!/usr/bin/env bash
# The whole test suite (shared/DESIGN.md "Tests, by tier"), every part mandatory:
#   0.   install the packages it needs; rustfmt and clippy (warnings are errors)
#   1+2. `cargo test`: unit tests, loopback HTTP and sshd integration tests, libvirt
#        test:///default, the VBoxManage simulator; changes nothing outside temp dirs
#   3.   the VirtualBox-only build (`--no-default-features --features virtualbox`): built,
#        tested, and its binary checked to link no libvirt
#   4.   scripts/dev/e2e.sh: real VMs under a private libvirtd in a network namespace
# Exits non-zero on any failure; a missing or non-executable part is a failure.
set -euo pipefail
cd "$(dirname "$0")/../.."

step() { printf '\n== test.sh: %s\n' "$*" >&2; }

for f in scripts/install-deps.sh scripts/dev/e2e.sh; do
    [[ -x $f ]] || { echo "test.sh: $f is missing or not executable" >&2; exit 1; }
done

step "install-deps"
scripts/install-deps.sh --test
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy (default features, then VirtualBox only)"
cargo clippy --locked --all-targets -- -D warnings
cargo clippy --locked --all-targets --no-default-features --features virtualbox -- -D warnings
# VirtualBox only first: the default build below then leaves target/debug/kubelab as the
# e2e wants it. Both share the dependencies' artifacts.
step "cargo test (VirtualBox only)"
cargo test --locked --all-targets --no-default-features --features virtualbox 2>&1
if ldd target/debug/kubelab | grep -i libvirt; then
    echo "test.sh: the VirtualBox-only binary links libvirt" >&2
    exit 1
fi
echo "test.sh: the VirtualBox-only binary links no libvirt" >&2
step "cargo test (default features)"
cargo test --locked --all-targets 2>&1
step "end to end"
scripts/dev/e2e.sh
