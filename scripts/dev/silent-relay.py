#!/usr/bin/env python3
"""TEST-ONLY relay between one libvirt client and libvirtd's unix socket that goes silent
at the client's first REMOTE_PROC_CONNECT_GET_CAPABILITIES call, which it swallows: from
then on it forwards nothing either way but keeps both sockets open, like a daemon that
stopped answering on an open connection (the e2e's keepalive check). Prints "ready" once
it listens and "silent" when it goes quiet; exits when either side closes.

Usage: silent-relay.py LISTEN_SOCKET DAEMON_SOCKET
"""
import os
import select
import socket
import struct
import sys

REMOTE_PROGRAM = 0x20008086
PROC_CONNECT_GET_CAPABILITIES = 7


def packets(pending):
    """Splits off the whole packets (4-byte length first) of `pending`."""
    whole = []
    while len(pending) >= 4 and len(pending) >= struct.unpack(">I", pending[:4])[0]:
        length = struct.unpack(">I", pending[:4])[0]
        whole.append(pending[:length])
        pending = pending[length:]
    return whole, pending


def main(listen_path, daemon_path):
    if os.path.exists(listen_path):
        os.unlink(listen_path)
    server = socket.socket(socket.AF_UNIX)
    server.bind(listen_path)
    server.listen(1)
    print("ready", flush=True)
    client, _ = server.accept()
    daemon = socket.socket(socket.AF_UNIX)
    daemon.connect(daemon_path)
    from_client, silent = b"", False
    while True:
        readable, _, _ = select.select([client, daemon], [], [])
        if daemon in readable:
            data = daemon.recv(65536)
            if not data:
                return
            if not silent:
                client.sendall(data)
        if client in readable:
            data = client.recv(65536)
            if not data:
                return
            if silent:
                continue
            whole, from_client = packets(from_client + data)
            for packet in whole:
                program, _, procedure = struct.unpack(">III", packet[4:16])
                if (program, procedure) == (REMOTE_PROGRAM, PROC_CONNECT_GET_CAPABILITIES):
                    silent = True
                    print("silent", flush=True)
                    break
                daemon.sendall(packet)


if __name__ == "__main__":
    main(*sys.argv[1:3])
