"""The little of an ELF file the symbolizer and the uprobes need before any back end opens it.

Program headers (to compute a mapping's load bias), the GNU build-id note
(the cache key, shared by every process that maps the same file) and the
file offsets of named functions (where a uprobe goes), read with
``os.pread`` from an open descriptor. 32/64-bit and either byte order.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass

_PT_LOAD = 1
_PT_NOTE = 4
_NT_GNU_BUILD_ID = 3
_SHT_SYMTAB = 2
_SHT_DYNSYM = 11
_STT_FUNC = 2
_STB_GLOBAL, _STB_WEAK = 1, 2


class NotElfError(ValueError):
    """The file is not an ELF object (or is truncated)."""


@dataclass(frozen=True)
class Segment:
    """A PT_LOAD segment: where its bytes are in the file and in memory."""

    file_offset: int
    vaddr: int
    file_size: int


@dataclass(frozen=True)
class ElfLayout:
    elf_type: int
    segments: tuple[Segment, ...]
    build_id: str | None

    def load_bias(self, map_start: int, map_file_offset: int, map_size_bytes: int) -> int | None:
        """Load bias (runtime address minus link-time address) from one mapping of the file.

        The mapping of ``map_size_bytes`` at ``map_start`` shows the file from
        ``map_file_offset``; a PT_LOAD segment whose file bytes start inside it
        ties a file offset to both a link-time and a runtime address.
        """
        for seg in self.segments:
            if map_file_offset <= seg.file_offset < map_file_offset + map_size_bytes:
                return map_start + (seg.file_offset - map_file_offset) - seg.vaddr
        return None


def _elf_header(fd: int) -> tuple[bytes, bool, str]:
    """(the ELF header's bytes, whether the file is 64-bit, its struct byte order)."""
    ident = os.pread(fd, 64, 0)
    if len(ident) < 52 or ident[:4] != b"\x7fELF":
        raise NotElfError("not an ELF file")
    return ident, ident[4] == 2, "<" if ident[5] == 1 else ">"


def read_layout(fd: int) -> ElfLayout:
    """Parse the ELF header, PT_LOAD segments and build-id note of the file open at ``fd``."""
    ident, is64, order = _elf_header(fd)
    if is64:
        (elf_type,) = struct.unpack_from(order + "H", ident, 16)
        (phoff,) = struct.unpack_from(order + "Q", ident, 32)
        phentsize, phnum = struct.unpack_from(order + "HH", ident, 54)
        phdr = struct.Struct(order + "IIQQQQQQ")  # type flags offset vaddr paddr filesz memsz align
    else:
        (elf_type,) = struct.unpack_from(order + "H", ident, 16)
        (phoff,) = struct.unpack_from(order + "I", ident, 28)
        phentsize, phnum = struct.unpack_from(order + "HH", ident, 42)
        phdr = struct.Struct(order + "IIIIIIII")  # type offset vaddr paddr filesz memsz flags align
    table = os.pread(fd, phentsize * phnum, phoff)
    if phentsize < phdr.size or len(table) < phentsize * phnum:
        raise NotElfError("truncated program headers")
    segments = []
    notes = []
    for i in range(phnum):
        fields = phdr.unpack_from(table, i * phentsize)
        if is64:
            p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = fields
        else:
            p_type, p_offset, p_vaddr, _, p_filesz, _, _, _ = fields
        if p_type == _PT_LOAD:
            segments.append(Segment(p_offset, p_vaddr, p_filesz))
        elif p_type == _PT_NOTE:
            notes.append((p_offset, p_filesz))
    build_id = None
    for offset, size in notes:
        build_id = _find_build_id(os.pread(fd, min(size, 1 << 16), offset), order)
        if build_id:
            break
    return ElfLayout(elf_type, tuple(segments), build_id)


def _find_build_id(data: bytes, order: str) -> str | None:
    pos = 0
    header = struct.Struct(order + "III")
    while pos + header.size <= len(data):
        namesz, descsz, note_type = header.unpack_from(data, pos)
        pos += header.size
        name = data[pos : pos + namesz]
        pos += (namesz + 3) & ~3
        desc = data[pos : pos + descsz]
        pos += (descsz + 3) & ~3
        if note_type == _NT_GNU_BUILD_ID and name.rstrip(b"\0") == b"GNU" and desc:
            return desc.hex()
    return None


def function_offsets(fd: int, names: Iterable[str]) -> dict[str, int]:
    """File offsets of the global or weak functions ``names`` defined in the file open at ``fd``.

    What a uprobe is attached at. ``.symtab`` is read before ``.dynsym``, and
    a global definition wins over a weak one; names not defined are absent.
    """
    wanted = set(names)
    ident, is64, order = _elf_header(fd)
    if is64:
        (shoff,) = struct.unpack_from(order + "Q", ident, 40)
        shentsize, shnum = struct.unpack_from(order + "HH", ident, 58)
        shdr = struct.Struct(order + "IIQQQQIIQQ")  # name type flags addr offset size link info align entsize
        sym = struct.Struct(order + "IBBHQQ")  # name info other shndx value size
    else:
        (shoff,) = struct.unpack_from(order + "I", ident, 32)
        shentsize, shnum = struct.unpack_from(order + "HH", ident, 46)
        shdr = struct.Struct(order + "IIIIIIIIII")
        sym = struct.Struct(order + "IIIBBH")  # name value size info other shndx
    table = os.pread(fd, shentsize * shnum, shoff)
    if shentsize < shdr.size or len(table) < shentsize * shnum:
        raise NotElfError("truncated section headers")
    sections = [shdr.unpack_from(table, i * shentsize) for i in range(shnum)]
    found: dict[str, tuple[int, int]] = {}  # name -> (binding, address)
    for kind in (_SHT_SYMTAB, _SHT_DYNSYM):
        for section in sections:
            if section[1] != kind or section[6] >= shnum:
                continue
            strings = sections[section[6]]
            names_blob = os.pread(fd, strings[5], strings[4])
            data = os.pread(fd, section[5], section[4])
            for fields in sym.iter_unpack(data[: len(data) - len(data) % sym.size]):
                if is64:
                    name_off, info, _, shndx, value, _ = fields
                else:
                    name_off, value, _, info, _, shndx = fields
                bind = info >> 4
                if (info & 0xF) != _STT_FUNC or shndx == 0 or bind not in (_STB_GLOBAL, _STB_WEAK):
                    continue
                end = names_blob.find(b"\0", name_off)
                name = names_blob[name_off:end].decode(errors="replace").split("@", 1)[0]
                if name in wanted and (name not in found or (bind == _STB_GLOBAL and found[name][0] == _STB_WEAK)):
                    found[name] = (bind, value)
    layout = read_layout(fd)
    offsets = {}
    for name, (_, address) in found.items():
        for seg in layout.segments:
            if seg.vaddr <= address < seg.vaddr + seg.file_size:
                offsets[name] = address - seg.vaddr + seg.file_offset
                break
    return offsets
