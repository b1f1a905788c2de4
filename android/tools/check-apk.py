#!/usr/bin/env python3
"""Static checks of a built Hushwall APK: everything about it that can be verified without an Android device.

- signature (apksigner: v1, v2 and v3) and 16 KiB zip alignment of the native libraries;
- manifest (`aapt2 dump badging` and the manifest XML tree): package, sdk levels, native code, permissions
  (exactly the justified set), the launcher activity, and the VPN service (BIND_VPN_SERVICE, the
  `android.net.VpnService` intent filter, foreground type specialUse with its `vpn` subtype property);
- dex (`dexdump`): no `invoke-custom`/`invoke-polymorphic`, and every `native` (Kotlin `external`) method has
  its `Java_...` symbol in the library and every exported `Java_...` symbol has its method;
- each `lib/<abi>/*.so` (`llvm-readelf`): machine, 16 KiB-aligned PT_LOAD segments, no TEXTREL, SONAME,
  `DT_NEEDED` only bionic libraries, every imported symbol present at minSdk on that arch per
  `android/bionic-symbols.tsv`.

Prints one PASS/FAIL line per check and ends with `check-apk: N passed, M failed`; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bionic_stubs  # noqa: E402

PACKAGE = "app.hushwall"
VPN_SERVICE = "app.hushwall.vpn.HushwallVpnService"
LAUNCHER = "app.hushwall.ui.MainActivity"
#: Every permission the app may request; each is justified in android/README.md and the manifest.
PERMISSIONS = {
    "android.permission.INTERNET",
    "android.permission.FOREGROUND_SERVICE",
    "android.permission.FOREGROUND_SERVICE_SPECIAL_USE",
    "android.permission.POST_NOTIFICATIONS",
    "android.permission.ACCESS_NETWORK_STATE",
    "android.permission.RECEIVE_BOOT_COMPLETED",
    "android.permission.QUERY_ALL_PACKAGES",
    "com.android.permission.GET_INSTALLED_APPS",
}
FGS_TYPE_SPECIAL_USE = 0x40000000
BIONIC_NEEDED = {"libc.so", "libm.so", "libdl.so", "liblog.so"}
ELF_MACHINE = {"arm64-v8a": "AArch64", "x86_64": "Advanced Micro Devices X86-64"}
ABI_ARCH = {"arm64-v8a": "arm64", "x86_64": "x86_64"}
PAGE = 16384


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"PASS {what}")
        else:
            self.failed += 1
            print(f"FAIL {what}" + (f": {detail}" if detail else ""))
        return ok


def run(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout


# --- JNI names (JNI spec, "Resolving Native Method Names") -------------------------------------------------------

def jni_mangle(s: str) -> str:
    out = []
    for ch in s:
        if ch == "/":
            out.append("_")
        elif ch == "_":
            out.append("_1")
        elif ch == ";":
            out.append("_2")
        elif ch == "[":
            out.append("_3")
        elif ch.isascii() and ch.isalnum():
            out.append(ch)
        else:
            out.append(f"_0{ord(ch):04x}")
    return "".join(out)


def jni_names(class_descriptor: str, method: str, signature: str) -> tuple[str, str]:
    """Short and long JNI symbol names of a native method (`Lpkg/Cls;`, `name`, `(args)ret`)."""
    short = f"Java_{jni_mangle(class_descriptor[1:-1])}_{jni_mangle(method)}"
    args = signature[1:signature.index(")")]
    return short, f"{short}__{jni_mangle(args)}"


def dex_native_methods(dexdump_out: str) -> list[tuple[str, str, str]]:
    """`(class descriptor, name, signature)` of every native method in `dexdump -d` output."""
    methods, cls, name, sig = [], None, None, None
    for line in dexdump_out.splitlines():
        s = line.strip()
        if s.startswith("Class descriptor"):
            cls = s.split("'")[1]
        elif s.startswith("name          :"):
            name = s.split("'")[1]
        elif s.startswith("type          :"):
            sig = s.split("'")[1]
        elif s.startswith("access        :") and name and sig:
            if "NATIVE" in s.split("(", 1)[-1]:
                methods.append((cls, name, sig))
            name = sig = None
    return methods


# --- The checks ----------------------------------------------------------------------------------------------------

def check_signature(c: Checks, apk: Path, min_sdk: int) -> None:
    run("apksigner", "verify", "--min-sdk-version", str(min_sdk), str(apk))
    c.check(True, f"apksigner: verifies for API {min_sdk}+")
    # apksigner only reports the schemes a device of the given range would check (API 28 reads v3 alone),
    # so ask for API 18+ (the oldest that accepts SHA-256 JAR signatures) to have all three verified.
    out = run("apksigner", "verify", "--verbose", "--min-sdk-version", "18", str(apk))
    for scheme in ("v1 scheme (JAR signing)", "v2 scheme (APK Signature Scheme v2)",
                   "v3 scheme (APK Signature Scheme v3)"):
        c.check(f"Verified using {scheme}: true" in out, f"apksigner: signed with {scheme}")


def check_zip(c: Checks, apk: Path, abis: list[str]) -> None:
    with zipfile.ZipFile(apk) as z:
        names = z.namelist()
        c.check("classes.dex" in names, "zip: classes.dex present")
        for abi in abis:
            info = next((i for i in z.infolist() if i.filename == f"lib/{abi}/libhushwall.so"), None)
            if not c.check(info is not None, f"zip: lib/{abi}/libhushwall.so present"):
                continue
            c.check(info.compress_type == zipfile.ZIP_STORED, f"zip: lib/{abi}/libhushwall.so stored uncompressed")
            # Data offset = local header offset + 30 + name length + extra length (from the local header).
            with open(apk, "rb") as f:
                f.seek(info.header_offset + 26)
                n, e = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
            data = info.header_offset + 30 + n + e
            c.check(data % PAGE == 0, f"zip: lib/{abi}/libhushwall.so data 16 KiB-aligned", f"offset {data}")
        extra_libs = [n for n in names if n.startswith("lib/") and n.split("/")[1] not in abis]
        c.check(not extra_libs, "zip: no native libraries for other ABIs", ", ".join(extra_libs))


def check_badging(c: Checks, apk: Path, a: argparse.Namespace, abis: list[str]) -> None:
    out = run("aapt2", "dump", "badging", str(apk))
    pkg = re.search(r"^package: name='([^']*)' versionCode='([^']*)' versionName='([^']*)'", out, re.M)
    c.check(bool(pkg) and pkg.group(1) == PACKAGE, f"badging: package {PACKAGE}", pkg.group(0) if pkg else "none")
    c.check(bool(pkg) and pkg.group(2) == a.version_code and pkg.group(3) == a.version_name,
            f"badging: version {a.version_name} ({a.version_code})", pkg.group(0) if pkg else "none")
    c.check(f"sdkVersion:'{a.min_sdk}'" in out, f"badging: sdkVersion {a.min_sdk}")
    c.check(f"targetSdkVersion:'{a.target_sdk}'" in out, f"badging: targetSdkVersion {a.target_sdk}")
    native = re.search(r"^native-code: (.*)$", out, re.M)
    got = set(re.findall(r"'([^']*)'", native.group(1))) if native else set()
    c.check(got == set(abis), f"badging: native-code {' '.join(abis)}", f"got {sorted(got)}")
    c.check(f"launchable-activity: name='{LAUNCHER}'" in out, f"badging: launcher {LAUNCHER}")
    perms = set(re.findall(r"^uses-permission: name='([^']*)'", out, re.M))
    c.check(perms == PERMISSIONS, "badging: permissions are exactly the justified set",
            f"extra {sorted(perms - PERMISSIONS)}, missing {sorted(PERMISSIONS - perms)}")


def manifest_elements(xmltree: str) -> list[dict]:
    """Flattens `aapt2 dump xmltree` output into elements with depth, tag and attributes."""
    elements = []
    for line in xmltree.splitlines():
        m = re.match(r"^(\s*)E: (\S+)", line)
        if m:
            elements.append({"depth": len(m.group(1)), "tag": m.group(2), "attrs": {}})
            continue
        m = re.match(r"^\s*A: (?:http://schemas.android.com/apk/res/android:)?(\w+)\(0x[0-9a-f]+\)=(.*)$", line)
        if m and elements:
            value = m.group(2)
            q = re.match(r'^"((?:[^"\\]|\\.)*)"', value)
            elements[-1]["attrs"][m.group(1)] = q.group(1) if q else value.split()[0]
    return elements


def subtree(elements: list[dict], i: int) -> list[dict]:
    out = []
    for e in elements[i + 1:]:
        if e["depth"] <= elements[i]["depth"]:
            break
        out.append(e)
    return out


def check_manifest(c: Checks, apk: Path) -> None:
    tree = manifest_elements(run("aapt2", "dump", "xmltree", "--file", "AndroidManifest.xml", str(apk)))
    def qualified(name: str) -> str:
        return PACKAGE + name if name.startswith(".") else name

    idx = [i for i, e in enumerate(tree)
           if e["tag"] == "service" and qualified(e["attrs"].get("name", "")) == VPN_SERVICE]
    if not c.check(len(idx) == 1, f"manifest: service {VPN_SERVICE}"):
        return
    svc, inner = tree[idx[0]], subtree(tree, idx[0])
    c.check(svc["attrs"].get("permission") == "android.permission.BIND_VPN_SERVICE",
            "manifest: VPN service requires android.permission.BIND_VPN_SERVICE", str(svc["attrs"]))
    actions = {e["attrs"].get("name") for e in inner if e["tag"] == "action"}
    c.check("android.net.VpnService" in actions, "manifest: VPN service has the android.net.VpnService intent filter")
    fgs = svc["attrs"].get("foregroundServiceType", "")
    try:
        fgs_value = int(fgs, 0)
    except ValueError:
        fgs_value = -1
    c.check(fgs_value == FGS_TYPE_SPECIAL_USE, "manifest: VPN service foregroundServiceType=specialUse", fgs)
    props = {e["attrs"].get("name"): e["attrs"].get("value") for e in inner if e["tag"] == "property"}
    c.check(props.get("android.app.PROPERTY_SPECIAL_USE_FGS_SUBTYPE") == "vpn",
            "manifest: PROPERTY_SPECIAL_USE_FGS_SUBTYPE = vpn", str(props))
    app = next((e for e in tree if e["tag"] == "application"), {"attrs": {}})
    c.check(app["attrs"].get("extractNativeLibs", "").lower() in ("false", "0x0", "0"),
            "manifest: extractNativeLibs=false (library mapped from the APK)", str(app["attrs"].get("extractNativeLibs")))


def check_dex(c: Checks, dex: Path, exports: dict[str, set[str]]) -> None:
    out = run("dexdump", "-d", str(dex))
    bad = sorted({m for m in re.findall(r"\b(invoke-custom(?:/range)?|invoke-polymorphic(?:/range)?)\b", out)})
    c.check(not bad, "dex: no invoke-custom / invoke-polymorphic", ", ".join(bad))
    natives = dex_native_methods(out)
    c.check(bool(natives), "dex: has native (Kotlin external) methods", "none found")
    for abi, syms in exports.items():
        java_syms = {s for s in syms if s.startswith("Java_")}
        matched, missing = set(), []
        for cls, name, sig in natives:
            short, long_ = jni_names(cls, name, sig)
            hit = short if short in java_syms else long_ if long_ in java_syms else None
            if hit:
                matched.add(hit)
            else:
                missing.append(f"{cls[1:-1].replace('/', '.')}.{name}{sig} (wants {short})")
        c.check(not missing, f"jni[{abi}]: all {len(natives)} native methods have their symbol", "; ".join(missing))
        orphans = sorted(java_syms - matched)
        c.check(not orphans, f"jni[{abi}]: every exported Java_ symbol has its native method", ", ".join(orphans))


def elf_exports(so: Path) -> set[str]:
    out = run("llvm-nm-22", "-D", "--defined-only", "--format=just-symbols", str(so))
    return {line.strip() for line in out.splitlines() if line.strip()}


def check_elf(c: Checks, abi: str, so: Path, table: dict, min_sdk: int) -> None:
    tag = f"elf[{abi}]"
    header = run("llvm-readelf-22", "-h", str(so))
    machine = re.search(r"Machine:\s+(.*)", header)
    c.check(bool(machine) and machine.group(1).strip() == ELF_MACHINE[abi], f"{tag}: machine {ELF_MACHINE[abi]}",
            machine.group(1) if machine else "?")
    c.check(re.search(r"Class:\s+ELF64", header) is not None, f"{tag}: ELF64")
    phdrs = run("llvm-readelf-22", "-l", "-W", str(so))
    loads = [l.split() for l in phdrs.splitlines() if l.strip().startswith("LOAD")]
    misaligned = [l for l in loads if int(l[-1], 16) < PAGE or int(l[-1], 16) % PAGE
                  or int(l[1], 16) % PAGE != int(l[2], 16) % PAGE]
    c.check(bool(loads) and not misaligned, f"{tag}: all {len(loads)} PT_LOAD segments 16 KiB-aligned",
            str(misaligned))
    dyn = run("llvm-readelf-22", "-d", "-W", str(so))
    c.check("TEXTREL" not in dyn, f"{tag}: no TEXTREL")
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn))
    c.check(needed <= BIONIC_NEEDED, f"{tag}: DT_NEEDED only bionic ({', '.join(sorted(needed))})",
            f"unexpected {sorted(needed - BIONIC_NEEDED)}")
    soname = re.search(r"\(SONAME\)\s+Library soname: \[([^\]]+)\]", dyn)
    c.check(bool(soname) and soname.group(1) == "libhushwall.so", f"{tag}: SONAME libhushwall.so")
    undefined = bionic_stubs.undefined_dynamic_symbols("llvm-readelf-22", so)
    res = bionic_stubs.resolve(undefined, table, min_sdk, ABI_ARCH[abi])
    problems = res.errors + [f"{n}: weak, not at API {min_sdk}" for n in res.weak_unavailable]
    c.check(not problems, f"{tag}: all {len(set(undefined))} imports exist at API {min_sdk} on {ABI_ARCH[abi]}",
            "; ".join(problems))
    # Imports must come from the library the table names (a libc symbol bound via libm would still load, but
    # only because of lookup order: keep the stubs honest).
    c.check(all(s.library in needed for syms in res.by_library.values() for s in syms),
            f"{tag}: each import's library is in DT_NEEDED")


def main() -> int:
    ap = argparse.ArgumentParser(description="Static checks of a Hushwall APK.")
    ap.add_argument("--apk", type=Path, required=True)
    ap.add_argument("--abis", default="arm64-v8a")
    ap.add_argument("--min-sdk", type=int, default=28)
    ap.add_argument("--target-sdk", type=int, default=34)
    ap.add_argument("--version-name", required=True)
    ap.add_argument("--version-code", required=True)
    ap.add_argument("--symbol-table", type=Path, required=True)
    a = ap.parse_args()
    abis = a.abis.split()
    c = Checks()
    table = bionic_stubs.load_table(a.symbol_table)
    try:
        check_signature(c, a.apk, a.min_sdk)
        check_zip(c, a.apk, abis)
        check_badging(c, a.apk, a, abis)
        check_manifest(c, a.apk)
        with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(a.apk) as z:
            exports = {}
            for abi in abis:
                name = f"lib/{abi}/libhushwall.so"
                if name in z.namelist():
                    so = Path(z.extract(name, tmp))
                    check_elf(c, abi, so, table, a.min_sdk)
                    exports[abi] = elf_exports(so)
            check_dex(c, Path(z.extract("classes.dex", tmp)), exports)
    except (RuntimeError, KeyError, OSError) as e:
        c.check(False, "check-apk ran to the end", str(e))
    print(f"check-apk: {c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
