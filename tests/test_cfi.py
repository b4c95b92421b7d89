"""The CFI compiler (memwatcher.cfi) against readelf's reading of the same objects.

The oracle is binutils' ``readelf --debug-dump=frames-interp``: for every FDE it
prints the rule table (the CFA as ``rsp+16`` or ``exp``, each register as
``c-16``, ``u``, ...). The tests turn those tables into the rows the compiler
must produce, with the same choice of FDEs (``.eh_frame`` first, overlaps
dropped), and compare the two step functions at every pc where either one
changes: libc, libstdc++, python3 and a C program built four ways. The opcodes,
augmentations and encodings compilers do not emit are in a hand-written object
(tests/c/cfiasm.S) whose table is spelled out below. Corrupt and foreign
objects must give CfiError, never a crash.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import struct
import subprocess
import time
from dataclasses import dataclass, field
from functools import cache
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from memwatcher.cfi import (
    CFA_END,
    CFA_NONE,
    CFA_RBP,
    CFA_RSP,
    CFA_UNSUPPORTED,
    RBP_OFFSET,
    RBP_SAME,
    RBP_UNSUPPORTED,
    CfiError,
    CfiTable,
    compile_cfi,
    lookup,
    row_dtype,
)
from memwatcher.errors import MemwatcherError

C_DIR = Path(__file__).resolve().parent / "c"
LIBC = Path("/lib/x86_64-linux-gnu/libc.so.6")
LIBSTDCXX = Path("/usr/lib/x86_64-linux-gnu/libstdc++.so.6")
PYTHON = Path("/usr/bin/python3.11")

needs_tools = pytest.mark.skipif(
    shutil.which("gcc") is None or shutil.which("readelf") is None, reason="needs gcc and readelf (binutils)"
)

Rule = tuple[int, int, int, int]  # cfa_rule, cfa_offset, rbp_rule, rbp_offset
NONE_RULE: Rule = (CFA_NONE, 0, RBP_SAME, 0)


# ---- the oracle ---------------------------------------------------------------------------


@dataclass
class Fde:
    section: str
    order: int
    start: int
    end: int
    cie: tuple[str, int]
    rows: dict[int, Rule] = field(default_factory=dict)  # LOC -> rule; a later row at the same LOC wins


_SECTION = re.compile(r"^Contents of the (\S+) section")
_ENTRY = re.compile(r"^([0-9a-f]{8}) [0-9a-f]{16} [0-9a-f]{8} (CIE|FDE)(.*)$")
_FDE = re.compile(r"cie=([0-9a-f]+)\s+pc=([0-9a-f]+)\.\.([0-9a-f]+)")
_ROW = re.compile(r"^[0-9a-f]{16} ")
_REG_RULE = re.compile(r"r\d+ \(\w+\)")  # DW_CFA_register: "r3 (rbx)", one column
_CFA = re.compile(r"(rsp|rbp)([+-]\d+)")
_SAVED = re.compile(r"c([+-]\d+)")


def _fits(value: int, bits: int) -> bool:
    return -(1 << (bits - 1)) <= value < (1 << (bits - 1))


@cache
def readelf_rule(cfa: str, ra: str, rbp: str, rsp: str) -> Rule:
    """The row readelf's columns call for (the rules of bpf/unwind.h)."""
    if ra == "u":
        return (CFA_END, 0, RBP_SAME, 0)
    m = _CFA.fullmatch(cfa)
    # The walk takes the caller's rsp to be the CFA: rsp needs no rule, or "CFA + 0".
    if not m or ra != "c-8" or not _fits(int(m.group(2)), 32) or rsp not in ("u", "v+0"):
        return (CFA_UNSUPPORTED, 0, RBP_SAME, 0)
    cfa_rule = CFA_RSP if m.group(1) == "rsp" else CFA_RBP
    saved = _SAVED.fullmatch(rbp)
    if rbp in ("u", "s"):
        return (cfa_rule, int(m.group(2)), RBP_SAME, 0)
    if saved and _fits(int(saved.group(1)), 16):
        return (cfa_rule, int(m.group(2)), RBP_OFFSET, int(saved.group(1)))
    return (cfa_rule, int(m.group(2)), RBP_UNSUPPORTED, 0)


def readelf_fdes(path: Path) -> list[Fde]:
    """Every FDE readelf prints, with its rows (or its CIE's when it prints none)."""
    # readelf 2.40 exits 1 on Debian's libc.so.6 without saying why; the dump is complete.
    text = subprocess.run(["readelf", "--debug-dump=frames-interp", str(path)], capture_output=True, text=True).stdout
    assert "Contents of the" in text, f"readelf printed no CFI for {path}"
    section, columns, current = "", [], None
    cies: dict[tuple[str, int], Rule] = {}
    fdes: list[Fde] = []
    for line in text.splitlines():
        if len(line) > 17 and line[16] == " " and _ROW.match(line):  # the common case first
            loc, cfa, *values = _REG_RULE.sub("reg", line).split()
            regs = dict(zip(columns, values))
            rule = readelf_rule(cfa, regs.get("ra", "u"), regs.get("rbp", "u"), regs.get("rsp", "u"))
            if isinstance(current, Fde):
                current.rows[int(loc, 16)] = rule
            else:
                cies[current] = rule
        elif m := _SECTION.match(line):
            section = m.group(1)
        elif m := _ENTRY.match(line):
            key = (section, int(m.group(1), 16))
            if m.group(2) == "CIE":
                current = key
            else:
                cie, start, end = (int(v, 16) for v in _FDE.search(m.group(3)).groups())
                current = Fde(section, len(fdes), start, end, (section, cie))
                fdes.append(current)
        elif line.split()[:2] == ["LOC", "CFA"]:
            columns = line.split()[2:]
    for fde in fdes:
        if not fde.rows:
            fde.rows[fde.start] = cies[fde.cie]
    return fdes


def expected_table(fdes: list[Fde]) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, Fde]]]:
    """The step function the compiler must build: (pcs, rules, windows).

    .eh_frame FDEs first, the lowest of overlapping ones kept; .debug_frame
    FDEs (not at address 0, the linker's mark of a discarded function) only
    where .eh_frame leaves a gap.
    """

    def keep(candidates: list[Fde]) -> list[Fde]:
        kept, last_end = [], -1
        for fde in sorted(candidates, key=lambda f: (f.start, f.order)):
            if fde.start >= last_end:
                kept.append(fde)
                last_end = fde.end
        return kept

    eh = keep([f for f in fdes if f.section == ".eh_frame" and f.end > f.start])
    windows = [(f.start, f.end, f) for f in eh]
    for fde in keep([f for f in fdes if f.section == ".debug_frame" and f.end > f.start and f.start != 0]):
        start = fde.start
        for s, e, _ in windows[: len(eh)]:
            if e <= start or s >= fde.end:
                continue
            if s > start:
                windows.append((start, s, fde))
            start = max(start, e)
        if start < fde.end:
            windows.append((start, fde.end, fde))
    windows.sort(key=lambda w: w[0])

    pcs, rules = [], []
    for i, (start, end, fde) in enumerate(windows):
        locs = sorted(fde.rows)
        first = max(loc for loc in locs if loc <= start)
        for loc in locs:
            if first <= loc < end:
                pcs.append(max(loc, start))
                rules.append(fde.rows[loc])
        if i + 1 == len(windows) or windows[i + 1][0] != end:
            pcs.append(end)
            rules.append(NONE_RULE)
    return np.array(pcs, dtype=np.int64), np.array(rules, dtype=np.int64).reshape(-1, 4), windows


def table_rules(table: CfiTable) -> np.ndarray:
    rows = table.rows
    return np.stack([rows[name].astype(np.int64) for name in ("cfa_rule", "cfa_offset", "rbp_rule", "rbp_offset")], 1)


def step_values(pcs: np.ndarray, rules: np.ndarray, at: np.ndarray) -> np.ndarray:
    index = np.searchsorted(pcs, at, side="right") - 1
    values = rules[np.maximum(index, 0)].copy()
    values[index < 0] = NONE_RULE
    return values


def check_invariants(table: CfiTable) -> None:
    """What bpf/unwind.h promises about every table."""
    rows = table.rows
    assert rows.dtype == row_dtype()
    if len(rows) == 0:
        return
    assert (np.diff(rows["pc"].astype(np.int64)) > 0).all(), "pcs not strictly increasing"
    rules = table_rules(table)
    assert not (rules[1:] == rules[:-1]).all(axis=1).any(), "adjacent rows repeat a rule"
    assert rows[-1]["cfa_rule"] == CFA_NONE
    no_cfa = np.isin(rows["cfa_rule"], [CFA_NONE, CFA_END, CFA_UNSUPPORTED])
    assert (rows["cfa_offset"][no_cfa] == 0).all() and (rows["rbp_rule"][no_cfa] == RBP_SAME).all()
    assert (rows["rbp_offset"][rows["rbp_rule"] != RBP_OFFSET] == 0).all()
    assert rows[0]["pc"] == table.low_pc and rows[-1]["pc"] == table.high_pc


@cache
def assert_matches_readelf(path: Path) -> tuple[CfiTable, list[Fde], list[tuple[int, int, Fde]]]:
    """Compiles ``path`` and compares with readelf (once per path)."""
    table = compile_cfi(path)
    check_invariants(table)
    fdes = readelf_fdes(path)
    pcs, rules, windows = expected_table(fdes)
    at = np.union1d(pcs, table.rows["pc"].astype(np.int64))
    want = step_values(pcs, rules, at)
    got = step_values(table.rows["pc"].astype(np.int64), table_rules(table), at)
    bad = np.flatnonzero((want != got).any(axis=1))
    detail = [f"{at[i]:#x}: readelf {tuple(want[i])} ours {tuple(got[i])}" for i in bad[:10]]
    assert not len(bad), f"{path}: {len(bad)} of {len(at)} pcs differ:\n" + "\n".join(detail)
    assert table.fde_count == len({id(w[2]) for w in windows})
    assert (table.low_pc, table.high_pc) == (windows[0][0], windows[-1][1])
    return table, fdes, windows


# ---- test objects ------------------------------------------------------------------------


def nm(path: Path) -> dict[str, int]:
    out = subprocess.run(["nm", str(path)], check=True, capture_output=True, text=True).stdout
    return {parts[2]: int(parts[0], 16) for parts in map(str.split, out.splitlines()) if len(parts) == 3}


# Without unwind tables, gcc -g writes .debug_frame only (crt files still bring a little .eh_frame).
DEBUG_FRAME_ONLY = ["-O2", "-g", "-fno-asynchronous-unwind-tables", "-fno-exceptions"]
BUILDS = {
    "omit_fp": ["-O2", "-fomit-frame-pointer"],
    "fp": ["-O2", "-fno-omit-frame-pointer"],
    "debug_frame": DEBUG_FRAME_ONLY,
    "debug_frame_so": [*DEBUG_FRAME_ONLY, "-shared", "-fPIC", "-nostdlib"],
}


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    out = tmp_path_factory.mktemp("cfi")
    paths = {}
    for name, flags in BUILDS.items():
        paths[name] = out / name
        subprocess.run(["gcc", *flags, str(C_DIR / "cfitest.c"), "-o", str(paths[name])], check=True)
    paths["asm"] = out / "asm"
    # ld cannot parse some hand-written entries ("no .eh_frame_hdr table will be created"): expected.
    subprocess.run(
        ["gcc", "-nostdlib", "-static", "-no-pie", str(C_DIR / "cfiasm.S"), "-o", str(paths["asm"])],
        check=True,
        capture_output=True,
    )
    return paths


# ---- against readelf ----------------------------------------------------------------------


@needs_tools
@pytest.mark.parametrize("path", [LIBC, LIBSTDCXX, PYTHON], ids=lambda p: p.name)
def test_system_objects_match_readelf(path: Path) -> None:
    if not path.is_file():
        pytest.skip(f"{path} not installed")
    table, fdes, _ = assert_matches_readelf(path)
    assert table.sections == (".eh_frame",)
    assert table.skipped_fdes == 0
    assert table.fde_count == len(fdes)
    counts = np.bincount(table.rows["cfa_rule"], minlength=5)
    assert counts[CFA_RSP] > 0.8 * len(table.rows) and counts[CFA_RBP] > 0


@needs_tools
def test_gaps_between_fdes_get_none_rows() -> None:
    table, _, windows = assert_matches_readelf(LIBC)
    gaps = [end for (_, end, _), (start, _, _) in pairwise(windows) if start != end] + [windows[-1][1]]
    none_pcs = table.rows["pc"][table.rows["cfa_rule"] == CFA_NONE]
    assert len(gaps) > 10 and none_pcs.tolist() == gaps
    for end in gaps[:50]:
        assert lookup(table, end) is None and lookup(table, end - 1) is not None
    # Consecutive FDEs do not get one.
    joined = [end for (_, end, _), (start, _, _) in pairwise(windows) if start == end]
    assert joined and all(lookup(table, end) is not None for end in joined[:50])


@needs_tools
def test_program_without_frame_pointers(objects: dict[str, Path]) -> None:
    path = objects["omit_fp"]
    table, _, _ = assert_matches_readelf(path)
    sym = nm(path)
    leaf = lookup(table, sym["cfi_leaf"])
    assert (leaf["cfa_rule"], leaf["cfa_offset"], leaf["rbp_rule"]) == (CFA_RSP, 8, RBP_SAME)
    assert lookup(table, sym["_start"])["cfa_rule"] == CFA_END
    # A VLA needs rbp as the frame base even without frame pointers.
    vla = table.rows[(table.rows["pc"] >= sym["cfi_vla"]) & (table.rows["pc"] < sym["cfi_realign"])]
    assert CFA_RBP in vla["cfa_rule"]
    # Stack realignment: CFA = r10, then an expression; rbp saved by an expression.
    realign = table.rows[(table.rows["pc"] >= sym["cfi_realign"]) & (table.rows["pc"] < sym["cfi_alloc"])]
    assert CFA_UNSUPPORTED in realign["cfa_rule"] and RBP_UNSUPPORTED in realign["rbp_rule"]


@needs_tools
def test_program_with_frame_pointers(objects: dict[str, Path]) -> None:
    path = objects["fp"]
    table, _, _ = assert_matches_readelf(path)
    sym = nm(path)
    starts = sorted(sym.values())
    # Every function that calls another but realigns no stack (GCC keeps leaves frameless):
    # push rbp; mov rsp, rbp gives CFA = rbp + 16, the caller's rbp at CFA - 16.
    for name in ("cfi_pushes", "cfi_big_frame", "cfi_vla", "cfi_alloc", "main"):
        end = min(a for a in starts if a > sym[name])
        inside = table.rows[(table.rows["pc"] >= sym[name]) & (table.rows["pc"] < end)]
        rules = {tuple(int(v) for v in row[["cfa_rule", "cfa_offset", "rbp_rule", "rbp_offset"]]) for row in inside}
        assert (CFA_RBP, 16, RBP_OFFSET, -16) in rules, name


@needs_tools
def test_debug_frame_fills_what_eh_frame_lacks(objects: dict[str, Path]) -> None:
    path = objects["debug_frame"]
    table, fdes, windows = assert_matches_readelf(path)
    assert table.sections == (".eh_frame", ".debug_frame")
    sym = nm(path)
    eh = [f for f in fdes if f.section == ".eh_frame"]
    for name in ("cfi_leaf", "cfi_pushes", "cfi_vla", "main"):
        # The C functions have no .eh_frame FDE (only crt's _start and the PLT do)...
        assert not any(f.start <= sym[name] < f.end for f in eh), name
        # ...and still get rows, from .debug_frame.
        assert lookup(table, sym[name]) is not None, name
        assert any(w[2].section == ".debug_frame" and w[0] <= sym[name] < w[1] for w in windows)


@needs_tools
def test_debug_frame_only_object(objects: dict[str, Path]) -> None:
    path = objects["debug_frame_so"]
    sections = subprocess.run(["readelf", "-SW", str(path)], check=True, capture_output=True, text=True).stdout
    assert re.search(r"\.debug_frame", sections)
    assert not re.search(r"\.eh_frame\s+PROGBITS\s+\w+\s+\w+\s+0*[1-9a-f]", sections)  # absent or empty
    table, fdes, _ = assert_matches_readelf(path)
    assert ".debug_frame" in table.sections
    assert fdes and all(f.section == ".debug_frame" for f in fdes)
    assert table.fde_count == len(fdes) and len(table.rows) > len(fdes)


# ---- the hand-written object ---------------------------------------------------------

# (symbol, offset, cfa_rule, cfa_offset, rbp_rule, rbp_offset): every row, in order.
ASM_ROWS = [
    ("_start", 0, CFA_END, 0, RBP_SAME, 0),
    ("f_frame", 0, CFA_RSP, 8, RBP_SAME, 0),
    ("f_frame", 1, CFA_RSP, 16, RBP_OFFSET, -16),
    ("f_frame", 4, CFA_RBP, 16, RBP_OFFSET, -16),
    ("f_frame", 44, CFA_RSP, 8, RBP_OFFSET, -16),
    ("f_state", 0, CFA_RSP, 8, RBP_SAME, 0),
    ("f_state", 1, CFA_RSP, 16, RBP_OFFSET, -16),
    ("f_state", 11, CFA_RSP, 8, RBP_SAME, 0),
    ("f_state", 16, CFA_RSP, 16, RBP_OFFSET, -16),  # restore_state
    ("f_state", 20, CFA_RSP, 32, RBP_OFFSET, -16),
    ("f_rules", 0, CFA_RSP, 16, RBP_SAME, 0),  # def_cfa_sf
    ("f_rules", 2, CFA_RSP, 24, RBP_OFFSET, 32),  # def_cfa_offset_sf, offset_extended_sf
    ("f_rules", 4, CFA_RSP, 24, RBP_UNSUPPORTED, 0),  # val_offset, val_offset_sf
    ("f_rules", 8, CFA_RSP, 24, RBP_OFFSET, -24),  # restore, offset_extended
    ("f_rules", 10, CFA_RSP, 24, RBP_SAME, 0),  # restore_extended
    ("f_rules", 12, CFA_RSP, 24, RBP_OFFSET, 16),  # GNU_negative_offset_extended
    ("f_rules", 14, CFA_RSP, 24, RBP_SAME, 0),  # same_value
    ("f_rules", 16, CFA_RSP, 24, RBP_UNSUPPORTED, 0),  # register
    ("f_rules", 18, CFA_RSP, 24, RBP_SAME, 0),  # undefined
    ("f_rules", 20, CFA_RSP, 24, RBP_UNSUPPORTED, 0),  # expression, val_expression
    ("f_rules", 24, CFA_UNSUPPORTED, 0, RBP_SAME, 0),  # def_cfa_expression
    ("f_rules", 26, CFA_RBP, 16, RBP_SAME, 0),  # def_cfa rbp
    ("f_rules", 28, CFA_UNSUPPORTED, 0, RBP_SAME, 0),  # r10, then an offset beyond int32
    ("f_rules", 32, CFA_RSP, 8, RBP_UNSUPPORTED, 0),  # rbp offset beyond int16
    ("f_rules", 34, CFA_UNSUPPORTED, 0, RBP_SAME, 0),  # return address at cfa-16
    ("f_rules", 36, CFA_RSP, 8, RBP_OFFSET, -16),
    ("f_rules", 38, CFA_END, 0, RBP_SAME, 0),  # return address undefined
    ("f_rules", 40, CFA_RSP, 8, RBP_OFFSET, -16),
    ("f_rules", 42, CFA_UNSUPPORTED, 0, RBP_SAME, 0),  # return address same_value
    ("f_rules", 44, CFA_RSP, 8, RBP_OFFSET, -16),
    ("f_rules", 46, CFA_UNSUPPORTED, 0, RBP_SAME, 0),  # a rule for rsp
    ("f_rules", 48, CFA_RSP, 8, RBP_OFFSET, -16),  # rsp = CFA + 0
    ("f_setloc", 0, CFA_RSP, 8, RBP_SAME, 0),
    ("f_setloc", 10, CFA_RSP, 16, RBP_SAME, 0),
    ("f_setloc", 20, CFA_RSP, 24, RBP_SAME, 0),
    ("f_setloc", 32, CFA_NONE, 0, RBP_SAME, 0),  # the FDE ends mid-slot
    ("f_empty", 0, CFA_RSP, 8, RBP_SAME, 0),  # f_eh_aug+0 has the same rule: no row
    ("f_eh_aug", 4, CFA_RSP, 16, RBP_SAME, 0),
    ("f_len64", 0, CFA_RSP, 8, RBP_SAME, 0),
    ("f_len64", 8, CFA_RSP, 48, RBP_SAME, 0),
    ("f_pers", 0, CFA_RSP, 8, RBP_SAME, 0),
    ("f_pers", 1, CFA_RSP, 16, RBP_SAME, 0),
    ("f_unknown_op", 0, CFA_NONE, 0, RBP_SAME, 0),  # skipped FDEs: f_unknown_op, f_bad_cie
    ("f_dbg", 0, CFA_RSP, 8, RBP_SAME, 0),
    ("f_dbg", 3, CFA_RSP, 16, RBP_SAME, 0),
    ("f_dbg_clip", 0, CFA_RSP, 8, RBP_SAME, 0),
    ("f_dbg_clip", 4, CFA_RSP, 24, RBP_SAME, 0),
    ("f_eh_mid", 0, CFA_RSP, 8, RBP_SAME, 0),  # .eh_frame's, not .debug_frame's rsp+96 at +13
    ("f_dbg_split", 10, CFA_RSP, 16, RBP_SAME, 0),
    ("f_dbg_split_eh", 0, CFA_RSP, 8, RBP_SAME, 0),
    ("f_dbg_split_eh", 2, CFA_RSP, 16, RBP_SAME, 0),
    ("f_dbg_split_end", 0, CFA_RSP, 32, RBP_SAME, 0),  # the .debug_frame rule in force there
    ("f_dbg_split_end", 10, CFA_RSP, 40, RBP_SAME, 0),
    ("f_after_gap", 0, CFA_RSP, 8, RBP_SAME, 0),  # follows the last piece directly: no NONE row
    ("f_after_gap", 5, CFA_RSP, 16, RBP_SAME, 0),
    ("text_end", 0, CFA_NONE, 0, RBP_SAME, 0),
]


@needs_tools
def test_hand_written_cfi(objects: dict[str, Path]) -> None:
    path = objects["asm"]
    table = compile_cfi(path)
    check_invariants(table)
    sym = nm(path)
    want = [(sym[name] + off, *rule) for name, off, *rule in ASM_ROWS]
    got = [tuple(int(v) for v in row[["pc", "cfa_rule", "cfa_offset", "rbp_rule", "rbp_offset"]]) for row in table.rows]
    assert got == want
    assert table.sections == (".eh_frame", ".debug_frame")
    # Skipped: an overlap in each section, an unknown opcode, a CIE pointer into a CIE's middle.
    assert table.skipped_fdes == 4
    assert table.fde_count == 15
    assert (table.low_pc, table.high_pc) == (sym["_start"], sym["text_end"])


# ---- other API behaviour ------------------------------------------------------------------


def test_fd_works_like_a_path() -> None:
    by_path = compile_cfi(LIBC)
    fd = os.open(LIBC, os.O_RDONLY)
    try:
        os.lseek(fd, 123, os.SEEK_SET)
        by_fd = compile_cfi(fd)
        assert os.lseek(fd, 0, os.SEEK_CUR) == 123  # pread only; the descriptor stays open
    finally:
        os.close(fd)
    assert np.array_equal(by_fd.rows, by_path.rows)
    assert (by_fd.fde_count, by_fd.low_pc, by_fd.high_pc) == (by_path.fde_count, by_path.low_pc, by_path.high_pc)
    assert compile_cfi(str(LIBC)).rows.tobytes() == by_path.rows.tobytes()
    with pytest.raises(CfiError, match="fd -1"):
        compile_cfi(-1)


def test_map_files_descriptor() -> None:
    """A /proc/PID/map_files descriptor, as memleak opens the objects a process maps."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and Path(fields[5]).name == "libc.so.6":
            break
    else:
        pytest.skip("libc.so.6 is not mapped")
    try:
        fd = os.open(f"/proc/self/map_files/{fields[0]}", os.O_RDONLY)
    except PermissionError:
        pytest.skip("map_files needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE")
    try:
        table = compile_cfi(fd)
    finally:
        os.close(fd)
    assert np.array_equal(table.rows, compile_cfi(fields[5]).rows)


def test_table_is_read_only_and_lookup_bounds() -> None:
    table = compile_cfi(LIBC)
    with pytest.raises(ValueError):
        table.rows["pc"][0] = 0
    assert lookup(table, table.low_pc - 1) is None
    assert lookup(table, table.high_pc) is None
    assert lookup(table, -1) is None and lookup(table, 1 << 40) is None
    assert lookup(table, table.low_pc)["cfa_rule"] != CFA_NONE
    assert row_dtype().names == ("pc", "cfa_offset", "rbp_offset", "cfa_rule", "rbp_rule")
    assert row_dtype().itemsize == 12


@needs_tools
def test_compile_speed(objects: dict[str, Path]) -> None:
    started = time.perf_counter()
    tables = [compile_cfi(p) for p in (LIBC, LIBSTDCXX, objects["omit_fp"])]
    elapsed = time.perf_counter() - started
    assert all(len(t.rows) for t in tables)
    assert elapsed < 0.5, f"{elapsed:.3f} s"  # about 10 ms measured; generous for loaded machines


# ---- bad input ------------------------------------------------------------------------------


def _patched(tmp_path: Path, source: Path, offset: int, data: bytes) -> Path:
    blob = bytearray(source.read_bytes())
    blob[offset : offset + len(data)] = data
    out = tmp_path / f"patched-{offset}"
    out.write_bytes(bytes(blob))
    return out


def _section(path: Path, name: str) -> tuple[int, int]:
    """(file offset, size) of a section, from readelf."""
    out = subprocess.run(["readelf", "-SW", str(path)], check=True, capture_output=True, text=True).stdout
    m = re.search(rf"\s{re.escape(name)}\s+\w+\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)", out)
    return int(m.group(1), 16), int(m.group(2), 16)


@pytest.mark.parametrize(
    ("offset", "data", "message"),
    [
        (4, b"\x01", "not a 64-bit ELF object"),  # ELFCLASS32
        (5, b"\x02", "not a little-endian"),  # ELFDATA2MSB
        (18, struct.pack("<H", 183), "not an x86-64 object"),  # EM_AARCH64
        (16, struct.pack("<H", 1), "ELF type 1"),  # ET_REL
        (0, b"\x7fELG", "not an ELF object"),
    ],
)
def test_foreign_objects_are_refused(tmp_path: Path, offset: int, data: bytes, message: str) -> None:
    with pytest.raises(CfiError, match=message):
        compile_cfi(_patched(tmp_path, LIBC, offset, data))


def test_missing_and_non_elf_files(tmp_path: Path) -> None:
    with pytest.raises(CfiError, match="No such file") as err:
        compile_cfi(tmp_path / "nothing")
    assert isinstance(err.value, MemwatcherError) and "nothing" in err.value.source
    (tmp_path / "text").write_text("hello\n")
    with pytest.raises(CfiError, match="not an ELF object"):
        compile_cfi(tmp_path / "text")
    with pytest.raises(CfiError):
        compile_cfi(tmp_path)  # a directory


@needs_tools
def test_truncated_and_corrupt_objects(tmp_path: Path) -> None:
    blob = LIBC.read_bytes()
    for size in (0, 10, 64, 100_000, len(blob) // 2, len(blob) - 1):
        (tmp_path / "cut").write_bytes(blob[:size])
        with pytest.raises(CfiError):
            compile_cfi(tmp_path / "cut")
    # An entry length that runs past the end of .eh_frame: the section's framing is lost.
    eh_offset, _ = _section(LIBC, ".eh_frame")
    with pytest.raises(CfiError, match="runs past the end"):
        compile_cfi(_patched(tmp_path, LIBC, eh_offset + 0x18, struct.pack("<I", 0x7FFFFFF0)))


@needs_tools
def test_code_above_4gib_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "high"
    flags = ["-nostdlib", "-static", "-no-pie", "-Wl,-Ttext-segment=0x100000000"]
    subprocess.run(["gcc", *flags, str(C_DIR / "cfiasm.S"), "-o", str(out)], check=True, capture_output=True)
    with pytest.raises(CfiError, match="above 4 GiB"):
        compile_cfi(out)


@needs_tools
def test_random_corruption_never_crashes(objects: dict[str, Path], tmp_path: Path) -> None:
    """Random byte changes inside the CFI sections: a table or CfiError, nothing else."""
    rng = random.Random(20261202)
    outcomes = {"table": 0, "error": 0}
    for name in ("asm", "debug_frame", "omit_fp"):
        source = objects[name]
        blob = source.read_bytes()
        spans = [_section(source, s) for s in (".eh_frame", ".debug_frame") if s in _section_names(source)]
        for _ in range(100):
            mutated = bytearray(blob)
            offset, size = rng.choice(spans)
            for _ in range(rng.randint(1, 8)):
                mutated[offset + rng.randrange(size)] = rng.choice((0, 0xFF, 0x80, 0x7F, rng.randrange(256)))
            path = tmp_path / "fuzz"
            path.write_bytes(bytes(mutated))
            try:
                check_invariants(compile_cfi(path))
                outcomes["table"] += 1
            except CfiError:
                outcomes["error"] += 1
    assert outcomes["table"] > 0


def _section_names(path: Path) -> str:
    return subprocess.run(["readelf", "-SW", str(path)], check=True, capture_output=True, text=True).stdout
