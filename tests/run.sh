#!/usr/bin/env bash
# The Hushwall test command: installs what the tests need, builds the workspace in release mode, and runs every
# test (unit tests and the network-namespace end-to-end tests). Needs root. Extra arguments go to `cargo test`,
# e.g. `tests/run.sh -p hushwall-tests --test e2e -- ipv6::`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "tests/run.sh: the end-to-end tests need root (network namespaces, veth, tun); run it as root" >&2
    exit 1
fi

./tests/install-deps.sh

target_dir=${CARGO_TARGET_DIR:-$PWD/target}
export HUSHWALL_BIN=${HUSHWALL_BIN:-$target_dir/release/hushwall}

echo "==> blocklists/check.sh (generated lists equal their generators' output)" >&2
./blocklists/check.sh

echo "==> cargo build --release --workspace --all-targets" >&2
cargo build --release --workspace --all-targets

# One test at a time: the network tests include floods and fd-exhaustion runs that measure the engine under load;
# two of them at once on a 2-core machine starve each other's engine and make their assertions about the load
# itself (what reached the engine, which fds were free) depend on scheduling.
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-1}
echo "==> cargo test --release --workspace (HUSHWALL_BIN=$HUSHWALL_BIN)" >&2
if (($#)); then
    cargo test --release "$@"
else
    cargo test --release --workspace --no-fail-fast
fi

if ((!$#)); then
    echo "==> android/host-test/run.sh (JNI bridge on a real JVM and tun)" >&2
    HOST_TEST_PROFILE=release ./android/host-test/run.sh
    echo "==> android/service-test/run.sh (the app's VpnService under Robolectric on a real tun)" >&2
    ./android/service-test/run.sh
fi
