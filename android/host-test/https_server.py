#!/usr/bin/env python3
"""Minimal HTTPS server for the host proof: serves files from a directory over real TLS and logs, per
connection, the TCP accept (peer address) and the SNI the client sent, so tests can prove that a blocked name
never reached the server. Usage: https_server.py CERT KEY DIR LOG ADDR... (ADDR = ip or [ipv6], port 443)."""

import http.server
import socket
import socketserver
import ssl
import sys
import threading

cert, key, root, log_path = sys.argv[1:5]
addresses = sys.argv[5:]
log_lock = threading.Lock()


def log(line):
    with log_lock, open(log_path, "a") as f:
        f.write(line + "\n")


context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
context.sni_callback = lambda sslsock, name, ctx: log(f"SNI {name}")


class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=root, **kwargs)

    def log_message(self, fmt, *args):
        log("HTTP " + (fmt % args))


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, family):
        self.address_family = family
        super().__init__(address, Handler)

    def get_request(self):
        sock, peer = self.socket.accept()
        log(f"ACCEPT {peer[0]}")
        # The handshake runs on first read, in the handler thread; a reset one only ends that thread.
        return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), peer

    def handle_error(self, request, client_address):
        log(f"ERROR {client_address[0]}")


servers = []
for a in addresses:
    family = socket.AF_INET6 if a.startswith("[") else socket.AF_INET
    servers.append(Server((a.strip("[]"), 443), family))
for s in servers[1:]:
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
servers[0].serve_forever()
