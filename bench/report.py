#!/usr/bin/env python3
"""Turns bench/run.sh's results.jsonl into markdown tables and two PNG plots.

usage: report.py RESULTS.jsonl TARGET.md PLOT.png

PLOT.png: throughput and CPU per GB; latency.png beside it: the connect and first-byte latency distributions of
every contender (from every sample the connect test kept).

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
    measured = {r["mtu"] for r in rows if r.get("test") == "iperf"} or {r["mtu"] for r in rows if "mtu" in r}
    app = meta.get("app_mtu") if meta.get("app_mtu") in measured else min(measured, default=None)
    mtus = ([app] if app is not None else []) + sorted(measured - {app})
    iperf = {(r["contender"], r["mtu"], r["streams"], r["direction"]): r for r in rows if r.get("test") == "iperf"}
    combos = [(s, d) for s in (1, 8) for d in ("upload", "download")]

    def gbps(c, m, s, d):
        r = iperf.get((c, m, s, d))
        return r.get("gbps") if r else None

    def cell_ratio(c, m, s, d):
        g, k = gbps(c, m, s, d), gbps("kernel", m, s, d)
        if g is None:
            return "fail" if iperf.get((c, m, s, d), {}).get("error") else "—"
        if c == "kernel" or not k:
            return fmt(g)
        return f"{fmt(g)} ({g / k:.2f})"

    def best_peer_ratio(m, s, d):
        h = gbps("hushwall", m, s, d)
        best = max((gbps(p, m, s, d) or 0) for p in PEERS)
        return h / best if h and best else None

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

    # Throughput at the app's MTU.
    lines.append(f"**TCP throughput at the app's tun MTU ({app}), Gbit/s (ratio to the kernel path)**, iperf3 "
                 "phone → server (upload) and server → phone (download, `-R`):")
    lines.append("")
    header = ["contender"] + [f"{s}×{'↑' if d == 'upload' else '↓'}" for s, d in combos]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for c in contenders:
        lines.append("| " + " | ".join([NAMES[c]] + [cell_ratio(c, app, s, d) for s, d in combos]) + " |")
    if "hushwall" in contenders and any(p in contenders for p in PEERS):
        cells = [best_peer_ratio(app, s, d) for s, d in combos]
        lines.append("| Hushwall ÷ best peer | " + " | ".join(f"{x:.2f}×" if x else "—" for x in cells) + " |")
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

    def flow_rows(c, m):
        return [r for r in rows if r.get("contender") == c and r.get("test") == "flows" and r.get("mtu") == m]

    def flows(c, n, churned=False, m=app):
        """Peak RSS (VmHWM) with n flows on a fresh contender; with churned, VmRSS with n flows held again after
        the larger round (what the process kept)."""
        rs = [r for r in flow_rows(c, m) if r["flows"] == n]
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

    app_flows = [r for r in rows if r.get("test") == "flows" and r.get("mtu") == app]
    flow_counts = sorted({r["flows"] for r in app_flows})
    churn_counts = sorted({r["flows"] for r in app_flows if r.get("round", 1) > 1
                           and sum(1 for q in app_flows if q["contender"] == r["contender"]
                                   and q["flows"] == r["flows"]) > 1})
    lines.append("**Latency added over the kernel path (µs; contender minus kernel, same percentile), CPU, memory, "
                 f"idle** (MTU {app}):")
    lines.append("")
    header = ["contender", "connect p50", "connect p99", "1st byte p50", "1st byte p99", "DNS fwd p50",
              "DNS fwd p99", "DNS blocked p50", "DNS blocked p99", "CPU s/GB (TCP)"]
    header += [f"peak RSS MiB, {n} flows" for n in flow_counts]
    header += [f"RSS MiB, {n} flows after churn" for n in churn_counts]
    header += ["idle wake-ups/s"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for c in contenders:
        f = lat if c == "kernel" else added
        cells = [NAMES[c] + (" (absolute)" if c == "kernel" else "")]
        cells += [fmt(f(c, "connect", "connect", "p50_us"), 0), fmt(f(c, "connect", "connect", "p99_us"), 0),
                  fmt(f(c, "connect", "first_byte", "p50_us"), 0), fmt(f(c, "connect", "first_byte", "p99_us"), 0),
                  fmt(f(c, "dns", "latency", "p50_us", kind="forwarded"), 0),
                  fmt(f(c, "dns", "latency", "p99_us", kind="forwarded"), 0),
                  fmt(f(c, "dns", "latency", "p50_us", kind="blocked"), 0),
                  fmt(f(c, "dns", "latency", "p99_us", kind="blocked"), 0)]
        if c == "kernel":
            cells += ["—"] * (1 + len(flow_counts) + len(churn_counts) + 1)
        else:
            cells += [fmt(cpu_per_gb(c, app))]
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

    # UDP and QUIC.
    udp = [r for r in rows if r.get("test") == "udp"]

    def udp_best(c, d):
        """The highest offered rate with < 1 % loss (the ladder stops at the first rate that loses more), its row;
        and the first failing step's row."""
        steps = sorted((r for r in udp if r["contender"] == c and r["direction"] == d),
                       key=lambda r: r["offered_mbps"])
        ok = [r for r in steps if "error" not in r and r["loss_percent"] < 1]
        bad = [r for r in steps if "error" in r or r["loss_percent"] >= 1]
        return (ok[-1] if ok else None), (bad[0] if bad else None)

    def udp_cells(c, d):
        ok, bad = udp_best(c, d)
        first = "—"
        if bad:
            first = (f"{bad['offered_mbps']}: fail" if "error" in bad
                     else f"{bad['offered_mbps']}: {bad['loss_percent']:.1f} %")
            d = bad.get("drops")
            if d and "error" not in bad:
                first += f" (drops: tun {d['tun']}, phone sockets {d['phone_rcvbuf']}, server {d['server_rcvbuf']})"
        if not ok:
            return ["none", "—", first]
        cpu = fmt(ok["cpu_s"] / (ok["bytes"] / 1e9)) if "cpu_s" in ok and ok.get("bytes") else "—"
        return [f"{ok['offered_mbps']} ({ok['loss_percent']:.2f} %)", cpu, first]

    quic = {r["contender"]: r for r in rows if r.get("test") == "quic"}

    def quic_cells(c):
        r = quic.get(c)
        if not r:
            return ["—"] * 4
        if "error" in r or not r.get("seconds"):
            return [f"fail ({r.get('error', '?')[:40]})", "—", "—", "—"]
        k = quic.get("kernel", {}).get("seconds")
        cpu = fmt(r["cpu_s"] / (r["bytes"] / 1e9)) if "cpu_s" in r and r.get("bytes") else "—"
        ratio = f"{r['seconds'] / k:.2f}×" if k and c != "kernel" else "—"
        return [f"{r['seconds']:.2f}", fmt(r["bytes"] * 8 / r["seconds"] / 1e6, 0), ratio, cpu]

    if udp or quic:
        seconds = next((r.get("seconds") for r in udp if r.get("seconds")), None)
        size = next((r.get("bytes") for r in quic.values() if r.get("bytes")), None)
        duration = f" -t {seconds:.0f}" if seconds else ""
        megabytes = f"{size / 1e6:.0f} MB, " if size else ""
        lines.append(f"**UDP and QUIC** (MTU {app}). UDP: `iperf3 -u -l 1400 -b RATE{duration} [-R]` at rising rates; "
                     "the highest rate (Mbit/s) with < 1 % loss at the receiver, the contender's CPU per GB received "
                     "at that rate, and the first rate that lost ≥ 1 % with where datagrams were dropped (the tun's "
                     "queue; receive buffers of UDP sockets in the phone namespace — the contender's upstream sockets "
                     "and iperf3's client — and in the server namespace). QUIC: one HTTP/3 download "
                     f"({megabytes}`bench/quic.py`, aioquic, 1,350-byte packets): time, Mbit/s, time ÷ the kernel "
                     "path's, CPU per GB:")
        lines.append("")
        header = ["contender", "UDP ↑ best < 1 %", "CPU s/GB ↑", "UDP ↑ first ≥ 1 %", "UDP ↓ best < 1 %",
                  "CPU s/GB ↓", "UDP ↓ first ≥ 1 %", "QUIC s", "QUIC Mbit/s", "QUIC ÷ kernel", "QUIC CPU s/GB"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for c in contenders:
            cells = [NAMES[c]] + udp_cells(c, "upload") + udp_cells(c, "download") + quic_cells(c)
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")

    # Every MTU.
    if len(mtus) > 1:
        lines.append("**Tun MTUs compared** (same run): TCP Gbit/s (ratio to the kernel path at that MTU), CPU per GB "
                     "over the four runs, peak RSS with 1,000 flows on a fresh contender:")
        lines.append("")
        n_mtu = 1000 if any(r["flows"] == 1000 for r in rows if r.get("test") == "flows") else \
            min((r["flows"] for r in rows if r.get("test") == "flows"), default=None)
        header = ["contender", "MTU"] + [f"{s}×{'↑' if d == 'upload' else '↓'}" for s, d in combos]
        header += ["CPU s/GB", f"peak RSS MiB, {n_mtu} flows"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for c in contenders:
            for m in mtus:
                cells = [NAMES[c], str(m) + (" (app)" if m == app else "")]
                cells += [cell_ratio(c, m, s, d) for s, d in combos]
                cells += ["—", "—"] if c == "kernel" else [fmt(cpu_per_gb(c, m)), fmt(flows(c, n_mtu, m=m))]
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")

    # Goals.
    if "hushwall" in contenders:
        lines.append(f"**Goals** (issues 6 and 16; at the app's MTU, {app}):")
        lines.append("")
        lines.append("| goal | measured | met |")
        lines.append("|---|---|---|")

        def goal(text, value, ok):
            lines.append(f"| {text} | {value} | {'yes' if ok else 'no'} |")

        ratios = [best_peer_ratio(app, s, d) for s, d in combos]
        if all(ratios):
            goal("throughput ≥ 1.3× best peer (all four)", f"worst {min(ratios):.2f}×", min(ratios) >= 1.3)
        kr = [(gbps("hushwall", app, s, d) or 0) / k for s, d in combos if (k := gbps("kernel", app, s, d))]
        if len(kr) == 4:
            goal("throughput ≥ 0.5× kernel path (all four)", f"worst {min(kr):.2f}×", min(kr) >= 0.5)
        v = added("hushwall", "connect", "connect", "p50_us")
        if v is not None:
            goal("connect added ≤ 150 µs p50", f"{v:.0f} µs (first byte: "
                 f"{fmt(added('hushwall', 'connect', 'first_byte', 'p50_us'), 0)} µs)", v <= 150)
        for key, label in (("connect", "connect"), ("first_byte", "first byte")):
            v = added("hushwall", "connect", key, "p99_us")
            peers = [x for x in (added(p, "connect", key, "p99_us") for p in PEERS) if x is not None]
            if v is not None:
                goal(f"{label} added ≤ 300 µs p99 and below every peer", f"{v:.0f} µs (peers: "
                     f"{', '.join(f'{x:.0f}' for x in peers) or '—'})", v <= 300 and all(v < x for x in peers))
        v = added("hushwall", "dns", "latency", "p50_us", kind="forwarded")
        if v is not None:
            goal("DNS forwarded added ≤ 200 µs p50", f"{v:.0f} µs", v <= 200)
        v = added("hushwall", "dns", "latency", "p50_us", kind="blocked")
        if v is not None:
            goal("DNS blocked added ≤ 50 µs p50", f"{v:.0f} µs", v <= 50)
        h = cpu_per_gb("hushwall", app)
        best = min((x for x in (cpu_per_gb(p, app) for p in PEERS) if x), default=None)
        if h and best:
            goal("CPU/GB ≤ 0.7× best peer", f"{h:.2f} vs {best:.2f} s/GB = {h / best:.2f}×", h / best <= 0.7)
        v = idle("hushwall")
        if v is not None:
            goal("zero idle wake-ups", f"{v:.2f}/s", v == 0)
        rs = [r for r in flow_rows("hushwall", app) if r["flows"] == 1000]
        if rs:
            mib = rs[0]["stat"]["hwm_kib"] / 1024
            goal("RSS ≤ 40 MB at 1,000 flows (balanced list), fresh", f"{mib:.1f} MiB", mib * 1.048576 <= 40)
        if len(rs) > 1:
            mib = rs[-1]["stat"]["rss_kib"] / 1024
            goal("RSS ≤ 40 MB at 1,000 flows, after 10,000-flow churn", f"{mib:.1f} MiB", mib * 1.048576 <= 40)
        for d, arrow in (("upload", "↑"), ("download", "↓")):
            k, _ = udp_best("kernel", d)
            hw, _ = udp_best("hushwall", d)
            if k or hw:
                kr_, hr_ = (k or {}).get("offered_mbps", 0), (hw or {}).get("offered_mbps", 0)
                goal(f"UDP {arrow}: < 1 % loss wherever the kernel path has it", f"{hr_} vs kernel {kr_} Mbit/s",
                     hr_ >= kr_)
        h, k = quic.get("hushwall", {}).get("seconds"), quic.get("kernel", {}).get("seconds")
        if h and k and "error" not in quic["hushwall"]:
            goal("QUIC download time ≤ 1.2× kernel path", f"{h:.2f} vs {k:.2f} s = {h / k:.2f}×", h / k <= 1.2)
        lines.append("")

    section = "\n".join(lines)
    make_plot(plot, contenders, mtus, combos, gbps, cpu_per_gb)
    here = os.path.dirname(os.path.abspath(target))
    rel = os.path.relpath(os.path.join(here, "bench", "results.png"), here)
    section += f"\n![throughput relative to the kernel path, and CPU per GB]({rel})\n"
    connects = {c: r["result"] for c in contenders if (r := one(c, "connect")) and "connect" in r["result"]}
    if make_latency_plot(os.path.join(os.path.dirname(plot), "latency.png"), connects, app):
        rel = os.path.relpath(os.path.join(here, "bench", "latency.png"), here)
        section += (f"\n![connect and first-byte latency of every contender: distributions, and added over the "
                    f"kernel path at each percentile]({rel})\n")
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


def quantile(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def make_latency_plot(path, connects, mtu):
    """Connect and first-byte latency of every contender side by side: the distribution of every sample (CDF,
    log scale), and the latency added over the kernel path at each percentile (contender's minus the kernel
    path's, what the tables give at p50 and p99). False (no plot) if no run kept its samples."""
    series = {}
    for c, result in connects.items():
        for key in ("connect", "first_byte"):
            samples = result.get(key, {}).get("samples_us")
            if samples:
                series[(c, key)] = sorted(samples)
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    # Percentiles on a tail scale: 1 - q on a log axis, from p10 to p99.9 (as far as the samples go).
    tail_qs = [1 - 10 ** (-x / 20) for x in range(2, 61)]
    for col, (key, label) in enumerate((("connect", "connect"), ("first_byte", "first byte"))):
        cdf, added = axes[0][col], axes[1][col]
        kernel = series.get(("kernel", key))
        for c in connects:
            s = series.get((c, key))
            if not s:
                continue
            n = len(s)
            style = {"color": "black", "linestyle": "--"} if c == "kernel" else {}
            cdf.plot(s, [(i + 1) / n for i in range(n)], label=f"{NAMES[c]} (n={n})", **style)
            if kernel and c != "kernel":
                qs = [q for q in tail_qs if q <= 1 - 1 / min(n, len(kernel))]
                added.plot([1 - q for q in qs], [quantile(s, q) - quantile(kernel, q) for q in qs],
                           marker=".", label=NAMES[c])
        cdf.set_xscale("log")
        cdf.set_xlabel(f"{label} latency, µs (log)")
        cdf.set_ylabel("fraction of samples ≤ x")
        cdf.set_title(f"{label}: distribution of every sample (tun MTU {mtu})")
        cdf.grid(True, which="both", alpha=0.3)
        cdf.legend(fontsize=8, loc="lower right")
        added.set_xscale("log")
        added.invert_xaxis()
        ticks = [0.5, 0.1, 0.01, 0.001]
        added.set_xticks(ticks, [f"p{100 * (1 - t):g}" for t in ticks])
        added.axhline(0, color="black", linewidth=0.8)
        added.axhline(300, color="grey", linestyle=":", linewidth=1)
        added.set_yscale("symlog", linthresh=100)
        added.set_xlabel("percentile")
        added.set_ylabel("added over the kernel path, µs")
        added.set_title(f"{label}: added over the kernel path per percentile (dotted: 300 µs)")
        added.grid(True, which="both", alpha=0.3)
        if added.lines:
            added.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


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
