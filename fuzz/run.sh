#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer on the *stable* toolchain and runs each for a while.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET…]      default: 30 s, every target
#
# Coverage instrumentation uses only stable `-C` flags (`-Cpasses=sancov-module` and LLVM options), the same ones
# `cargo fuzz` passes, so no nightly compiler is needed; what stable cannot do is `-Zsanitizer=address`, which Rust
# code free of `unsafe` (hushwall-core forbids it) does not need to find panics, overflows and hangs. With a nightly
# toolchain, `cargo fuzz run <target>` works on this directory as well.
#
# New inputs go to fuzz/work/<target> (ignored by git); the committed seeds in fuzz/corpus/<target> are read only.
# A crash leaves its input in fuzz/artifacts/<target>/ and makes this script fail. Inputs that once failed are
# kept in fuzz/regressions/<target>/ and replayed before each target runs.
set -euo pipefail
cd "$(dirname "$0")"

secs=${1:-30}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
    targets=(packet engine dns tls http quic policy)
fi

host=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/target}
# --target keeps these flags off build scripts and proc macros (which must not be instrumented).
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks -Ccodegen-units=16"
echo "==> building fuzz targets (stable, libFuzzer, no sanitizer) for $host" >&2
cargo build --release --target "$host" --bins

status=0
for t in "${targets[@]}"; do
    mkdir -p "work/$t" "artifacts/$t" "corpus/$t"
    dict=()
    if [[ -f "dict/$t.dict" ]]; then
        dict=("-dict=dict/$t.dict")
    fi
    # Inputs that once crashed or hung must pass first (each within 60 s: without a sanitizer runtime,
    # libFuzzer's own -timeout handler can deadlock in malloc, so the wall clock is enforced from outside).
    if compgen -G "regressions/$t/*" >/dev/null; then
        if ! timeout 60 "$CARGO_TARGET_DIR/$host/release/$t" -runs=1 regressions/"$t"/* >"work/$t.regressions.log" 2>&1
        then
            status=1
            echo "!!! fuzz target $t fails a regression input:" >&2
            tail -20 "work/$t.regressions.log" >&2
            continue
        fi
    fi
    echo "==> fuzz $t for ${secs}s" >&2
    if ! timeout $((secs + 60)) "$CARGO_TARGET_DIR/$host/release/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -max_len=8192 -print_final_stats=1 -artifact_prefix="artifacts/$t/" "${dict[@]}" \
        "work/$t" "corpus/$t" 2>"work/$t.log"; then
        status=1
        echo "!!! fuzz target $t failed; last lines of its log:" >&2
        tail -40 "work/$t.log" >&2
    else
        grep -E '^stat::number_of_executed_units|^Done ' "work/$t.log" | sed "s/^/    $t: /" >&2 || true
    fi
done
exit $status
