#!/usr/bin/env bash
# Renders every screen of the Hushwall app to PNG on the host and asserts the key views are present; also runs the
# host tests of the charts' data and the shared report (ChartDataTest, ReportTest).
#
# Robolectric 4.14.1 (Maven Central) with native graphics runs the app's real Kotlin code against the real Android
# 14 framework (android-all-instrumented, also from Maven Central, fetched by android/screenshots/pom.xml; the
# tests run offline). Resources are linked by aapt2 exactly as android/build-apk.sh links them. No device, no
# emulator, no Android SDK.
#
#   android/screenshots/run.sh            # → build/android/screenshots/*.png
#   android/screenshots/run.sh --update   # also copies them to docs/screenshots/
#
# Needs what android/build-apk.sh needs (JDK 17, Maven, aapt2); run that first on a fresh machine, or this
# installs nothing and stops with a message. Exits non-zero if compiling, rendering or an assertion fails.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ANDROID="$ROOT/android"
WORK="$ROOT/build/android/screenshot-work"
OUT="$ROOT/build/android/screenshots"
die() { printf 'screenshots: error: %s\n' "$*" >&2; exit 1; }
log() { printf '\n==> %s\n' "$*" >&2; }
SECONDS=0
for tool in java javac mvn aapt2; do command -v $tool >/dev/null || die "$tool missing (android/build-apk.sh installs it)"; done

log "Maven Central: Kotlin compiler, android-all, Robolectric, android-all-instrumented"
rm -rf "$WORK" "$OUT"
mkdir -p "$WORK/deps" "$WORK/rdeps" "$WORK/res" "$WORK/gen" "$WORK/classes" "$OUT"
mvn -B -q -f "$ANDROID/tools/pom.xml" dependency:copy-dependencies -DoutputDirectory="$WORK/deps" >&2
mvn -B -q -f "$ANDROID/screenshots/pom.xml" dependency:copy-dependencies -DoutputDirectory="$WORK/rdeps" >&2
one() { local f; f=$(ls $1 2>/dev/null | head -1); [[ -n $f ]] || die "no $1"; echo "$f"; }
ANDROID_JAR=$(one "$WORK/deps/android-all-*.jar")
STDLIB_JAR=$(one "$WORK/deps/kotlin-stdlib-[0-9]*.jar")
COMPILER_CP=$(ls "$WORK"/deps/*.jar | grep -v -e '/android-all-' -e '/dalvik-dx-' | paste -sd: -)
# The instrumented framework, which Robolectric loads from robolectric.dependency.dir (offline): Android 14 (API
# 34) to run on, and Android 15, whose framework resource table Robolectric 4.14 reads for binary resources
# whatever SDK runs. "i7" is Robolectric 4.14.1's PREINSTRUMENTED_VERSION.
mkdir -p "$WORK/android-all"
for v in 14-robolectric-10818077-i7 15-robolectric-12650502-i7; do
  mvn -B -q dependency:copy -Dartifact="org.robolectric:android-all-instrumented:$v" \
    -DoutputDirectory="$WORK/android-all" >&2
done
# androidx.test's monitor (which Robolectric calls) comes as an .aar: its classes.jar is the library.
for aar in "$WORK"/rdeps/*.aar; do
  unzip -q -p "$aar" classes.jar > "${aar%.aar}.jar"
done
TEST_CP=$(ls "$WORK"/rdeps/*.jar | paste -sd: -)

log "aapt2: resources (as build-apk.sh links them)"
aapt2 compile --dir "$ANDROID/app/res" -o "$WORK/res/compiled.zip"
aapt2 link -o "$WORK/resources.apk" -I "$ANDROID_JAR" --manifest "$ANDROID/app/AndroidManifest.xml" \
  --min-sdk-version 28 --target-sdk-version 34 --version-code 1 --version-name screenshots \
  --warn-manifest-validation --java "$WORK/gen" "$WORK/res/compiled.zip" 2> >(grep -v -e "chunk type" -e "<property>" >&2)
# Robolectric reads the text manifest; give it the sdk levels aapt2 adds to the binary one.
sed 's|<application|<uses-sdk android:minSdkVersion="28" android:targetSdkVersion="34" />\n    <application|' \
  "$ANDROID/app/AndroidManifest.xml" > "$WORK/AndroidManifest.xml"
mkdir -p "$WORK/config/com/android/tools"
cat > "$WORK/config/com/android/tools/test_config.properties" <<EOF2
android_merged_manifest=$WORK/AndroidManifest.xml
android_resource_apk=$WORK/resources.apk
android_custom_package=app.hushwall
EOF2

log "kotlinc: app + screenshot test"
mapfile -t SOURCES < <(find "$ANDROID/app/src/main/kotlin" "$ANDROID/screenshots/src" -name '*.kt' | sort)
java -Xmx1g -cp "$COMPILER_CP" org.jetbrains.kotlin.cli.jvm.K2JVMCompiler \
  -d "$WORK/classes" -module-name hushwall -classpath "$ANDROID_JAR:$STDLIB_JAR:$TEST_CP" -no-stdlib -no-reflect \
  -jvm-target 1.8 -Xlambdas=class -Xsam-conversions=class -nowarn "${SOURCES[@]}" "$(find "$WORK/gen" -name R.java)"
javac -nowarn -Xlint:-options --release 8 -d "$WORK/classes" $(find "$WORK/gen" -name '*.java')

log "Robolectric: render and check every screen"
# The seeded log runs back from "now" in minutes, and Home's "today" must hold more than ten of its blocks, which
# fails in the first hour after local midnight: render in the zone where it is about noon now, whatever the clock.
hour=$((10#$(date -u +%H)))
offset=$((12 - hour))
zone=$(printf 'GMT%s%02d:00' "$( ((offset < 0)) && echo - || echo +)" "${offset#-}")
java -Xmx1536m -Duser.timezone="$zone" \
  -Drobolectric.offline=true -Drobolectric.enabledSdks=34 -Drobolectric.dependency.dir="$WORK/android-all" \
  -Dhushwall.out="$OUT" -Dhushwall.root="$ROOT" \
  --add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.io=ALL-UNNAMED \
  --add-opens=java.base/java.util=ALL-UNNAMED --add-opens=java.base/jdk.internal.misc=ALL-UNNAMED \
  -cp "$WORK/config:$WORK/classes:$STDLIB_JAR:$TEST_CP:$ANDROID_JAR" org.junit.runner.JUnitCore \
  app.hushwall.screenshots.ChartDataTest app.hushwall.screenshots.ReportTest app.hushwall.screenshots.ScreenshotTest

n=$(ls "$OUT"/*.png | wc -l)
((n >= 18)) || die "expected 18 screenshots, got $n"
if [[ ${1:-} == --update ]]; then
  mkdir -p "$ROOT/docs/screenshots"
  rm -f "$ROOT"/docs/screenshots/*.png
  cp "$OUT"/*.png "$ROOT/docs/screenshots/"
  log "Copied $n screenshots to docs/screenshots/"
fi
log "$n screenshots in $OUT (${SECONDS}s)"
