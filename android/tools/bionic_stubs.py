#!/usr/bin/env python3
"""Stub bionic libraries for linking Android shared objects without the NDK.

The NDK links apps against *stub* `libc.so`, `libm.so`, `libdl.so` and `liblog.so`: shared objects with the
right SONAME whose symbols exist only so the static linker can record imports and `DT_NEEDED` entries. The
real libraries are on the phone. This module builds such stubs for exactly the symbols one link needs, after
checking each against `android/bionic-symbols.tsv` (symbol, library, the API level that introduced it, arches),
so an import that Android 9 (API 28) does not have fails the build instead of failing `dlopen` on the phone.

It also builds the two pieces of the NDK's runtime that a Rust `cdylib` needs and that `-nostdlib` drops:
- `crtbegin_so.o`: a hidden `__dso_handle` (used by `__cxa_atexit`/`__cxa_thread_atexit_impl` for thread-local
  destructors) and a destructor that runs `__cxa_finalize(&__dso_handle)` when the library is unloaded;
- `libunwind.a`: Rust's `unwind` crate links `-lunwind` on Android. With `panic = "abort"` nothing unwinds;
  only `std::backtrace` walks the stack. The stubs report an empty stack (`_URC_END_OF_STACK`), so a
  backtrace is empty and a panic still aborts after the panic hook has logged its message.

Used by `android-link` (the linker wrapper); `python3 bionic_stubs.py --help` for standalone use.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

#: Libraries an app may import from (NDK stable ABI, the ones our code uses), in lookup preference order.
BIONIC_LIBS = ("libc.so", "libm.so", "libdl.so", "liblog.so")

#: clang target triple architecture -> arch name used by bionic's map files.
ARCH_OF_TRIPLE = {"aarch64": "arm64", "x86_64": "x86_64", "armv7a": "arm", "i686": "x86", "riscv64": "riscv64"}


@dataclasses.dataclass(frozen=True)
class BionicSymbol:
    library: str
    name: str
    api: int
    arches: tuple[str, ...]  # ("all",) or explicit arch names
    kind: str  # "func" or "var"

    def on(self, arch: str) -> bool:
        return "all" in self.arches or arch in self.arches


def load_table(path: Path) -> dict[str, list[BionicSymbol]]:
    """Reads `bionic-symbols.tsv`: `library, symbol, introduced_api, arches, kind`, `#` comments."""
    table: dict[str, list[BionicSymbol]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) != 5:
                raise ValueError(f"{path}:{lineno}: expected 5 tab-separated columns, got {len(cols)}")
            lib, name, api, arches, kind = cols
            sym = BionicSymbol(lib, name, int(api), tuple(arches.split(",")), kind)
            table.setdefault(name, []).append(sym)
    return table


@dataclasses.dataclass
class Resolution:
    """Where each undefined symbol of a link comes from."""

    by_library: dict[str, list[BionicSymbol]]  # strong or weak imports available at the API level
    weak_unavailable: list[str]  # weak imports the API level lacks: stay undefined, resolve to null at run time
    errors: list[str]


def resolve(undefined: list[tuple[str, str]], table: dict[str, list[BionicSymbol]], api: int, arch: str) -> Resolution:
    """Maps `(symbol, binding)` pairs (binding `GLOBAL` or `WEAK`) to bionic libraries at `api` on `arch`."""
    res = Resolution({lib: [] for lib in BIONIC_LIBS}, [], [])
    for name, binding in sorted(set(undefined)):
        rows = [s for s in table.get(name, []) if s.on(arch) and s.library in BIONIC_LIBS]
        usable = sorted((s for s in rows if s.api <= api), key=lambda s: (s.api, BIONIC_LIBS.index(s.library)))
        if usable:
            res.by_library[usable[0].library].append(usable[0])
        elif binding == "WEAK":
            res.weak_unavailable.append(name)
        elif rows:
            lvl = min(s.api for s in rows)
            res.errors.append(f"{name}: needs API {lvl} ({rows[0].library}) but minSdk is {api} on {arch}")
        else:
            res.errors.append(f"{name}: not exported by any NDK bionic library on {arch} (libc, libm, libdl, liblog)")
    return res


def undefined_dynamic_symbols(readelf: str, so: Path) -> list[tuple[str, str]]:
    """`(name, binding)` of every undefined dynamic symbol of `so`, read with `llvm-readelf --dyn-syms`."""
    out = subprocess.run([readelf, "--dyn-syms", "-W", str(so)], check=True, capture_output=True, text=True).stdout
    syms = []
    for line in out.splitlines():
        # Num: Value Size Type Bind Vis Ndx Name
        parts = line.split()
        if len(parts) >= 8 and parts[0].endswith(":") and parts[6] == "UND" and parts[7]:
            syms.append((parts[7].split("@")[0], parts[4]))
    return syms


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(f"bionic_stubs: command failed: {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
        raise SystemExit(1)


def _stub_source(symbols: list[BionicSymbol]) -> str:
    lines = ["/* Generated by android/tools/bionic_stubs.py: link-time stub, never loaded. */"]
    for s in symbols:
        if s.kind == "var":
            lines.append(f"char {s.name}[16];")
        else:
            lines.append(f"void {s.name}(void) {{}}")
    return "\n".join(lines) + "\n"


def build_stub_libraries(out: Path, symbols: dict[str, list[BionicSymbol]], clang: str, target: str) -> None:
    """Writes `out/lib*.so` stubs (SONAME set, exactly `symbols[lib]` defined) for every bionic library."""
    out.mkdir(parents=True, exist_ok=True)
    for lib in BIONIC_LIBS:
        src = out / f"{lib[:-3]}.stub.c"
        src.write_text(_stub_source(symbols.get(lib, [])))
        _run([clang, f"--target={target}", "-fuse-ld=lld", "-nostdlib", "-shared", "-fPIC", "-ffreestanding",
              "-fno-builtin", "-w", f"-Wl,-soname,{lib}", "-o", str(out / lib), str(src)])


CRT_SOURCE = """\
/* Generated by android/tools/bionic_stubs.py: the part of the NDK's crtbegin_so a Rust cdylib needs. */
extern void __cxa_finalize(void *);
__attribute__((visibility("hidden"))) void *__dso_handle = &__dso_handle;
__attribute__((destructor)) static void hushwall_on_dlclose(void) { __cxa_finalize(&__dso_handle); }
"""

UNWIND_SOURCE = """\
/* Generated by android/tools/bionic_stubs.py. panic = "abort": nothing unwinds; backtraces are empty. */
#define HIDDEN __attribute__((visibility("hidden")))
typedef unsigned long uptr;
enum { URC_END_OF_STACK = 5 };
extern void abort(void);
HIDDEN int _Unwind_Backtrace(void *trace, void *arg) { (void)trace; (void)arg; return URC_END_OF_STACK; }
HIDDEN int _Unwind_RaiseException(void *e) { (void)e; return URC_END_OF_STACK; }
HIDDEN void _Unwind_Resume(void *e) { (void)e; abort(); }
HIDDEN void _Unwind_DeleteException(void *e) { (void)e; }
HIDDEN uptr _Unwind_GetIP(void *c) { (void)c; return 0; }
HIDDEN uptr _Unwind_GetIPInfo(void *c, int *before) { (void)c; if (before) *before = 0; return 0; }
HIDDEN uptr _Unwind_GetCFA(void *c) { (void)c; return 0; }
HIDDEN uptr _Unwind_GetGR(void *c, int i) { (void)c; (void)i; return 0; }
HIDDEN void _Unwind_SetGR(void *c, int i, uptr v) { (void)c; (void)i; (void)v; }
HIDDEN void _Unwind_SetIP(void *c, uptr v) { (void)c; (void)v; }
HIDDEN uptr _Unwind_GetLanguageSpecificData(void *c) { (void)c; return 0; }
HIDDEN uptr _Unwind_GetRegionStart(void *c) { (void)c; return 0; }
HIDDEN uptr _Unwind_GetTextRelBase(void *c) { (void)c; return 0; }
HIDDEN uptr _Unwind_GetDataRelBase(void *c) { (void)c; return 0; }
HIDDEN void *_Unwind_FindEnclosingFunction(void *pc) { (void)pc; return 0; }
"""


def build_runtime(out: Path, clang: str, target: str, ar: str) -> None:
    """Writes `out/crtbegin_so.o` and `out/libunwind.a` (see the module docs)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("crtbegin_so", CRT_SOURCE), ("unwind_stub", UNWIND_SOURCE)):
        (out / f"{name}.c").write_text(text)
        _run([clang, f"--target={target}", "-c", "-O2", "-fPIC", "-ffunction-sections", "-ffreestanding", "-fno-builtin",
              "-o", str(out / f"{name}.o"), str(out / f"{name}.c")])
    archive = out / "libunwind.a"
    archive.unlink(missing_ok=True)
    _run([ar, "rcs", str(archive), str(out / "unwind_stub.o")])


def arch_of(target: str) -> str:
    return ARCH_OF_TRIPLE[target.split("-")[0]]


def api_of(target: str) -> int:
    """`aarch64-linux-android28` -> 28."""
    tail = target.rsplit("-", 1)[-1]
    digits = tail[len(tail.rstrip("0123456789")):]
    if not digits:
        raise ValueError(f"clang target {target!r} has no API level (e.g. aarch64-linux-android28)")
    return int(digits)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", type=Path, required=True, help="android/bionic-symbols.tsv")
    ap.add_argument("--target", required=True, help="clang target with API level, e.g. aarch64-linux-android28")
    ap.add_argument("--for-library", type=Path, required=True, help="a linked .so whose undefined symbols to stub")
    ap.add_argument("--out", type=Path, required=True, help="directory for lib*.so stubs")
    ap.add_argument("--clang", default="clang-22")
    ap.add_argument("--readelf", default="llvm-readelf-22")
    args = ap.parse_args()
    res = resolve(undefined_dynamic_symbols(args.readelf, args.for_library), load_table(args.table),
                  api_of(args.target), arch_of(args.target))
    for e in res.errors:
        print(f"error: {e}", file=sys.stderr)
    if res.errors:
        return 1
    build_stub_libraries(args.out, res.by_library, args.clang, args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
