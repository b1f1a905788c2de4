#!/usr/bin/env bash
# Builds build/android/hushwall-<version>-arm64-v8a.apk from this repo, signed and statically checked.
#
# No Android SDK, NDK, Gradle or Google Maven: Debian's clang/lld, aapt2, zipalign, apksigner and rustc-web,
# plus jars from Maven Central (android/tools/pom.xml). See android/README.md for what each step does and what
# is (and is not) verified here. Installs missing Debian packages when run as root. Idempotent.
#
# Environment:
#   HUSHWALL_ABIS              ABIs to build, default "arm64-v8a" (also: "arm64-v8a x86_64" for emulators)
#   HUSHWALL_KEYSTORE          release keystore; with HUSHWALL_KEYSTORE_PASS and HUSHWALL_KEY_ALIAS.
#                              Without it the debug key ~/.android/debug.keystore is used (made if missing).
#   HUSHWALL_KEY_PASS          key password if it differs from the keystore's
#   HUSHWALL_VERSION_CODE      override the versionCode derived from the version (M*10000 + m*100 + p)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ANDROID="$ROOT/android"
OUT="$ROOT/build/android"
TOOLS="$ANDROID/tools"
MIN_SDK=28
TARGET_SDK=34
ABIS=${HUSHWALL_ABIS:-arm64-v8a}
RUST_SRC=/usr/lib/rustlib/src/rust/library

log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'build-apk: error: %s\n' "$*" >&2; exit 1; }
SECONDS=0

# --- 0. Tools ------------------------------------------------------------------------------------------------
# command-or-path -> Debian package
declare -A NEEDS=(
  [clang-22]=clang-22 [ld.lld-22]=lld-22 [llvm-readelf-22]=llvm-22 [llvm-nm-22]=llvm-22 [llvm-ar-22]=llvm-22
  [llvm-strip-22]=llvm-22 [/usr/bin/rustc]=rustc-web [/usr/bin/cargo]=cargo-web [$RUST_SRC]=rust-web-src
  [cc]=gcc [aapt2]=aapt [zipalign]=zipalign [apksigner]=apksigner [dexdump]=dexdump
  [java]=openjdk-17-jdk-headless [javac]=openjdk-17-jdk-headless
  [keytool]=openjdk-17-jdk-headless [mvn]=maven [python3]=python3
  [proguard]=proguard-cli
)
missing=()
for what in "${!NEEDS[@]}"; do
  if [[ $what == /* ]]; then [[ -e $what ]] || missing+=("${NEEDS[$what]}")
  else command -v "$what" >/dev/null 2>&1 || missing+=("${NEEDS[$what]}"); fi
done
if ((${#missing[@]})); then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  [[ $(id -u) == 0 ]] || die "missing Debian packages (run as root to install): ${missing[*]}"
  log "Installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
fi
# rustup's proxies may come first on PATH; the Android build uses Debian's toolchain (it ships the std
# sources -Zbuild-std needs).
export RUSTC=/usr/bin/rustc CARGO=/usr/bin/cargo RUSTC_BOOTSTRAP=1
export CARGO_TERM_PROGRESS_WHEN=never
unset RUSTFLAGS CARGO_BUILD_TARGET

[[ -f $ANDROID/native/Cargo.toml ]] ||
  die "android/native/Cargo.toml is missing: the JNI crate (hushwall-android, lib libhushwall.so) is not in this tree yet"
[[ -f $ANDROID/app/src/main/kotlin/app/hushwall/engine/Engine.kt ]] ||
  die "android/app/src/main/kotlin/app/hushwall/engine/Engine.kt is missing: the Kotlin engine API is not in this tree yet"

VERSION=$(python3 - "$ROOT/Cargo.toml" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print(tomllib.load(f)["workspace"]["package"]["version"])
EOF
)
[[ $VERSION =~ ^([0-9]+)\.([0-9]+)\.([0-9]+) ]] || die "version '$VERSION' is not MAJOR.MINOR.PATCH"
VERSION_CODE=${HUSHWALL_VERSION_CODE:-$((BASH_REMATCH[1] * 10000 + BASH_REMATCH[2] * 100 + BASH_REMATCH[3]))}
ABI_TAG=${ABIS// /+}
APK="$OUT/hushwall-$VERSION-$ABI_TAG.apk"
log "Hushwall $VERSION (versionCode $VERSION_CODE), ABIs: $ABIS"
mkdir -p "$OUT"

# --- 1. Rust: libhushwall.so per ABI ------------------------------------------------------------------------
rm -rf "$OUT/lib" "$OUT/symbols"  # only this run's ABIs get packaged
for abi in $ABIS; do
  case $abi in
    arm64-v8a) triple=aarch64-linux-android ;;
    x86_64) triple=x86_64-linux-android ;;
    *) die "unsupported ABI $abi (arm64-v8a, x86_64)" ;;
  esac
  log "Rust: hushwall-android for $triple (API $MIN_SDK)"
  upper=${triple//-/_}
  env "CARGO_TARGET_${upper^^}_LINKER=$TOOLS/android-link" \
    HUSHWALL_CLANG_TARGET="$triple$MIN_SDK" \
    HUSHWALL_SYMBOL_TABLE="$ANDROID/bionic-symbols.tsv" \
    HUSHWALL_STUB_DIR="$OUT/stubs/$abi" \
    /usr/bin/cargo build --manifest-path "$ROOT/Cargo.toml" -p hushwall-android --lib --release --locked \
      --target "$triple" -Zbuild-std=std,panic_abort --target-dir "$OUT/target" \
      --config 'profile.release.panic="abort"'
  built="$OUT/target/$triple/release/libhushwall.so"
  [[ -f $built ]] || die "cargo did not produce $built (is [lib] name = \"hushwall\", crate-type cdylib?)"
  mkdir -p "$OUT/symbols/$abi" "$OUT/lib/$abi"
  cp "$built" "$OUT/symbols/$abi/libhushwall.so"          # unstripped, for symbolizing crashes
  llvm-strip-22 --strip-unneeded -o "$OUT/lib/$abi/libhushwall.so" "$built"
done

# --- 2. Build-time jars from Maven Central -------------------------------------------------------------------
log "Maven Central: Kotlin compiler, kotlin-stdlib, android-all (API $TARGET_SDK), dalvik-dx"
DEPS="$OUT/deps"
rm -rf "$DEPS"  # copied afresh from ~/.m2 (quick): no stale versions after a pom change
mvn -B -q -f "$TOOLS/pom.xml" dependency:copy-dependencies -DoutputDirectory="$DEPS" >&2
one() { local f; f=$(ls "$DEPS"/$1 2>/dev/null | head -1); [[ -n $f ]] || die "no $1 in $DEPS"; echo "$f"; }
ANDROID_JAR=$(one 'android-all-*.jar')
DX_JAR=$(one 'dalvik-dx-*.jar')
STDLIB_JAR=$(one 'kotlin-stdlib-[0-9]*.jar')
COMPILER_CP=$(ls "$DEPS"/*.jar | grep -v -e '/android-all-' -e '/dalvik-dx-' | paste -sd: -)

# --- 3. Resources and manifest -> base APK + R.java ------------------------------------------------------------
log "aapt2: resources and manifest"
rm -rf "$OUT/res" "$OUT/gen" "$OUT/classes" "$OUT/apk"
mkdir -p "$OUT/res" "$OUT/gen" "$OUT/classes" "$OUT/apk"
aapt2 compile --dir "$ANDROID/app/res" -o "$OUT/res/compiled.zip"
# Linked against the framework resource table inside android-all (API 34, = targetSdk), not Debian's
# framework-res.apk (API 29), which predates names the manifest needs (foregroundServiceType="specialUse").
# This aapt2 (Android 10) does not know the <property> element (API 31), hence --warn-manifest-validation;
# check-apk.py verifies the manifest that comes out. "Unknown chunk type '200'" is aapt2 10 skipping a newer
# table chunk of API 34's resources.arsc.
aapt2 link -o "$OUT/apk/base.apk" -I "$ANDROID_JAR" \
  --manifest "$ANDROID/app/AndroidManifest.xml" \
  --min-sdk-version "$MIN_SDK" --target-sdk-version "$TARGET_SDK" \
  --version-code "$VERSION_CODE" --version-name "$VERSION" \
  --warn-manifest-validation --java "$OUT/gen" "$OUT/res/compiled.zip"

# --- 4. Kotlin -> classes -> dex --------------------------------------------------------------------------------
# JVM 1.8 class files, lambdas and SAM conversions as classes: no invokedynamic (ART lacks the JVM's
# LambdaMetafactory/StringConcatFactory bootstraps). Java API limited to JDK 8's; Android API from API 34.
log "kotlinc: app sources"
mapfile -t KT_SOURCES < <(find "$ANDROID/app/src/main/kotlin" -name '*.kt' | sort)
java -Xmx1g -cp "$COMPILER_CP" org.jetbrains.kotlin.cli.jvm.K2JVMCompiler \
  -d "$OUT/classes" -module-name hushwall \
  -classpath "$ANDROID_JAR:$STDLIB_JAR" -no-stdlib -no-reflect \
  -jvm-target 1.8 -Xjdk-release=1.8 -Xlambdas=class -Xsam-conversions=class -Xstring-concat=inline \
  "${KT_SOURCES[@]}" "$(find "$OUT/gen" -name R.java)"
javac -nowarn -Xlint:-options --release 8 -d "$OUT/classes" $(find "$OUT/gen" -name '*.java')

# ProGuard (Debian's 6.2.2) shrinks kotlin-stdlib to what the app uses. It reads class files up to Java 13
# only, so its library is JDK 17's java.base with the class-file version rewritten to 52 (it only needs the
# class hierarchy; JDK 17's is a superset of what the stdlib links against). App classes are kept whole, so
# the Android framework is not needed as a library here.
log "proguard: shrink kotlin-stdlib"
JDK_LIB="$OUT/java-base-as-java8.jar"
if [[ ! -s $JDK_LIB ]]; then
  JMOD="$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")/jmods/java.base.jmod"
  [[ -f $JMOD ]] || die "no $JMOD (javac should be OpenJDK 17 from Debian: openjdk-17-jdk-headless)"
  python3 - "$JMOD" "$JDK_LIB.tmp" <<'EOF2'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as jmod, zipfile.ZipFile(sys.argv[2], "w", zipfile.ZIP_DEFLATED) as out:
    for n in jmod.namelist():
        if n.startswith("classes/") and n.endswith(".class") and not n.endswith("module-info.class"):
            b = bytearray(jmod.read(n))
            b[6:8] = (52).to_bytes(2, "big")  # major_version
            out.writestr(n[len("classes/"):], bytes(b))
EOF2
  mv "$JDK_LIB.tmp" "$JDK_LIB"
fi
cat > "$OUT/proguard.pro" <<EOF2
-injars $OUT/classes
-injars $STDLIB_JAR(!META-INF/**)
-outjars $OUT/dexinput.jar
-libraryjars $JDK_LIB
-libraryjars $(one 'annotations-*.jar')
-dontobfuscate
-dontoptimize
-dontnote
-dontwarn android.**,app.hushwall.**
-keep class app.hushwall.** { *; }
EOF2
rm -f "$OUT/dexinput.jar"
proguard @"$OUT/proguard.pro" >"$OUT/proguard.log" 2>&1 || { cat "$OUT/proguard.log" >&2; die "proguard failed"; }

log "dx: classes.dex (min-sdk $MIN_SDK)"
java -Xmx1g -cp "$DX_JAR" com.android.dx.command.Main --dex --min-sdk-version="$MIN_SDK" \
  --output="$OUT/apk/classes.dex" "$OUT/dexinput.jar"

# --- 5. Package, align, sign ---------------------------------------------------------------------------------
log "Package: dex (deflated), native libraries (stored), zipalign 16 KiB"
python3 - "$OUT/apk/base.apk" "$OUT/apk/unaligned.apk" "$OUT/apk/classes.dex" "$OUT/lib" <<'EOF'
import os, shutil, sys, zipfile
base, out, dex, libdir = sys.argv[1:]
shutil.copyfile(base, out)
with zipfile.ZipFile(out, "a") as z:
    z.write(dex, "classes.dex", compress_type=zipfile.ZIP_DEFLATED)
    for abi in sorted(os.listdir(libdir)):
        for so in sorted(os.listdir(os.path.join(libdir, abi))):
            # Stored: with extractNativeLibs="false" Android maps the library straight from the APK.
            z.write(os.path.join(libdir, abi, so), f"lib/{abi}/{so}", compress_type=zipfile.ZIP_STORED)
EOF
# No -p: this zipalign's -p aligns .so files to 4 KiB only; 16384 for every stored entry includes them.
zipalign -f 16384 "$OUT/apk/unaligned.apk" "$OUT/apk/aligned.apk"

if [[ -n ${HUSHWALL_KEYSTORE:-} ]]; then
  [[ -f $HUSHWALL_KEYSTORE ]] || die "HUSHWALL_KEYSTORE=$HUSHWALL_KEYSTORE does not exist"
  [[ -n ${HUSHWALL_KEYSTORE_PASS:-} && -n ${HUSHWALL_KEY_ALIAS:-} ]] ||
    die "HUSHWALL_KEYSTORE needs HUSHWALL_KEYSTORE_PASS and HUSHWALL_KEY_ALIAS"
  log "Sign: release key $HUSHWALL_KEY_ALIAS from $HUSHWALL_KEYSTORE"
  KS=$HUSHWALL_KEYSTORE ALIAS=$HUSHWALL_KEY_ALIAS
  KS_PASS=env:HUSHWALL_KEYSTORE_PASS
  KEY_PASS=env:${HUSHWALL_KEY_PASS:+HUSHWALL_KEY_PASS}
  [[ -n ${HUSHWALL_KEY_PASS:-} ]] || KEY_PASS=$KS_PASS
else
  KS="$HOME/.android/debug.keystore" ALIAS=androiddebugkey KS_PASS=pass:android KEY_PASS=pass:android
  if [[ ! -f $KS ]]; then
    log "Generating debug key $KS"
    mkdir -p "$(dirname "$KS")"
    keytool -genkeypair -keystore "$KS" -storetype PKCS12 -storepass android -keypass android \
      -alias androiddebugkey -keyalg RSA -keysize 2048 -validity 10000 -dname "CN=Android Debug,O=Android,C=US" >&2
  fi
  log "Sign: debug key ($KS)"
fi
rm -f "$OUT"/hushwall-*.apk "$OUT"/hushwall-*.apk.idsig
apksigner sign --ks "$KS" --ks-key-alias "$ALIAS" --ks-pass "$KS_PASS" --key-pass "$KEY_PASS" \
  --min-sdk-version "$MIN_SDK" --v1-signing-enabled true --v2-signing-enabled true --v3-signing-enabled true \
  --out "$APK" "$OUT/apk/aligned.apk"
rm -f "$APK.idsig"
apksigner verify --min-sdk-version "$MIN_SDK" "$APK"
log "Built $APK ($(du -h "$APK" | cut -f1)) in ${SECONDS}s"

# --- 6. Static checks (last: its summary line "check-apk: N passed, M failed" closes the output) ------------
log "Static checks"
python3 "$TOOLS/check-apk.py" --apk "$APK" --abis "$ABIS" --min-sdk "$MIN_SDK" --target-sdk "$TARGET_SDK" \
  --version-name "$VERSION" --version-code "$VERSION_CODE" --symbol-table "$ANDROID/bionic-symbols.tsv"
