#!/bin/sh
# Runs a command (the tests' sshd) in a private mount namespace: a fresh tmpfs on /run
# holding the privilege-separation directory sshd needs, and, where DIR has them, DIR's
# passwd, group and shadow over /etc's (a login user the host does not have). The host's
# /run and /etc are never written. Every step execs, so the caller's PID is CMD's.
#   tests/util/private-mounts.sh DIR CMD...
set -e
if [ "${1:-}" != --inner ]; then exec unshare --mount --propagation private "$0" --inner "$@"; fi
dir=$2
shift 2
mount -t tmpfs -o mode=0755 kubelab-test-run /run
mkdir -m 0755 /run/sshd
for f in passwd group shadow; do
    if [ -f "$dir/$f" ]; then mount --bind "$dir/$f" "/etc/$f"; fi
done
exec "$@"
