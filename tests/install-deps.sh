#!/usr/bin/env bash
# Installs the programs the end-to-end tests and the demo run, only those missing (Debian/Ubuntu, apt).
# Used by tests/run.sh and demo.sh; safe to run again.
set -euo pipefail

# command → Debian package
declare -A PACKAGE=(
    [ip]=iproute2
    [dig]=bind9-dnsutils
    [dnsmasq]=dnsmasq-base # not `dnsmasq`: that one starts a system service
    [tcpdump]=tcpdump
    [python3]=python3
    [openssl]=openssl
    [curl]=curl
    [socat]=socat
    [kill]=procps
    [sha256sum]=coreutils
    [tshark]=tshark # reads back the engine's pcapng export (tests/tests/inspect.rs)
    [chromium]=chromium # the real browser of tests/tests/families.rs
    [dpkg-deb]=dpkg # packaging/build-deb.sh (tests/tests/gateway.rs)
    [script]=bsdutils # a pseudo-terminal for the live status line test (tests/tests/gateway.rs)
    [systemd-analyze]=systemd # checks the packaged unit (tests/tests/gateway.rs)
    [objdump]=binutils # packaging/build-deb.sh: the libc6 version the binary needs; and strip
    [ssh]=openssh-client # real server-first clients and servers (tests/tests/servers_first.rs)
    [scp]=openssh-client
    [ssh-keygen]=openssh-client
    [sshd]=openssh-server
    [dovecot]=dovecot-imapd # an IMAP server (dovecot-core comes with it)
    [ping]=iputils-ping # the leak sweeps ping a blocked range and expect its ICMP refusal (tests/tests/leaks.rs)
)

missing=()
for cmd in "${!PACKAGE[@]}"; do
    # `kill` is also a shell builtin; the tests need the program.
    if [[ $cmd == kill ]]; then
        [[ -x /usr/bin/kill || -x /bin/kill ]] && continue
    elif command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/sbin/$cmd || -x /sbin/$cmd ]]; then
        continue
    fi
    missing+=("${PACKAGE[$cmd]}")
done

if ((${#missing[@]})); then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-deps: missing ${missing[*]} and no apt-get to install them" >&2
        exit 1
    fi
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    echo "install-deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq </dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
fi

# A real QUIC client and server for the QUIC SNI tests (tests/scripts/quic.py): aioquic from PyPI.
if ! python3 -c 'import aioquic' >/dev/null 2>&1; then
    echo "install-deps: installing the aioquic Python package" >&2
    python3 -m pip install --quiet aioquic </dev/null || python3 -m pip install --quiet --break-system-packages aioquic </dev/null
fi

# Real SMTP and FTP servers for the server-first tests (tests/tests/servers_first.rs): aiosmtpd and pyftpdlib.
for module in aiosmtpd pyftpdlib; do
    if ! python3 -c "import $module" >/dev/null 2>&1; then
        echo "install-deps: installing the $module Python package" >&2
        python3 -m pip install --quiet "$module" </dev/null || python3 -m pip install --quiet --break-system-packages "$module" </dev/null
    fi
done

# The kernel pieces the test bed needs.
[[ -c /dev/net/tun ]] || { echo "install-deps: /dev/net/tun is missing (tun module)" >&2; exit 1; }
