#!/usr/bin/env bash
# Hushwall demo: builds the engine and runs it between a simulated phone and a simulated internet (network
# namespaces), showing normal traffic pass and Xiaomi telemetry get blocked, with the live block log.
# Needs root (namespaces, tun). Installs what it needs. Always cleans up.
set -euo pipefail
cd "$(dirname "$0")"

if [[ $(id -u) -ne 0 ]]; then
    echo "demo.sh: needs root (it creates network namespaces and a tun device); run it as root" >&2
    exit 1
fi

./tests/install-deps.sh

echo "==> building (release)…" >&2
cargo build --release -q -p hushwall -p hushwall-tests --bin hushwall --bin hushwall-demo

target_dir=${CARGO_TARGET_DIR:-$PWD/target}
export HUSHWALL_BIN=${HUSHWALL_BIN:-$target_dir/release/hushwall}
demo=$target_dir/release/hushwall-demo

# If the demo is interrupted before it can clean up, remove what it left behind.
trap '"$demo" --cleanup' EXIT
"$demo"
