#!/usr/bin/env python3
"""QUIC server and client for the Hushwall test bed (needs the `aioquic` package from PyPI).

  quic.py server --cert FILE --key FILE --log FILE --addr IP [--addr IP ...]
      one QUIC server on UDP port 443 per address (so replies leave from the address the client sent to);
      logs every datagram received and every completed handshake (with the SNI) as JSON lines;
      prints "quic: ready" once listening.
  quic.py client NAME IP [TIMEOUT]
      a QUIC handshake to IP:443 with SNI NAME (certificate not verified: the test is about the name on the
      wire), then a PING; prints {"result": "connected"|"timeout"|"error", "elapsed_ms": ..., "detail": ...}.
"""

import argparse
import asyncio
import json
import ssl
import sys
import time

from aioquic.asyncio import connect, serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import HandshakeCompleted

ALPN = ["hushwall-e2e"]
LOG = None


def log(**fields):
    fields["time_ms"] = int(time.time() * 1000)
    LOG.write(json.dumps(fields, sort_keys=True) + "\n")
    LOG.flush()


def make_protocol(local):
    class Server(QuicConnectionProtocol):
        def datagram_received(self, data, addr):
            log(event="quic_datagram", local=local, peer="%s:%d" % (addr[0], addr[1]), len=len(data))
            super().datagram_received(data, addr)

        def quic_event_received(self, event):
            if isinstance(event, HandshakeCompleted):
                tls = self._quic.tls
                sni = getattr(tls, "client_server_name", None) or getattr(tls, "server_name", None)
                log(event="quic_handshake", local=local, sni=sni, alpn=event.alpn_protocol)

    return Server


async def run_server(args):
    config = QuicConfiguration(is_client=False, alpn_protocols=ALPN)
    config.load_cert_chain(args.cert, args.key)
    for addr in args.addr:
        await serve(addr, 443, configuration=config, create_protocol=make_protocol("%s:443" % addr))
    print("quic: ready", flush=True)
    await asyncio.Event().wait()


async def run_client(name, ip, timeout):
    config = QuicConfiguration(is_client=True, alpn_protocols=ALPN, server_name=name, verify_mode=ssl.CERT_NONE)
    config.idle_timeout = timeout

    async def attempt():
        async with connect(ip, 443, configuration=config, wait_connected=True) as client:
            await client.ping()

    await asyncio.wait_for(attempt(), timeout)


def main():
    global LOG
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        name, ip = sys.argv[2], sys.argv[3]
        timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 5.0
        start = time.monotonic()
        result, detail = "connected", None
        try:
            asyncio.run(run_client(name, ip, timeout))
        except (asyncio.TimeoutError, TimeoutError):
            result = "timeout"
        except Exception as e:  # report, do not crash: the test judges
            result, detail = "error", repr(e)
        elapsed = int((time.monotonic() - start) * 1000)
        print(json.dumps({"result": result, "elapsed_ms": elapsed, "detail": detail}))
        return
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["server"])
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--addr", action="append", default=[])
    args = p.parse_args()
    LOG = open(args.log, "a", buffering=1)
    asyncio.run(run_server(args))


if __name__ == "__main__":
    main()
