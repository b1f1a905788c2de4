#!/usr/bin/env bash
# Builds the engine-only benchmark (hushwall-bench's library, bench/src/engine.rs) for aarch64-linux-android as a
# shared library, the same NDK-free way android/build-apk.sh builds libhushwall.so, so the user-space cost of the
# engine can be measured on a phone (load it and call `hushwall_engine_bench(megabytes)`). Proves that it
# compiles and links there and that every bionic symbol it imports exists at API 28.
#
# Run android/build-apk.sh first (it installs the toolchain and builds std for the target in build/android).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT="$ROOT/build/android"
TOOLS="$ROOT/android/tools"
TRIPLE=aarch64-linux-android
MIN_SDK=28

for tool in clang-22 /usr/bin/rustc /usr/bin/cargo; do
  command -v "$tool" >/dev/null 2>&1 || { echo "bench/build-android.sh: $tool missing: run android/build-apk.sh first" >&2; exit 1; }
done
export RUSTC=/usr/bin/rustc CARGO=/usr/bin/cargo RUSTC_BOOTSTRAP=1 CARGO_TERM_PROGRESS_WHEN=never
unset RUSTFLAGS CARGO_BUILD_TARGET

upper=${TRIPLE//-/_}
env "CARGO_TARGET_${upper^^}_LINKER=$TOOLS/android-link" \
  HUSHWALL_CLANG_TARGET="$TRIPLE$MIN_SDK" \
  HUSHWALL_SYMBOL_TABLE="$ROOT/android/bionic-symbols.tsv" \
  HUSHWALL_STUB_DIR="$OUT/stubs/bench-arm64-v8a" \
  /usr/bin/cargo rustc --manifest-path "$ROOT/Cargo.toml" -p hushwall-bench --lib --release --locked \
    --target "$TRIPLE" -Zbuild-std=std,panic_abort --target-dir "$OUT/target" \
    --config 'profile.release.panic="abort"' --crate-type cdylib

built="$OUT/target/$TRIPLE/release/libhushwall_bench.so"
[[ -f $built ]] || { echo "bench/build-android.sh: cargo did not produce $built" >&2; exit 1; }
machine=$(llvm-readelf-22 -h "$built" | awk -F: '/Machine/ {gsub(/^ +/, "", $2); print $2}')
[[ $machine == AArch64 ]] || { echo "bench/build-android.sh: $built is for '$machine', not AArch64" >&2; exit 1; }
llvm-nm-22 -D --defined-only "$built" | grep -qw hushwall_engine_bench ||
  { echo "bench/build-android.sh: $built does not export hushwall_engine_bench" >&2; exit 1; }
echo "bench/build-android.sh: $built ($(stat -c %s "$built") bytes, AArch64, exports hushwall_engine_bench)"
