#!/usr/bin/env bash
# The app's real HushwallVpnService on the host (issue 13): Robolectric 4.14.1 runs the service's own Kotlin code
# on the real Android 14 framework, with VpnService.Builder.establish() shadowed to hand over a real Linux tun in
# a network namespace and protect() mapped to SO_MARK, so the service carries real dig/curl traffic through the
# real libhushwall.so (built for the host) to real servers. As root on Debian 12:
#
#   android/service-test/run.sh                 # all tests (ServiceDayTest, ScreensDataTest, RoutesTest)
#   android/service-test/run.sh ServiceDayTest  # one class
#
# 1. fetches what it needs from Maven Central (the Kotlin compiler and android-all via android/tools/pom.xml,
#    Robolectric via android/screenshots/pom.xml, android-all-instrumented for Robolectric), links the resources
#    with aapt2 as android/build-apk.sh does, compiles the app's Kotlin + the tests for JVM 1.8 (class lambdas);
# 2. builds libhushwall.so for the host (release, feature host-test: openTun, markSocket);
# 3. builds the topology of android/host-test/run.sh (phone and internet namespaces, dnsmasq on 198.18.1.53 — the
#    resolver the shadowed ConnectivityManager reports as the network's — and on 198.18.2.53 for the network
#    switch test, logging every query; the HTTPS server) and runs JUnit 4 with the JVM inside the phone
#    namespace; each establish() creates a new tun (hwt1, hwt2, … with the app's addresses and the default
#    routes), as Android creates tun0, tun1…;
# 4. removes namespaces and servers on any exit. Exits non-zero on any failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ANDROID="$ROOT/android"
HERE="$ANDROID/service-test"
WORK="$ROOT/build/android/service-test-work"
die() { printf 'service-test: error: %s\n' "$*" >&2; exit 1; }
log() { printf '\n==> %s\n' "$*" >&2; }
SECONDS=0
[[ $EUID -eq 0 ]] || die "must run as root (network namespaces, tun devices)"

need=()
command -v java >/dev/null || need+=(openjdk-17-jdk-headless)
command -v javac >/dev/null || need+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null || need+=(maven)
command -v aapt2 >/dev/null || need+=(aapt)
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
command -v curl >/dev/null || need+=(curl)
command -v dig >/dev/null || need+=(bind9-dnsutils)
command -v ip >/dev/null || need+=(iproute2)
command -v python3 >/dev/null || need+=(python3)
command -v openssl >/dev/null || need+=(openssl)
if ((${#need[@]})); then
  log "apt: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || die "cargo (Rust toolchain) required"

log "Maven Central: Kotlin compiler, android-all, Robolectric, android-all-instrumented"
rm -rf "$WORK"
mkdir -p "$WORK/deps" "$WORK/rdeps" "$WORK/res" "$WORK/gen" "$WORK/classes" "$WORK/android-all"
mvn -B -q -f "$ANDROID/tools/pom.xml" dependency:copy-dependencies -DoutputDirectory="$WORK/deps" >&2
mvn -B -q -f "$ANDROID/screenshots/pom.xml" dependency:copy-dependencies -DoutputDirectory="$WORK/rdeps" >&2
one() { local f; f=$(ls $1 2>/dev/null | head -1); [[ -n $f ]] || die "no $1"; echo "$f"; }
ANDROID_JAR=$(one "$WORK/deps/android-all-*.jar")
STDLIB_JAR=$(one "$WORK/deps/kotlin-stdlib-[0-9]*.jar")
COMPILER_CP=$(ls "$WORK"/deps/*.jar | grep -v -e '/android-all-' -e '/dalvik-dx-' | paste -sd: -)
# Android 14 to run on, Android 15 for the resource table Robolectric 4.14 reads (see android/screenshots/run.sh).
for v in 14-robolectric-10818077-i7 15-robolectric-12650502-i7; do
  mvn -B -q dependency:copy -Dartifact="org.robolectric:android-all-instrumented:$v" -DoutputDirectory="$WORK/android-all" >&2
done
for aar in "$WORK"/rdeps/*.aar; do unzip -q -p "$aar" classes.jar > "${aar%.aar}.jar"; done
TEST_CP=$(ls "$WORK"/rdeps/*.jar | paste -sd: -)

log "aapt2: resources (as build-apk.sh links them)"
aapt2 compile --dir "$ANDROID/app/res" -o "$WORK/res/compiled.zip"
aapt2 link -o "$WORK/resources.apk" -I "$ANDROID_JAR" --manifest "$ANDROID/app/AndroidManifest.xml" \
  --min-sdk-version 28 --target-sdk-version 34 --version-code 1 --version-name service-test \
  --warn-manifest-validation --java "$WORK/gen" "$WORK/res/compiled.zip" 2> >(grep -v -e "chunk type" -e "<property>" >&2)
sed 's|<application|<uses-sdk android:minSdkVersion="28" android:targetSdkVersion="34" />\n    <application|' \
  "$ANDROID/app/AndroidManifest.xml" > "$WORK/AndroidManifest.xml"
mkdir -p "$WORK/config/com/android/tools"
cat > "$WORK/config/com/android/tools/test_config.properties" <<EOF2
android_merged_manifest=$WORK/AndroidManifest.xml
android_resource_apk=$WORK/resources.apk
android_custom_package=app.hushwall
EOF2

log "kotlinc: app + service tests (JVM 1.8, class lambdas, as build-apk.sh)"
mapfile -t SOURCES < <(find "$ANDROID/app/src/main/kotlin" "$HERE/src" -name '*.kt' | sort)
SOURCES+=("$ANDROID/host-test/src/test/kotlin/app/hushwall/hosttest/TestNative.kt")
java -Xmx1g -cp "$COMPILER_CP" org.jetbrains.kotlin.cli.jvm.K2JVMCompiler \
  -d "$WORK/classes" -module-name hushwall -classpath "$ANDROID_JAR:$STDLIB_JAR:$TEST_CP" -no-stdlib -no-reflect \
  -jvm-target 1.8 -Xlambdas=class -Xsam-conversions=class -nowarn "${SOURCES[@]}" "$(find "$WORK/gen" -name R.java)"
javac -nowarn -Xlint:-options --release 8 -d "$WORK/classes" $(find "$WORK/gen" -name '*.java')
if javap -c -p -classpath "$WORK/classes" $(cd "$WORK/classes" && find app/hushwall -name '*.class' -not -path '*/servicetest/*' -not -path '*/hosttest/*' | sed 's|\.class$||; s|/|.|g') \
    | grep -q invokedynamic; then
  die "the app's bytecode contains invokedynamic (would fail on ART)"
fi

log "cargo: libhushwall.so for the host (release, feature host-test)"
(cd "$ROOT" && cargo build -q --release -p hushwall-android --features host-test)
NATIVE_DIR="$ROOT/target/release"
[[ -f "$NATIVE_DIR/libhushwall.so" ]] || die "$NATIVE_DIR/libhushwall.so missing"

log "topology: phone and internet namespaces, dnsmasq, HTTPS server"
id="$$"
phone="hws-phone-$id"
inet="hws-inet-$id"
net="$(mktemp -d /tmp/hushwall-service-test.XXXXXX)"
pids=()
cleanup() {
  local rc=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  ip netns del "$phone" 2>/dev/null || true
  ip netns del "$inet" 2>/dev/null || true
  rm -rf "/etc/netns/$phone" "$net"
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
"${I[@]}" ip addr add 198.18.0.2/24 dev vi
"${I[@]}" ip -6 addr add fd00:6877::2/64 dev vi nodad
"${I[@]}" ip link set vi up
for a in 198.18.1.53 198.18.2.53 198.18.1.10; do "${I[@]}" ip addr add $a/32 dev lo; done
"${I[@]}" ip -6 addr add fd00:6877:2::10/128 dev lo nodad
# Marked sockets (protect() = SO_MARK here) leave through the veth; everything else goes to the current tun,
# whose default routes each establish() sets (ServiceShadows.TunFactory).
"${P[@]}" ip rule add fwmark 0x6877 lookup 100 priority 100
"${P[@]}" ip -6 rule add fwmark 0x6877 lookup 100 priority 100
"${P[@]}" ip route add default via 198.18.0.2 dev vp table 100
"${P[@]}" ip -6 route add default via fd00:6877::2 dev vp table 100
mkdir -p "/etc/netns/$phone"
# Apps ask the DNS server the VPN hands out (Builder.addDnsServer): the engine answers it.
echo "nameserver 10.111.222.53" >"/etc/netns/$phone/resolv.conf"

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=hushwall service-test CA" \
  -keyout "$net/ca.key" -out "$net/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=allowed.test" -keyout "$net/server.key" -out "$net/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:allowed.test,DNS:tracking.intl.miui.com,DNS:ads.hushwall.test\n' >"$net/san.ext"
openssl x509 -req -in "$net/server.csr" -CA "$net/ca.pem" -CAkey "$net/ca.key" -CAcreateserial -days 2 \
  -extfile "$net/san.ext" -out "$net/server.pem" 2>/dev/null
mkdir -p "$net/www"
echo hello >"$net/www/hello.txt"
: >"$net/https.log"
"${I[@]}" python3 "$ANDROID/host-test/https_server.py" "$net/server.pem" "$net/server.key" "$net/www" "$net/https.log" \
  198.18.1.10 '[fd00:6877:2::10]' >"$net/https.out" 2>&1 &
pids+=($!)
"${I[@]}" dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces --listen-address=198.18.1.53,198.18.2.53 \
  --except-interface=vi --user=root --pid-file="$net/dnsmasq.pid" --log-facility="$net/dnsmasq.log" --log-queries \
  --host-record=allowed.test,198.18.1.10,fd00:6877:2::10 \
  --host-record=tracking.intl.miui.com,198.18.1.10 \
  --host-record=ads.hushwall.test,198.18.1.10 \
  --host-record=dns.google,198.18.1.10 &
pids+=($!)
for _ in $(seq 50); do
  grep -q ready "$net/https.out" 2>/dev/null && "${I[@]}" dig +short +time=1 +tries=1 @198.18.1.53 allowed.test >/dev/null 2>&1 && break
  sleep 0.1
done
grep -q ready "$net/https.out" || die "HTTPS server did not start: $(cat "$net/https.out")"

log "Robolectric: HushwallVpnService in netns $phone"
classes=("${@:-ServiceDayTest ScreensDataTest StoreTest RoutesTest}")
HUSHWALL_CA="$net/ca.pem" HUSHWALL_HTTPS_LOG="$net/https.log" HUSHWALL_DNS_LOG="$net/dnsmasq.log" HUSHWALL_INET_NS="$inet" \
"${P[@]}" java -Xmx1536m \
  -Djava.library.path="$NATIVE_DIR" -Drobolectric.logging=stdout \
  -Drobolectric.offline=true -Drobolectric.enabledSdks=34 -Drobolectric.dependency.dir="$WORK/android-all" \
  --add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.io=ALL-UNNAMED \
  --add-opens=java.base/java.util=ALL-UNNAMED --add-opens=java.base/jdk.internal.misc=ALL-UNNAMED \
  -cp "$WORK/config:$WORK/classes:$STDLIB_JAR:$TEST_CP:$ANDROID_JAR" org.junit.runner.JUnitCore \
  $(for c in ${classes[*]}; do echo "app.hushwall.servicetest.$c"; done)
log "service-test passed (${SECONDS}s)"
