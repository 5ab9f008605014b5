#!/usr/bin/env python3
"""Runs a command as a child subreaper (prctl PR_SET_CHILD_SUBREAPER) and reaps every
orphan below it, as a real host's init does.

The test harness starts libvirtd through it. libvirtd daemonizes QEMU, so a QEMU that
exits is reaped by the nearest subreaper or PID 1; this sandbox's PID 1 reaps slowly, and
libvirt's kill loop (`kill(pid, 0)`) sees the zombie as alive for 1-2 s, which would be
measured as kubelab's `delete` time. Exits when no descendant is left.
"""
import ctypes
import os
import sys

PR_SET_CHILD_SUBREAPER = 36

libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
    sys.exit(f"reaper: prctl failed: {os.strerror(ctypes.get_errno())}")
child = os.fork()
if child == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
status = 0
while True:
    try:
        pid, raw = os.wait()
    except ChildProcessError:
        break
    if pid == child:
        status = os.waitstatus_to_exitcode(raw)
sys.exit(status)
