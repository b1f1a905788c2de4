#!/usr/bin/env python3
"""An HTTPS site for the real-browser test (tests/tests/families.rs), Python standard library only.

Serves, on every address given (IPv4 and IPv6, --port, the test bed's server certificate):
  /              a page whose script loads two images and two fetch() calls from the same name, and one image
                 and one fetch() from a telemetry name given with --telemetry, and writes each outcome into
                 the page (<pre id="results">, JSON) so `chromium --dump-dom` shows what loaded
  /img/NAME.png  a 1x1 PNG
  /api/NAME      the text "api NAME"
Every request is written as one JSON line to the log ({"path", "local", "peer"}).

Usage: browser_page.py --log FILE --cert FILE --key FILE --port PORT --telemetry NAME ADDR...
Prints "page: ready" once listening.
"""

import argparse
import http.server
import json
import socket
import ssl
import struct
import sys
import threading
import zlib

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>families</title></head>
<body><pre id="results"></pre>
<script>
const results = {};
const show = () => { document.getElementById("results").textContent = JSON.stringify(results); };
function image(key, url) {
  const img = new Image();
  img.onload = () => { results[key] = "ok"; show(); };
  img.onerror = () => { results[key] = "error"; show(); };
  img.src = url;
  document.body.appendChild(img);
}
function get(key, url, options) {
  fetch(url, options).then(r => r.text()).then(
    t => { results[key] = t; show(); },
    e => { results[key] = "error"; show(); });
}
image("img_a", "/img/a.png");
image("img_b", "/img/b.png");
get("fetch_one", "/api/one");
get("fetch_two", "/api/two");
image("telemetry_img", "https://TELEMETRY/pixel.png");
get("telemetry_fetch", "https://TELEMETRY/collect", {mode: "no-cors"});
</script></body></html>
"""


def png_1x1():
    """A valid 1x1 grey PNG."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\x80"))
            + chunk(b"IEND", b""))


def plain(addr):
    host, port = addr[0], addr[1]
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    log_file = None
    log_lock = threading.Lock()
    page = b""
    png = png_1x1()

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        with self.log_lock:
            self.log_file.write(json.dumps({"path": self.path, "local": plain(self.connection.getsockname()),
                                            "peer": plain(self.client_address)}) + "\n")
            self.log_file.flush()
        if self.path == "/":
            self.reply(200, "text/html; charset=utf-8", self.page)
        elif self.path.startswith("/img/"):
            self.reply(200, "image/png", self.png)
        elif self.path.startswith("/api/"):
            self.reply(200, "text/plain", ("api " + self.path[len("/api/"):]).encode())
        else:
            self.reply(404, "text/plain", b"not found")

    def reply(self, code, kind, body):
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


def serve(addr, port, context):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET

    class Server(http.server.ThreadingHTTPServer):
        address_family = family
        daemon_threads = True

        def get_request(self):
            sock, peer = super().get_request()
            return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), peer

    server = Server((addr, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--telemetry", required=True)
    parser.add_argument("addrs", nargs="+")
    args = parser.parse_args()
    Handler.log_file = open(args.log, "a", encoding="utf-8")
    Handler.page = PAGE.replace("TELEMETRY", args.telemetry).encode()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    for addr in args.addrs:
        serve(addr, args.port, context)
    print("page: ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    sys.exit(main())
