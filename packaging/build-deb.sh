#!/usr/bin/env bash
# Builds the Debian package: `packaging/build-deb.sh [--binary PATH] [--out DIR]`.
# Installs /usr/bin/hushwall, the systemd unit, /etc/hushwall/hushwall.toml (a conffile) and /var/lib/hushwall.
# Uses dpkg-deb (Debian's own tool, already on every Debian system) rather than cargo-deb, which would be one more
# tool to install and build from source; the package has no parts that need more than a staging tree.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
binary=""
out="$repo/target/deb"
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "usage: $0 [--binary PATH] [--out DIR]" >&2; exit 2 ;;
    esac
done
if [ -z "$binary" ]; then
    cargo build --release -p hushwall --manifest-path "$repo/Cargo.toml" >&2
    binary="$repo/target/release/hushwall"
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)
arch=$(dpkg --print-architecture)
# The newest glibc symbol version the binary needs is the libc6 it depends on.
glibc=$(objdump -T "$binary" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n1)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/hushwall_${version}_${arch}"
install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/hushwall" \
    "$root/usr/share/doc/hushwall"
install -d -m 0700 "$root/var/lib/hushwall"
strip --strip-debug -o "$root/usr/bin/hushwall" "$binary"
chmod 0755 "$root/usr/bin/hushwall"
install -m 0644 "$repo/packaging/hushwall.service" "$root/lib/systemd/system/hushwall.service"
install -m 0644 "$repo/packaging/hushwall.toml" "$root/etc/hushwall/hushwall.toml"
install -m 0644 "$repo/README.md" "$root/usr/share/doc/hushwall/README.md"
echo "/etc/hushwall/hushwall.toml" > "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/control" <<CONTROL
Package: hushwall
Version: $version
Architecture: $arch
Maintainer: Hushwall developers <hushwall@localhost>
Depends: libc6 (>= $glibc), iproute2
Section: net
Priority: optional
Installed-Size: $(du -sk "$root" | cut -f1)
Description: firewall that stops Xiaomi/MIUI telemetry for a whole network
 Runs the Hushwall engine on a Linux gateway: the devices on the LAN interfaces
 named in /etc/hushwall/hushwall.toml have their telemetry refused by DNS name,
 TLS SNI, HTTP Host and address, while everything else is forwarded.
 Edit the configuration, then enable and start hushwall.service.
CONTROL
# The unit is not enabled on install: the LAN interface in the configuration must be set first.
cat > "$root/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
SCRIPT
cat > "$root/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then systemctl stop hushwall.service || true; fi
SCRIPT
cat > "$root/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
SCRIPT
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
mkdir -p "$out"
deb="$out/hushwall_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
