#!/usr/bin/env python3
"""Where a new connection's time goes in Hushwall: joins the connect test's client trace with Hushwall's own.

usage: trace.py CLIENT.tsv HUSHWALL.tsv     (from `BENCH_TRACE=1 bench/run.sh --tests latency ...`)

Both traces are CLOCK_MONOTONIC nanoseconds, so they line up. Per connection (the client's local port):

  connect:    client connect() → SYN read from the tun (the engine's wake-up) → SYN handled → SYN|ACK
              written → connect() returns in the client
  first byte: request sent → read from the tun → the engine dials upstream (end of that iteration) →
              upstream connected (epoll) → answer readable upstream → answer written to the tun → client has it

Prints each step's p50/p90/p99/max (µs) and, for the slowest 1 % (and 10 %) of connects and first bytes, how
much of the time each step took on average; then how long event-loop iterations took and how many packets
they moved. Standard library only.
"""

import sys
from collections import defaultdict


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def load_client(path):
    rows = []
    with open(path) as f:
        next(f)
        for line in f:
            port, start, connected, sent, first = (int(x) for x in line.split())
            rows.append({"port": port, "start": start, "connected": connected, "sent": sent, "first": first})
    return rows


def load_engine(path):
    lines = []
    with open(path) as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if len(fields) >= 2 and fields[0].isdigit():
                lines.append((int(fields[0]), fields[1], fields[2:]))
    lines.sort(key=lambda x: x[0])
    return lines


def steps(client, engine):
    """Per connection: the engine's step times, found by port or (flow events) by time within the connection."""
    by_port = defaultdict(dict)
    times = [t for t, _, _ in engine]
    for t, what, rest in engine:
        if what in ("syn_in", "syn_in_done", "synack_out", "data_in", "data_in_done", "data_out") and rest:
            by_port[int(rest[0])].setdefault(what, t)
    import bisect

    def first_after(t0, t1, kind):
        i = bisect.bisect_left(times, t0)
        while i < len(engine) and engine[i][0] <= t1:
            if engine[i][1] == kind:
                return engine[i][0]
            i += 1
        return None

    def last_before(t, kind):
        i = bisect.bisect_right(times, t) - 1
        while i >= 0:
            if engine[i][1] == kind:
                return engine[i][0]
            i -= 1
        return None

    def iteration_end(t):
        return first_after(t, t + 10**10, "done")

    out, missing = [], defaultdict(int)
    for c in client:
        e = by_port.get(c["port"], {})
        if not all(k in e for k in ("syn_in", "synack_out", "data_in", "data_out")):
            continue
        dialled = iteration_end(e["data_in"])
        connected = first_after(e["data_in"], c["first"], "connected")
        # The answer may already be there when the connect completion is seen (one event for both).
        readable = (first_after(connected, e["data_out"], "up_readable") or connected) if connected else None
        wake_syn = last_before(e["syn_in"], "wake")
        wake_data = last_before(e["data_in"], "wake")
        if None in (dialled, connected, readable, wake_syn, wake_data):
            missing[[k for k, v in (("dialled", dialled), ("connected", connected), ("readable", readable),
                                    ("wake", wake_syn), ("wake", wake_data)) if v is None][0]] += 1
            continue
        us = lambda a, b: (b - a) / 1000.0
        out.append({
            "connect": us(c["start"], c["connected"]),
            "first byte": us(c["start"], c["first"]),
            "c1 client connect() → engine wakes": us(c["start"], wake_syn),
            "c2 wake → SYN read": us(wake_syn, e["syn_in"]),
            "c3 SYN handled (engine)": us(e["syn_in"], e["syn_in_done"]),
            "c4 → SYN|ACK written": us(e["syn_in_done"], e["synack_out"]),
            "c5 SYN|ACK written → connect() returns": us(e["synack_out"], c["connected"]),
            "f0 connect() returns → request sent": us(c["connected"], c["sent"]),
            "f1 request sent → engine wakes": us(c["sent"], wake_data),
            "f2 wake → request read": us(wake_data, e["data_in"]),
            "f3 request read → iteration done (sniff, dial)": us(e["data_in"], dialled),
            "f4 → upstream connected seen": us(dialled, connected),
            "f5 → answer readable upstream": us(connected, readable),
            "f6 → answer written to the tun": us(readable, e["data_out"]),
            "f7 → client has the first byte": us(e["data_out"], c["first"]),
        })
    if missing:
        print("not followed (first step missing):", dict(missing))
    return out


def iterations(engine):
    durations, packets = [], []
    wake = None
    for t, what, rest in engine:
        if what == "wake":
            wake = t
        elif what == "done" and wake is not None:
            durations.append((t - wake) / 1000.0)
            packets.append(int(rest[0]) + int(rest[1]))
            wake = None
    return durations, packets


def main():
    client, engine = load_client(sys.argv[1]), load_engine(sys.argv[2])
    rows = steps(client, engine)
    if not rows:
        sys.exit("trace.py: no connection could be followed through both traces")
    keys = list(rows[0])
    print(f"{len(rows)} of {len(client)} connections followed through both traces; µs")
    print(f"{'step':52} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>8}")
    for k in keys:
        v = [r[k] for r in rows]
        print(f"{k:52} {pct(v, .5):7.1f} {pct(v, .9):7.1f} {pct(v, .99):7.1f} {max(v):8.1f}")
    for total, prefix in (("connect", "c"), ("first byte", "")):
        for share in (0.01, 0.10):
            cut = pct([r[total] for r in rows], 1 - share)
            tail = [r for r in rows if r[total] >= cut]
            print(f"\nslowest {share:.0%} of {total} (≥ {cut:.0f} µs, {len(tail)} connections): mean µs per step")
            for k in keys[2:]:
                if k[0] == prefix or not prefix:
                    m = sum(r[k] for r in tail) / len(tail)
                    print(f"  {k:52} {m:8.1f}")
    handed = defaultdict(int)
    for _, what, rest in engine:
        if what in ("synack_out", "data_out") and rest:
            handed[(what, rest[-1])] += 1
    print("\npackets to the phone written inline / handed to the writer thread: " + ", ".join(
        f"{what} {handed[(what, 'inline')]} / {handed[(what, 'handoff')]}" for what in ("synack_out", "data_out")))
    timeouts = sum(1 for _, what, rest in engine if what == "wake" and rest and rest[0] == "0")
    print(f"wake-ups by a timeout (no event ready): {timeouts} of "
          f"{sum(1 for _, what, _ in engine if what == 'wake')}")
    durations, packets = iterations(engine)
    if durations:
        print(f"\nevent-loop iterations: {len(durations)}; duration µs p50 {pct(durations, .5):.1f}, p99 "
              f"{pct(durations, .99):.1f}, max {max(durations):.1f}; packets moved p50 {pct(packets, .5)}, "
              f"p99 {pct(packets, .99)}, max {max(packets)}")


if __name__ == "__main__":
    main()
