#!/usr/bin/env python3
"""Turns a capture made on the test bed's tun device (raw IP, `tcpdump -i hw0 -s 0 -w tun.pcap`) into seed corpora:

  packet/  every IP packet, one file each (the tun -> engine parsing path)
  engine/  the phone's packets as one sequence in the `engine` target's input format (op 0: u16 length, bytes)
  dns/     every UDP/53 and TCP/53 DNS message (queries and answers)
  tls/     the first client payload of each TCP connection to port 443 (ClientHellos)
  http/    the first client payload of each TCP connection to port 80 (request heads)

  pcap2corpus.py tun.pcap OUT_DIR
"""

import hashlib
import os
import struct
import sys


def packets(path):
    data = open(path, "rb").read()
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if linktype == 101 or linktype == 12:  # raw IP
            yield frame
        elif linktype == 276:  # Linux cooked v2
            yield frame[20:]
        elif linktype == 113:  # Linux cooked v1
            yield frame[16:]
        elif linktype == 1:  # Ethernet
            yield frame[14:]


def transport(p):
    """(proto, src_port, dst_port, payload, from_phone) or None."""
    if not p:
        return None
    v = p[0] >> 4
    if v == 4:
        ihl = (p[0] & 15) * 4
        proto, body, src = p[9], p[ihl:], p[12:16]
        from_phone = src == bytes([10, 111, 0, 1])
    elif v == 6 and len(p) >= 40:
        proto, body, src = p[6], p[40:], p[8:24]
        from_phone = src.hex().startswith("fd006877000f")
    else:
        return None
    if proto == 17 and len(body) >= 8:
        sp, dp = struct.unpack("!HH", body[:4])
        return ("udp", sp, dp, body[8:], from_phone)
    if proto == 6 and len(body) >= 20:
        sp, dp = struct.unpack("!HH", body[:4])
        doff = (body[12] >> 4) * 4
        return ("tcp", sp, dp, body[doff:], from_phone)
    return None


def save(out, target, blob):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(blob).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(blob)


def main():
    path, out = sys.argv[1], sys.argv[2]
    seq = b""
    seen_first = set()
    count = 0
    for p in packets(path):
        count += 1
        save(out, "packet", p)
        t = transport(p)
        if t is None:
            continue
        proto, sp, dp, payload, from_phone = t
        if from_phone and len(seq) < 6000:
            seq += b"\x00" + struct.pack("!H", len(p)) + p
        if not payload:
            continue
        if 53 in (sp, dp):
            save(out, "dns", payload[2:] if proto == "tcp" else payload)
        if proto == "tcp" and from_phone and (sp, dp) not in seen_first:
            seen_first.add((sp, dp))
            if dp == 443:
                save(out, "tls", payload)
            elif dp == 80:
                save(out, "http", payload)
    if seq:
        save(out, "engine", seq)
    print("%d packets from %s" % (count, path))


if __name__ == "__main__":
    main()
