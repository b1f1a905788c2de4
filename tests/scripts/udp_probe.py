#!/usr/bin/env python3
"""UDP probes for the LAN and fragment tests (standard library only).

  udp_probe.py echo HOST PORT SIZE...      connected socket; each SIZE-byte datagram must come back byte-exact
  udp_probe.py query ADDR PORT             unconnected socket (SO_BROADCAST): one query to a broadcast or
                                           multicast address, then the first answer from any host
  udp_probe.py respond PORT [GROUP IFADDR] a "LAN host": answers every datagram with b"answer:" + it, from its
                                           own unicast address; joins multicast GROUP on the interface IFADDR

Clients print one JSON object: {"result": "ok"|"timeout"|"error", "detail": ..., "from": [host, port]}.
`respond` prints "ready" once it listens.
"""

import json
import socket
import struct
import sys
import time


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def echo(host, port, sizes):
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.settimeout(3.0)
    s.connect((host, port))
    for size in sizes:
        payload = bytes((i * 7 + size) % 256 for i in range(size))
        s.send(payload)
        try:
            data = s.recv(65535)
        except socket.timeout:
            return {"result": "timeout", "detail": "no echo of the %d-byte datagram" % size}
        if data != payload:
            return {"result": "error", "detail": "echo of %d bytes differs (%d bytes back)" % (size, len(data))}
    return {"result": "ok", "detail": "sizes %s echoed byte-exact" % sizes}


def query(addr, port):
    s = socket.socket(family(addr), socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.settimeout(3.0)
    payload = b"hushwall-lan-query %f" % time.time()
    s.sendto(payload, (addr, port))
    try:
        data, source = s.recvfrom(65535)
    except socket.timeout:
        return {"result": "timeout", "detail": None}
    if data != b"answer:" + payload:
        return {"result": "error", "detail": "unexpected answer %r" % data[:80], "from": list(source[:2])}
    return {"result": "ok", "detail": None, "from": list(source[:2])}


def respond(port, group=None, ifaddr=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    if group:
        mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(ifaddr))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    print("ready", flush=True)
    while True:
        data, source = s.recvfrom(65535)
        print("query from %s:%d" % source[:2], flush=True)
        s.sendto(b"answer:" + data, source)


def main():
    kind = sys.argv[1]
    if kind == "respond":
        respond(int(sys.argv[2]), *sys.argv[3:5])
        return
    try:
        if kind == "echo":
            out = echo(sys.argv[2], int(sys.argv[3]), [int(n) for n in sys.argv[4:]])
        else:
            out = query(sys.argv[2], int(sys.argv[3]))
    except OSError as e:
        out = {"result": "error", "detail": str(e)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
