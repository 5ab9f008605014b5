#!/usr/bin/env bash
# The whole test suite, all three tiers (shared/DESIGN.md "Tests, by tier"):
#   1+2. `cargo test`: unit tests, loopback HTTP and sshd integration tests, libvirt test:///default
#   3.   scripts/dev/e2e.sh: real VMs under a libvirtd in a network namespace (needs root)
# Installs the packages it needs first. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."

scripts/install-deps.sh --test
cargo test --locked --all-targets 2>&1
if [[ -x scripts/dev/e2e.sh ]]; then
    scripts/dev/e2e.sh
fi
