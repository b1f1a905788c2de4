#!/usr/bin/env python3
"""Bounded load generators and a connection-holding server for the reliability tests (standard library only).

Every mode is bounded in count and time and only talks to the addresses it is given (the test bed's own
namespaces: 198.18.0.0/15, fd00:6877::/32). Each prints JSON lines on stdout; the last line is the result.

  flood.py hold-server PORT ADDR...            echo server holding any number of connections (internet netns)
  flood.py tcp HOST PORT N HOLD_S              open N concurrent connections, echo a line on each, hold them
                                               HOLD_S seconds (printing {"phase": "holding"} first), check they
                                               still echo, close them
  flood.py syn SRC DST PORT N                  N raw SYNs from SRC (random ports) to DST:PORT, nothing else
  flood.py dns SERVER N WINDOW NAME...         N queries (A) for the names in turn, at most WINDOW outstanding
  flood.py udp HOST PORT N FLOWS SIZE          N datagrams of SIZE bytes over FLOWS sockets, one retry per
                                               unanswered flow; counts echoes and refusals per datagram and flow
"""

import errno
import json
import os
import random
import selectors
import socket
import struct
import sys
import time


def out(**fields):
    print(json.dumps(fields), flush=True)


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


# --------------------------------------------------------------------------------------------------------------
def hold_server(port, addrs):
    sel = selectors.DefaultSelector()
    for a in addrs:
        s = socket.socket(family(a), socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((a, port))
        s.listen(8192)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, "listen")
    out(ready=True)
    accepted = 0
    while True:
        for key, _ in sel.select(timeout=1.0):
            if key.data == "listen":
                for _ in range(256):
                    try:
                        c, _ = key.fileobj.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break
                    c.setblocking(False)
                    sel.register(c, selectors.EVENT_READ, "conn")
                    accepted += 1
            else:
                c = key.fileobj
                try:
                    data = c.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(c)
                    c.close()
                    continue
                try:
                    c.send(data)
                except OSError:
                    sel.unregister(c)
                    c.close()


# --------------------------------------------------------------------------------------------------------------
def tcp_flood(host, port, n, hold_s):
    """Opens n connections concurrently; each sends one line and expects it back."""
    start = time.monotonic()
    sel = selectors.DefaultSelector()
    counts = {"echoed": 0, "refused": 0, "reset": 0, "eof": 0, "timeout": 0, "error": 0}
    errors = {}
    conns = {}
    pending = 0
    deadline = time.monotonic() + 60
    opened = 0

    def fail(sock, kind, err=None):
        nonlocal pending
        counts[kind] += 1
        if err is not None:
            errors[err] = errors.get(err, 0) + 1
        sel.unregister(sock)
        sock.close()
        del conns[sock]
        pending -= 1

    while (opened < n or pending) and time.monotonic() < deadline:
        # Keep at most 1024 handshakes in flight.
        while opened < n and pending < 1024:
            s = socket.socket(family(host), socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex((host, port))
            opened += 1
            if err not in (0, errno.EINPROGRESS):
                counts["error"] += 1
                errors[errno.errorcode.get(err, str(err))] = errors.get(errno.errorcode.get(err, str(err)), 0) + 1
                s.close()
                continue
            line = b"ping %d\n" % opened
            conns[s] = [line, False, b""]
            sel.register(s, selectors.EVENT_WRITE)
            pending += 1
        for key, ev in sel.select(timeout=0.2):
            s = key.fileobj
            st = conns[s]
            if not st[1]:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err == errno.ECONNREFUSED:
                    fail(s, "refused")
                    continue
                if err == errno.ECONNRESET:
                    fail(s, "reset")
                    continue
                if err:
                    fail(s, "error", errno.errorcode.get(err, str(err)))
                    continue
                try:
                    s.send(st[0])
                except OSError as e:
                    fail(s, "reset" if e.errno == errno.ECONNRESET else "error", errno.errorcode.get(e.errno, "?"))
                    continue
                st[1] = True
                sel.modify(s, selectors.EVENT_READ)
            else:
                try:
                    data = s.recv(256)
                except ConnectionResetError:
                    fail(s, "reset")
                    continue
                except OSError as e:
                    fail(s, "error", errno.errorcode.get(e.errno, "?"))
                    continue
                if not data:
                    fail(s, "eof")
                    continue
                st[2] += data
                if st[2] == st[0]:
                    counts["echoed"] += 1
                    sel.unregister(s)
                    pending -= 1
    for s, st in list(conns.items()):
        if st[2] != st[0]:
            counts["timeout"] += 1
            try:
                sel.unregister(s)
            except KeyError:
                pass
            s.close()
            del conns[s]
    held = list(conns)
    out(phase="holding", held=len(held), elapsed_ms=int((time.monotonic() - start) * 1000), **counts)
    time.sleep(hold_s)
    # Every held connection must still carry data both ways.
    alive = 0
    for s in held:
        s.setblocking(True)
        s.settimeout(5)
        try:
            s.send(b"again\n")
            got = b""
            while len(got) < 6:
                d = s.recv(64)
                if not d:
                    break
                got += d
            if got == b"again\n":
                alive += 1
        except OSError:
            pass
    for s in held:
        s.close()
    out(phase="done", held=len(held), alive_after_hold=alive, errors=errors,
        elapsed_ms=int((time.monotonic() - start) * 1000), **counts)


# --------------------------------------------------------------------------------------------------------------
def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def syn_flood(src, dst, port, n):
    """n bare SYNs from random source ports; the phone's kernel answers any SYN|ACK with RST."""
    v6 = ":" in dst
    start = time.monotonic()
    if v6:
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_TCP)
        s.setsockopt(socket.IPPROTO_IPV6, 7, 16)  # IPV6_CHECKSUM at offset 16: the kernel fills it in
        srcb, dstb = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        srcb, dstb = socket.inet_aton(src), socket.inet_aton(dst)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    rnd = random.Random(0x6877)
    sent = dropped = 0
    for _ in range(n):
        sport = rnd.randint(20000, 60000)
        seq = rnd.getrandbits(32)
        hdr = struct.pack("!HHIIBBHHH", sport, port, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
        if not v6:
            pseudo = srcb + dstb + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(hdr))
            hdr = hdr[:16] + struct.pack("!H", checksum(pseudo + hdr)) + hdr[18:]
        try:
            s.sendto(hdr, (dst, 0))
            sent += 1
        except OSError:
            dropped += 1
            time.sleep(0.001)
    out(sent=sent, send_errors=dropped, elapsed_ms=int((time.monotonic() - start) * 1000))


# --------------------------------------------------------------------------------------------------------------
def dns_query(qid, name):
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack("!HH", 1, 1)


def dns_flood(server, n, window, names):
    start = time.monotonic()
    s = socket.socket(family(server), socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    s.connect((server, 53))
    s.setblocking(False)
    outstanding = {}  # id -> (name, sent_at)
    rcodes = {}
    by_name = {}
    sent = lost = refused = 0
    next_id = 0
    ids = list(range(65536))
    random.Random(7).shuffle(ids)
    deadline = time.monotonic() + 300
    while (sent < n or outstanding) and time.monotonic() < deadline:
        while sent < n and len(outstanding) < window:
            qid = ids[next_id % 65536]
            next_id += 1
            if qid in outstanding:
                continue
            name = names[sent % len(names)]
            try:
                s.send(dns_query(qid, name))
            except BlockingIOError:
                break
            except ConnectionRefusedError:
                refused += 1
                continue
            outstanding[qid] = (name, time.monotonic())
            sent += 1
        try:
            data = s.recv(4096)
        except BlockingIOError:
            time.sleep(0.0005)
            now = time.monotonic()
            for qid, (_, t) in list(outstanding.items()):
                if now - t > 5:
                    del outstanding[qid]
                    lost += 1
            continue
        except ConnectionRefusedError:
            refused += 1
            continue
        if len(data) < 12:
            continue
        qid, flags = struct.unpack("!HH", data[:4])
        if qid not in outstanding:
            continue
        name, _ = outstanding.pop(qid)
        rc = flags & 0xF
        rcodes[rc] = rcodes.get(rc, 0) + 1
        by_name.setdefault(name, {}).setdefault(rc, 0)
        by_name[name][rc] += 1
    lost += len(outstanding)
    out(sent=sent, answered=sum(rcodes.values()), lost=lost, icmp_refused=refused,
        rcodes={str(k): v for k, v in rcodes.items()},
        by_name={k: {str(r): c for r, c in v.items()} for k, v in by_name.items()},
        elapsed_ms=int((time.monotonic() - start) * 1000))


# --------------------------------------------------------------------------------------------------------------
def udp_flood(host, port, n, flows, size):
    """N datagrams over FLOWS sockets, then one retry on every flow that got no answer at all (as a real client
    would: the kernel's tun queue may drop a burst's datagrams before the engine sees them). Counts datagrams
    and flows: echoed, refused (ICMP), silent."""
    start = time.monotonic()
    socks = []
    for _ in range(flows):
        s = socket.socket(family(host), socket.SOCK_DGRAM)
        s.setblocking(False)
        s.connect((host, port))
        socks.append(s)
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)
    payload = os.urandom(size)
    sent = echoed = refused = send_blocked = retried = 0
    answer = [None] * flows  # per flow: "echo" or "refused" once answered

    def note(i, what):
        if answer[i] is None or what == "echo":
            answer[i] = what

    def drain(timeout):
        nonlocal echoed, refused
        for key, _ in sel.select(timeout=timeout):
            while True:
                try:
                    d = key.fileobj.recv(65536)
                except BlockingIOError:
                    break
                except ConnectionRefusedError:
                    refused += 1
                    note(key.data, "refused")
                    break
                if d == payload:
                    echoed += 1
                    note(key.data, "echo")

    def send(i):
        nonlocal sent, send_blocked, refused
        try:
            socks[i].send(payload)
            sent += 1
        except BlockingIOError:
            send_blocked += 1
        except ConnectionRefusedError:
            refused += 1
            note(i, "refused")

    # Many flows: pace harder, each new flow costs the engine a socket.
    batch = 64 if flows <= 1000 else 16
    for i in range(n):
        send(i % flows)
        if i % batch == batch - 1:
            drain(0)
            # Pace a little so the tun queue (500 packets) is not what drops the datagrams.
            time.sleep(0.002)
    end = time.monotonic() + 3
    while time.monotonic() < end:
        drain(0.2)
    for i in range(flows):
        if answer[i] is None:
            retried += 1
            send(i)
            if retried % batch == 0:
                drain(0)
                time.sleep(0.002)
    end = time.monotonic() + 3
    while time.monotonic() < end:
        drain(0.2)
    for s in socks:
        s.close()
    out(sent=sent, echoed=echoed, icmp_refused=refused, send_blocked=send_blocked, retried=retried,
        flows_echoed=answer.count("echo"), flows_refused=answer.count("refused"), flows_silent=answer.count(None),
        elapsed_ms=int((time.monotonic() - start) * 1000))


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "hold-server":
        hold_server(int(args[0]), args[1:])
    elif mode == "tcp":
        tcp_flood(args[0], int(args[1]), int(args[2]), float(args[3]))
    elif mode == "syn":
        syn_flood(args[0], args[1], int(args[2]), int(args[3]))
    elif mode == "dns":
        dns_flood(args[0], int(args[1]), int(args[2]), args[3:])
    elif mode == "udp":
        udp_flood(args[0], int(args[1]), int(args[2]), int(args[3]), int(args[4]))
    else:
        sys.exit("unknown mode %r" % mode)


if __name__ == "__main__":
    main()
