"""libdwfl (elfutils libdw.so.1) back end, through cffi in ABI mode.

Each distinct ELF file gets its own ``Dwfl`` session holding one module
reported at bias 0, so lookups take link-time addresses and every process
mapping the file shares it. Separate debug files are found by libdwfl itself
(build-id under the debug directories, then ``.gnu_debuglink``); debuginfod is
disabled by removing ``DEBUGINFOD_URLS`` before libdw is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ._symtab import SymbolTable, wanted
from ._types import DebugFile, Lookup, SourceFrame, innermost_range

_CDEF = """
typedef uint64_t Dwarf_Addr;
typedef uint64_t Dwarf_Word;
typedef struct Dwfl Dwfl;
typedef struct Dwfl_Module Dwfl_Module;
typedef struct Dwfl_Line Dwfl_Line;
typedef struct Dwarf_Files_s Dwarf_Files;
typedef struct { void *addr; void *cu; void *abbrev; long int padding__; } Dwarf_Die;
typedef struct { unsigned int code; unsigned int form; unsigned char *valp; void *cu; } Dwarf_Attribute;
typedef struct {
    uint32_t st_name; unsigned char st_info; unsigned char st_other; uint16_t st_shndx;
    uint64_t st_value; uint64_t st_size;
} GElf_Sym;
typedef int (*find_elf_fn)(Dwfl_Module *, void **, const char *, Dwarf_Addr, char **, void **);
typedef int (*find_debuginfo_fn)(Dwfl_Module *, void **, const char *, Dwarf_Addr, const char *,
                                 const char *, uint32_t, char **);
typedef struct {
    find_elf_fn find_elf;
    find_debuginfo_fn find_debuginfo;
    void *section_address;
    char **debuginfo_path;
} Dwfl_Callbacks;

int dwfl_build_id_find_elf(Dwfl_Module *, void **, const char *, Dwarf_Addr, char **, void **);
int dwfl_standard_find_debuginfo(Dwfl_Module *, void **, const char *, Dwarf_Addr, const char *,
                                 const char *, uint32_t, char **);
Dwfl *dwfl_begin(const Dwfl_Callbacks *);
void dwfl_end(Dwfl *);
int dwfl_errno(void);
const char *dwfl_errmsg(int);
void dwfl_report_begin(Dwfl *);
Dwfl_Module *dwfl_report_elf(Dwfl *, const char *, const char *, int, Dwarf_Addr, bool);
int dwfl_report_end(Dwfl *, void *, void *);
const char *dwfl_module_addrinfo(Dwfl_Module *, Dwarf_Addr, uint64_t *, GElf_Sym *, uint32_t *, void **,
                                 Dwarf_Addr *);
Dwarf_Die *dwfl_module_addrdie(Dwfl_Module *, Dwarf_Addr, Dwarf_Addr *);
Dwfl_Line *dwfl_module_getsrc(Dwfl_Module *, Dwarf_Addr);
const char *dwfl_lineinfo(Dwfl_Line *, Dwarf_Addr *, int *, int *, Dwarf_Word *, Dwarf_Word *);
int dwarf_child(Dwarf_Die *, Dwarf_Die *);
int dwarf_siblingof(Dwarf_Die *, Dwarf_Die *);
int dwarf_haspc(Dwarf_Die *, Dwarf_Addr);
uint64_t dwarf_dieoffset(Dwarf_Die *);
ptrdiff_t dwarf_ranges(Dwarf_Die *, ptrdiff_t, Dwarf_Addr *, Dwarf_Addr *, Dwarf_Addr *);
int dwfl_module_getsymtab(Dwfl_Module *);
const char *dwfl_module_getsym_info(Dwfl_Module *, int, GElf_Sym *, uint64_t *, uint32_t *, void **, Dwarf_Addr *);
int dwarf_tag(Dwarf_Die *);
Dwarf_Attribute *dwarf_attr(Dwarf_Die *, unsigned int, Dwarf_Attribute *);
Dwarf_Attribute *dwarf_attr_integrate(Dwarf_Die *, unsigned int, Dwarf_Attribute *);
const char *dwarf_formstring(Dwarf_Attribute *);
int dwarf_formudata(Dwarf_Attribute *, Dwarf_Word *);
int dwarf_getsrcfiles(Dwarf_Die *, Dwarf_Files **, size_t *);
const char *dwarf_filesrc(Dwarf_Files *, size_t, Dwarf_Word *, Dwarf_Word *);
"""

_DW_TAG_LEXICAL_BLOCK = 0x0B
_DW_TAG_INLINED_SUBROUTINE = 0x1D
_DW_TAG_SUBPROGRAM = 0x2E
_DW_TAG_NAMESPACE = 0x39
_DW_AT_NAME = 0x03
_DW_AT_CALL_FILE = 0x58
_DW_AT_CALL_LINE = 0x59
_DW_AT_LINKAGE_NAME = 0x6E
_DW_AT_MIPS_LINKAGE_NAME = 0x2007

_ffi: Any = None  # cffi.FFI, made on first use: importing cffi and parsing _CDEF cost ~30 ms
_lib = None


def _load():
    """dlopen libdw once; OSError when it is not installed."""
    global _lib, _ffi
    if _ffi is None:
        import cffi

        ffi = cffi.FFI()
        ffi.cdef(_CDEF)
        _ffi = ffi
    if _lib is None:
        # libdw's debuginfod client reads this when libdw is loaded: never go to the network.
        os.environ.pop("DEBUGINFOD_URLS", None)
        _lib = _ffi.dlopen("libdw.so.1")
    return _lib


def available() -> bool:
    try:
        _load()
    except OSError:
        return False
    return True


def _string(p) -> str | None:
    return None if p == _ffi.NULL else _ffi.string(p).decode(errors="replace")


class DwflBackend:
    """Factory of per-file libdwfl sessions sharing one set of callbacks."""

    name = "libdw"

    def __init__(self, debuginfo_dirs: Sequence[str] | None = None) -> None:
        lib = _load()
        self._keep = []
        cb = _ffi.new("Dwfl_Callbacks *")
        cb.find_elf = _ffi.addressof(lib, "dwfl_build_id_find_elf")
        if debuginfo_dirs is None or debuginfo_dirs:
            cb.find_debuginfo = _ffi.addressof(lib, "dwfl_standard_find_debuginfo")
            if debuginfo_dirs is not None:
                # Empty element: next to the file; ".debug": its .debug subdirectory.
                path = _ffi.new("char[]", ":".join(["", ".debug", *debuginfo_dirs]).encode())
                cb.debuginfo_path = self._keep_alive(_ffi.new("char **", path), path)
        else:
            cb.find_debuginfo = self._keep_alive(_ffi.callback("find_debuginfo_fn", _no_debuginfo))
        self.callbacks = cb

    def _keep_alive(self, obj, *others):
        self._keep.extend((obj, *others))
        return obj

    def open(self, fd: int, name: str, debuglink_base: str, build_id: str | None) -> DebugFile:
        return DwflFile(self, fd, name, debuglink_base)


def _no_debuginfo(mod, userdata, modname, base, file_name, debuglink, crc, out) -> int:
    return -1


class DwflFile:
    """One ELF file in its own Dwfl session, module at bias 0."""

    def __init__(self, backend: DwflBackend, fd: int, name: str, debuglink_base: str) -> None:
        self._lib = lib = _load()
        self._backend = backend  # the callbacks struct must outlive the session
        self._dwfl = lib.dwfl_begin(backend.callbacks)
        if self._dwfl == _ffi.NULL:
            raise OSError(f"dwfl_begin: {_dwfl_error()}")
        lib.dwfl_report_begin(self._dwfl)
        own_fd = os.dup(fd)
        self._mod = lib.dwfl_report_elf(self._dwfl, name.encode(), debuglink_base.encode(), own_fd, 0, True)
        if self._mod == _ffi.NULL:
            message = _dwfl_error()
            os.close(own_fd)
            self.close()
            raise OSError(f"dwfl_report_elf {name}: {message}")
        lib.dwfl_report_end(self._dwfl, _ffi.NULL, _ffi.NULL)
        self._off = _ffi.new("uint64_t *")
        self._sym = _ffi.new("GElf_Sym *")
        self._bias = _ffi.new("Dwarf_Addr *")
        self._base = _ffi.new("Dwarf_Addr *")
        self._low = _ffi.new("Dwarf_Addr *")
        self._high = _ffi.new("Dwarf_Addr *")
        self._symbols: SymbolTable | None = None
        self._cu_index: dict[int, tuple[list[int], list[tuple[int, int, _Scope]]]] = {}
        self._attr = _ffi.new("Dwarf_Attribute *")
        self._word = _ffi.new("Dwarf_Word *")
        self._line_no = _ffi.new("int *")
        self._files = _ffi.new("Dwarf_Files **")
        self._nfiles = _ffi.new("size_t *")

    def close(self) -> None:
        # Cleared before the C call: a signal handler raising right after it must not
        # leave the session for a second close to end again (as libbpf.Link.close).
        dwfl, self._dwfl = self._dwfl, None
        if dwfl is not None:
            self._lib.dwfl_end(dwfl)

    def lookup(self, elf_address: int) -> Lookup:
        if self._symbols is None:
            self._symbols = self._read_symbols()
        hit = self._symbols.lookup(elf_address)
        name, start = hit if hit is not None else (None, None)
        return Lookup(name, start, self._frames(elf_address))

    def _read_symbols(self) -> SymbolTable:
        """The module's symbol table (libdwfl picks .symtab, the debug file's, or .dynsym)."""
        lib = self._lib
        count = lib.dwfl_module_getsymtab(self._mod)
        sym = self._sym
        value = _ffi.new("uint64_t *")
        shndx = _ffi.new("uint32_t *")
        symbols = []
        for i in range(1, max(count, 0)):
            name = lib.dwfl_module_getsym_info(self._mod, i, sym, value, shndx, _ffi.NULL, _ffi.NULL)
            if name == _ffi.NULL:
                continue
            info = sym.st_info
            text = _ffi.string(name).decode(errors="replace")
            if wanted(info & 0xF, shndx[0], text):
                symbols.append((value[0], sym.st_size, info >> 4, text))
        return SymbolTable(symbols)

    def _frames(self, elf_address: int) -> tuple[SourceFrame, ...]:
        lib = self._lib
        cudie = lib.dwfl_module_addrdie(self._mod, elf_address, self._bias)
        if cudie == _ffi.NULL:
            return ()
        pc = elf_address - self._bias[0]
        file = line_no = None
        line = lib.dwfl_module_getsrc(self._mod, elf_address)
        if line != _ffi.NULL:
            file = _string(lib.dwfl_lineinfo(line, _ffi.NULL, self._line_no, _ffi.NULL, _ffi.NULL, _ffi.NULL))
            line_no = self._line_no[0] or None
        chain = self._scope_chain(cudie, pc)
        if not chain:
            return (SourceFrame(None, file, line_no, False),) if file is not None else ()
        frames = []
        for node in reversed(chain):
            frames.append(SourceFrame(node.name, file, line_no, node.inlined))
            if node.inlined:
                file, line_no = node.call_file, node.call_line
        return tuple(frames)

    def _scope_chain(self, cudie, pc: int) -> list[_Scope]:
        """[subprogram, inlined..., innermost inlined] containing pc, from the per-CU index."""
        key = int(_ffi.cast("uintptr_t", cudie.addr))
        index = self._cu_index.get(key)
        if index is None:
            index = self._cu_index[key] = self._index_cu(cudie)
        scope = innermost_range(*index, pc)
        if scope is None:
            return []
        chain = [scope]
        current = scope
        haspc = self._lib.dwarf_haspc
        while True:
            for child in self._children(current, cudie):
                if haspc(child.die, pc) == 1:
                    if child.tag != _DW_TAG_LEXICAL_BLOCK:
                        chain.append(child)
                    current = child
                    break
            else:
                return chain

    def _index_cu(self, cudie) -> tuple[list[int], list[tuple[int, int, _Scope]]]:
        lib = self._lib
        entries = []
        pending = [_ffi.new("Dwarf_Die *", cudie[0])]
        while pending:
            parent = pending.pop()
            die = _ffi.new("Dwarf_Die *")
            if lib.dwarf_child(parent, die) != 0:
                continue
            while True:
                tag = lib.dwarf_tag(die)
                if tag == _DW_TAG_SUBPROGRAM:
                    ranges = self._ranges(die)
                    if ranges:
                        scope = _Scope(self, _ffi.new("Dwarf_Die *", die[0]), tag, cudie)
                        entries.extend((low, high, scope) for low, high in ranges)
                elif tag == _DW_TAG_NAMESPACE:
                    pending.append(_ffi.new("Dwarf_Die *", die[0]))
                if lib.dwarf_siblingof(die, die) != 0:
                    break
        entries.sort(key=lambda e: (e[0], e[1]))
        return [e[0] for e in entries], entries

    def _children(self, scope: _Scope, cudie) -> list[_Scope]:
        """The scope's inlined-subroutine and lexical-block children, listed once."""
        if scope.children is None:
            lib = self._lib
            children = []
            die = _ffi.new("Dwarf_Die *")
            if lib.dwarf_child(scope.die, die) == 0:
                while True:
                    tag = lib.dwarf_tag(die)
                    if tag == _DW_TAG_INLINED_SUBROUTINE or tag == _DW_TAG_LEXICAL_BLOCK:
                        children.append(_Scope(self, _ffi.new("Dwarf_Die *", die[0]), tag, cudie))
                    if lib.dwarf_siblingof(die, die) != 0:
                        break
            scope.children = children
        return scope.children

    def _ranges(self, die) -> list[tuple[int, int]]:
        lib = self._lib
        out = []
        offset = 0
        while True:
            offset = lib.dwarf_ranges(die, offset, self._base, self._low, self._high)
            if offset <= 0:
                return out
            if self._high[0] > self._low[0]:
                out.append((self._low[0], self._high[0]))

    def _die_name(self, die) -> str | None:
        lib = self._lib
        for at in (_DW_AT_LINKAGE_NAME, _DW_AT_MIPS_LINKAGE_NAME, _DW_AT_NAME):
            attr = lib.dwarf_attr_integrate(die, at, self._attr)
            if attr != _ffi.NULL:
                name = _string(lib.dwarf_formstring(attr))
                if name:
                    return name
        return None

    def _call_site(self, cudie, die) -> tuple[str | None, int | None]:
        lib = self._lib
        file = line_no = None
        if lib.dwarf_attr(die, _DW_AT_CALL_LINE, self._attr) != _ffi.NULL:
            if lib.dwarf_formudata(self._attr, self._word) == 0:
                line_no = self._word[0] or None
        if lib.dwarf_attr(die, _DW_AT_CALL_FILE, self._attr) != _ffi.NULL:
            if lib.dwarf_formudata(self._attr, self._word) == 0:
                index = self._word[0]
                if lib.dwarf_getsrcfiles(cudie, self._files, self._nfiles) == 0 and index < self._nfiles[0]:
                    file = _string(lib.dwarf_filesrc(self._files[0], index, _ffi.NULL, _ffi.NULL))
        return file, line_no


def _dwfl_error() -> str:
    lib = _load()
    return _string(lib.dwfl_errmsg(-1)) or "unknown libdwfl error"


class _Scope:
    """A subprogram, inlined subroutine or lexical block DIE, its name and call site read on demand."""

    __slots__ = ("_call", "_file", "_name", "children", "cudie", "die", "tag")

    def __init__(self, file: DwflFile, die, tag: int, cudie) -> None:
        self._file = file
        self.die = die
        self.tag = tag
        self.cudie = cudie
        self.children: list[_Scope] | None = None
        self._name: str | bool | None = False
        self._call: tuple[str | None, int | None] | None = None

    @property
    def inlined(self) -> bool:
        return self.tag == _DW_TAG_INLINED_SUBROUTINE

    @property
    def name(self) -> str | None:
        if self._name is False:
            self._name = self._file._die_name(self.die)
        return self._name

    @property
    def call_file(self) -> str | None:
        return self._call_site()[0]

    @property
    def call_line(self) -> int | None:
        return self._call_site()[1]

    def _call_site(self) -> tuple[str | None, int | None]:
        if self._call is None:
            self._call = self._file._call_site(self.cudie, self.die)
        return self._call
