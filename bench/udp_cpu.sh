#!/usr/bin/env bash
# UDP at one fixed rate, three runs each way, with `perf stat` of the engine: its CPU time and its socket and tun
# system calls per run (BENCHMARKS.md, "UDP: segmented sends and batched reads"). Runs under bench/run.sh:
#
#   RATE=700 bench/run.sh --only hushwall --mtus 9000 --exec 'bash bench/udp_cpu.sh'
#
# $P (phone namespace), $SERVER and $CONTENDER_PIDS come from bench/run.sh.
set -euo pipefail
pid=${CONTENDER_PIDS%% *}
events=task-clock
for call in recvfrom recvmmsg sendto sendmsg write read; do events+=",syscalls:sys_enter_$call"; done
stat=$(mktemp) report=$(mktemp)
trap 'rm -f "$stat" "$report"' EXIT
for direction in download upload; do
    flag=""
    [[ $direction == download ]] && flag=-R
    for run in 1 2 3; do
        perf stat -e "$events" -p "$pid" -o "$stat" -- sleep 4 &
        perf_pid=$!
        ip netns exec "$P" timeout 9 iperf3 -c "$SERVER" -u -l 1400 -b "${RATE:-300}M" -t 4 $flag -J >"$report"
        wait $perf_pid
        python3 - "$report" "$stat" "$direction" "$run" <<'PY'
import json, sys
report, stat, direction, run = sys.argv[1:]
total = json.load(open(report))["end"]["sum"]
counts = {}
for line in open(stat):
    fields = line.split()
    if len(fields) >= 2 and (fields[1] == "msec" or fields[1].startswith("syscalls:")):
        counts[fields[1].replace("syscalls:sys_enter_", "")] = fields[0].replace(",", "")
print(direction, run, f"loss {total['lost_percent']:.2f} %", f"datagrams {total['packets']}",
      " ".join(f"{k}={v}" for k, v in counts.items()))
PY
    done
done
