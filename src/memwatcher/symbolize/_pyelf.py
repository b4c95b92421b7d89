"""pyelftools back end: pure Python, used when libdw.so.1 is missing or on request.

Mirrors the libdwfl back end's choices so both give the same answers: DWARF
from the file itself, else a separate debug file found by build-id
(``DIR/.build-id/xx/rest.debug``) or ``.gnu_debuglink`` (next to the file, in
its ``.debug`` subdirectory, under ``DIR`` + the file's directory); symbols
from .symtab, else the debug file's .symtab, else .dynsym; the line row is the
last one at or below the address; subprogram and inline ranges are indexed
per CU and bisected.
"""

from __future__ import annotations

import bisect
import os
import struct
from collections.abc import Sequence

from elftools.common.exceptions import ELFError
from elftools.dwarf.ranges import BaseAddressEntry
from elftools.elf.elffile import ELFFile

from ._symtab import STB_GLOBAL, STB_LOCAL, STB_WEAK, SymbolTable, wanted
from ._types import DebugFile, Lookup, SourceFrame, innermost_range

_DEFAULT_DEBUG_DIRS = ("/usr/lib/debug",)
_BINDS = {"STB_LOCAL": STB_LOCAL, "STB_GLOBAL": STB_GLOBAL, "STB_WEAK": STB_WEAK}
_TYPES = {"STT_NOTYPE": 0, "STT_FUNC": 2, "STT_GNU_IFUNC": 10, "STT_LOOS": 10}
_NAME_ATTRS = ("DW_AT_linkage_name", "DW_AT_MIPS_linkage_name", "DW_AT_name")


class PyelftoolsBackend:
    name = "pyelftools"

    def __init__(self, debuginfo_dirs: Sequence[str] | None = None) -> None:
        self._dirs = tuple(_DEFAULT_DEBUG_DIRS if debuginfo_dirs is None else debuginfo_dirs)
        self._separate = debuginfo_dirs is None or bool(debuginfo_dirs)

    def open(self, fd: int, name: str, debuglink_base: str, build_id: str | None) -> DebugFile:
        return PyelftoolsFile(os.fdopen(os.dup(fd), "rb"), debuglink_base, build_id, self._dirs, self._separate)


def _has_debug_info(elf: ELFFile) -> bool:
    # ELFFile.has_dwarf_info() also counts .eh_frame, which carries no names or lines.
    return elf.get_section_by_name(".debug_info") is not None or elf.get_section_by_name(".zdebug_info") is not None


def _build_id_of(elf: ELFFile) -> str | None:
    for section in elf.iter_sections():
        if section["sh_type"] == "SHT_NOTE":
            for note in section.iter_notes():
                if note["n_type"] == "NT_GNU_BUILD_ID":
                    return note["n_desc"]
    return None


class PyelftoolsFile:
    def __init__(self, f, debuglink_base: str, build_id: str | None, dirs: tuple[str, ...], separate: bool) -> None:
        self._files = [f]
        self._main = ELFFile(f)
        self._debug: ELFFile | None = None
        if separate and not _has_debug_info(self._main):
            self._debug = self._find_debug_file(debuglink_base, build_id, dirs)
        dwarf_elf = self._main if _has_debug_info(self._main) else self._debug
        self._dwarf = dwarf_elf.get_dwarf_info() if dwarf_elf is not None and _has_debug_info(dwarf_elf) else None
        self._aranges = None
        self._cu_ranges: tuple[list[int], list[tuple[int, int, int]]] | None = None
        self._cus: dict[int, _CU] = {}
        self._symbols: SymbolTable | None = None

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files.clear()

    # ---------------------------------------------------------------- files

    def _open_elf(self, path: str, build_id: str | None) -> ELFFile | None:
        try:
            f = open(path, "rb")
        except OSError:
            return None
        try:
            elf = ELFFile(f)
            if build_id is None or _build_id_of(elf) == build_id:
                self._files.append(f)
                return elf
        except (ELFError, struct.error):
            pass
        f.close()
        return None

    def _find_debug_file(self, base: str, build_id: str | None, dirs: tuple[str, ...]) -> ELFFile | None:
        candidates = []
        if build_id:
            candidates += [f"{d}/.build-id/{build_id[:2]}/{build_id[2:]}.debug" for d in dirs]
        link = self._main.get_section_by_name(".gnu_debuglink")
        if link is not None:
            name = link.data().split(b"\0", 1)[0].decode(errors="replace")
            here = os.path.dirname(base)
            candidates += [f"{here}/{name}", f"{here}/.debug/{name}"] + [f"{d}{here}/{name}" for d in dirs]
        for path in candidates:
            elf = self._open_elf(path, build_id)
            if elf is not None:
                return elf
        return None

    # ---------------------------------------------------------------- symbols

    def _read_symbols(self) -> SymbolTable:
        table = self._main.get_section_by_name(".symtab")
        if table is None and self._debug is not None:
            table = self._debug.get_section_by_name(".symtab")
        if table is None:
            table = self._main.get_section_by_name(".dynsym")
        symbols = []
        if table is not None:
            for sym in table.iter_symbols():
                shndx = sym["st_shndx"]
                st_type = _TYPES.get(sym["st_info"]["type"], -1)
                if wanted(st_type, 0 if shndx == "SHN_UNDEF" else 1, sym.name):
                    symbols.append((sym["st_value"], sym["st_size"], _BINDS.get(sym["st_info"]["bind"], 3), sym.name))
        return SymbolTable(symbols)

    # ---------------------------------------------------------------- lookups

    def lookup(self, elf_address: int) -> Lookup:
        if self._symbols is None:
            self._symbols = self._read_symbols()
        hit = self._symbols.lookup(elf_address)
        name, start = hit if hit is not None else (None, None)
        return Lookup(name, start, self._frames(elf_address))

    def _cu_at(self, pc: int) -> _CU | None:
        offset = None
        if self._aranges is None and self._cu_ranges is None:
            self._aranges = self._dwarf.get_aranges() or False
            if not self._aranges:
                self._cu_ranges = self._index_cu_ranges()
        if self._aranges:
            offset = self._aranges.cu_offset_at_addr(pc)
        if offset is None and self._cu_ranges is not None:
            starts, entries = self._cu_ranges
            i = bisect.bisect_right(starts, pc) - 1
            if i >= 0 and pc < entries[i][1]:
                offset = entries[i][2]
        if offset is None:
            return None
        cu = self._cus.get(offset)
        if cu is None:
            cu = self._cus[offset] = _CU(self._dwarf, self._dwarf.get_CU_at(offset))
        return cu

    def _index_cu_ranges(self) -> tuple[list[int], list[tuple[int, int, int]]]:
        entries = []
        for cu in self._dwarf.iter_CUs():
            top = cu.get_top_DIE()
            entries += [(low, high, cu.cu_offset) for low, high in _die_ranges(self._dwarf, top, None)]
        entries.sort()
        return [e[0] for e in entries], entries

    def _frames(self, pc: int) -> tuple[SourceFrame, ...]:
        if self._dwarf is None:
            return ()
        cu = self._cu_at(pc)
        if cu is None:
            return ()
        file, line_no = cu.line_at(pc)
        chain = cu.scope_chain(pc)
        if not chain:
            return (SourceFrame(None, file, line_no, False),) if file is not None else ()
        frames = []
        for scope in reversed(chain):
            inlined = scope.tag == "DW_TAG_inlined_subroutine"
            frames.append(SourceFrame(_die_name(scope), file, line_no, inlined))
            if inlined:
                call_file = scope.attributes.get("DW_AT_call_file")
                call_line = scope.attributes.get("DW_AT_call_line")
                file = cu.file_name(call_file.value) if call_file is not None else None
                line_no = (call_line.value or None) if call_line is not None else None
        return tuple(frames)


def _die_name(die) -> str | None:
    """Linkage name, else name, following abstract_origin / specification like dwarf_attr_integrate."""
    seen = 0
    while die is not None and seen < 8:
        for attr in _NAME_ATTRS:
            if attr in die.attributes:
                value = die.attributes[attr].value
                return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        for ref in ("DW_AT_abstract_origin", "DW_AT_specification"):
            if ref in die.attributes:
                die = die.get_DIE_from_attribute(ref)
                break
        else:
            return None
        seen += 1
    return None


def _die_ranges(dwarf, die, cu_base: int | None) -> list[tuple[int, int]]:
    attrs = die.attributes
    if "DW_AT_ranges" in attrs:
        base = cu_base if cu_base is not None else attrs["DW_AT_low_pc"].value if "DW_AT_low_pc" in attrs else 0
        out = []
        for entry in dwarf.range_lists().get_range_list_at_offset(attrs["DW_AT_ranges"].value, cu=die.cu):
            if isinstance(entry, BaseAddressEntry):
                base = entry.base_address
                continue
            low, high = entry.begin_offset, entry.end_offset
            if not getattr(entry, "is_absolute", False):
                low, high = low + base, high + base
            if high > low:
                out.append((low, high))
        return out
    if "DW_AT_low_pc" in attrs and "DW_AT_high_pc" in attrs:
        low = attrs["DW_AT_low_pc"].value
        high_attr = attrs["DW_AT_high_pc"]
        high = high_attr.value if high_attr.form == "DW_FORM_addr" else low + high_attr.value
        return [(low, high)] if high > low else []
    return []


class _CU:
    """One compile unit: its line rows and subprogram index, built on first use."""

    def __init__(self, dwarf, cu) -> None:
        self._dwarf = dwarf
        self._cu = cu
        top = cu.get_top_DIE()
        self._top = top
        self._base = top.attributes["DW_AT_low_pc"].value if "DW_AT_low_pc" in top.attributes else 0
        self._lines: tuple[list[int], list[tuple[int, int, bool]]] | None = None
        self._program = None
        self._file_names: dict[int, str | None] = {}
        self._subprograms: tuple[list[int], list] | None = None
        self._children: dict[int, list] = {}

    # ------------------------------------------------------------ lines

    def _line_rows(self) -> tuple[list[int], list[tuple[int, int, bool]]]:
        if self._lines is None:
            self._program = self._dwarf.line_program_for_CU(self._cu)
            rows = []
            if self._program is not None:
                sequence = 0
                for i, entry in enumerate(self._program.get_entries()):
                    state = entry.state
                    if state is None:
                        continue
                    # Sorted like libdw: by address, end-of-sequence rows first, then sequence and order.
                    rows.append((state.address, not state.end_sequence, sequence, i, state.file, state.line))
                    if state.end_sequence:
                        sequence += 1
            rows.sort()
            self._lines = ([r[0] for r in rows], [(r[4], r[5], not r[1]) for r in rows])
        return self._lines

    def line_at(self, pc: int) -> tuple[str | None, int | None]:
        addresses, rows = self._line_rows()
        i = bisect.bisect_right(addresses, pc) - 1
        if i < 0 or rows[i][2]:
            return None, None
        file_index, line, _ = rows[i]
        return self.file_name(file_index), line or None

    def file_name(self, index: int) -> str | None:
        if index in self._file_names:
            return self._file_names[index]
        self._line_rows()
        name = None
        header = self._program.header if self._program is not None else None
        if header is not None:
            v5 = header["version"] >= 5
            files = header["file_entry"]
            dirs = header["include_directory"]
            i = index if v5 else index - 1
            if 0 <= i < len(files):
                entry = files[i]
                name = _text(entry.name)
                if not name.startswith("/"):
                    d = entry.dir_index if v5 else entry.dir_index - 1
                    directory = _text(dirs[d]) if 0 <= d < len(dirs) else self._comp_dir() if d == -1 else None
                    if directory:
                        name = f"{directory}/{name}"
        self._file_names[index] = name
        return name

    def _comp_dir(self) -> str | None:
        attr = self._top.attributes.get("DW_AT_comp_dir")
        return _text(attr.value) if attr is not None else None

    # ------------------------------------------------------------ scopes

    def scope_chain(self, pc: int) -> list:
        if self._subprograms is None:
            entries = []
            pending = [self._top]
            while pending:
                for die in pending.pop().iter_children():
                    if die.tag == "DW_TAG_subprogram":
                        entries += [(low, high, die) for low, high in _die_ranges(self._dwarf, die, self._base)]
                    elif die.tag == "DW_TAG_namespace":
                        pending.append(die)
            entries.sort(key=lambda e: (e[0], e[1]))
            self._subprograms = ([e[0] for e in entries], entries)
        die = innermost_range(*self._subprograms, pc)
        if die is None:
            return []
        chain = [die]
        current = die
        while True:
            for low, high, child in self._scope_children(current):
                if low <= pc < high:
                    if child.tag != "DW_TAG_lexical_block":
                        chain.append(child)
                    current = child
                    break
            else:
                return chain

    def _scope_children(self, die) -> list:
        children = self._children.get(die.offset)
        if children is None:
            children = []
            for child in die.iter_children():
                if child.tag in ("DW_TAG_inlined_subroutine", "DW_TAG_lexical_block"):
                    children += [(low, high, child) for low, high in _die_ranges(self._dwarf, child, self._base)]
            self._children[die.offset] = children
        return children


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
