#!/usr/bin/env python3
"""UDP probes for the LAN and fragment tests (standard library only).

  udp_probe.py echo HOST PORT SIZE...      connected socket; each SIZE-byte datagram must come back byte-exact
  udp_probe.py query ADDR PORT [IFACE]     unconnected socket on an ephemeral port (SO_BROADCAST): one query to
                                           a broadcast or multicast address (multicast leaves by IFACE if
                                           given), then the first answer from any host (arriving on IFACE)
  udp_probe.py group-query GROUP PORT IFACE [exclusive]
                                           an mDNS-style querier: a socket on PORT itself (SO_REUSEADDR unless
                                           "exclusive": then no other socket may bind PORT), joined to GROUP on
                                           IFACE only (IP_MULTICAST_ALL off, so nothing heard on other
                                           interfaces), sends one query to GROUP:PORT, then the first answer
                                           arriving on IFACE
  udp_probe.py respond PORT [GROUP IFACE [ALSO_FROM]]
                                           a "LAN host": answers every query with b"answer:" + it. Joined to
                                           multicast GROUP on IFACE, it answers like an mDNS responder (RFC 6762
                                           §6, §6.7): to the group when the query came from PORT itself, else
                                           unicast to the querier. With ALSO_FROM (an address of this host), each
                                           answer is first also sent from that address.

Clients print one JSON object: {"result": "ok"|"timeout"|"error", "detail": ..., "from": [host, port],
"to": address the answer was sent to, "iface": interface it arrived on}. `respond` prints "ready" once it listens.
"""

import json
import socket
import struct
import sys
import time

# Linux socket options the socket module does not name.
IP_PKTINFO = 8
IP_MULTICAST_ALL = 49
IPV6_MULTICAST_ALL = 29


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


def set_multicast_if(s, fam, iface):
    index = socket.if_nametoindex(iface)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
    else:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, struct.pack("4s4si", bytes(4), bytes(4), index))


def join(s, fam, group, iface):
    index = socket.if_nametoindex(iface)
    if fam == socket.AF_INET6:
        mreq = socket.inet_pton(socket.AF_INET6, group) + struct.pack("I", index)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
    else:
        mreq = struct.pack("4s4si", socket.inet_aton(group), bytes(4), index)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)


def destination(fam, group, port, iface):
    if fam == socket.AF_INET6:
        return (group, port, 0, socket.if_nametoindex(iface) if iface else 0)
    return (group, port)


def enable_pktinfo(s, fam):
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    else:
        s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)


def receive_answer(s, payload, iface):
    """The first datagram that arrived on `iface` (if given), with the address it was sent to and the interface
    it arrived on. The kernel also hands a socket joined to an IPv6 group on one interface what arrives for that
    group on another (membership is matched by address only); such datagrams are listed under "elsewhere"."""
    elsewhere = []
    while True:
        try:
            data, ancillary, _, source = s.recvmsg(65535, 256)
        except socket.timeout:
            return {"result": "timeout", "detail": None, "elsewhere": elsewhere}
        to, arrived_on = None, None
        for level, kind, value in ancillary:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                index, _, addr = struct.unpack("i4s4s", value[:12])
                to, arrived_on = socket.inet_ntop(socket.AF_INET, addr), socket.if_indextoname(index)
            elif level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                addr, index = struct.unpack("16sI", value[:20])
                to, arrived_on = socket.inet_ntop(socket.AF_INET6, addr), socket.if_indextoname(index)
        out = {"result": "ok", "detail": None, "from": list(source[:2]), "to": to, "iface": arrived_on}
        if iface and arrived_on != iface:
            elsewhere.append(out)
            continue
        out["elsewhere"] = elsewhere
        if data != b"answer:" + payload:
            out.update(result="error", detail="unexpected answer %r" % data[:80])
        return out


def query(addr, port, iface=None):
    fam = family(addr)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    if iface:
        set_multicast_if(s, fam, iface)
    enable_pktinfo(s, fam)
    s.settimeout(3.0)
    payload = b"hushwall-lan-query %f" % time.time()
    s.sendto(payload, destination(fam, addr, port, iface))
    return receive_answer(s, payload, iface)


def group_query(group, port, iface, exclusive=None):
    fam = family(group)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if exclusive != "exclusive":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        s.bind(("::", port))
    else:
        s.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        s.bind(("0.0.0.0", port))
    join(s, fam, group, iface)
    set_multicast_if(s, fam, iface)
    enable_pktinfo(s, fam)
    s.settimeout(3.0)
    payload = b"hushwall-lan-query %f" % time.time()
    s.sendto(payload, destination(fam, group, port, iface))
    return receive_answer(s, payload, iface)


def respond(port, group=None, iface=None, also_from=None):
    fam = family(group) if group else socket.AF_INET
    any_addr = "::" if fam == socket.AF_INET6 else "0.0.0.0"
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((any_addr, port))
    senders = [s]
    if also_from:
        extra = socket.socket(fam, socket.SOCK_DGRAM)
        extra.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        extra.bind((also_from, port))
        senders.insert(0, extra)
    if group:
        join(s, fam, group, iface)
        for sender in senders:
            set_multicast_if(sender, fam, iface)
            if fam == socket.AF_INET6:
                sender.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            else:
                sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    print("ready", flush=True)
    while True:
        data, source = s.recvfrom(65535)
        if data.startswith(b"answer:"):
            continue  # another responder's answer to the group
        to_group = group is not None and source[1] == port
        to = destination(fam, group, port, iface) if to_group else source
        print("query from %s:%d, answering %s" % (source[0], source[1], to[0]), flush=True)
        for sender in senders:
            sender.sendto(b"answer:" + data, to)


def main():
    kind = sys.argv[1]
    if kind == "respond":
        respond(int(sys.argv[2]), *sys.argv[3:6])
        return
    try:
        if kind == "echo":
            out = echo(sys.argv[2], int(sys.argv[3]), [int(n) for n in sys.argv[4:]])
        elif kind == "group-query":
            out = group_query(sys.argv[2], int(sys.argv[3]), *sys.argv[4:6])
        else:
            out = query(sys.argv[2], int(sys.argv[3]), *sys.argv[4:5])
    except OSError as e:
        out = {"result": "error", "detail": str(e)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
