#!/usr/bin/env python3
"""Hushwall test bed servers (Python standard library only).

Runs inside the `internet` network namespace:
  * HTTP on TCP port 80 and HTTPS (real TLS) on TCP port 443, dual-stack;
  * a server-speaks-first TCP service on port 7777 that sends a banner line;
  * a UDP echo service on port 7, one socket per server address so replies
    leave from the address the client sent to.

Every accepted TCP connection, every TLS handshake (with the SNI the client
sent) and every UDP datagram is written as one JSON line to the log file, so
the tests can assert what the server side saw.

Paths served over HTTP(S):
  /big        the contents of --big (a deterministic file the test bed wrote)
  /           a small page naming the server address
  /anything   a small page (200)

Usage: servers.py --log FILE --big FILE --cert FILE --key FILE --udp-addr ADDR...
Prints "servers: ready" on stdout once every socket is listening.
"""

import argparse
import http.server
import json
import os
import select
import socket
import socketserver
import ssl
import sys
import threading
import time

LOG_LOCK = threading.Lock()
LOG_FILE = None
CONN_IDS = iter(range(1, 1 << 62))
CONN_LOCK = threading.Lock()


def next_conn_id():
    with CONN_LOCK:
        return next(CONN_IDS)


def plain(addr):
    """Format a socket address as ip:port / [ip6]:port, unmapping ::ffff:a.b.c.d."""
    host, port = addr[0], addr[1]
    if host.startswith("::ffff:") and "." in host:
        host = host[len("::ffff:"):]
    if ":" in host:
        return "[%s]:%d" % (host, port)
    return "%s:%d" % (host, port)


def log(**fields):
    fields["time_ms"] = int(time.time() * 1000)
    line = json.dumps(fields, sort_keys=True)
    with LOG_LOCK:
        LOG_FILE.write(line + "\n")
        LOG_FILE.flush()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hushwall-e2e"
    big_path = None

    def log_message(self, fmt, *args):  # keep stderr quiet; we log JSON
        pass

    def do_GET(self):
        log(event="http_request", service=self.server.service, conn=self.conn_id,
            local=plain(self.connection.getsockname()), peer=plain(self.client_address),
            host=self.headers.get("Host"), path=self.path)
        if self.path == "/big":
            size = os.path.getsize(self.big_path)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            with open(self.big_path, "rb") as f:
                while True:
                    chunk = f.read(256 * 1024)
                    if not chunk:
                        break
                    self.wfile.write(chunk)
            return
        body = ("hushwall-e2e %s %s %s\n" % (
            self.server.service, plain(self.connection.getsockname()), self.path)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class DualStackServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, port, service, tls_context=None):
        self.service = service
        self.tls_context = tls_context
        super().__init__(("::", port), Handler)

    def server_bind(self):
        # Dual-stack; and skip HTTPServer.server_bind's getfqdn(), which would query DNS.
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        socketserver.TCPServer.server_bind(self)
        self.server_name = "hushwall-e2e"
        self.server_port = self.server_address[1]

    def process_request_thread(self, request, client_address):
        conn = next_conn_id()
        where = dict(service=self.service, conn=conn,
                     local=plain(request.getsockname()), peer=plain(client_address))
        log(event="accept", **where)
        try:
            if self.tls_context is not None:
                request.settimeout(10)
                # wrap_socket takes over the plain socket's descriptor.
                tls = self.tls_context.wrap_socket(
                    request, server_side=True, do_handshake_on_connect=False)
                request = tls
                try:
                    tls.do_handshake()
                except (ssl.SSLError, OSError) as e:
                    log(event="tls_error", sni=getattr(tls, "hw_sni", None), error=str(e), **where)
                    return
                log(event="tls", sni=getattr(tls, "hw_sni", None), version=tls.version(), **where)
                tls.settimeout(30)
            self.finish_request_with_id(request, client_address, conn)
        except Exception as e:  # keep serving whatever one client does
            log(event="error", error=repr(e), **where)
        finally:
            self.shutdown_request(request)

    def finish_request_with_id(self, request, client_address, conn):
        handler_cls = type("H", (Handler,), {"conn_id": conn})
        handler_cls(request, client_address, self)


def make_tls_context(cert, key):
    """A TLS server context whose SNI callback records the name on the connection's socket."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)

    def on_sni(tls_sock, name, _ctx):
        tls_sock.hw_sni = name
        return None

    ctx.sni_callback = on_sni
    return ctx


def banner_server(port):
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    sock.listen(64)

    def serve():
        while True:
            conn, addr = sock.accept()
            log(event="accept", service="banner", conn=next_conn_id(),
                local=plain(conn.getsockname()), peer=plain(addr))
            try:
                conn.sendall(b"hushwall-e2e banner\n")
                conn.settimeout(2)
                try:
                    conn.recv(1024)
                except OSError:
                    pass
            finally:
                conn.close()

    threading.Thread(target=serve, daemon=True).start()


def udp_echo(addrs, port):
    socks = []
    for a in addrs:
        fam = socket.AF_INET6 if ":" in a else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.bind((a, port))
        socks.append(s)

    def serve():
        while True:
            ready, _, _ = select.select(socks, [], [])
            for s in ready:
                data, addr = s.recvfrom(65535)
                log(event="udp", service="echo", local=plain(s.getsockname()),
                    peer=plain(addr), len=len(data))
                s.sendto(data, addr)

    threading.Thread(target=serve, daemon=True).start()


def main():
    global LOG_FILE
    p = argparse.ArgumentParser()
    p.add_argument("--log", required=True)
    p.add_argument("--big", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--udp-addr", action="append", default=[])
    args = p.parse_args()
    LOG_FILE = open(args.log, "a", buffering=1)
    Handler.big_path = args.big

    servers = [
        DualStackServer(80, "http"),
        DualStackServer(443, "https", make_tls_context(args.cert, args.key)),
    ]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    banner_server(7777)
    udp_echo(args.udp_addr, 7)
    print("servers: ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
