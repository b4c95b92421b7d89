"""Symbolization: C programs with known functions and lines, libc, stripped and deleted
binaries, another mount namespace, the kernel, and agreement with eu-addr2line.

No BPF: the programs print addresses of their own code; the oracles are the
MARK comments in their sources, ``nm`` and ``readelf`` on the binaries,
/proc/kallsyms and eu-addr2line.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from memwatcher.elf import ElfLayout, Segment
from memwatcher.errors import NoSuchProcessError
from memwatcher.procmaps import ProcessMaps, parse_maps
from memwatcher.symbolize import (
    Frame,
    KernelSymbols,
    KernelSymbolsHidden,
    Symbolizer,
    available_backends,
    format_frame,
    format_stack,
)
from memwatcher.symbolize._symtab import STB_GLOBAL, STB_LOCAL, STB_WEAK, SymbolTable

C_DIR = Path(__file__).resolve().parent / "c"
SYMTEST_C = C_DIR / "symtest.c"
INLTEST_C = C_DIR / "inltest.c"
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"

backends = pytest.mark.parametrize("backend", available_backends())
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (map_files, unshare)")


def mark_line(source: Path, mark: str) -> int:
    """Line number of the ``MARK:<mark>`` comment in a test program."""
    for number, text in enumerate(source.read_text().splitlines(), 1):
        if f"MARK:{mark} " in text:
            return number
    raise AssertionError(f"no MARK:{mark} in {source}")


def nm_address(binary: Path, name: str) -> int:
    out = subprocess.run(["nm", str(binary)], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            return int(parts[0], 16)
    raise AssertionError(f"{name} not in nm {binary}")


def readelf_build_id(binary: str) -> str:
    out = subprocess.run(["readelf", "-n", binary], check=True, capture_output=True, text=True).stdout
    return re.search(r"Build ID: ([0-9a-f]+)", out).group(1)


def libc_has_debuginfo() -> bool:
    build_id = readelf_build_id(LIBC)
    return Path(f"/usr/lib/debug/.build-id/{build_id[:2]}/{build_id[2:]}.debug").exists()


@pytest.fixture(scope="module")
def bins() -> Iterator[dict[str, Path]]:
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    with tempfile.TemporaryDirectory(prefix="mw-symtest-") as tmp:
        d = Path(tmp)
        out = {
            "debug": d / "symtest",
            "inline": d / "inltest",
            "nodebug": d / "symtest-nodebug",
            "stripped": d / "symtest-stripped",
            "stripped_dynsym": d / "symtest-stripped-dynsym",
        }
        cc = ["gcc", "-Wall", "-Wextra", "-Werror", "-pthread"]
        subprocess.run([*cc, "-g", "-O0", "-fPIE", "-pie", "-o", out["debug"], SYMTEST_C], check=True)
        subprocess.run([*cc, "-g", "-O2", "-o", out["inline"], INLTEST_C], check=True)
        # One build without debug info; stripped copies keep its exact addresses for the oracle.
        subprocess.run([*cc, "-O0", "-fPIE", "-pie", "-rdynamic", "-o", out["nodebug"], SYMTEST_C], check=True)
        subprocess.run(["strip", "-s", "-o", out["stripped_dynsym"], out["nodebug"]], check=True)
        subprocess.run([*cc, "-O0", "-fPIE", "-pie", "-o", d / "symtest-plain", SYMTEST_C], check=True)
        subprocess.run(["strip", "-s", "-o", out["stripped"], d / "symtest-plain"], check=True)
        out["plain"] = d / "symtest-plain"
        yield out


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


# ---------------------------------------------------------------- unit tests (no processes)


MAPS = """\
55d2139ed000-55d2139ee000 r--p 00000000 fd:01 1234                       /tmp/symtest (deleted)
55d2139ee000-55d2139ef000 r-xp 00001000 fd:01 1234                       /tmp/symtest (deleted)
55d2139f0000-55d2139f1000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000028000 r--p 00000000 fd:01 99                         /usr/lib/my lib.so
7f0000028000-7f0000100000 r-xp 00028000 fd:01 99                         /usr/lib/my lib.so
7f0000200000-7f0000201000 r-xp 00000000 00:00 0                          [vdso]
"""


def test_parse_maps_groups_modules() -> None:
    maps = ProcessMaps(1, parse_maps(MAPS))
    mapping, module = maps.find(0x55D2139EE123)
    assert module is not None and module.path == "/tmp/symtest" and mapping.deleted
    assert module.first.start == 0x55D2139ED000 and module.end == 0x55D2139EF000
    _, lib = maps.find(0x7F0000030000)
    assert lib.path == "/usr/lib/my lib.so" and lib.first.file_offset == 0
    heap, none = maps.find(0x55D2139F0010)
    assert heap.name == "[heap]" and none is None
    assert maps.find(0x1000) == (None, None)
    assert maps.find(0x55D2139EF000) == (None, None)  # between mappings


def test_load_bias_from_any_segment() -> None:
    layout = ElfLayout(3, (Segment(0, 0, 0x600), Segment(0x1000, 0x1000, 0x200), Segment(0x2DB0, 0x3DB0, 0x260)), None)
    assert layout.load_bias(0x5550000, 0, 0x1000) == 0x5550000
    assert layout.load_bias(0x5552000, 0x2000, 0x1000) == 0x5552000 + 0xDB0 - 0x3DB0
    assert layout.load_bias(0x5550000, 0x9000, 0x1000) is None


def test_symbol_table_size_checks_and_aliases() -> None:
    table = SymbolTable(
        [
            (0x1000, 0x20, STB_GLOBAL, "__libc_malloc"),
            (0x1000, 0x20, STB_GLOBAL, "malloc"),
            (0x1000, 0x20, STB_LOCAL, "__GI___libc_malloc"),
            (0x1040, 0, STB_GLOBAL, "asm_label"),
            (0x1100, 0x10, STB_WEAK, "weak_fn"),
            (0x1100, 0x10, STB_LOCAL, "a"),
            (0x1200, 0x10, STB_GLOBAL, "sem_close@@GLIBC_2.34"),
        ]
    )
    assert table.lookup(0x1000) == ("malloc", 0x1000)
    assert table.lookup(0x101F) == ("malloc", 0x1000)
    assert table.lookup(0x1020) is None  # past malloc's size: never named after it
    assert table.lookup(0x1040) == ("asm_label", 0x1040)
    assert table.lookup(0x1041) is None  # size-less symbols name only their own address
    assert table.lookup(0x1105) == ("weak_fn", 0x1100)
    assert table.lookup(0x1200) == ("sem_close", 0x1200)
    assert table.lookup(0xFFF) is None


def test_kallsyms_parse_lookup_and_hidden() -> None:
    text = (
        "ffffffff81000000 T _stext\n"
        "ffffffff81000100 T schedule\n"
        "ffffffff81000100 t __schedule_alias\n"
        "ffffffff81000200 t helper\n"
        "ffffffff81000300 D some_data\n"
        "ffffffff81001000 T _etext\n"
        "ffffffffc0001000 t mod_fn\t[mymod]\n"
        "ffffffffc0001080 t mod_fn2\t[mymod]\n"
    )
    ks = KernelSymbols(text)
    assert ks.lookup(0xFFFFFFFF81000100).name == "schedule"
    sym = ks.lookup(0xFFFFFFFF81000105)
    assert (sym.name, sym.module, sym.offset) == ("schedule", "vmlinux", 5)
    assert ks.lookup(0xFFFFFFFF81000250).name == "helper"
    assert ks.lookup(0xFFFFFFFF81002000) is None  # past _etext
    assert ks.lookup(0xFFFFFFFFC0001010).module == "mymod"
    assert ks.lookup(0xFFFFFFFFC0001080 + (1 << 20)) is None  # far past a module's last symbol
    assert ks.lookup(0x1000) is None
    with pytest.raises(KernelSymbolsHidden, match="kptr_restrict"):
        KernelSymbols(re.sub(r"^[0-9a-f]{16}", "0" * 16, text, flags=re.M))


def test_format_frames() -> None:
    inl = Frame(0x55D2139EE1C9, "/tmp/t", None, 0x11C9, "helper", file="/src/t.c", line=12, inlined=True)
    outer = Frame(0x55D2139EE1C9, "/tmp/t", None, 0x11C9, "outer", "outer", 0x18, "/src/t.c", 20)
    nodebug = Frame(0x7F00000010, "/lib/libc.so.6", None, 0x98930, "malloc", "malloc", 0x1A)
    unknown = Frame(0x7F00000020, "/lib/x.so", None, 0x1234)
    assert format_stack([[inl, outer], [nodebug], [unknown], [Frame(0x10)]]) == [
        "#0  0x000055d2139ee1c9 in helper (inlined) at /src/t.c:12",
        "#1  0x000055d2139ee1c9 in outer at /src/t.c:20",
        "#2  0x0000007f00000010 in malloc+0x1a (/lib/libc.so.6)",
        "#3  0x0000007f00000020 in ?? (/lib/x.so+0x1234)",
        "#4  0x0000000000000010 in ??",
    ]
    assert format_frame(outer, 7).startswith("#7 ")


def test_unknown_backend_is_an_error() -> None:
    from memwatcher.libbpf import MemwatcherError

    with pytest.raises(MemwatcherError, match="unknown back end"):
        Symbolizer(backend="blazesym")


# ---------------------------------------------------------------- live programs


@needs_gcc
@backends
def test_debug_program_functions_and_lines(bins: dict[str, Path], backend: str) -> None:
    binary = bins["debug"]
    with running([str(binary)]) as (pid, addrs), Symbolizer(backend=backend) as sym:
        leaf, call = sym.symbolize_stack(pid, [addrs["leaf_entry"], addrs["call_leaf_ret"]])
        (caller,) = sym.symbolize(pid, [addrs["caller_entry"]])
    assert len(leaf) == 1 and len(call) == 1 and len(caller) == 1
    assert leaf[0].function == "symtest_leaf" and leaf[0].symbol == "symtest_leaf" and leaf[0].offset == 0
    assert (leaf[0].file, leaf[0].line) == (str(SYMTEST_C), mark_line(SYMTEST_C, "leaf_entry"))
    assert leaf[0].module == str(binary) and leaf[0].build_id == readelf_build_id(str(binary))
    assert leaf[0].elf_address == nm_address(binary, "symtest_leaf")
    # The return address is looked up at addr - 1: the line of the call.
    assert call[0].function == "symtest_caller" and not call[0].inlined
    assert (call[0].file, call[0].line) == (str(SYMTEST_C), mark_line(SYMTEST_C, "call_leaf"))
    assert call[0].offset == call[0].elf_address - nm_address(binary, "symtest_caller") > 0
    assert caller[0].function == "symtest_caller" and caller[0].offset == 0


@needs_gcc
@backends
def test_inlined_frame(bins: dict[str, Path], backend: str) -> None:
    with running([str(bins["inline"])]) as (pid, addrs), Symbolizer(backend=backend) as sym:
        (frames,) = sym.symbolize(pid, [addrs["sink_ret"]], return_addresses=True)
    assert [(f.function, f.inlined) for f in frames] == [("inl_helper", True), ("inl_outer", False)]
    assert (frames[0].file, frames[0].line) == (str(INLTEST_C), mark_line(INLTEST_C, "inl_call"))
    assert (frames[1].file, frames[1].line) == (str(INLTEST_C), mark_line(INLTEST_C, "outer_call"))
    assert frames[0].symbol is None and frames[1].symbol == "inl_outer"
    assert frames[1].elf_address - frames[1].offset == nm_address(bins["inline"], "inl_outer")


@needs_gcc
@backends
def test_libc_frames(bins: dict[str, Path], backend: str) -> None:
    if not libc_has_debuginfo():
        pytest.skip("libc6-dbg not installed")
    with running([str(bins["debug"])]) as (pid, addrs), Symbolizer(backend=backend) as sym:
        main_ret, thread_ret = sym.symbolize(pid, [addrs["main_ret"], addrs["thread_ret"]], return_addresses=True)
        (malloc,) = sym.symbolize(pid, [addrs["malloc"]])
    assert main_ret[-1].function == "__libc_start_call_main" and main_ret[-1].line
    assert thread_ret[-1].function == "start_thread" and thread_ret[-1].file.endswith("pthread_create.c")
    assert malloc[-1].symbol == "malloc" and malloc[-1].offset == 0 and malloc[-1].file.endswith("malloc.c")
    assert os.path.realpath(malloc[-1].module) == os.path.realpath(LIBC)


def dynsym_ranges(path: str) -> list[tuple[int, int, str]]:
    out = subprocess.run(["readelf", "-W", "--dyn-syms", path], check=True, capture_output=True, text=True).stdout
    ranges = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[3] in ("FUNC", "IFUNC") and parts[6] != "UND":
            ranges.append((int(parts[1], 16), int(parts[2]), parts[7].split("@")[0]))
    return ranges


@needs_gcc
@backends
def test_libc_without_debuginfo_uses_dynsym(bins: dict[str, Path], backend: str) -> None:
    with running([str(bins["debug"])]) as (pid, addrs), Symbolizer(backend=backend, debuginfo_dirs=()) as sym:
        found = sym.symbolize(pid, [addrs["malloc"], addrs["main_ret"], addrs["thread_ret"]])
    ranges = dynsym_ranges(LIBC)
    assert found[0][0].function == "malloc" and found[0][0].file is None
    for (frame,) in found:
        if frame.function is not None:  # named only by a .dynsym symbol that contains the address
            assert any(s <= frame.elf_address < s + n and name == frame.function for s, n, name in ranges)
        else:
            assert not any(s <= frame.elf_address < s + n for s, n, _ in ranges)


@needs_gcc
@backends
def test_stripped_binaries(bins: dict[str, Path], backend: str) -> None:
    leaf_at = nm_address(bins["nodebug"], "symtest_leaf")
    with running([str(bins["stripped_dynsym"])]) as (pid, addrs), Symbolizer(backend=backend) as sym:
        ((frame,),) = sym.symbolize(pid, [addrs["leaf_entry"] + 3])
    assert (frame.function, frame.offset, frame.file, frame.elf_address) == ("symtest_leaf", 3, None, leaf_at + 3)
    plain_leaf_at = nm_address(bins["plain"], "symtest_leaf")
    with running([str(bins["stripped"])]) as (pid, addrs), Symbolizer(backend=backend) as sym:
        ((frame,),) = sym.symbolize(pid, [addrs["leaf_entry"]])
    assert frame.function is None and frame.module == str(bins["stripped"])
    assert frame.elf_address == plain_leaf_at
    assert format_frame(frame, 0).endswith(f"({bins['stripped']}+0x{plain_leaf_at:x})")


@needs_gcc
@needs_root
@backends
def test_deleted_binary_resolves(bins: dict[str, Path], backend: str, tmp_path: Path) -> None:
    copy = tmp_path / "symtest-deleted"
    shutil.copy(bins["debug"], copy)
    with running([str(copy)]) as (pid, addrs), Symbolizer(backend=backend) as sym:
        copy.unlink()
        ((frame,),) = sym.symbolize(pid, [addrs["leaf_entry"]])
    assert frame.module == str(copy) and frame.function == "symtest_leaf"
    assert frame.line == mark_line(SYMTEST_C, "leaf_entry")


@needs_gcc
@needs_root
@backends
def test_other_mount_namespace(bins: dict[str, Path], backend: str, tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1)")
    private = tmp_path / "private"
    private.mkdir()
    # The binary exists only inside the child's private tmpfs mount.
    script = f"mount -t tmpfs tmpfs {private} && cp {bins['debug']} {private}/ && exec {private}/symtest"
    with running(["unshare", "-m", "--propagation", "private", "sh", "-c", script]) as (pid, addrs):
        assert not (private / "symtest").exists()
        with Symbolizer(backend=backend) as sym:
            ((frame,),) = sym.symbolize(pid, [addrs["leaf_entry"]])
    assert frame.module == f"{private}/symtest" and frame.function == "symtest_leaf"
    assert frame.line == mark_line(SYMTEST_C, "leaf_entry")


def test_exited_process_is_an_error() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    with Symbolizer() as sym, pytest.raises(NoSuchProcessError):
        sym.symbolize(proc.pid, [0x1000])


# ---------------------------------------------------------------- kernel


def test_kernel_symbols_round_trip() -> None:
    entries = []
    with open("/proc/kallsyms") as f:
        for line in f:
            parts = line.split()
            if parts[1] in "tT":
                entries.append((int(parts[0], 16), parts[2], parts[3].strip("[]") if len(parts) > 3 else "vmlinux"))
    if not entries or all(a == 0 for a, _, _ in entries):
        with pytest.raises(KernelSymbolsHidden):
            Symbolizer().kernel_symbols()
        return
    entries.sort()
    etext = next(a for a, n, m in entries if n == "_etext" and m == "vmlinux")
    # Symbols with a unique address, a following symbol at least 2 bytes on, inside the image text.
    unique = [
        (a, n, m)
        for i, (a, n, m) in enumerate(entries[1:-1], 1)
        if entries[i - 1][0] != a and entries[i + 1][0] > a + 1 and (m != "vmlinux" or a < etext)
    ]
    random.seed(7)
    picks = random.sample([e for e in unique if e[2] == "vmlinux"], 50)
    picks += [e for e in unique if e[2] != "vmlinux"][:5]
    with Symbolizer() as sym:
        exact = sym.symbolize(None, [a for a, _, _ in picks])
        inside = sym.symbolize_stack(None, [picks[0][0] + 1, *(a + 1 for a, _, _ in picks)])
    for (_, name, module), (frame,), (ret,) in zip(picks, exact, inside[1:]):
        assert (frame.function, frame.offset, frame.module) == (name, 0, module)
        # A return address one past a symbol's start belongs to that symbol (looked up at addr - 1).
        assert (ret.function, ret.offset) == (name, 1)
    assert inside[0][0].function == picks[0][1] and inside[0][0].offset == 1


# ---------------------------------------------------------------- agreement with eu-addr2line


def eu_addr2line(path: str, addresses: list[int]) -> list[list[tuple[str, str, int]]]:
    """eu-addr2line -a -f -i: per address, (function, file, line) innermost first."""
    out = subprocess.run(
        ["eu-addr2line", "-a", "-f", "-i", "-e", path, *(hex(a) for a in addresses)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    result: list[list[tuple[str, str, int]]] = []
    i = 0
    while i < len(out):
        if out[i].startswith("0x"):
            result.append([])
            i += 1
            continue
        name = out[i].split(" inlined at ")[0]
        file, _, rest = out[i + 1].partition(":")
        result[-1].append((name, file, int(rest.split(":")[0] or 0)))
        i += 2
    return result


@pytest.mark.skipif(shutil.which("eu-addr2line") is None, reason="needs eu-addr2line (elfutils)")
@backends
def test_agrees_with_eu_addr2line(backend: str) -> None:
    if not libc_has_debuginfo():
        pytest.skip("libc6-dbg not installed")
    from elftools.elf.elffile import ELFFile

    with open(LIBC, "rb") as f:
        text = ELFFile(f).get_section_by_name(".text")
        low, high = text["sh_addr"], text["sh_addr"] + text["sh_size"]
    random.seed(11)
    addresses = sorted(random.sample(range(low, high), 200))
    expected = eu_addr2line(LIBC, addresses)
    build_id = readelf_build_id(LIBC)
    aliases: dict[int, set[str]] = {}
    nm = subprocess.run(
        ["nm", f"/usr/lib/debug/.build-id/{build_id[:2]}/{build_id[2:]}.debug"], capture_output=True, text=True
    )
    for line in nm.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3:
            aliases.setdefault(int(parts[0], 16), set()).add(parts[2].split("@")[0])
    with Symbolizer(backend=backend) as sym:
        got = sym.symbolize_elf(LIBC, addresses)
    compared = 0
    for address, want, frames in zip(addresses, expected, got):
        if want[0][1] == "??":
            continue  # no line information: eu-addr2line names the nearest symbol without a size check
        assert len(frames) == len(want), hex(address)
        for (name, file, line), frame in zip(want, frames):
            # eu-addr2line prefixes relative file names with the CU's directory.
            assert frame.line == line, hex(address)
            # Without a DWARF function (assembly) both fall back to a symbol; aliases may differ.
            symbol_aliases = aliases.get(frame.elf_address - (frame.offset or 0), set()) if frame.symbol else set()
            assert frame.function == name or {frame.function, name} <= symbol_aliases, hex(address)
            assert file == frame.file or file.endswith("/" + frame.file), hex(address)
        compared += 1
    assert compared >= 150


def test_pyelftools_chosen_without_libdw(monkeypatch: pytest.MonkeyPatch) -> None:
    from memwatcher.symbolize import _dwfl

    monkeypatch.setattr(_dwfl, "available", lambda: False)
    assert available_backends() == ["pyelftools"]
    with Symbolizer() as sym:
        assert sym.backend == "pyelftools"
