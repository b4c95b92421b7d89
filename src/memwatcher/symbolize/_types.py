"""Plain result types shared by the back ends."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol


class SourceFrame(NamedTuple):
    """One function level at an address, from DWARF: name, source position, inlined or not."""

    function: str | None
    file: str | None
    line: int | None
    inlined: bool


class Lookup(NamedTuple):
    """What one ELF file says about one link-time address.

    ``symbol``/``symbol_start`` come from .symtab/.dynsym (only a symbol whose
    range contains the address); ``frames`` from DWARF, innermost first, empty
    when the file has no debug information for the address.
    """

    symbol: str | None
    symbol_start: int | None
    frames: tuple[SourceFrame, ...]


class DebugFile(Protocol):
    def lookup(self, elf_address: int) -> Lookup: ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: str

    def open(self, fd: int, name: str, debuglink_base: str, build_id: str | None) -> DebugFile:
        """Open the ELF file at ``fd`` (the caller keeps ``fd``; dup it to keep it)."""
        ...


def innermost_range(starts: Sequence[int], entries: Sequence[tuple[int, int, Any]], pc: int) -> Any | None:
    """The payload of the ``(low, high, payload)`` entry (sorted by low) whose range holds ``pc``.

    Subprogram ranges rarely overlap (aliases, GNU nested functions), so only
    a few entries before the bisection point are looked at.
    """
    i = bisect.bisect_right(starts, pc) - 1
    for j in range(i, max(i - 8, -1), -1):
        low, high, payload = entries[j]
        if low <= pc < high:
            return payload
    return None
