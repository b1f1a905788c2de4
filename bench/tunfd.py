#!/usr/bin/env python3
"""tunfd.py NAME CMD...: opens tun device NAME (IFF_TUN | IFF_NO_PI, no IFF_VNET_HDR, no offloads) and runs CMD
with it as file descriptor 3 — the kind of descriptor Android's VpnService.establish() hands to an app. Every
contender gets its tun this way, so none can use vnet-header GSO/GRO offloads the phone would not have."""

import fcntl
import os
import struct
import sys

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000

name, cmd = sys.argv[1], sys.argv[2:]
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.set_inheritable(3, True)
os.execvp(cmd[0], cmd)
