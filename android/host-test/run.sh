#!/usr/bin/env bash
# Host proof of the JNI bridge (issue 4). As root on Debian 12:
#
#   android/host-test/run.sh            # the JUnit suite (EngineHostTest)
#   android/host-test/run.sh bench      # the JNI overhead benchmark (JniBenchmark), prints the BENCHMARKS.md numbers
#   HOST_TEST_PROFILE=release android/host-test/run.sh    # test against a release build of the library
#
# 1. installs what it needs (apt: JDK 17, Maven, dnsmasq-base, curl, dig, iproute2, python3, openssl; Maven
#    Central: Kotlin compiler, JUnit), idempotently;
# 2. builds libhushwall.so for the host (debug, with the test-only `host-test` exports);
# 3. compiles the app's Kotlin engine API for JVM 1.8 with -Xlambdas=class -Xsam-conversions=class, as the
#    Android build does, and checks the bytecode has no invokedynamic;
# 4. builds the topology (below), then runs JUnit 5 on JDK 17 with surefire's forked test JVM inside the
#    phone namespace, so the tests open a real tun there and drive real curl/dig traffic through the engine;
# 5. removes namespaces and servers on any exit. Exits non-zero on any failure.
#
# Topology (unique names per run; addresses only in 198.18.0.0/15 and fd00:6877::/32):
#   phone netns:    tun hwj0 10.111.0.1/32, fd00:6877:1::1/128; default routes (v4, v6) into hwj0.
#                   veth vp 198.18.0.1/24, fd00:6877::1/64; sockets marked 0x6877 (what Callbacks.protect does
#                   here, standing in for VpnService.protect) use table 100: default via the internet netns.
#   internet netns: veth vi 198.18.0.2/24, fd00:6877::2/64; on lo: DNS 198.18.1.53 (dnsmasq), HTTPS
#                   198.18.1.10 and fd00:6877:2::10 (python3 + ssl, certificate from a CA made here).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
mode="${1:-test}"

if [[ $EUID -ne 0 ]]; then
    echo "android/host-test/run.sh: must run as root (network namespaces, tun devices)" >&2
    exit 1
fi

# --- 1. Dependencies -------------------------------------------------------------------------------------
need=()
command -v java >/dev/null || need+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null || need+=(maven)
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
command -v curl >/dev/null || need+=(curl)
command -v dig >/dev/null || need+=(bind9-dnsutils)
command -v ip >/dev/null || need+=(iproute2)
command -v python3 >/dev/null || need+=(python3)
command -v openssl >/dev/null || need+=(openssl)
command -v setpriv >/dev/null || need+=(util-linux)
if ((${#need[@]})); then
    echo "host-test: installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
java -version 2>&1 | grep -q 'version "17' || { echo "host-test: JDK 17 required as 'java'" >&2; exit 1; }
command -v cargo >/dev/null || { echo "host-test: cargo (Rust toolchain) required" >&2; exit 1; }

# --- 2. Native library ---------------------------------------------------------------------------------
# Tests use a debug build by default (debug assertions on); HOST_TEST_PROFILE=release reuses a workspace release
# build (tests/run.sh has one). The benchmark always measures a release build.
profile="${HOST_TEST_PROFILE:-debug}"
[[ "$mode" == bench ]] && profile=release
[[ "$profile" == debug || "$profile" == release ]] || { echo "HOST_TEST_PROFILE: debug or release" >&2; exit 2; }
echo "host-test: building libhushwall.so (host, $profile, feature host-test)"
(cd "$repo" && cargo build -q -p hushwall-android --features host-test $([[ $profile == release ]] && echo --release))
native_dir="$repo/target/$profile"
[[ -f "$native_dir/libhushwall.so" ]] || { echo "host-test: $native_dir/libhushwall.so missing" >&2; exit 1; }

# --- 3. Kotlin -----------------------------------------------------------------------------------------
echo "host-test: compiling Kotlin (JVM 1.8 target, class lambdas)"
mvn_opts=(-B -q -f "$here/pom.xml" -Dnative.dir="$native_dir")
mvn "${mvn_opts[@]}" test-compile
if javap -c -p -classpath "$here/target/classes" $(cd "$here/target/classes" && find . -name '*.class' | sed 's|^\./||; s|\.class$||; s|/|.|g') \
    | grep -q invokedynamic; then
    echo "host-test: the engine API bytecode contains invokedynamic (would fail on ART)" >&2
    exit 1
fi

# --- 4. Topology ---------------------------------------------------------------------------------------
id="$$"
phone="hwj-phone-$id"
inet="hwj-inet-$id"
work="$(mktemp -d /tmp/hushwall-host-test.XXXXXX)"
pids=()
cleanup() {
    local rc=$?
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    ip netns del "$phone" 2>/dev/null || true
    ip netns del "$inet" 2>/dev/null || true
    rm -rf "/etc/netns/$phone" "$work"
    exit "$rc"
}
trap cleanup EXIT INT TERM

ip netns add "$phone"
ip netns add "$inet"
P=(ip netns exec "$phone")
I=(ip netns exec "$inet")
ip link add vp netns "$phone" type veth peer name vi netns "$inet"
for ns in "$phone" "$inet"; do
    ip netns exec "$ns" ip link set lo up
    ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
done
"${P[@]}" ip addr add 198.18.0.1/24 dev vp
"${P[@]}" ip -6 addr add fd00:6877::1/64 dev vp nodad
"${P[@]}" ip link set vp up
"${P[@]}" sysctl -qw net.ipv4.conf.vp.rp_filter=0
"${I[@]}" ip addr add 198.18.0.2/24 dev vi
"${I[@]}" ip -6 addr add fd00:6877::2/64 dev vi nodad
"${I[@]}" ip link set vi up
"${I[@]}" ip addr add 198.18.1.53/32 dev lo
"${I[@]}" ip addr add 198.18.1.10/32 dev lo
"${I[@]}" ip -6 addr add fd00:6877:2::10/128 dev lo nodad
"${I[@]}" ip route add 10.111.0.0/24 via 198.18.0.1
# The phone: a persistent tun the tests attach to (as VpnService.Builder.establish() would hand over).
"${P[@]}" ip tuntap add dev hwj0 mode tun
"${P[@]}" ip addr add 10.111.0.1/32 dev hwj0
"${P[@]}" ip -6 addr add fd00:6877:1::1/128 dev hwj0 nodad
"${P[@]}" ip link set hwj0 up
"${P[@]}" ip route add default dev hwj0
"${P[@]}" ip -6 route add default dev hwj0
"${P[@]}" ip rule add fwmark 0x6877 lookup 100 priority 100
"${P[@]}" ip -6 rule add fwmark 0x6877 lookup 100 priority 100
"${P[@]}" ip route add default via 198.18.0.2 dev vp table 100
"${P[@]}" ip -6 route add default via fd00:6877::2 dev vp table 100
mkdir -p "/etc/netns/$phone"
echo "nameserver 198.18.1.53" >"/etc/netns/$phone/resolv.conf"

# Servers in the internet namespace.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=hushwall host-test CA" \
    -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=allowed.test" -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:allowed.test,DNS:tracking.intl.miui.com,DNS:ads.hushwall.test\n' >"$work/san.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -days 2 \
    -extfile "$work/san.ext" -out "$work/server.pem" 2>/dev/null
mkdir -p "$work/www"
head -c $((2 * 1024 * 1024 + 17)) /dev/urandom >"$work/www/blob.bin"
: >"$work/https.log"
"${I[@]}" python3 "$here/https_server.py" "$work/server.pem" "$work/server.key" "$work/www" "$work/https.log" \
    198.18.1.10 '[fd00:6877:2::10]' >"$work/https.out" 2>&1 &
pids+=($!)
"${I[@]}" dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces --listen-address=198.18.1.53 \
    --except-interface=vi --user=root --pid-file="$work/dnsmasq.pid" --log-facility="$work/dnsmasq.log" \
    --host-record=allowed.test,198.18.1.10,fd00:6877:2::10 \
    --host-record=tracking.intl.miui.com,198.18.1.10 \
    --host-record=ads.hushwall.test,198.18.1.10 &
pids+=($!)
for _ in $(seq 50); do
    grep -q ready "$work/https.out" 2>/dev/null && "${I[@]}" dig +short +time=1 +tries=1 @198.18.1.53 allowed.test >/dev/null 2>&1 && break
    sleep 0.1
done
grep -q ready "$work/https.out" || { echo "host-test: HTTPS server did not start:" >&2; cat "$work/https.out" >&2; exit 1; }

# Surefire's forked test JVM runs inside the phone namespace; Maven itself stays outside (and online).
# (surefire insists the path ends in "java").
mkdir -p "$work/phone-jvm/bin"
cat >"$work/phone-jvm/bin/java" <<EOF
#!/bin/sh
exec ip netns exec $phone "$(readlink -f "$(command -v java)")" "\$@"
EOF
chmod +x "$work/phone-jvm/bin/java"

export HUSHWALL_TUN=hwj0 HUSHWALL_DNS=198.18.1.53:53 HUSHWALL_CA="$work/ca.pem" HUSHWALL_WWW="$work/www" \
    HUSHWALL_HTTPS_LOG="$work/https.log" HUSHWALL_BLOCKLISTS="$repo/blocklists"
case "$mode" in
    test) tests=EngineHostTest ;;
    bench) tests=JniBenchmark ;;
    *) echo "usage: $0 [test|bench]" >&2; exit 2 ;;
esac
echo "host-test: running $tests in netns $phone"
mvn -B -f "$here/pom.xml" -Dnative.dir="$native_dir" -Dtest.jvm="$work/phone-jvm/bin/java" -Dtest="$tests" \
    surefire:test
