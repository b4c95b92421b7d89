"""Compile an x86-64 ELF object's DWARF call-frame information into unwind rows.

memleak's BPF program unwinds user stacks that have no frame pointers by
binary-searching, for each frame's pc, a table of ``struct unwind_row``
(``bpf/unwind.h``, the one definition of the format). This module builds that
table from the object's ``.eh_frame`` and, where present, ``.debug_frame``; the
work is done in C (``_cfi_compiler.c``, cffi module ``memwatcher._cfi``) and the
rows come back as one numpy structured array, never row by row.

What a row says (all addresses are the object's ELF virtual addresses, the
ones ``readelf`` prints, not the addresses where a process mapped it; offsets
are in bytes):

* a row holds from its ``pc`` up to the next row's ``pc``;
* ``cfa_rule`` ``CFA_RSP`` / ``CFA_RBP``: the canonical frame address is rsp
  or rbp plus ``cfa_offset``, and the return address is at CFA - 8;
* ``CFA_END``: the return address is undefined, the outermost frame
  (``_start``, ``clone``); ``CFA_UNSUPPORTED``: the CFA is a DWARF expression
  or another register, the return address is not at CFA - 8, or rsp has a
  rule of its own (PLT stubs, the signal trampoline ``__restore_rt``, stack
  realignment, ``__longjmp``, ``setcontext``);
  ``CFA_NONE``: no FDE covers the pc (a gap, or past the last FDE);
* ``rbp_rule`` ``RBP_OFFSET``: the caller's rbp is saved at CFA +
  ``rbp_offset``; ``RBP_SAME``: this frame leaves rbp alone (also for
  "undefined" and unspecified rules); ``RBP_UNSUPPORTED``: in another register
  or given by an expression. Rows that give no CFA carry ``RBP_SAME`` and zero
  offsets.

How the table is laid out: one row where a rule changes inside an FDE (a
change that leaves the row identical is dropped), sorted by pc, with a
``CFA_NONE`` row at the end of every FDE that the next one does not follow
directly. ``.eh_frame`` wins where both sections describe an address;
``.debug_frame`` fills the addresses ``.eh_frame`` leaves uncovered. Of FDEs
overlapping within a section the lowest (then the first in the file) is kept.
An object without either section gives an empty table. Objects whose code
lies above 4 GiB are refused (``pc`` is 32 bits).

Example::

    table = compile_cfi("/lib/x86_64-linux-gnu/libc.so.6")
    row = lookup(table, 0x27445)   # -> numpy record or None
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from ._cfi import ffi, lib
from .errors import MemwatcherError
from .records import load_header

__all__ = [
    "CFA_END",
    "CFA_NONE",
    "CFA_RBP",
    "CFA_RSP",
    "CFA_UNSUPPORTED",
    "RBP_OFFSET",
    "RBP_SAME",
    "RBP_UNSUPPORTED",
    "CfiError",
    "CfiTable",
    "compile_cfi",
    "header_path",
    "lookup",
    "row_dtype",
]

# The rule constants of bpf/unwind.h, as the C compiler saw them.
CFA_NONE: int = lib.UNWIND_CFA_NONE
CFA_RSP: int = lib.UNWIND_CFA_RSP
CFA_RBP: int = lib.UNWIND_CFA_RBP
CFA_END: int = lib.UNWIND_CFA_END
CFA_UNSUPPORTED: int = lib.UNWIND_CFA_UNSUPPORTED
RBP_SAME: int = lib.UNWIND_RBP_SAME
RBP_OFFSET: int = lib.UNWIND_RBP_OFFSET
RBP_UNSUPPORTED: int = lib.UNWIND_RBP_UNSUPPORTED

_SECTIONS = ((lib.CFI_SECTION_EH_FRAME, ".eh_frame"), (lib.CFI_SECTION_DEBUG_FRAME, ".debug_frame"))
_SOURCE_HEADER = Path(__file__).resolve().parents[2] / "bpf" / "unwind.h"
_SHIPPED_HEADER = Path(__file__).resolve().parent / "bpf" / "unwind.h"


class CfiError(MemwatcherError):
    """An object's call-frame information could not be compiled.

    ``detail`` is the compiler's own message (not an x86-64 ELF object, a
    truncated file, a corrupt section, code above 4 GiB, ...).
    """

    def __init__(self, source: str, detail: str) -> None:
        self.source = source
        self.detail = detail
        super().__init__(f"{source}: {detail}")


@dataclass(frozen=True, eq=False)
class CfiTable:
    """The unwind rows of one ELF object.

    ``rows`` is a read-only structured array with :func:`row_dtype`, sorted by
    ``pc`` (ELF virtual addresses). ``sections`` names the CFI sections that
    were read. ``fde_count`` counts the FDEs that gave rows; ``skipped_fdes``
    those dropped for overlapping another FDE, an unsupported pointer encoding
    or opcode, or malformed contents (``.debug_frame`` FDEs that ``.eh_frame``
    covers entirely are in neither count). ``low_pc``/``high_pc`` bound the
    covered addresses (``high_pc`` exclusive; both 0 for an empty table).
    """

    rows: np.ndarray
    sections: tuple[str, ...]
    fde_count: int
    skipped_fdes: int
    low_pc: int
    high_pc: int


def header_path() -> Path:
    """Path of ``unwind.h``: the repository's in a source checkout, else the installed copy."""
    return _SOURCE_HEADER if _SOURCE_HEADER.is_file() else _SHIPPED_HEADER


@cache
def row_dtype() -> np.dtype:
    """numpy dtype of ``struct unwind_row``, checked against the compiled extension's layout."""
    dtype = load_header(header_path()).unwind_row
    same = dtype.itemsize == ffi.sizeof("struct unwind_row") and all(
        dtype.fields[name][1] == ffi.offsetof("struct unwind_row", name) for name in dtype.names
    )
    if not same:
        raise CfiError(str(header_path()), "differs from the header memwatcher._cfi was built with: rebuild it")
    return dtype


def compile_cfi(source: str | os.PathLike[str] | os.PathLike[bytes] | bytes | int) -> CfiTable:
    """Compile the CFI of an ELF object given by path or by an open file descriptor.

    A descriptor (for example of ``/proc/PID/map_files/...``) is read with
    ``pread`` and left open, its file offset untouched. Raises :class:`CfiError`.
    """
    res = ffi.new("struct cfi_result *")
    if isinstance(source, int) and not isinstance(source, bool):
        name = f"fd {source}"
        rc = lib.cfi_compile_fd(source, res)
    else:
        path = os.fspath(source)
        name = os.fsdecode(path)
        rc = lib.cfi_compile_path(os.fsencode(path), res)
    if rc != 0:
        raise CfiError(name, ffi.string(res.error).decode(errors="replace"))
    dtype = row_dtype()
    try:
        if res.nrows:
            rows = np.frombuffer(ffi.buffer(res.rows, res.nrows * dtype.itemsize), dtype=dtype).copy()
        else:
            rows = np.empty(0, dtype=dtype)
        sections = tuple(label for bit, label in _SECTIONS if res.sections & bit)
        table = CfiTable(
            rows=rows,
            sections=sections,
            fde_count=res.fde_count,
            skipped_fdes=res.skipped_fdes,
            low_pc=res.low_pc,
            high_pc=res.high_pc,
        )
    finally:
        lib.cfi_result_free(res)
    rows.flags.writeable = False
    return table


def lookup(table: CfiTable, pc: int) -> np.void | None:
    """The row in force at ``pc`` (an ELF virtual address), or None where no FDE covers it."""
    if not 0 <= pc <= 0xFFFFFFFF or len(table.rows) == 0:
        return None
    i = int(np.searchsorted(table.rows["pc"], np.uint32(pc), side="right")) - 1
    if i < 0 or table.rows[i]["cfa_rule"] == CFA_NONE:
        return None
    return table.rows[i]
