#!/usr/bin/env bash
# Runs one end-to-end test many times with every core kept busy, to bring out a rare race (how stop 26 caught the
# IMAP reset race: 4 failures in 350 runs this way, where whole-suite runs failed once in several):
#
#   tests/repeat.sh TEST_FILE TEST_NAME [RUNS]       # e.g. tests/repeat.sh servers_first imap_session_v4 150
#
# Needs root and the release binary (`tests/run.sh` builds it; the test binary is built here if missing). Each
# failed run keeps its test bed (capture, engine log, events) and the engine's latency trace
# (`HUSHWALL_TRACE_LATENCY`, see driver/src/event_loop/trace.rs) in target/repeat/TEST_NAME/RUN/. Ends with a
# summary line; exits 1 if any run failed. Set REPEAT_LOAD=0 to run without the busy loops.
set -euo pipefail
cd "$(dirname "$0")/.."

if (($# < 2)); then
    echo "usage: tests/repeat.sh TEST_FILE TEST_NAME [RUNS]" >&2
    exit 2
fi
file=$1 name=$2 runs=${3:-100}
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
export HUSHWALL_BIN=${HUSHWALL_BIN:-$target_dir/release/hushwall}
export RUST_TEST_THREADS=1 HUSHWALL_E2E_KEEP=1

test_bin=$(cargo test --release -p hushwall-tests --test "$file" --no-run 2>&1 |
    sed -n 's/.*Executable .*(\(.*\))$/\1/p')
if [[ ! -x $test_bin ]]; then
    echo "repeat.sh: no test binary for tests/tests/$file.rs" >&2
    exit 2
fi
out=$target_dir/repeat/$name
rm -rf "$out"
mkdir -p "$out"
export HUSHWALL_TRACE_LATENCY=$out/trace.txt

load=()
trap 'kill "${load[@]}" 2>/dev/null || true' EXIT
if [[ ${REPEAT_LOAD:-1} != 0 ]]; then
    for _ in $(seq "$(nproc)"); do
        yes >/dev/null &
        load+=($!)
    done
fi

failed=0
for run in $(seq "$runs"); do
    log=$out/run.log
    status=0
    "$test_bin" "$name" --exact --nocapture >"$log" 2>&1 || status=$?
    # The test bed says where it kept its files: "test bed ID: keeping DIR".
    mapfile -t beds < <(sed -n 's/.*test bed [^ ]*: keeping //p' "$log")
    if ((status == 0)); then
        rm -rf "${beds[@]}"
        continue
    fi
    failed=$((failed + 1))
    mkdir -p "$out/$run"
    mv "$log" "$out/$run/"
    [[ -f $HUSHWALL_TRACE_LATENCY ]] && mv "$HUSHWALL_TRACE_LATENCY" "$out/$run/"
    for bed in "${beds[@]}"; do
        mv "$bed" "$out/$run/"
    done
    echo "repeat.sh: run $run of $name failed; kept in $out/$run" >&2
done
rm -f "$out/run.log" "$HUSHWALL_TRACE_LATENCY"
echo "repeat.sh: $name: $((runs - failed)) of $runs runs passed, $failed failed"
((failed == 0))
