#!/usr/bin/env bash
# Side-by-side benchmark: the kernel path, Hushwall, tun2socks (direct://) and tun2proxy (+ microsocks), all on
# the same network-namespace topology, measured in one run. Results: a table and a plot in BENCHMARKS.md.
#
#   bench/run.sh            full run (~14 minutes), rewrites the "Side-by-side" section of BENCHMARKS.md
#   bench/run.sh --smoke    tiny durations (~2 minutes), writes only under target/bench/ (what CI runs)
#
# The app's tun MTU (`MTU` in HushwallVpnService.kt) is measured first and most: latency, idle, flows up to
# 10,000, the UDP loss ladder, the QUIC download. Every other MTU: TCP throughput and memory at 1,000 flows.
# Options: --only "kernel hushwall ..." (subset of contenders), --mtus "1500 4000 9000 16000" (the full run's
#          default; the app's MTU is always added), --seconds N (each iperf3 TCP run), --mtu-flows N (flows held
#          at the other MTUs), --out DIR, --no-report,
#          --tests "idle latency iperf udp quic flows" (a subset of the measurements, for A/B runs: the report
#          then goes under the results directory, not into BENCHMARKS.md),
#          --exec CMD (debugging: start the first contender at the first MTU, run CMD with $P/$I/$SERVER set, exit).
# BENCH_TRACE=1: Hushwall writes its per-connection latency trace (HUSHWALL_TRACE_LATENCY) next to the results and
#          the connect test keeps each sample's timestamps, for bench/trace.py (see BENCHMARKS.md, the tail).
# Needs root (network namespaces, tun). Installs what it needs (bench/install.sh). Traffic stays inside the
# namespaces it creates (198.18.0.0/15); everything is removed on exit.
#
#  phone netns                                         server netns
#   clients: iperf3 -c, tools.py connect/dns/hold       lo: 198.18.1.1 (iperf3 :5201, tools.py server :8080)
#   │ default route                                          198.18.53.53 (dnsmasq :53)
#   ▼                                                    ▲
#  hw0 (tun, 10.111.0.1) ── contender ── sockets ──┐     │
#   (kernel path: default route straight to veth)  └─ veth0 198.18.0.2 ═══ veth0 198.18.0.1
#  marked (fwmark 0x6877) or 198.18.0.2-sourced sockets use table 100: default via the veth.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODE=full
ONLY="kernel hushwall tun2socks tun2proxy"
ALL_TESTS="idle latency iperf udp quic flows"
TESTS=$ALL_TESTS
MTUS=""
OUT=""
REPORT=1
EXEC=""
SECONDS_OVERRIDE=""
MTU_FLOWS_OVERRIDE=""
COMMAND_LINE="bench/run.sh${*:+ $*}"
while (($#)); do
    case $1 in
        --smoke) MODE=smoke ;;
        --only) ONLY=$2; shift ;;
        --tests) TESTS=$2; shift ;;
        --mtus) MTUS=$2; shift ;;
        --seconds) SECONDS_OVERRIDE=$2; shift ;;
        --mtu-flows) MTU_FLOWS_OVERRIDE=$2; shift ;;
        --out) OUT=$2; shift ;;
        --no-report) REPORT=0 ;;
        --exec) EXEC=$2; shift ;;
        -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "bench/run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

# The tun MTU the app sets (BENCHMARKS.md, "The app's tun MTU").
APP_MTU=$(sed -n 's/^ *const val MTU = \([0-9]*\).*/\1/p' "$ROOT/android/app/src/main/kotlin/app/hushwall/vpn/HushwallVpnService.kt")
[[ $APP_MTU =~ ^[0-9]+$ ]] || { echo "bench/run.sh: no MTU constant in HushwallVpnService.kt" >&2; exit 1; }
# UDP: iperf3 -u -l 1400 at rising rates (Mbit/s), each for UDP_SECONDS, until one loses >= 1 %.
UDP_RATES="100 200 300 400 600 800"
if [[ $MODE == smoke ]]; then
    IPERF_SECONDS=1 CONNECTS=100 DNS_QUERIES=100 FLOW_COUNTS="100 200 100" IDLE_SECONDS=2 SETTLE=0.3
    MTUS=${MTUS:-"1500 9000"} MTU_FLOWS=100 OTHER_IPERF_SECONDS=1 UDP_SECONDS=1 UDP_RATES="100 400" QUIC_BYTES=10000000
else
    # Flows: 1,000 and 10,000 on a fresh contender, then 1,000 again (memory kept after churn); other MTUs: 1,000
    # flows and 3-second iperf3 runs (the full run stays near 14 minutes).
    IPERF_SECONDS=5 CONNECTS=1000 DNS_QUERIES=1000 FLOW_COUNTS="1000 10000 1000" IDLE_SECONDS=30 SETTLE=2
    MTUS=${MTUS:-"1500 4000 9000 16000"} MTU_FLOWS=1000 OTHER_IPERF_SECONDS=3 UDP_SECONDS=3 QUIC_BYTES=100000000
fi
IPERF_SECONDS=${SECONDS_OVERRIDE:-$IPERF_SECONDS} OTHER_IPERF_SECONDS=${SECONDS_OVERRIDE:-$OTHER_IPERF_SECONDS}
MTU_FLOWS=${MTU_FLOWS_OVERRIDE:-$MTU_FLOWS}
# The app's MTU first (its runs are the headline), then the others in the order given (--exec: the first given).
EXEC_MTU=${MTUS%% *}
MTUS="$APP_MTU $(for m in $MTUS; do [[ $m == "$APP_MTU" ]] || echo -n "$m "; done)"

[[ $(id -u) == 0 ]] || { echo "bench/run.sh: run as root (network namespaces, tun devices)" >&2; exit 1; }
START=$(date +%s)
OUT=${OUT:-$ROOT/target/bench/$(date +%Y%m%d-%H%M%S)-$MODE}
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
echo "bench: results in $OUT" >&2

# Outside the work tree, so CI's fresh clones on the same machine reuse the peers' builds (minutes each).
CACHE=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hushwall-bench}
[[ -n ${BENCH_NO_INSTALL:-} ]] || BENCH_CACHE=$CACHE "$ROOT/bench/install.sh"
PY=$CACHE/venv/bin/python
TOOLS=$ROOT/bench/tools.py
TUNFD=$ROOT/bench/tunfd.py
QUIC=$ROOT/bench/quic.py
QUIC_PORT=4433
if [[ -z ${HUSHWALL_BIN:-} ]]; then
    (cd "$ROOT" && cargo build --release -p hushwall --quiet)
    HUSHWALL_BIN=$ROOT/target/release/hushwall
fi
ulimit -n "$(ulimit -Hn)" # 10,000 flows need ~2 fds each in a proxy

P=hwbp-$$ # phone namespace
I=hwbi-$$ # server namespace
SERVER=198.18.1.1
RESOLVER=198.18.53.53
MARK=0x6877
BG_PIDS=()    # servers, killed at exit
CONTENDER=()  # pids of the running contender's processes
TUN=hw0

cleanup() {
    set +e
    stop_contender
    for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    sleep 0.2
    ip netns pids "$P" 2>/dev/null | xargs -r kill -9 2>/dev/null
    ip netns pids "$I" 2>/dev/null | xargs -r kill -9 2>/dev/null
    ip netns del "$P" 2>/dev/null
    ip netns del "$I" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

inp() { ip netns exec "$P" "$@"; }
# Background jobs must be `ip netns exec` itself (not a shell function) so that $! is the pid of the program.
ins() { ip netns exec "$I" "$@"; }
record() { echo "$1" >>"$RESULTS"; }
wants() { [[ " $TESTS " == *" $1 "* ]]; }
# The last result, for the log (without the latency samples it keeps).
show_last() { tail -1 "$RESULTS" | sed 's/, "samples_us": \[[^]]*\]//g' >&2; }

setup_topology() {
    ip netns add "$P"
    ip netns add "$I"
    ip link add veth0 netns "$P" type veth peer name veth0 netns "$I"
    for ns in "$P" "$I"; do
        ip -n "$ns" link set lo up
        ip -n "$ns" link set veth0 up
        ip netns exec "$ns" sh -c 'for i in all default veth0; do echo 0 > /proc/sys/net/ipv4/conf/$i/rp_filter; done'
    done
    ip -n "$I" addr add 198.18.0.1/30 dev veth0
    ip -n "$I" addr add $SERVER/32 dev lo
    ip -n "$I" addr add $RESOLVER/32 dev lo
    ip -n "$I" route add 10.111.0.0/24 via 198.18.0.2
    ip -n "$P" addr add 198.18.0.2/30 dev veth0
    ip -n "$P" route add default via 198.18.0.1 table 100
    ip -n "$P" rule add fwmark $MARK lookup 100 pref 100
    ip -n "$P" rule add from 198.18.0.2 lookup 100 pref 101
    inp sysctl -qw net.ipv4.ip_local_port_range="10000 65000"
    # The phone's kernel would send IPv6 router solicitations into each new tun (with back-off, for minutes):
    # packets that wake any contender. The idle figure is about the contender's own timers, so turn them off.
    inp sysctl -qw net.ipv6.conf.default.router_solicitations=0
    ins sysctl -qw net.core.somaxconn=16384 net.ipv4.tcp_max_syn_backlog=16384

    ip netns exec "$I" iperf3 -s -B $SERVER >"$OUT/iperf3-server.log" 2>&1 &
    BG_PIDS+=($!)
    ip netns exec "$I" "$PY" "$TOOLS" server $SERVER 8080 >"$OUT/tools-server.log" 2>&1 &
    BG_PIDS+=($!)
    ip netns exec "$I" dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
        --pid-file --user=root --port=53 --local-ttl=300 --listen-address=$RESOLVER \
        --host-record=www.example.org,$SERVER --address=/tracking.intl.miui.com/ >"$OUT/dnsmasq.log" 2>&1 &
    BG_PIDS+=($!)
    ip netns exec "$I" "$PY" "$QUIC" server $SERVER $QUIC_PORT >"$OUT/quic-server.log" 2>&1 &
    BG_PIDS+=($!)
    for _ in $(seq 100); do
        ins ss -ltn | grep -q ":8080" && ins ss -ltn | grep -q ":5201" && ins ss -lun | grep -q ":53 " \
            && ins ss -lun | grep -q ":$QUIC_PORT" && return
        sleep 0.1
    done
    echo "bench: servers did not start" >&2
    exit 1
}

wait_for_tun() {
    for _ in $(seq 300); do
        ip -n "$P" link show $TUN >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "bench: $1 did not create $TUN; its log:" >&2
    tail -20 "$OUT/$1.log" >&2
    exit 1
}

route_into_tun() {
    local mtu=$1
    ip -n "$P" link set $TUN mtu "$mtu" up
    ip -n "$P" addr add 10.111.0.1/24 dev $TUN 2>/dev/null || true
    ip netns exec "$P" sh -c "echo 0 > /proc/sys/net/ipv4/conf/$TUN/rp_filter"
    ip -n "$P" route replace default dev $TUN
}

# Starts contender $1 at tun MTU $2 and routes the phone through it; CONTENDER holds its pids.
start_contender() {
    local name=$1 mtu=$2
    CONTENDER=()
    case $name in
        kernel)
            ip -n "$P" route replace default via 198.18.0.1
            return
            ;;
        hushwall)
            [[ -z ${BENCH_TRACE:-} ]] || export HUSHWALL_TRACE_LATENCY=$OUT/trace-hushwall-$mtu.tsv
            ip netns exec "$P" "$PY" "$TUNFD" $TUN "$HUSHWALL_BIN" run --tun-fd 3 --profile balanced \
                --dns-upstream $RESOLVER:53 --mtu "$mtu" --fwmark $MARK >"$OUT/hushwall.log" 2>&1 &
            CONTENDER=($!)
            ;;
        tun2socks)
            ip netns exec "$P" "$PY" "$TUNFD" $TUN "$CACHE/bin/tun2socks" --device fd://3 --proxy direct:// \
                --fwmark $((MARK)) --mtu "$mtu" --loglevel warn >"$OUT/tun2socks.log" 2>&1 &
            CONTENDER=($!)
            ;;
        tun2proxy)
            ip netns exec "$P" microsocks -i 127.0.0.1 -p 1080 -b 198.18.0.2 >"$OUT/microsocks.log" 2>&1 &
            CONTENDER=($!)
            # --tcp-mss: without it tun2proxy advertises no MSS and the phone falls back to 536-byte segments.
            # tun2proxy 0.8.7's CLI rejects --tun-fd without --setup on Linux: it opens the tun itself (plain
            # IFF_TUN | IFF_NO_PI as well; checked in /proc/PID/fdinfo).
            ip netns exec "$P" "$CACHE/bin/tun2proxy" --tun $TUN --proxy socks5://127.0.0.1:1080 \
                --dns over-tcp --dns-addr $RESOLVER --mtu "$mtu" --tcp-mss $((mtu - 40)) --max-sessions 20000 \
                --verbosity warn >"$OUT/tun2proxy.log" 2>&1 &
            CONTENDER+=($!)
            ;;
    esac
    wait_for_tun "$name"
    route_into_tun "$mtu"
    # 0x1001 = IFF_TUN | IFF_NO_PI: no vnet header, so no GSO/GRO offloads (as on Android).
    record "{\"contender\":\"$name\",\"mtu\":$mtu,\"test\":\"tun_flags\",\"flags\":\"$(inp cat /sys/class/net/$TUN/tun_flags)\"}"
    sleep 0.5
}

stop_contender() {
    local pid
    for pid in "${CONTENDER[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${CONTENDER[@]}"; do wait "$pid" 2>/dev/null || true; done
    CONTENDER=()
    ip -n "$P" route del default 2>/dev/null || true
    for _ in $(seq 50); do ip -n "$P" link show $TUN >/dev/null 2>&1 || break; sleep 0.1; done
}

procstat() {
    if ((${#CONTENDER[@]})); then "$PY" "$TOOLS" procstat "${CONTENDER[@]}"; else echo '{}'; fi
}

# iperf3 through the contender; records throughput and the contender's CPU time over the run.
measure_iperf() {
    local name=$1 mtu=$2 streams=$3 dir=$4 flag="" before after json seconds=$IPERF_SECONDS
    [[ $mtu == "$APP_MTU" ]] || seconds=$OTHER_IPERF_SECONDS
    [[ $dir == download ]] && flag=-R
    before=$(procstat)
    json=$OUT/iperf-$name-$mtu-$streams-$dir.json
    local perf_pid=""
    if [[ -n ${BENCH_PERF:-} && ${#CONTENDER[@]} -gt 0 ]]; then
        # Profiling aid (not part of the figures): BENCH_PERF=1 samples the contender during each iperf3 run.
        perf record -F 1999 ${BENCH_PERF_ARGS:-} -p "$(IFS=,; echo "${CONTENDER[*]}")" -o "$OUT/perf-$name-$mtu-$streams-$dir.data" \
            -- sleep "$seconds" >/dev/null 2>&1 &
        perf_pid=$!
    fi
    inp iperf3 -c $SERVER -t "$seconds" -P "$streams" $flag -J --connect-timeout 3000 >"$json" 2>&1 || true
    [[ -n $perf_pid ]] && wait "$perf_pid"
    after=$(procstat)
    "$PY" - "$name" "$mtu" "$streams" "$dir" "$json" "$before" "$after" >>"$RESULTS" <<'EOF'
import json, sys
name, mtu, streams, direction, path, before, after = sys.argv[1:]
before, after = json.loads(before), json.loads(after)
out = {"contender": name, "mtu": int(mtu), "test": "iperf", "streams": int(streams), "direction": direction}
try:
    end = json.load(open(path))["end"]
    out["bytes"] = end["sum_received"]["bytes"]
    out["gbps"] = end["sum_received"]["bits_per_second"] / 1e9
    out["seconds"] = end["sum_received"]["seconds"]
except Exception as e:
    out["error"] = f"iperf3 failed: {e}"
if before:
    out["cpu_s"] = after["cpu_s"] - before["cpu_s"]
print(json.dumps(out))
EOF
    tail -1 "$RESULTS" >&2
}

# Where UDP datagrams were dropped so far: receive-buffer overflows of UDP sockets in the phone namespace (the
# contender's upstream sockets and iperf3's client) and in the server namespace (iperf3's server), and the tun's
# queue (packets the phone's kernel could not queue for the contender). JSON.
udp_drops() {
    local snmp='/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1 } else print $c }'
    echo "{\"phone_rcvbuf\":$(inp awk "$snmp" /proc/net/snmp),\"server_rcvbuf\":$(ins awk "$snmp" /proc/net/snmp),\"tun\":$(inp cat /sys/class/net/$TUN/statistics/tx_dropped 2>/dev/null || echo 0)}"
}

# UDP loss ladder in each direction: iperf3 -u -l 1400 at each rate of UDP_RATES until one loses >= 1 % (or
# fails); each step is recorded with the receiver's loss, where it was dropped and the contender's CPU time.
measure_udp() {
    local name=$1 mtu=$2 dir flag rate before after json drops_before drops_after
    for dir in upload download; do
        flag=""
        [[ $dir == download ]] && flag=-R
        for rate in $UDP_RATES; do
            json=$OUT/udp-$name-$mtu-$dir-$rate.json
            before=$(procstat)
            drops_before=$(udp_drops)
            # A contender that carries no UDP leaves iperf3 waiting for its test to start: bounded.
            inp timeout $((UDP_SECONDS + 5)) iperf3 -c $SERVER -u -l 1400 -b "${rate}M" -t "$UDP_SECONDS" $flag -J --connect-timeout 3000 \
                >"$json" 2>&1 || true
            after=$(procstat)
            drops_after=$(udp_drops)
            "$PY" - "$name" "$mtu" "$dir" "$rate" "$json" "$before" "$after" "$drops_before" "$drops_after" \
                >>"$RESULTS" <<'EOF'
import json, sys
name, mtu, direction, rate, path, before, after, drops_before, drops_after = sys.argv[1:]
before, after = json.loads(before), json.loads(after)
drops_before, drops_after = json.loads(drops_before), json.loads(drops_after)
out = {"contender": name, "mtu": int(mtu), "test": "udp", "direction": direction, "offered_mbps": int(rate)}
try:
    s = json.load(open(path))["end"]["sum_received"]  # the receiver's counts, whichever side sends
    out["packets"], out["lost"], out["loss_percent"] = s["packets"], s["lost_packets"], s["lost_percent"]
    out["bytes"] = s["bytes"]
    if not s["packets"]:
        out["error"] = "nothing received"
    out["seconds"] = s["seconds"]
except Exception as e:
    out["error"] = f"iperf3 failed: {e}"
if before:
    out["cpu_s"] = after["cpu_s"] - before["cpu_s"]
out["drops"] = {k: drops_after[k] - drops_before[k] for k in drops_after}
print(json.dumps(out))
EOF
            tail -1 "$RESULTS" >&2
            tail -1 "$RESULTS" | "$PY" -c 'import json,sys; r=json.load(sys.stdin); sys.exit("error" in r or r["loss_percent"] >= 1)' \
                || break
        done
    done
}

# HTTP/3 download of QUIC_BYTES (bench/quic.py, aioquic) from the server namespace: time and contender CPU.
measure_quic() {
    local name=$1 mtu=$2 before after out
    before=$(procstat)
    out=$(inp timeout 150 "$PY" "$QUIC" client $SERVER $QUIC_PORT "$QUIC_BYTES" || echo '{"error":"client failed"}')
    after=$(procstat)
    "$PY" - "$name" "$mtu" "$out" "$before" "$after" >>"$RESULTS" <<'EOF'
import json, sys
name, mtu, result, before, after = sys.argv[1:]
before, after = json.loads(before), json.loads(after)
try:
    result = json.loads(result.strip().splitlines()[-1])
except Exception:
    result = {"error": result[-200:]}
out = {"contender": name, "mtu": int(mtu), "test": "quic", **result}
if before:
    out["cpu_s"] = after["cpu_s"] - before["cpu_s"]
print(json.dumps(out))
EOF
    tail -1 "$RESULTS" >&2
}

measure_latency() {
    local name=$1 mtu=$2 out
    local trace=()
    [[ -z ${BENCH_TRACE:-} ]] || trace=("$OUT/trace-client-$name-$mtu.tsv")
    out=$(inp "$PY" "$TOOLS" connect $SERVER 8080 "$CONNECTS" "${trace[@]}")
    record "{\"contender\":\"$name\",\"mtu\":$mtu,\"test\":\"connect\",\"result\":$out}"
    show_last
    local kind qname
    for kind in forwarded blocked; do
        qname=www.example.org
        [[ $kind == blocked ]] && qname=tracking.intl.miui.com
        out=$(inp "$PY" "$TOOLS" dns $RESOLVER $qname "$DNS_QUERIES")
        record "{\"contender\":\"$name\",\"mtu\":$mtu,\"test\":\"dns\",\"kind\":\"$kind\",\"result\":$out}"
        show_last
    done
}

measure_idle() {
    local name=$1 mtu=$2 before after
    sleep "$SETTLE"
    before=$(procstat)
    sleep "$IDLE_SECONDS"
    after=$(procstat)
    record "{\"contender\":\"$name\",\"mtu\":$mtu,\"test\":\"idle\",\"seconds\":$IDLE_SECONDS,\"before\":$before,\"after\":$after}"
    tail -1 "$RESULTS" >&2
}

# Fresh contender: RSS with N concurrent open flows (each has completed one request/response), for each N.
measure_flows() {
    local name=$1 mtu=$2 counts=$3 n ready holder stat round=0
    for n in $counts; do
        round=$((round + 1))
        ready=$OUT/hold-$name-$mtu-$n-$round.json
        rm -f "$ready"
        # The holder keeps its connections until its stdin (a fifo we keep open) closes.
        local fifo=$OUT/hold.fifo
        rm -f "$fifo" && mkfifo "$fifo"
        ip netns exec "$P" "$PY" "$TOOLS" hold $SERVER 8080 "$n" "$ready" <"$fifo" &
        holder=$!
        exec 9>"$fifo"
        for _ in $(seq 1500); do [[ -s $ready ]] && break; sleep 0.1; done
        sleep "$SETTLE"
        stat=$(procstat)
        record "{\"contender\":\"$name\",\"mtu\":$mtu,\"test\":\"flows\",\"flows\":$n,\"round\":$round,\"held\":$(cat "$ready" 2>/dev/null || echo null),\"stat\":$stat}"
        tail -1 "$RESULTS" >&2
        exec 9>&-
        wait "$holder" 2>/dev/null || true
        sleep "$SETTLE"
    done
}

setup_topology
if [[ -n $EXEC ]]; then
    read -r name _ <<<"$ONLY"
    start_contender "$name" "$EXEC_MTU"
    export P I SERVER RESOLVER OUT
    export CONTENDER_PIDS="${CONTENDER[*]}"
    bash -c "$EXEC"
    exit
fi
record "{\"test\":\"meta\",\"mode\":\"$MODE\",\"command\":\"$COMMAND_LINE\",\"uptime_start\":\"$(uptime)\",\"kernel\":\"$(uname -r)\",\"cpu\":\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\",\"cores\":$(nproc),\"mem_gib\":$(($(grep MemTotal /proc/meminfo | awk '{print $2}') / 1048576)),\"app_mtu\":$APP_MTU,\"hushwall_commit\":\"$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- core driver || echo -dirty)\",\"tun2socks\":\"$(readlink "$CACHE/bin/tun2socks")\",\"tun2proxy\":\"$(readlink "$CACHE/bin/tun2proxy")\",\"iperf3\":\"$(iperf3 --version | head -1)\",\"microsocks\":\"$(dpkg-query -W -f '${Version}' microsocks 2>/dev/null)\"}"

for mtu in $MTUS; do
    for name in $ONLY; do
        echo "bench: == $name, tun MTU $mtu ==" >&2
        app_tests=0
        for t in idle latency udp quic; do wants $t && app_tests=1; done
        if wants iperf || [[ $mtu == "$APP_MTU" && $app_tests == 1 ]]; then
            start_contender "$name" "$mtu"
            if [[ $mtu == "$APP_MTU" && $name != kernel ]] && wants idle; then measure_idle "$name" "$mtu"; fi
            if [[ $mtu == "$APP_MTU" ]] && wants latency; then measure_latency "$name" "$mtu"; fi
            if wants iperf; then
                for streams in 1 8; do
                    for dir in upload download; do measure_iperf "$name" "$mtu" "$streams" "$dir"; done
                done
            fi
            if [[ $mtu == "$APP_MTU" ]]; then
                if wants udp; then measure_udp "$name" "$mtu"; fi
                if wants quic; then measure_quic "$name" "$mtu"; fi
            fi
            stop_contender
        fi
        if [[ $name != kernel ]] && wants flows; then
            counts=$MTU_FLOWS
            [[ $mtu == "$APP_MTU" ]] && counts=$FLOW_COUNTS
            start_contender "$name" "$mtu"
            measure_flows "$name" "$mtu" "$counts"
            stop_contender
        fi
    done
done
record "{\"test\":\"meta_end\",\"uptime_end\":\"$(uptime)\",\"elapsed_s\":$(($(date +%s) - START))}"
echo "bench: done in $(($(date +%s) - START)) s" >&2

if ((REPORT)); then
    # Only a full run of every test rewrites BENCHMARKS.md and the plots beside it.
    publish=0
    [[ $MODE == full && $TESTS == "$ALL_TESTS" ]] && publish=1
    target=$OUT/BENCHMARKS-section.md
    ((publish)) && target=$ROOT/BENCHMARKS.md
    "$PY" "$ROOT/bench/report.py" "$RESULTS" "$target" "$OUT/bench.png"
    if ((publish)); then
        cp "$OUT/bench.png" "$ROOT/bench/results.png"
        [[ ! -f $OUT/latency.png ]] || cp "$OUT/latency.png" "$ROOT/bench/latency.png"
    fi
    echo "bench: report written to $target" >&2
fi
