"""Kernel symbols from /proc/kallsyms."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from ..errors import PrivilegeError

# Types of symbols that can contain code or data a stack or pointer may point into.
_TEXT_TYPES = frozenset("tTwW")


class KernelSymbolsHidden(PrivilegeError):
    """/proc/kallsyms shows only zero addresses (kernel.kptr_restrict, or no CAP_SYSLOG)."""


@dataclass(frozen=True)
class KernelSymbol:
    name: str
    module: str  # "vmlinux" or the module's name
    address: int
    offset: int  # bytes from the symbol's start


class KernelSymbols:
    """Sorted kernel text symbols; a symbol ends where the next one starts.

    Addresses past the last symbol of the kernel image or of a module's text
    resolve to nothing rather than to a wrong name.
    """

    def __init__(self, text: str) -> None:
        entries = []
        nonzero = False
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 3 or parts[1] not in _TEXT_TYPES:
                continue
            address = int(parts[0], 16)
            nonzero = nonzero or address != 0
            module = parts[3].strip("[]") if len(parts) > 3 else "vmlinux"
            entries.append((address, parts[2], module, parts[1].isupper()))
        if entries and not nonzero:
            raise KernelSymbolsHidden(
                "kernel frames need CAP_SYSLOG: /proc/kallsyms addresses are hidden (all zero); "
                "run as root, add CAP_SYSLOG, or lower kernel.kptr_restrict"
            )
        entries.sort(key=lambda e: e[0])
        self._addresses = [e[0] for e in entries]
        self._entries = entries
        # Image text ends at _etext; past it, only module symbols are meaningful.
        self._etext = next((e[0] for e in entries if e[1] == "_etext" and e[2] == "vmlinux"), None)

    @classmethod
    def read(cls, path: str = "/proc/kallsyms") -> KernelSymbols:
        with open(path) as f:
            return cls(f.read())

    def __len__(self) -> int:
        return len(self._entries)

    def address_of(self, name: str, module: str = "vmlinux") -> int | None:
        for address, sym, mod, _ in self._entries:
            if sym == name and mod == module:
                return address
        return None

    def lookup(self, address: int) -> KernelSymbol | None:
        i = bisect.bisect_right(self._addresses, address) - 1
        if i < 0:
            return None
        start, name, module, global_ = self._entries[i]
        # Aliases share an address: prefer a global symbol, then the first listed.
        j = i
        while j > 0 and self._addresses[j - 1] == start:
            j -= 1
            if self._entries[j][2] == module and (self._entries[j][3] or not global_):
                name, global_ = self._entries[j][1], self._entries[j][3]
        is_last = i + 1 == len(self._entries) or self._entries[i + 1][2] != module
        # kallsyms has no sizes: the last symbol of the image or of a module has no known end.
        if is_last and address - start > _MAX_TAIL_BYTES:
            return None
        if module == "vmlinux" and self._etext is not None and address >= self._etext:
            return None
        return KernelSymbol(name, module, start, address - start)


# How far past the last symbol of a module we still name it (kallsyms has no sizes).
_MAX_TAIL_BYTES = 1 << 16
