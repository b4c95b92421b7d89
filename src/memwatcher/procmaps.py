"""A process's memory map: which file (module) each address belongs to.

Modules are opened through ``/proc/PID/map_files/START-END`` first (works for
deleted files and files in other mount namespaces), then
``/proc/PID/root/PATH``, then ``PATH``; a candidate is accepted only when its
inode matches the mapping's.
"""

from __future__ import annotations

import bisect
import os
import re
from dataclasses import dataclass, field

_DELETED = " (deleted)"
# The C library's file as distributions name it: libc.so.6, libc-2.31.so.
LIBC_PATH = re.compile(r"(^|/)libc(\.so|-\d[\d.]*\.so)")


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    file_offset: int
    dev: str
    inode: int
    name: str  # path, "[vdso]", "[heap]", ... or "" for anonymous memory
    deleted: bool
    range_text: str  # "start-end" exactly as /proc/PID/maps spells it (map_files entry name)
    perms: str = ""  # "r-xp" and the like

    @property
    def executable(self) -> bool:
        return "x" in self.perms

    @property
    def is_file(self) -> bool:
        return self.inode != 0 and self.name.startswith("/")


@dataclass
class Module:
    """One mapped ELF file: its first mapping and the extent of all of them."""

    first: Mapping
    end: int
    mappings: list[Mapping] = field(default_factory=list)

    @property
    def path(self) -> str:
        return self.first.name

    @property
    def file_id(self) -> tuple[str, int, str]:
        return (self.first.dev, self.first.inode, self.first.name)


def parse_maps(text: str) -> list[Mapping]:
    """Parse the text of /proc/PID/maps."""
    mappings = []
    for line in text.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 5:
            continue
        range_text, perms, offset, dev, inode = parts[:5]
        name = parts[5] if len(parts) == 6 else ""
        deleted = name.endswith(_DELETED)
        if deleted:
            name = name[: -len(_DELETED)]
        start, end = range_text.split("-")
        mappings.append(
            Mapping(int(start, 16), int(end, 16), int(offset, 16), dev, int(inode), name, deleted, range_text, perms)
        )
    return mappings


class ProcessMaps:
    """Address -> mapping/module lookup over one snapshot of /proc/PID/maps."""

    def __init__(self, pid: int, mappings: list[Mapping]) -> None:
        self.pid = pid
        self.mappings = sorted(mappings, key=lambda m: m.start)
        self._starts = [m.start for m in self.mappings]
        self._module_of: dict[int, Module] = {}
        current: Module | None = None
        for m in self.mappings:
            if not m.is_file:
                continue
            # A later mapping at a nonzero offset of the same file continues the module.
            if current is not None and current.file_id == (m.dev, m.inode, m.name) and m.file_offset != 0:
                current.end = m.end
            else:
                current = Module(m, m.end)
            current.mappings.append(m)
            self._module_of[m.start] = current

    @classmethod
    def read(cls, pid: int) -> ProcessMaps:
        with open(f"/proc/{pid}/maps") as f:
            return cls(pid, parse_maps(f.read()))

    def find(self, address: int) -> tuple[Mapping | None, Module | None]:
        i = bisect.bisect_right(self._starts, address) - 1
        if i < 0 or address >= self.mappings[i].end:
            return None, None
        m = self.mappings[i]
        return m, self._module_of.get(m.start)

    def first_module(self, path: re.Pattern[str]) -> Module | None:
        """The lowest-addressed mapped file whose path matches ``path`` (searched)."""
        return next((m for m in self.modules() if path.search(m.path)), None)

    def modules(self) -> list[Module]:
        """Every mapped file, in address order."""
        unique = {id(m): m for m in self._module_of.values()}
        return sorted(unique.values(), key=lambda m: m.first.start)

    def _candidates(self, module: Module) -> list[str]:
        first = module.first
        candidates = [f"/proc/{self.pid}/map_files/{first.range_text}", f"/proc/{self.pid}/root{first.name}"]
        if not first.deleted:
            candidates.append(first.name)
        return candidates

    def open_module(self, module: Module) -> int:
        """Open the module's file (read-only) and return the descriptor; OSError if none works."""
        error: OSError | None = None
        for path in self._candidates(module):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                error = error or e
                continue
            if os.fstat(fd).st_ino == module.first.inode:
                return fd
            os.close(fd)
        raise error or FileNotFoundError(module.first.name)

    def module_path(self, module: Module) -> str:
        """A path naming the module's very file, for interfaces that take a path (uprobes); OSError if none."""
        error: OSError | None = None
        for path in self._candidates(module):
            try:
                if os.stat(path).st_ino == module.first.inode:
                    return path
            except OSError as e:
                error = error or e
        raise error or FileNotFoundError(module.first.name)

    def debuglink_base(self, module: Module) -> str:
        """The path next to which ``.gnu_debuglink`` files are searched.

        The module's own path when the process sees our file system; through
        /proc/PID/root when it lives in another mount namespace.
        """
        try:
            same_ns = os.readlink(f"/proc/{self.pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt")
        except OSError:
            same_ns = True
        return module.path if same_ns else f"/proc/{self.pid}/root{module.path}"
