#!/usr/bin/env python3
"""An SMTP submission server with STARTTLS required (aiosmtpd, a well-kept library server).

Usage: smtp_server.py HOST PORT CERT KEY MAILDIR

Every message received is written to MAILDIR/<n>.eml; "ready" is printed once the server listens.
"""

import asyncio
import ssl
import sys
from pathlib import Path

from aiosmtpd.smtp import SMTP


class Saver:
    def __init__(self, maildir):
        self.maildir = Path(maildir)
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        (self.maildir / f"{self.count}.eml").write_bytes(envelope.original_content or envelope.content)
        return "250 Message accepted for delivery"


async def main():
    host, port, cert, key, maildir = sys.argv[1:6]
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    handler = Saver(maildir)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, tls_context=tls, require_starttls=True, hostname="mail.example.org"),
        host=host,
        port=int(port),
    )
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
