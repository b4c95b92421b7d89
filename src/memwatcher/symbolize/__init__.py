"""Addresses to function, file:line and inlined frames, for user space and the kernel.

One interface for every report::

    with Symbolizer() as sym:
        stacks = sym.symbolize_stack(pid, addresses)   # leaf first, then return addresses
        for line in format_stack(stacks):
            print(line)

``Symbolizer.symbolize(pid, addresses)`` returns, per address, a list of
:class:`Frame` (innermost first: inlined frames, then the function that
contains them). ``pid=None`` means kernel addresses (``/proc/kallsyms``).

Back ends for user space: ``"libdw"`` (elfutils libdwfl through cffi; the
default) and ``"pyelftools"`` (pure Python; chosen when libdw.so.1 is absent).
Both find separate debug files by build-id and ``.gnu_debuglink`` under
``/usr/lib/debug`` and never use the network. Results are cached per
(ELF file, address), files are opened once per Symbolizer and shared between
processes that map the same file. C++ and Rust function names are
demangled (``_demangle``); ``Frame.linkage_name`` keeps the mangled name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..elf import ElfLayout, NotElfError, read_layout
from ..errors import MemwatcherError, NoSuchProcessError
from ..procmaps import Module, ProcessMaps
from . import _dwfl
from ._demangle import demangle
from ._kallsyms import KernelSymbol, KernelSymbols, KernelSymbolsHidden
from ._types import Backend, DebugFile, Lookup

__all__ = [
    "BACKENDS",
    "Frame",
    "KernelSymbol",
    "KernelSymbols",
    "KernelSymbolsHidden",
    "SymbolizeError",
    "Symbolizer",
    "available_backends",
    "format_frame",
    "format_stack",
    "frame_label",
    "frame_name",
]

BACKENDS = ("libdw", "pyelftools")


class SymbolizeError(MemwatcherError):
    """Symbolization cannot proceed (unknown back end, unreadable kernel symbols...)."""


@dataclass(frozen=True)
class Frame:
    """One level of a symbolized address (several when code was inlined).

    ``address`` is the address as given (the same for every frame of it);
    ``module`` the mapped file's path (kernel: ``"vmlinux"`` or the module
    name), ``build_id`` its GNU build-id in hex; ``elf_address`` the address
    inside the ELF file (link-time, what ``addr2line -e`` takes).
    ``function`` is the DWARF name when debug information covers the address,
    else the ELF symbol; ``symbol`` and ``offset`` (bytes from the symbol's
    start to ``address``) are set on the outermost frame only. C++ and Rust
    names in ``function`` and ``symbol`` are demangled (``ns::f(int)``);
    ``linkage_name`` is the mangled name ``function`` was read from
    (``_ZN2ns1fEi``), None when it was not mangled (C, kernel). ``file`` and
    ``line``: for the innermost frame, where the instruction is; for an outer
    frame, where the call that was inlined is. ``inlined``: this function was
    inlined into the next frame.
    """

    address: int
    module: str | None = None
    build_id: str | None = None
    elf_address: int | None = None
    function: str | None = None
    symbol: str | None = None
    offset: int | None = None
    file: str | None = None
    line: int | None = None
    inlined: bool = False
    linkage_name: str | None = None


def available_backends() -> list[str]:
    """User-space back ends usable here, best first."""
    return [name for name in BACKENDS if name != "libdw" or _dwfl.available()]


def _make_backend(name: str | None, debuginfo_dirs: Sequence[str] | None) -> Backend:
    if name is None:
        name = available_backends()[0]
    if name == "libdw":
        if not _dwfl.available():
            raise SymbolizeError("symbolize: libdw.so.1 (elfutils) is not installed; use backend='pyelftools'")
        return _dwfl.DwflBackend(debuginfo_dirs)
    if name == "pyelftools":
        from ._pyelf import PyelftoolsBackend

        return PyelftoolsBackend(debuginfo_dirs)
    raise SymbolizeError(f"symbolize: unknown back end {name!r} (choose from {', '.join(BACKENDS)})")


class Symbolizer:
    """Symbolizes addresses of processes and of the kernel; reuse one per report.

    ``backend``: ``"libdw"``, ``"pyelftools"`` or None (the best available).
    ``debuginfo_dirs``: where separate debug files live (None: libdw's default
    ``/usr/lib/debug``, plus the file's directory and its ``.debug``); an empty
    sequence disables separate debug files. Call :meth:`close` (or use ``with``)
    to release the files.
    """

    def __init__(self, backend: str | None = None, debuginfo_dirs: Sequence[str] | None = None) -> None:
        self._backend = _make_backend(backend, debuginfo_dirs)
        self.backend = self._backend.name
        self._maps: dict[int, ProcessMaps] = {}
        self._layouts: dict[tuple[str, int, str], ElfLayout | None] = {}
        self._files: dict[object, DebugFile | None] = {}
        self._file_of_module: dict[tuple[str, int, str], object] = {}
        self._cache: dict[tuple[object, int], Lookup] = {}
        self._kernel: KernelSymbols | None = None

    def __enter__(self) -> Symbolizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for f in self._files.values():
            if f is not None:
                f.close()
        self._files.clear()
        self._cache.clear()

    def forget(self, pid: int) -> None:
        """Drop the memory map read for ``pid`` (it exited, or its pid was reused)."""
        self._maps.pop(pid, None)

    # ------------------------------------------------------------ public API

    def symbolize(self, pid: int | None, addresses: Iterable[int], return_addresses: bool = False) -> list[list[Frame]]:
        """Frames for each address, innermost first.

        ``pid`` None: kernel addresses. ``return_addresses``: the addresses are
        return addresses (looked up at ``address - 1``, the call instruction).
        Raises :class:`~memwatcher.errors.NoSuchProcessError` when the pid's memory map is unreadable.
        """
        addresses = list(addresses)
        flags = [return_addresses] * len(addresses)
        if pid is None:
            return [self._kernel_frames(a, r) for a, r in zip(addresses, flags)]
        return [self._user_frames(pid, a, r) for a, r in zip(addresses, flags)]

    def symbolize_stack(self, pid: int | None, addresses: Sequence[int]) -> list[list[Frame]]:
        """Like :meth:`symbolize` for a call stack: the first address is where execution
        was (looked up as is), the others are return addresses."""
        if pid is None:
            return [self._kernel_frames(a, i > 0) for i, a in enumerate(addresses)]
        return [self._user_frames(pid, a, i > 0) for i, a in enumerate(addresses)]

    def symbolize_elf(
        self, path: str, elf_addresses: Iterable[int], return_addresses: bool = False
    ) -> list[list[Frame]]:
        """Frames for link-time addresses of an ELF file (no process needed), as ``addr2line -e``.

        OSError when the file cannot be opened; ValueError when it is not ELF.
        """
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            layout, file_key = self._open_file(fd, path, path, ("path", st.st_dev, st.st_ino))
        finally:
            os.close(fd)
        if layout is None:
            raise NotElfError(f"{path}: not an ELF file")
        return [self._frames_at(file_key, path, layout.build_id, a, return_addresses, a) for a in elf_addresses]

    # ------------------------------------------------------------ user space

    def _process(self, pid: int, address: int) -> ProcessMaps:
        maps = self._maps.get(pid)
        # Re-read once when the address is unknown: the process may have mapped new files.
        if maps is None or maps.find(address)[0] is None:
            try:
                maps = self._maps[pid] = ProcessMaps.read(pid)
            except OSError as e:
                if maps is None:
                    raise NoSuchProcessError(pid, f"symbolize: cannot read /proc/{pid}/maps: {e.strerror}") from None
        return maps

    def _user_frames(self, pid: int, address: int, is_return: bool) -> list[Frame]:
        maps = self._process(pid, address)
        mapping, module = maps.find(address)
        if mapping is None:
            return [Frame(address)]
        if module is None:
            return [Frame(address, module=mapping.name or None, elf_address=address - mapping.start)]
        layout, file_key = self._module_file(maps, module)
        if layout is None:
            return [Frame(address, module=module.path, elf_address=address - module.first.start)]
        bias = layout.load_bias(module.first.start, module.first.file_offset, module.first.end - module.first.start)
        if bias is None:
            return [Frame(address, module=module.path, build_id=layout.build_id)]
        return self._frames_at(file_key, module.path, layout.build_id, address - bias, is_return, address)

    def _frames_at(
        self, file_key: object, path: str, build_id: str | None, elf_address: int, is_return: bool, address: int
    ) -> list[Frame]:
        lookup_address = elf_address - 1 if is_return else elf_address
        key = (file_key, lookup_address)
        found = self._cache.get(key)
        if found is None:
            debug_file = self._files.get(file_key)
            found = debug_file.lookup(lookup_address) if debug_file is not None else Lookup(None, None, ())
            self._cache[key] = found
        return _frames_of(address, path, build_id, elf_address, found)

    def _module_file(self, maps: ProcessMaps, module: Module) -> tuple[ElfLayout | None, object]:
        """Layout and cache key of a module's file, opening it (once) if new."""
        file_id = module.file_id
        if file_id in self._layouts:
            return self._layouts[file_id], self._file_of_module.get(file_id)
        layout, file_key = None, None
        try:
            fd = maps.open_module(module)
        except OSError:
            fd = None
        if fd is not None:
            try:
                layout, file_key = self._open_file(fd, module.path, maps.debuglink_base(module), file_id)
            finally:
                os.close(fd)
        self._layouts[file_id] = layout
        self._file_of_module[file_id] = file_key
        return layout, file_key

    def _open_file(self, fd: int, path: str, debuglink_base: str, file_id: object) -> tuple[ElfLayout | None, object]:
        """Read the layout of the ELF file at ``fd`` and open it in the back end unless already open."""
        try:
            layout = read_layout(fd)
        except (OSError, NotElfError):
            return None, None
        file_key = layout.build_id or file_id
        if file_key not in self._files:
            try:
                self._files[file_key] = self._backend.open(fd, path, debuglink_base, layout.build_id)
            except Exception:  # a malformed file gives symbol-less frames, never a crash
                self._files[file_key] = None
        return layout, file_key

    # ------------------------------------------------------------ kernel

    def kernel_symbols(self) -> KernelSymbols:
        """The kernel's symbols, read once; :class:`KernelSymbolsHidden` when zeroed."""
        if self._kernel is None:
            self._kernel = KernelSymbols.read()
        return self._kernel

    def _kernel_frames(self, address: int, is_return: bool) -> list[Frame]:
        sym = self.kernel_symbols().lookup(address - 1 if is_return else address)
        if sym is None:
            return [Frame(address)]
        return [Frame(address, module=sym.module, function=sym.name, symbol=sym.name, offset=address - sym.address)]


def _names(name: str | None) -> tuple[str | None, str | None]:
    """(readable name, mangled name or None) of a DWARF or ELF function name."""
    if name is None:
        return None, None
    readable = demangle(name)
    return readable, (name if readable != name else None)


def _frames_of(address: int, module: str, build_id: str | None, elf_address: int, found: Lookup) -> list[Frame]:
    offset = elf_address - found.symbol_start if found.symbol_start is not None else None
    common = {"address": address, "module": module, "build_id": build_id, "elf_address": elf_address}
    symbol, symbol_linkage = _names(found.symbol)
    if not found.frames:
        return [Frame(**common, function=symbol, symbol=symbol, offset=offset, linkage_name=symbol_linkage)]
    frames = []
    for sf in found.frames:
        function, linkage_name = _names(sf.function)
        if sf.inlined:
            frames.append(
                Frame(**common, function=function, file=sf.file, line=sf.line, inlined=True, linkage_name=linkage_name)
            )
        else:
            frames.append(
                Frame(
                    **common,
                    function=function or symbol,
                    symbol=symbol,
                    offset=offset,
                    file=sf.file,
                    line=sf.line,
                    linkage_name=linkage_name if function else symbol_linkage,
                )
            )
    return frames


# ---------------------------------------------------------------- formatting


def frame_name(frame: Frame) -> str:
    """A frame's name for flame graphs and profiles: see :func:`frame_label`."""
    return frame_label(frame.function, frame.module, frame.elf_address, frame.address)


def frame_label(function: str | None, module: str | None, elf_address: int | None, address: int) -> str:
    """The function, else ``module+0xELF_ADDRESS`` (the module's file name), else the bare address.

    Also what a frame saved as JSON is named by (the HTML report), from the same fields.
    """
    if function:
        return function
    if module:
        offset = elf_address if elf_address is not None else address
        return f"{os.path.basename(module)}+0x{offset:x}"
    return f"0x{address:x}"


def format_frame(frame: Frame, index: int) -> str:
    """One debugger-style backtrace line, e.g.
    ``#0  0x000055d2139ee1c8 in helper (inlined) at /src/a.c:12``."""
    text = f"#{index:<2} 0x{frame.address:016x} in "
    if frame.function is None:
        text += "??"
    elif frame.file is None and frame.offset is not None:
        text += f"{frame.function}+0x{frame.offset:x}"
    else:
        text += frame.function
    if frame.inlined:
        text += " (inlined)"
    if frame.file is not None:
        text += f" at {frame.file}:{frame.line}" if frame.line else f" at {frame.file}"
    elif frame.module is not None:
        where = frame.module
        if frame.function is None and frame.elf_address is not None:
            where += f"+0x{frame.elf_address:x}"
        text += f" ({where})"
    return text


def format_stack(stack: Iterable[Sequence[Frame]]) -> list[str]:
    """Backtrace lines for a symbolized stack; inlined frames get their own numbers."""
    lines = []
    for frames in stack:
        for frame in frames:
            lines.append(format_frame(frame, len(lines)))
    return lines
