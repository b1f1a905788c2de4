#!/usr/bin/env python3
"""Small measurement tools for bench/run.sh (standard library only).

  tools.py server ADDR PORT           HTTP-ish server: answers each request with a small fixed response and keeps
                                      the connection open until the client closes it (epoll, one thread).
  tools.py connect ADDR PORT N [TRACE]
                                      N sequential connects; per connect: connect() time and time to the first
                                      response byte of a small HTTP request (what an app waits for). JSON out,
                                      with every sample (µs). TRACE: a file for each connect's local port and
                                      CLOCK_MONOTONIC times (ns) at start, connected, request sent, first byte.
  tools.py dns SERVER NAME N          N sequential A queries for NAME over UDP; latency per answer. JSON out.
  tools.py hold ADDR PORT N READY     opens N concurrent connections (each sends a request and reads the answer),
                                      writes READY (a file) with how many succeeded, holds them until stdin closes.
  tools.py procstat PID...            sum over the processes (and all their threads) of utime+stime in seconds,
                                      VmRSS and VmHWM in KiB, voluntary+involuntary context switches. JSON out.
"""

import json
import os
import random
import select
import socket
import struct
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: bench.example.org\r\nUser-Agent: hushwall-bench\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"


def server(addr, port):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((addr, port))
    listener.listen(8192)
    listener.setblocking(False)
    ep = select.epoll()
    ep.register(listener.fileno(), select.EPOLLIN)
    conns = {}
    while True:
        for fd, _ in ep.poll():
            if fd == listener.fileno():
                while True:
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conns[conn.fileno()] = conn
                    ep.register(conn.fileno(), select.EPOLLIN)
                continue
            conn = conns.get(fd)
            if conn is None:
                continue
            try:
                data = conn.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data:
                try:
                    conn.send(RESPONSE)
                except OSError:
                    pass
            else:
                ep.unregister(fd)
                del conns[fd]
                conn.close()


def percentiles(samples_ns):
    """Percentiles in µs, and every sample (µs, in the order measured) for the distribution plots."""
    s = sorted(samples_ns)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))] / 1000.0
    return {"n": len(s), "p50_us": pick(0.50), "p99_us": pick(0.99), "mean_us": sum(s) / len(s) / 1000.0,
            "samples_us": [round(x / 1000.0, 1) for x in samples_ns]}


def connect(addr, port, n, trace_path=None):
    connect_ns, first_byte_ns, failures, trace = [], [], 0, []
    for _ in range(n):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(5)
        try:
            t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            sock.connect((addr, port))
            t1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            sock.sendall(REQUEST)
            t_sent = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            got = sock.recv(4096)
            t2 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            if not got:
                raise OSError("closed")
            connect_ns.append(t1 - t0)
            first_byte_ns.append(t2 - t0)
            if trace_path:
                trace.append(f"{sock.getsockname()[1]}\t{t0}\t{t1}\t{t_sent}\t{t2}\n")
        except OSError:
            failures += 1
        finally:
            sock.close()
    if trace_path:
        with open(trace_path, "w") as f:
            f.write("port\tstart_ns\tconnected_ns\tsent_ns\tfirst_byte_ns\n")
            f.writelines(trace)
    out = {"failures": failures}
    if connect_ns:
        out["connect"] = percentiles(connect_ns)
        out["first_byte"] = percentiles(first_byte_ns)
    print(json.dumps(out))


def dns_query(name, qid):
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    return header + qname + struct.pack("!HH", 1, 1)


def dns(server_addr, name, n):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    sock.connect((server_addr, 53))
    samples, failures, rcodes = [], 0, {}
    for _ in range(n):
        qid = random.randrange(65536)
        query = dns_query(name, qid)
        t0 = time.perf_counter_ns()
        sock.send(query)
        try:
            while True:
                reply = sock.recv(4096)
                if len(reply) >= 4 and struct.unpack("!H", reply[:2])[0] == qid:
                    break
            samples.append(time.perf_counter_ns() - t0)
            rcode = str(reply[3] & 0x0F)
            rcodes[rcode] = rcodes.get(rcode, 0) + 1
        except OSError:
            failures += 1
    out = {"failures": failures, "rcodes": rcodes}
    if samples:
        out["latency"] = percentiles(samples)
    print(json.dumps(out))


def hold(addr, port, n, ready_path):
    """Opens n connections with bounded parallelism, each completing one request/response, and holds them."""
    ep = select.epoll()
    pending = {}  # fd -> [sock, state]  state: 0 connecting, 1 waiting for the response
    held, failures = [], 0
    started, parallel = 0, 256
    deadline = time.monotonic() + 60
    while (started < n or pending) and time.monotonic() < deadline:
        while started < n and len(pending) < parallel:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.connect((addr, port))
            except BlockingIOError:
                pass
            except OSError:
                failures += 1
                sock.close()
                started += 1
                continue
            pending[sock.fileno()] = [sock, 0]
            ep.register(sock.fileno(), select.EPOLLOUT)
            started += 1
        for fd, ev in ep.poll(1.0):
            sock, state = pending[fd]
            ok = not ev & (select.EPOLLERR | select.EPOLLHUP)
            if ok and state == 0:
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    try:
                        sock.send(REQUEST)
                        pending[fd][1] = 1
                        ep.modify(fd, select.EPOLLIN)
                        continue
                    except OSError:
                        pass
                ok = False
            if ok and state == 1:
                try:
                    ok = bool(sock.recv(4096))
                except OSError:
                    ok = False
                if ok:
                    ep.unregister(fd)
                    del pending[fd]
                    held.append(sock)
                    continue
            ep.unregister(fd)
            del pending[fd]
            sock.close()
            failures += 1
    failures += len(pending)
    with open(ready_path + ".tmp", "w") as f:
        json.dump({"requested": n, "open": len(held), "failed": failures}, f)
    os.rename(ready_path + ".tmp", ready_path)
    sys.stdin.read()  # hold until the caller closes our stdin
    for sock in held:
        sock.close()


def procstat(pids):
    tick = os.sysconf("SC_CLK_TCK")
    cpu, rss, hwm, switches = 0.0, 0, 0, 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # Fields after the command: state is index 0, so utime (14) and stime (15) are 11 and 12;
            # cutime/cstime (16, 17) cover reaped children (none expected).
            cpu += (int(fields[11]) + int(fields[12])) / tick
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
            for tid in os.listdir(f"/proc/{pid}/task"):
                try:
                    with open(f"/proc/{pid}/task/{tid}/status") as f:
                        for line in f:
                            if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                                switches += int(line.split()[1])
                except FileNotFoundError:
                    pass
        except FileNotFoundError:
            pass
    print(json.dumps({"cpu_s": cpu, "rss_kib": rss, "hwm_kib": hwm, "switches": switches}))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "server":
        server(args[0], int(args[1]))
    elif cmd == "connect":
        connect(args[0], int(args[1]), int(args[2]), args[3] if len(args) > 3 else None)
    elif cmd == "dns":
        dns(args[0], args[1], int(args[2]))
    elif cmd == "hold":
        hold(args[0], int(args[1]), int(args[2]), args[3])
    elif cmd == "procstat":
        procstat([int(p) for p in args])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
