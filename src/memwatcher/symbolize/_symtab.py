"""ELF symbol lookup with size checks, shared by both back ends (same answers by construction).

An address is named by a symbol only when it lies inside the symbol's range
(``st_value <= address < st_value + st_size``); a size-less symbol (hand-written
assembly) names only its exact address. Among aliases of one address the
choice is: global before weak before local, then the fewest leading
underscores (``malloc`` over ``__libc_malloc``), then the shortest name.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
# Types that can name code: no type (assembly labels), functions, GNU indirect functions.
_CODE_TYPES = frozenset((0, 2, 10))
_BIND_RANK = {STB_GLOBAL: 0, STB_WEAK: 1, STB_LOCAL: 2}


def wanted(st_type: int, shndx: int, name: str) -> bool:
    """Symbols that can name code: defined, named, function-like."""
    return bool(name) and shndx != 0 and st_type in _CODE_TYPES


def _rank(bind: int, name: str) -> tuple[int, int, int, str]:
    return (_BIND_RANK.get(bind, 3), len(name) - len(name.lstrip("_")), len(name), name)


class SymbolTable:
    """Code symbols as (start, size_bytes, binding, name); lookups by bisection."""

    def __init__(self, symbols: Iterable[tuple[int, int, int, str]]) -> None:
        best: dict[tuple[int, int], tuple[tuple[int, int, int, str], str]] = {}
        for start, size, bind, versioned in symbols:
            # .symtab spells versioned symbols "sem_close@@GLIBC_2.34": keep the name.
            name = versioned.split("@", 1)[0] if "@" in versioned[1:] else versioned
            rank = _rank(bind, name)
            old = best.get((start, size))
            if old is None or rank < old[0]:
                best[(start, size)] = (rank, name)
        entries = sorted((start, size, rank, name) for (start, size), (rank, name) in best.items())
        self._starts = [e[0] for e in entries]
        self._entries = entries
        self._max_size = max((e[1] for e in entries), default=0)

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, address: int) -> tuple[str, int] | None:
        """(name, start) of the symbol containing ``address``, or None.

        The closest start wins; at one start a sized symbol beats a size-less
        one, then the alias rank decides.
        """
        i = bisect.bisect_right(self._starts, address) - 1
        best = None
        best_key = None
        # Walk back over symbols that could still reach the address (the largest size bounds it).
        while i >= 0:
            start, size, rank, name = self._entries[i]
            if (best_key is not None and start < best_key[0]) or address - start > self._max_size:
                break
            if start == address or address < start + size:
                key = (start, size > 0, tuple(-x for x in rank[:3]))
                if best_key is None or key > best_key:
                    best, best_key = (name, start), key
            i -= 1
        return best
