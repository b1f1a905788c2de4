#!/usr/bin/env python3
"""Turns bench/run.sh's results.jsonl into markdown tables and a PNG plot.

usage: report.py RESULTS.jsonl TARGET.md PLOT.png

TARGET.md: the text between the markers <!-- bench:begin --> and <!-- bench:end --> is replaced (the markers are
appended, under a "## Side-by-side" heading, if missing); every other section of the file is left alone.
"""

import json
import os
import sys

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
NAMES = {"kernel": "kernel path (no tun)", "hushwall": "Hushwall", "tun2socks": "tun2socks (gVisor, direct://)",
         "tun2proxy": "tun2proxy + microsocks"}
PEERS = ("tun2socks", "tun2proxy")


def load(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    meta = next((r for r in rows if r.get("test") == "meta"), {})
    meta_end = next((r for r in rows if r.get("test") == "meta_end"), {})
    return rows, meta, meta_end


def fmt(x, digits=2):
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}f}"


def main():
    results, target, plot = sys.argv[1:4]
    rows, meta, meta_end = load(results)
    contenders = [c for c in NAMES if any(r.get("contender") == c for r in rows)]
    mtus = sorted({r["mtu"] for r in rows if r.get("test") == "iperf"})
    iperf = {(r["contender"], r["mtu"], r["streams"], r["direction"]): r for r in rows if r.get("test") == "iperf"}
    combos = [(s, d) for s in (1, 8) for d in ("upload", "download")]

    def gbps(c, m, s, d):
        r = iperf.get((c, m, s, d))
        return r.get("gbps") if r else None

    lines = []
    lines.append(f"Measured {meta.get('uptime_start', '?').strip()}; command `{meta.get('command', '?')}` "
                 f"({meta.get('mode')} mode, {meta_end.get('elapsed_s', '?')} s).  ")
    lines.append(f"Load at start: `{meta.get('uptime_start', '?').split('load average:')[-1].strip()}`, "
                 f"at end: `{meta_end.get('uptime_end', '?').split('load average:')[-1].strip()}` "
                 f"(2 cores shared with other engineers' builds: read ratios, not absolute numbers).  ")
    lines.append(f"Machine: {meta.get('cpu')}, {meta.get('cores')} cores, {meta.get('mem_gib')} GiB, Linux "
                 f"{meta.get('kernel')}. Hushwall {meta.get('hushwall_commit')}, {meta.get('tun2socks')}, "
                 f"{meta.get('tun2proxy')}, microsocks {meta.get('microsocks')}, {meta.get('iperf3')}.")
    lines.append("")

    # Throughput.
    lines.append("**TCP throughput, Gbit/s (ratio to the kernel path)**, iperf3 phone → server (upload) and "
                 "server → phone (download, `-R`):")
    lines.append("")
    header = ["contender"] + [f"MTU {m} {s}×{'↑' if d == 'upload' else '↓'}" for m in mtus for s, d in combos]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for c in contenders:
        cells = [NAMES[c]]
        for m in mtus:
            for s, d in combos:
                g, k = gbps(c, m, s, d), gbps("kernel", m, s, d)
                if g is None:
                    err = iperf.get((c, m, s, d), {}).get("error")
                    cells.append("fail" if err else "—")
                elif c == "kernel" or not k:
                    cells.append(fmt(g))
                else:
                    cells.append(f"{fmt(g)} ({g / k:.2f})")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    # Hushwall vs best peer.
    if "hushwall" in contenders and any(p in contenders for p in PEERS):
        cells = []
        for m in mtus:
            for s, d in combos:
                h = gbps("hushwall", m, s, d)
                best = max((gbps(p, m, s, d) or 0) for p in PEERS)
                cells.append(f"{h / best:.2f}×" if h and best else "—")
        lines.append("| Hushwall ÷ best peer | " + " | ".join(cells) + " |")
        lines.append("|" + "---|" * (len(cells) + 1))
        lines.append("")

    # Latency, CPU, RSS, idle.
    def one(c, test, **kw):
        for r in rows:
            if r.get("contender") == c and r.get("test") == test and all(r.get(k) == v for k, v in kw.items()):
                return r
        return None

    def lat(c, test, key, q, **kw):
        r = one(c, test, **kw)
        try:
            return r["result"][key][q]
        except (TypeError, KeyError):
            return None

    def added(c, test, key, q, **kw):
        v, k = lat(c, test, key, q, **kw), lat("kernel", test, key, q, **kw)
        return None if v is None or k is None else v - k

    def cpu_per_gb(c, m):
        rs = [iperf.get((c, m, s, d)) for s, d in combos]
        rs = [r for r in rs if r and "cpu_s" in r and r.get("bytes")]
        if not rs:
            return None
        return sum(r["cpu_s"] for r in rs) / (sum(r["bytes"] for r in rs) / 1e9)

    def flow_rows(c):
        return [r for r in rows if r.get("contender") == c and r.get("test") == "flows"]

    def flows(c, n, churned=False):
        """Peak RSS (VmHWM) with n flows on a fresh contender; with churned, VmRSS with n flows held again after
        the larger round (what the process kept)."""
        rs = [r for r in flow_rows(c) if r["flows"] == n]
        if not rs:
            return None
        r = rs[-1] if churned else rs[0]
        if churned and len(rs) < 2:
            return None
        held = (r.get("held") or {}).get("open")
        mib = r["stat"].get("rss_kib" if churned else "hwm_kib", 0) / 1024
        return f"{mib:.1f} ({held} open)" if held != n else f"{mib:.1f}"

    def idle(c):
        r = one(c, "idle")
        if not r or not r.get("before"):
            return None
        return (r["after"]["switches"] - r["before"]["switches"]) / r["seconds"]

    flow_counts = sorted({r["flows"] for r in rows if r.get("test") == "flows"})
    churn_counts = sorted({r["flows"] for r in rows if r.get("test") == "flows" and r.get("round", 1) > 1
                           and sum(1 for q in rows if q.get("test") == "flows" and q.get("contender") == r["contender"]
                                   and q["flows"] == r["flows"]) > 1})
    lines.append("**Latency added over the kernel path (µs; contender minus kernel, same percentile), CPU, memory, "
                 "idle** (MTU 1500):")
    lines.append("")
    header = ["contender", "connect p50", "connect p99", "1st byte p50", "1st byte p99", "DNS fwd p50",
              "DNS fwd p99", "DNS blocked p50", "DNS blocked p99"]
    header += [f"CPU s/GB MTU {m}" for m in mtus]
    header += [f"peak RSS MiB, {n} flows" for n in flow_counts]
    header += [f"RSS MiB, {n} flows after churn" for n in churn_counts]
    header += ["idle wake-ups/s"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for c in contenders:
        if c == "kernel":
            cells = [NAMES[c] + " (absolute)"]
            cells += [fmt(lat(c, "connect", "connect", "p50_us"), 0), fmt(lat(c, "connect", "connect", "p99_us"), 0),
                      fmt(lat(c, "connect", "first_byte", "p50_us"), 0),
                      fmt(lat(c, "connect", "first_byte", "p99_us"), 0),
                      fmt(lat(c, "dns", "latency", "p50_us", kind="forwarded"), 0),
                      fmt(lat(c, "dns", "latency", "p99_us", kind="forwarded"), 0),
                      fmt(lat(c, "dns", "latency", "p50_us", kind="blocked"), 0),
                      fmt(lat(c, "dns", "latency", "p99_us", kind="blocked"), 0)]
            cells += ["—"] * (len(mtus) + len(flow_counts) + len(churn_counts) + 1)
        else:
            cells = [NAMES[c]]
            cells += [fmt(added(c, "connect", "connect", "p50_us"), 0), fmt(added(c, "connect", "connect", "p99_us"), 0),
                      fmt(added(c, "connect", "first_byte", "p50_us"), 0),
                      fmt(added(c, "connect", "first_byte", "p99_us"), 0),
                      fmt(added(c, "dns", "latency", "p50_us", kind="forwarded"), 0),
                      fmt(added(c, "dns", "latency", "p99_us", kind="forwarded"), 0),
                      fmt(added(c, "dns", "latency", "p50_us", kind="blocked"), 0),
                      fmt(added(c, "dns", "latency", "p99_us", kind="blocked"), 0)]
            cells += [fmt(cpu_per_gb(c, m)) for m in mtus]
            cells += [fmt(flows(c, n)) for n in flow_counts]
            cells += [fmt(flows(c, n, churned=True)) for n in churn_counts]
            cells += [fmt(idle(c), 2)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    failures = [f"{NAMES[r['contender']]} {r['test']} {r.get('kind', '')}: {r['result']['failures']} failed"
                for r in rows if r.get("test") in ("connect", "dns") and r["result"].get("failures")]
    if failures:
        lines.append("Failures: " + "; ".join(failures) + ".")
        lines.append("")

    # Goals.
    if "hushwall" in contenders:
        lines.append("**Goals** (issue 6):")
        lines.append("")
        lines.append("| goal | measured | met |")
        lines.append("|---|---|---|")

        def goal(text, value, ok):
            lines.append(f"| {text} | {value} | {'yes' if ok else 'no'} |")

        for m in mtus:
            worst = None
            for s, d in combos:
                h = gbps("hushwall", m, s, d)
                best = max((gbps(p, m, s, d) or 0) for p in PEERS)
                if h and best:
                    worst = h / best if worst is None else min(worst, h / best)
            if worst is not None:
                goal(f"throughput ≥ 1.3× best peer, MTU {m} (all four)", f"worst {worst:.2f}×", worst >= 1.3)
        v = added("hushwall", "connect", "connect", "p50_us")
        if v is not None:
            goal("connect added ≤ 150 µs p50", f"{v:.0f} µs (first byte: "
                 f"{fmt(added('hushwall', 'connect', 'first_byte', 'p50_us'), 0)} µs)", v <= 150)
        v = added("hushwall", "dns", "latency", "p50_us", kind="forwarded")
        if v is not None:
            goal("DNS forwarded added ≤ 200 µs p50", f"{v:.0f} µs", v <= 200)
        v = added("hushwall", "dns", "latency", "p50_us", kind="blocked")
        if v is not None:
            goal("DNS blocked added ≤ 50 µs p50", f"{v:.0f} µs", v <= 50)
        for m in mtus:
            h = cpu_per_gb("hushwall", m)
            best = min((x for x in (cpu_per_gb(p, m) for p in PEERS) if x), default=None)
            if h and best:
                goal(f"CPU/GB ≤ 0.7× best peer, MTU {m}", f"{h:.2f} vs {best:.2f} s/GB = {h / best:.2f}×",
                     h / best <= 0.7)
        v = idle("hushwall")
        if v is not None:
            goal("zero idle wake-ups", f"{v:.2f}/s", v == 0)
        rs = [r for r in flow_rows("hushwall") if r["flows"] == 1000]
        if rs:
            mib = rs[0]["stat"]["hwm_kib"] / 1024
            goal("RSS ≤ 40 MB at 1,000 flows (balanced list), fresh", f"{mib:.1f} MiB", mib * 1.048576 <= 40)
        if len(rs) > 1:
            mib = rs[-1]["stat"]["rss_kib"] / 1024
            goal("RSS ≤ 40 MB at 1,000 flows, after 10,000-flow churn", f"{mib:.1f} MiB", mib * 1.048576 <= 40)
        lines.append("")

    section = "\n".join(lines)
    make_plot(plot, contenders, mtus, combos, gbps, cpu_per_gb)
    rel = os.path.relpath(os.path.join(os.path.dirname(os.path.abspath(target)), "bench", "results.png"),
                          os.path.dirname(os.path.abspath(target)))
    section += f"\n![throughput relative to the kernel path, and CPU per GB]({rel})\n"
    write_section(target, section)


def make_plot(path, contenders, mtus, combos, gbps, cpu_per_gb):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    labels = [f"{m}\n{s}×{'up' if d == 'upload' else 'down'}" for m in mtus for s, d in combos]
    others = [c for c in contenders if c != "kernel"]
    width = 0.8 / max(1, len(others))
    for i, c in enumerate(others):
        ys = []
        for m in mtus:
            for s, d in combos:
                g, k = gbps(c, m, s, d), gbps("kernel", m, s, d)
                ys.append(g / k if g and k else 0)
        ax1.bar([x + i * width for x in range(len(labels))], ys, width, label=NAMES[c])
    ax1.set_xticks([x + width * (len(others) - 1) / 2 for x in range(len(labels))], labels, fontsize=8)
    ax1.set_ylabel("throughput ÷ kernel path")
    ax1.set_title("iperf3 throughput (tun MTU, streams, direction)")
    ax1.legend(fontsize=8)
    for i, c in enumerate(others):
        ax2.bar([x + i * width for x in range(len(mtus))], [cpu_per_gb(c, m) or 0 for m in mtus], width,
                label=NAMES[c])
    ax2.set_xticks([x + width * (len(others) - 1) / 2 for x in range(len(mtus))], [f"MTU {m}" for m in mtus])
    ax2.set_ylabel("CPU seconds per GB moved")
    ax2.set_title("CPU per GB (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def write_section(target, section):
    text = open(target).read() if os.path.exists(target) else ""
    block = f"{BEGIN}\n{section}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + ("\n\n" if text else "") + "## Side-by-side (bench/run.sh)\n\n" + block + "\n"
    with open(target, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
