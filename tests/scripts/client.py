#!/usr/bin/env python3
"""Hushwall test bed clients (Python standard library only); run inside the `phone` namespace.

  client.py udp HOST PORT [TIMEOUT]   send one datagram on a connected UDP socket, wait for the echo
  client.py tcp HOST PORT [TIMEOUT]   connect, then read the first line the server sends

Prints one JSON object: {"result": ..., "elapsed_ms": ..., "detail": ...}
  udp results: "echo" (same bytes came back), "refused" (ICMP port unreachable), "timeout", "error"
  tcp results: "banner" (the server's first line arrived), "refused" (RST to the SYN),
               "reset" (connected, then RST), "eof" (connected, then closed with no data),
               "timeout", "error"
"""

import errno
import json
import socket
import sys
import time


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def udp(host, port, timeout):
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.settimeout(timeout)
    payload = b"hushwall-e2e udp %f" % time.time()
    s.connect((host, port))
    s.send(payload)
    try:
        data = s.recv(65535)
    except ConnectionRefusedError:
        return "refused", None
    except socket.timeout:
        return "timeout", None
    if data == payload:
        return "echo", None
    return "error", "echo mismatch: %r" % data[:64]


def tcp(host, port, timeout):
    s = socket.socket(family(host), socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
    except ConnectionRefusedError:
        return "refused", None
    except socket.timeout:
        return "timeout", "connect"
    try:
        data = s.recv(1024)
    except ConnectionResetError:
        return "reset", None
    except socket.timeout:
        return "timeout", "read"
    if not data:
        return "eof", None
    return "banner", data.decode(errors="replace").strip()


def main():
    kind, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 5.0
    start = time.monotonic()
    try:
        result, detail = {"udp": udp, "tcp": tcp}[kind](host, port, timeout)
    except OSError as e:
        result, detail = "error", "%s (%s)" % (e, errno.errorcode.get(e.errno, "?"))
    elapsed_ms = int((time.monotonic() - start) * 1000)
    print(json.dumps({"result": result, "elapsed_ms": elapsed_ms, "detail": detail}))


if __name__ == "__main__":
    main()
