#!/usr/bin/env bash
# The long-running reliability runs, bounded in time and confined to the test bed's network namespaces:
#
#   tests/soak.sh [SOAK_SECONDS] [FUZZ_SECONDS_PER_TARGET]     defaults: 600 and 600
#
# 1. the flood tests and a mixed soak of SOAK_SECONDS (tests/tests/reliability.rs) with their figures printed,
# 2. every fuzz target for FUZZ_SECONDS_PER_TARGET (fuzz/run.sh).
# Needs root (like tests/run.sh). CI runs the same tests with a 20 s soak and 60 s per fuzz target instead.
set -euo pipefail
cd "$(dirname "$0")/.."
soak=${1:-600}
fuzz=${2:-600}

./tests/install-deps.sh
export HUSHWALL_BIN=${HUSHWALL_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/hushwall}
cargo build --release -p hushwall
log=$(mktemp /tmp/hushwall-soak-XXXXXX.log)
echo "==> reliability tests with a ${soak}s soak (figures in $log)" >&2
# --include-ignored: also tests too slow for every CI run, if any are marked so.
HUSHWALL_SOAK_SECS=$soak cargo test --release -p hushwall-tests --test reliability --test leaks --test restart -- \
    --include-ignored --test-threads=1 --nocapture 2>&1 | tee "$log"
grep '^FIGURES' "$log" >&2 || true
echo "==> fuzzing ${fuzz}s per target" >&2
./fuzz/run.sh "$fuzz"
