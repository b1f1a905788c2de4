#!/usr/bin/env python3
"""Bypass attempts against the TCP inspector (issue 18.1, 18.2); run inside the `phone` namespace. Standard
library only.

  bypass.py HOST PORT KIND NAME DELAY_MS

Connects to HOST:PORT, waits DELAY_MS, sends one client head naming NAME, then reads until the connection ends
or 3 s pass. KIND:
  hello          a real ClientHello (Python's ssl, SNI NAME)
  padded-hello   the same ClientHello with a padding extension taking it past 16 KiB (two TLS records)
  http-crlf      GET with two empty lines before the request line (RFC 9112 §2.2), Host NAME
  http-headers   GET with 70 headers before Host NAME
  http-userinfo  GET with Host user@NAME:PORT
  keepalive      GET / naming www.example.org, its answer read, then on the same connection GET /x naming NAME
  pipelined      both of those requests in one write

Prints one JSON object: {"result": ..., "sent": bytes, "elapsed_ms": ...}; results: "refused" (RST to the
SYN), "reset" (RST after connecting), "eof" (closed), "data" (the server answered), "timeout".
"""

import json
import socket
import ssl
import struct
import sys
import time

PADDED_SIZE = 17 * 1024
RECORD_MAX = 16 * 1024


def client_hello(name):
    """The handshake message (type, length, body) of the ClientHello Python's ssl sends for `name`."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    records, handshake = outgoing.read(), b""
    while records:
        length = struct.unpack("!H", records[3:5])[0]
        handshake += records[5 : 5 + length]
        records = records[5 + length :]
    return handshake


def padded(handshake, size):
    """`handshake` with its padding extension (if any) replaced by one that makes the message `size` bytes."""
    body = handshake[4:]
    at = 2 + 32
    at += 1 + body[at]  # session id
    at += 2 + struct.unpack("!H", body[at : at + 2])[0]  # cipher suites
    at += 1 + body[at]  # compression methods
    head, exts = body[:at], body[at + 2 :]
    kept = b""
    while exts:
        ext_type, ext_len = struct.unpack("!HH", exts[:4])
        if ext_type != 0x0015:
            kept += exts[: 4 + ext_len]
        exts = exts[4 + ext_len :]
    pad = max(0, size - (4 + len(head) + 2 + len(kept) + 4))
    kept += struct.pack("!HH", 0x0015, pad) + b"\0" * pad
    body = head + struct.pack("!H", len(kept)) + kept
    return b"\x01" + struct.pack("!I", len(body))[1:] + body


def records(handshake):
    out = b""
    for i in range(0, len(handshake), RECORD_MAX):
        chunk = handshake[i : i + RECORD_MAX]
        out += b"\x16\x03\x01" + struct.pack("!H", len(chunk)) + chunk
    return out


def head(kind, name, port):
    if kind == "hello":
        return records(client_hello(name))
    if kind == "padded-hello":
        return records(padded(client_hello(name), PADDED_SIZE))
    if kind == "http-crlf":
        return b"\r\n\r\nGET / HTTP/1.1\r\nHost: %s\r\n\r\n" % name.encode()
    if kind == "http-headers":
        many = b"".join(b"X-Filler-%d: v\r\n" % i for i in range(70))
        return b"GET / HTTP/1.1\r\n" + many + b"Host: %s\r\n\r\n" % name.encode()
    if kind == "http-userinfo":
        return b"GET / HTTP/1.1\r\nHost: user@%s:%d\r\n\r\n" % (name.encode(), port)
    raise SystemExit("unknown kind %r" % kind)


FIRST_REQUEST = b"GET /first HTTP/1.1\r\nHost: www.example.org\r\n\r\n"


def attempt(host, port, kind, name, delay_ms):
    later = b"GET /x HTTP/1.1\r\nHost: %s\r\n\r\n" % name.encode()
    data = FIRST_REQUEST + later if kind == "pipelined" else later if kind == "keepalive" else head(kind, name, port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect((host, port))
    except ConnectionRefusedError:
        return "refused", 0
    time.sleep(delay_ms / 1000)
    if kind == "keepalive" and not read_whole_answer(s).startswith(b"HTTP/1.1 200"):
        return "first-request-failed", 0
    try:
        s.sendall(data)
    except (ConnectionResetError, BrokenPipeError):
        return "reset", 0
    s.settimeout(3)
    try:
        answer = s.recv(4096)
    except ConnectionResetError:
        return "reset", len(data)
    except socket.timeout:
        return "timeout", len(data)
    return ("data" if answer else "eof"), len(data)


def read_whole_answer(s):
    """Sends the first request and reads its whole answer (head and Content-Length body), so that what the
    socket yields afterwards belongs to the second request (a head and body can arrive in separate reads)."""
    s.sendall(FIRST_REQUEST)
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = s.recv(4096)
        if not chunk:
            return answer
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            break
        body += chunk
    return answer


def main():
    host, port, kind, name, delay_ms = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    start = time.monotonic()
    result, sent = attempt(host, port, kind, name, delay_ms)
    elapsed = int((time.monotonic() - start) * 1000)
    print(json.dumps({"result": result, "sent": sent, "elapsed_ms": elapsed}))


if __name__ == "__main__":
    main()
