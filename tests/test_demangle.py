"""Demangled names: C++ (Itanium ABI) and Rust (legacy and v0), alone and in symbolized frames.

Oracles: binutils ``c++filt -i`` (libiberty; ``-i`` leaves out what
``__cxa_demangle`` also leaves out: the long spelling of standard
substitutions, Rust hashes and crate disambiguators), ``llvm-cxxfilt`` (LLVM's
demanglers, Rust v0 included) and, for which mangled name covers an address,
``addr2line -f -i`` and ``nm``. Rust test data are published test vectors of
the rustc-demangle crate; the live programs are tests/c/cxxtest.cc (g++ -O2
-g) and tests/rust/demangletest.rs (rustc, legacy and v0 mangling).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from memwatcher.symbolize import Symbolizer, _demangle, _frames_of, available_backends
from memwatcher.symbolize._demangle import demangle
from memwatcher.symbolize._types import Lookup, SourceFrame

TESTS = Path(__file__).resolve().parent
CXXTEST_CC = TESTS / "c" / "cxxtest.cc"
RUSTTEST_RS = TESTS / "rust" / "demangletest.rs"
LLVM_CXXFILT = shutil.which("llvm-cxxfilt") or shutil.which("llvm-cxxfilt-14")

backends = pytest.mark.parametrize("backend", available_backends())
needs_cxxfilt = pytest.mark.skipif(shutil.which("c++filt") is None, reason="needs c++filt (binutils)")
needs_llvm_cxxfilt = pytest.mark.skipif(LLVM_CXXFILT is None, reason="needs llvm-cxxfilt (llvm)")

# rustc-demangle's test vectors (src/v0.rs and src/lib.rs tests).
RUST_V0 = [
    "_RNvC6_123foo3bar",
    "_RNqCs4fqI2P2rA04_11utf8_identsu30____7hkackfecea1cbdathfdh9hlq6y",
    "_RNCNCNgCs6DXkGYLi8lr_2cc5spawn00B5_",
    "_RNCINkXs25_NgCsbmNqQUJIY6D_4core5sliceINyB9_4IterhENuNgNoBb_4iter8iterator8Iterator9rpositionNCNgNpB9_6memchr7memrchrs_0E0Bb_",
    "_RINbNbCskIICzLVDPPb_5alloc5alloc8box_freeDINbNiB4_5boxed5FnBoxuEp6OutputuEL_ECs1iopQbuBiw2_3std",
]
RUST_LEGACY_PLAIN = [
    "_ZN3foo17h05af221e174051e9E",
    "_ZN5alloc9allocator6Layout9for_value17h02a996811f781011E",
]
RUST_LEGACY_ESCAPED = [
    "_ZN71_$LT$Test$u20$$u2b$$u20$$u27$static$u20$as$u20$foo..Bar$LT$Test$GT$$GT$3bar17h930b740aa94f1d3aE",
    "_ZN88_$LT$core..result..Result$LT$$u21$$C$$u20$E$GT$$u20$as$u20$std..process..Termination$GT$6report"
    "17hfc41d0da4a40b3e8E",
    "_ZN9backtrace3foo17hbb467fcdaea5d79bE.llvm.A5310EB9",
]
# C++ kinds beyond the live program: standard substitution, GCC clone, destructor, operator new,
# a lambda's call operator, a guard variable, a vtable, a std::vector member.
CXX_NAMES = [
    "_Z1fSs",
    "_ZN2mw4deep11make_bufferEm.cold",
    "_ZN2mw6HolderD2Ev",
    "_Znwm",
    "_ZZ4mainENKUlvE_clEv",
    "_ZGVZ4mainE1x",
    "_ZTVN2mw6HolderE",
    "_ZNSt6vectorIiSaIiEE9push_backERKi",
]
NOT_MANGLED = [
    "main",
    "malloc",
    "__GI___libc_malloc",
    "_GLOBAL__sub_I_main",
    "i",  # __cxa_demangle would read a bare "i" as the type "int"
    "",
    "_Z",
    "_Zfoo",
    "_ZN3foo",
    "_R",
    "_RNvB_1a",  # v0 back-reference loop: over the recursion limit
    "_Z\udc80",
]


def filt(argv: list[str], names: list[str]) -> list[str]:
    """One output line per name, each name passed as an argument (stdin would split at '$' and '.')."""
    if not names:
        return []
    out = subprocess.run([*argv, *names], check=True, capture_output=True, text=True).stdout.splitlines()
    assert len(out) == len(names)
    return out


def without_hash(names: list[str]) -> list[str]:
    return [re.sub(r"::h[0-9a-f]{16}\Z", "", name) for name in names]


@pytest.fixture
def fresh_cache() -> Iterator[None]:
    """Results are cached per name: start and end each fallback test with an empty cache."""
    demangle.cache_clear()
    yield
    demangle.cache_clear()


# ---------------------------------------------------------------- names alone


def test_not_mangled_names_come_back_unchanged() -> None:
    assert [demangle(n) for n in NOT_MANGLED] == NOT_MANGLED


@needs_cxxfilt
def test_cxx_names_match_cxxfilt() -> None:
    assert [demangle(n) for n in CXX_NAMES] == filt(["c++filt", "-i"], CXX_NAMES)


@needs_cxxfilt
@needs_llvm_cxxfilt
def test_rust_v0_matches_llvm_cxxfilt() -> None:
    got = [demangle(n) for n in RUST_V0]
    assert got == filt([LLVM_CXXFILT], RUST_V0)
    assert got == filt(["c++filt", "-i"], RUST_V0)
    assert all(g != n for g, n in zip(got, RUST_V0))


@needs_cxxfilt
@needs_llvm_cxxfilt
def test_rust_legacy_matches_cxxfilt_without_hash() -> None:
    legacy = RUST_LEGACY_PLAIN + RUST_LEGACY_ESCAPED
    assert [demangle(n) for n in legacy] == filt(["c++filt", "-i"], legacy)
    # llvm-cxxfilt reads legacy names as C++: right for plain ones once the hash element goes.
    assert [demangle(n) for n in RUST_LEGACY_PLAIN] == without_hash(filt([LLVM_CXXFILT], RUST_LEGACY_PLAIN))


def test_results_are_cached() -> None:
    demangle("_ZN2mw6HolderD2Ev")
    hits = demangle.cache_info().hits
    demangle("_ZN2mw6HolderD2Ev")
    assert demangle.cache_info().hits == hits + 1


@needs_llvm_cxxfilt
def test_without_rust_package(monkeypatch: pytest.MonkeyPatch, fresh_cache: None) -> None:
    monkeypatch.setattr(_demangle, "_rust", None)
    # Legacy names through __cxa_demangle, hash dropped; v0 names stay as they are.
    assert [demangle(n) for n in RUST_LEGACY_PLAIN] == without_hash(filt([LLVM_CXXFILT], RUST_LEGACY_PLAIN))
    assert [demangle(n) for n in RUST_V0] == RUST_V0
    assert demangle("_ZN2mw6HolderD2Ev") == filt([LLVM_CXXFILT], ["_ZN2mw6HolderD2Ev"])[0]


def test_without_libstdcxx(monkeypatch: pytest.MonkeyPatch, fresh_cache: None) -> None:
    def no_library(name: str | None) -> None:
        raise OSError(f"cannot load library {name!r}")

    monkeypatch.setattr(_demangle, "_cxx", _demangle._UNSET)
    monkeypatch.setattr(_demangle._get_ffi(), "dlopen", no_library)
    assert [demangle(n) for n in CXX_NAMES] == CXX_NAMES
    assert demangle(RUST_V0[0]) != RUST_V0[0]  # Rust needs no libstdc++
    assert demangle(RUST_LEGACY_ESCAPED[0]) != RUST_LEGACY_ESCAPED[0]


@needs_cxxfilt
def test_frames_carry_demangled_and_linkage_names() -> None:
    inner, outer, symbol = "_ZN2mw6scaledIiEET_S1_", "_ZN2mw10run_scaledEi", "_ZN2mw10run_scaledEi"
    want = dict(zip([inner, outer], filt(["c++filt", "-i"], [inner, outer])))
    dwarf = Lookup(symbol, 0x1000, (SourceFrame(inner, "a.cc", 9, True), SourceFrame(outer, "a.cc", 20, False)))
    inl, out = _frames_of(0x5000, "/bin/a", None, 0x1010, dwarf)
    assert (inl.function, inl.linkage_name, inl.symbol) == (want[inner], inner, None)
    assert (out.function, out.linkage_name, out.symbol, out.offset) == (want[outer], outer, want[outer], 0x10)
    # No DWARF: the ELF symbol names the frame; a C name keeps linkage_name None.
    (elf_only,) = _frames_of(0x5000, "/bin/a", None, 0x1010, Lookup(symbol, 0x1000, ()))
    assert (elf_only.function, elf_only.symbol, elf_only.linkage_name) == (want[outer], want[outer], outer)
    c = Lookup("malloc", 0x1000, (SourceFrame("__GI___libc_malloc", "malloc.c", 3, False),))
    (c_frame,) = _frames_of(0x5000, "/lib/libc.so.6", None, 0x1010, c)
    assert (c_frame.function, c_frame.symbol, c_frame.linkage_name) == ("__GI___libc_malloc", "malloc", None)
    # A DWARF scope without a name falls back to the symbol, and so does its linkage name.
    unnamed_scope = Lookup(symbol, 0x1000, (SourceFrame(None, "a.cc", 1, False),))
    (unnamed,) = _frames_of(0x5000, "/bin/a", None, 0x1010, unnamed_scope)
    assert (unnamed.function, unnamed.linkage_name) == (want[outer], outer)


# ---------------------------------------------------------------- live programs


@contextmanager
def running(argv: list[str]) -> Iterator[tuple[int, dict[str, int]]]:
    """Start a test program, read its "name 0xADDR" lines up to "ready", stop it on exit."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        addresses = {}
        for line in proc.stdout:
            if line.strip() == "ready":
                break
            name, value = line.split()
            addresses[name] = int(value, 16)
        else:
            raise AssertionError(f"{argv} exited early with {proc.wait()}")
        yield proc.pid, addresses
    finally:
        proc.kill()
        proc.wait()


def nm_symbols(binary: Path) -> list[tuple[int, int, str]]:
    """(start, size, mangled name) of the binary's defined symbols, from ``nm -S``."""
    out = subprocess.run(["nm", "-S", "--defined-only", str(binary)], check=True, capture_output=True, text=True)
    symbols = []
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4:
            symbols.append((int(parts[0], 16), int(parts[1], 16), parts[3]))
    return symbols


def addr2line_names(binary: Path, elf_address: int) -> list[str]:
    """Linkage names of the functions at an address, innermost first (``addr2line -f -i``)."""
    out = subprocess.run(
        ["addr2line", "-f", "-i", "-e", str(binary), hex(elf_address)], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    return out[0::2]


@pytest.fixture(scope="module")
def cxx_binary() -> Iterator[Path]:
    if shutil.which("g++") is None or shutil.which("c++filt") is None or shutil.which("addr2line") is None:
        pytest.skip("needs g++ and binutils (c++filt, addr2line, nm)")
    with tempfile.TemporaryDirectory(prefix="mw-cxxtest-") as tmp:
        binary = Path(tmp) / "cxxtest"
        subprocess.run(["g++", "-Wall", "-Wextra", "-Werror", "-g", "-O2", "-o", binary, CXXTEST_CC], check=True)
        yield binary


@backends
def test_cxx_program_frames_match_cxxfilt(cxx_binary: Path, backend: str) -> None:
    with running([str(cxx_binary)]) as (pid, addrs), Symbolizer(backend=backend) as sym:
        stacks = sym.symbolize(pid, list(addrs.values()), return_addresses=True)
    assert set(addrs) == {"namespaced", "template_int", "template_double", "constructor", "operator", "inlined"}
    symbols = nm_symbols(cxx_binary)
    for name, frames in zip(addrs, stacks):
        mangled = addr2line_names(cxx_binary, frames[0].elf_address - 1)
        demangled = filt(["c++filt"], mangled)
        assert demangled == filt(["c++filt", "-i"], mangled), name  # no spelling choices in this program
        assert [f.linkage_name for f in frames] == mangled, name
        assert [f.function for f in frames] == demangled, name
        assert all(f.function != f.linkage_name for f in frames), name
        # The ELF symbol (C1/C2 constructor aliases demangle alike) is demangled too.
        outer = frames[-1]
        covering = [n for s, size, n in symbols if s <= outer.elf_address - 1 < s + size]
        assert outer.symbol in filt(["c++filt"], covering), name
    inlined = stacks[list(addrs).index("inlined")]
    assert [f.inlined for f in inlined] == [True, False]


@pytest.fixture(scope="module", params=["legacy", "v0"])
def rust_binary(request: pytest.FixtureRequest) -> Iterator[Path]:
    if shutil.which("rustc") is None or shutil.which("c++filt") is None:
        pytest.skip("needs rustc and c++filt")
    mangling = [] if request.param == "legacy" else ["-C", "symbol-mangling-version=v0"]
    with tempfile.TemporaryDirectory(prefix="mw-rusttest-") as tmp:
        binary = Path(tmp) / f"demangletest-{request.param}"
        subprocess.run(["rustc", "-O", "-g", *mangling, "-o", binary, RUSTTEST_RS], check=True)
        yield binary


@needs_llvm_cxxfilt
@backends
def test_rust_program_frames_match_cxxfilt(rust_binary: Path, backend: str) -> None:
    with running([str(rust_binary)]) as (pid, addrs), Symbolizer(backend=backend) as sym:
        stacks = sym.symbolize(pid, list(addrs.values()))
    assert set(addrs) == {"namespaced", "generic", "constructor", "trait_method"}
    starts = {start: n for start, _, n in nm_symbols(rust_binary)}
    v0 = rust_binary.name.endswith("v0")
    for name, frames in zip(addrs, stacks):
        outer = frames[-1]
        assert outer.offset == 0 and outer.linkage_name == starts[outer.elf_address], name
        assert outer.linkage_name.startswith("_R") == v0, name
        # Every named frame, the standard library's inlined ones included (some v0, some legacy).
        named = [f for f in frames if f.linkage_name is not None]
        mangled = [f.linkage_name for f in named]
        assert [f.function for f in named] == filt(["c++filt", "-i"], mangled), name
        rust_v0 = [f for f in named if f.linkage_name.startswith("_R")]
        assert [f.function for f in rust_v0] == filt([LLVM_CXXFILT], [f.linkage_name for f in rust_v0]), name
        assert outer.symbol == outer.function, name
