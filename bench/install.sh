#!/usr/bin/env bash
# Installs what bench/run.sh needs, only what is missing: Debian packages (iperf3, microsocks, dnsutils),
# the peers from their registries (tun2socks from the Go module proxy, tun2proxy from crates.io) into a cache
# directory, and matplotlib and aioquic (the HTTP/3 download, bench/quic.py) from PyPI into a venv there. Safe to
# run again.
set -euo pipefail
CACHE=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hushwall-bench}
TUN2SOCKS_VERSION=${TUN2SOCKS_VERSION:-v2.7.0}
TUN2PROXY_VERSION=${TUN2PROXY_VERSION:-0.8.7}
mkdir -p "$CACHE/bin"

need=()
command -v iperf3 >/dev/null || need+=(iperf3)
command -v microsocks >/dev/null || need+=(microsocks)
command -v dig >/dev/null || need+=(bind9-dnsutils)
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
command -v ip >/dev/null || need+=(iproute2)
if ((${#need[@]})); then
    echo "bench/install: apt-get install ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq </dev/null
    apt-get install -y -qq --no-install-recommends "${need[@]}" </dev/null >/dev/null
fi

if [[ ! -x $CACHE/bin/tun2socks-$TUN2SOCKS_VERSION ]]; then
    # `go install …@version` also asks the proxy for the module's version list (deprecation check), which the
    # proxy here refuses; a throw-away module with `go get` + `go build` fetches the same pinned version.
    echo "bench/install: go build github.com/xjasonlyu/tun2socks/v2@$TUN2SOCKS_VERSION" >&2
    export GOPATH=$CACHE/gopath GOMODCACHE=$CACHE/gopath/pkg/mod GOFLAGS=-modcacherw
    mod=$CACHE/gomod
    rm -rf "$mod" && mkdir -p "$mod"
    (cd "$mod" && go mod init hushwall-bench-tools >/dev/null 2>&1 \
        && go get "github.com/xjasonlyu/tun2socks/v2@$TUN2SOCKS_VERSION" \
        && go build -o "$CACHE/bin/tun2socks-$TUN2SOCKS_VERSION" github.com/xjasonlyu/tun2socks/v2)
fi
ln -sf "tun2socks-$TUN2SOCKS_VERSION" "$CACHE/bin/tun2socks"

if [[ ! -x $CACHE/bin/tun2proxy-bin-$TUN2PROXY_VERSION ]]; then
    echo "bench/install: cargo install tun2proxy --version $TUN2PROXY_VERSION --locked" >&2
    CARGO_TARGET_DIR=$CACHE/cargo-target cargo install tun2proxy --version "$TUN2PROXY_VERSION" --locked \
        --root "$CACHE/cargo-root" --quiet
    cp "$CACHE/cargo-root/bin/tun2proxy-bin" "$CACHE/bin/tun2proxy-bin-$TUN2PROXY_VERSION"
fi
ln -sf "tun2proxy-bin-$TUN2PROXY_VERSION" "$CACHE/bin/tun2proxy"

if [[ ! -x $CACHE/venv/bin/python ]] || ! "$CACHE/venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    echo "bench/install: pip install matplotlib (venv in $CACHE/venv)" >&2
    python3 -m venv "$CACHE/venv"
    "$CACHE/venv/bin/pip" install --quiet 'matplotlib==3.9.*'
fi
if ! "$CACHE/venv/bin/python" -c 'import aioquic' 2>/dev/null; then
    echo "bench/install: pip install aioquic (venv in $CACHE/venv)" >&2
    "$CACHE/venv/bin/pip" install --quiet 'aioquic==1.*'
fi
