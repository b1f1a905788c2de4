#!/usr/bin/env python3
"""HTTP/3 bulk download for bench/run.sh (needs aioquic; bench/install.sh puts it into the bench venv).

  quic.py server ADDR PORT        HTTP/3 server (self-signed certificate made at start): GET /bytes/N answers
                                  N bytes of body. Prints "quic: ready" once listening.
  quic.py client ADDR PORT BYTES  one connection, GET /bytes/BYTES, reads the whole body. JSON out: bytes
                                  received, seconds from the first packet to the last byte, or an error.

QUIC packets carry at most 1,350 bytes of UDP payload (Chrome's default; QUIC's minimum is 1,200), so the
packets are the size a browser's HTTP/3 download sends through the tun.
"""

import asyncio
import datetime
import json
import os
import ssl
import sys
import tempfile
import time

from aioquic.asyncio import connect, serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration

CHUNK = 64 * 1024
DATAGRAM = 1350
BACKLOG = 1 << 20


def self_signed(directory):
    """A throw-away certificate for 'bench.example.org' (the client does not verify it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench.example.org")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


class Server(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = None
        self.sending = {}  # stream id -> bytes still to send

    def quic_event_received(self, event):
        if self.h3 is None:
            self.h3 = H3Connection(self._quic)
        for ev in self.h3.handle_event(event):
            if isinstance(ev, HeadersReceived):
                path = dict(ev.headers).get(b":path", b"/").decode()
                try:
                    size = int(path.rsplit("/", 1)[1])
                except ValueError:
                    size = 0
                self.h3.send_headers(ev.stream_id, [(b":status", b"200"), (b"content-length", str(size).encode())])
                self.sending[ev.stream_id] = size
        self.pump()

    def datagram_received(self, data, addr):
        super().datagram_received(data, addr)
        if self.sending:
            self.pump()  # acknowledgements free the send buffer: refill it

    def pump(self):
        """Queues body data while less than BACKLOG bytes are unacknowledged (aioquic keeps a stream's unacked
        bytes in one bytearray and shifts it on every acknowledgement: 100 MB at once would be quadratic)."""
        for stream_id, left in list(self.sending.items()):
            sender = self._quic._streams[stream_id].sender
            while left > 0 and sender._buffer_stop - sender._buffer_start < BACKLOG:
                n = min(CHUNK, left)
                left -= n
                self.h3.send_data(stream_id, bytes(n), end_stream=left == 0)
            if left:
                self.sending[stream_id] = left
            else:
                del self.sending[stream_id]
        self.transmit()


async def run_server(addr, port):
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN, max_data=16 << 20,
                               max_stream_data=16 << 20, max_datagram_size=DATAGRAM)
    with tempfile.TemporaryDirectory() as d:
        config.load_cert_chain(*self_signed(d))
    await serve(addr, port, configuration=config, create_protocol=Server)
    print("quic: ready", flush=True)
    await asyncio.Event().wait()


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.received = 0
        self.done = asyncio.get_running_loop().create_future()

    def quic_event_received(self, event):
        for ev in self.h3.handle_event(event):
            if isinstance(ev, DataReceived):
                self.received += len(ev.data)
                if ev.stream_ended and not self.done.done():
                    self.done.set_result(None)
            elif isinstance(ev, HeadersReceived) and ev.stream_ended and not self.done.done():
                self.done.set_result(None)

    def get(self, host, size):
        stream_id = self._quic.get_next_available_stream_id()
        self.h3.send_headers(stream_id, [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", host.encode()),
                                         (b":path", f"/bytes/{size}".encode())], end_stream=True)
        self.transmit()


async def run_client(addr, port, size):
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="bench.example.org",
                               verify_mode=ssl.CERT_NONE, max_data=16 << 20, max_stream_data=16 << 20,
                               max_datagram_size=DATAGRAM)
    config.idle_timeout = 5  # a contender that carries no UDP fails the handshake in 5 s
    start = time.perf_counter()
    async with connect(addr, port, configuration=config, create_protocol=Client) as client:
        client.get("bench.example.org", size)
        await asyncio.wait_for(client.done, timeout=max(60, size / 1e6))
        return client.received, time.perf_counter() - start


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "server":
        asyncio.run(run_server(args[0], int(args[1])))
    elif cmd == "client":
        size = int(args[2])
        try:
            received, seconds = asyncio.run(run_client(args[0], int(args[1]), size))
            out = {"bytes": received, "seconds": seconds}
            if received != size:
                out["error"] = f"received {received} of {size} bytes"
        except Exception as e:  # report, do not crash: the report shows it
            out = {"error": repr(e)}
        print(json.dumps(out))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
