#!/usr/bin/env python3
"""Opens a tun device the way Android's VpnService does (the caller owns the descriptor), then replaces itself
with `hushwall run --tun-fd FD ...`, so the engine adopts an already-open descriptor. Usage:
tun_fd_launcher.py TUN_NAME HUSHWALL_BIN [ENGINE ARGS...]"""
import fcntl
import os
import struct
import sys

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000

name, binary, *engine_args = sys.argv[1:]
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
os.set_inheritable(fd, True)
os.execv(binary, [binary, "run", "--tun-fd", str(fd), *engine_args])
