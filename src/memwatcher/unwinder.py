"""Unwind tables for walking a process's user stacks with DWARF CFI in BPF.

A BPF program that records call stacks without frame pointers needs, for every
return address, the rule that finds the caller's frame. This module keeps those
rules in the program's maps for one traced process:

* ``unwind_rows`` (array): the CFI of every executable object the process maps,
  compiled by :mod:`memwatcher.cfi` into sorted rows (``bpf/unwind.h``), appended
  once per object (device and inode), never rewritten while the tracer runs;
* ``unwind_mappings`` (array, two halves): the process's executable mappings
  sorted by address, each with its load bias and its object's row range;
* ``unwind_live`` (one entry): which half is live and how many mappings it has.

:meth:`UnwindTables.refresh` re-reads ``/proc/PID/maps``, compiles objects not
seen before, writes the idle half and then switches to it, so the BPF side never
reads a half-written table. Callers refresh at start, when the dynamic loader
reports a change (``dl_updates`` in memleak's BPF) and at every report.

Objects are opened through ``/proc/PID/map_files`` (deleted files, other mount
namespaces). x86-64 only, like the row format.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .cfi import CfiError, compile_cfi
from .elf import NotElfError, read_layout
from .libbpf import Map
from .procmaps import Module, ProcessMaps
from .records import Layouts

__all__ = ["UnwindStats", "UnwindTables"]


@dataclass
class UnwindStats:
    """Size and health of the unwind tables (cumulative since start).

    ``rows`` and ``table_bytes`` count the rows loaded into BPF; ``failed``
    maps each object whose CFI could not be loaded to the reason (no CFI,
    table full, not x86-64...); ``mappings_dropped`` counts executable
    mappings left out because the mapping table was full.
    """

    objects: int = 0
    rows: int = 0
    table_bytes: int = 0
    max_rows: int = 0
    compile_s: float = 0.0
    failed: dict[str, str] = field(default_factory=dict)
    mappings_dropped: int = 0


@dataclass(frozen=True)
class _Object:
    path: str
    first_row: int
    n_rows: int


class UnwindTables:
    """The unwind maps of one loaded BPF object, kept in step with one process."""

    def __init__(self, pid: int, rows: Map, mappings: Map, live: Map, layouts: Layouts) -> None:
        self.pid = pid
        self._rows = rows
        self._mappings = mappings
        self._live = live
        self._mapping_dtype = layouts.unwind_mapping
        self._live_dtype = layouts.unwind_live
        self._max_mappings = layouts.constants["UNWIND_MAX_MAPPINGS"]
        self._objects: dict[tuple[str, int], _Object | None] = {}
        self._half = 0
        self._last: list[tuple[int, int, int, int, int]] | None = None
        self._lock = threading.Lock()
        self.stats = UnwindStats(max_rows=rows.max_entries)

    def loaded_paths(self) -> list[str]:
        """Paths (as the process sees them) of the objects whose CFI is in the table."""
        with self._lock:
            return [obj.path for obj in self._objects.values() if obj is not None]

    def refresh(self) -> bool:
        """Bring the tables up to date with the process's memory map; True if they changed.

        Raises OSError when the process's map cannot be read (it exited).
        """
        with self._lock:
            maps = ProcessMaps.read(self.pid)
            entries = []
            for m in maps.mappings:
                if not m.executable or not m.is_file:
                    continue
                _, module = maps.find(m.start)
                if module is None:
                    continue
                obj, bias = self._object(maps, module, m.start, m.file_offset, m.end - m.start)
                if bias is None:
                    continue
                entries.append(
                    (m.start, m.end, bias % (1 << 64), obj.first_row if obj else 0, obj.n_rows if obj else 0)
                )
            if len(entries) > self._max_mappings:
                self.stats.mappings_dropped += len(entries) - self._max_mappings
                entries = entries[: self._max_mappings]
            if entries == self._last:
                return False
            self._publish(entries)
            self._last = entries
            return True

    def _object(
        self, maps: ProcessMaps, module: Module, start: int, file_offset: int, size: int
    ) -> tuple[_Object | None, int | None]:
        """The object's rows (loaded on first sight) and this mapping's load bias."""
        key = (module.first.dev, module.first.inode)
        try:
            fd = maps.open_module(module)
        except OSError as e:
            self.stats.failed.setdefault(module.path, f"cannot open: {e.strerror or e}")
            return None, None
        try:
            layout = read_layout(fd)
            bias = layout.load_bias(start, file_offset, size)
            if bias is None:
                bias = layout.load_bias(module.first.start, module.first.file_offset, module.end - module.first.start)
            if key not in self._objects:
                self._objects[key] = self._load(fd, module.path)
            return self._objects[key], bias
        except (NotElfError, OSError) as e:
            self.stats.failed.setdefault(module.path, f"not a readable ELF object: {e}")
            return None, None
        finally:
            os.close(fd)

    def _load(self, fd: int, path: str) -> _Object | None:
        started = time.perf_counter()
        try:
            table = compile_cfi(fd)
        except CfiError as e:
            self.stats.failed[path] = str(e)
            return None
        finally:
            self.stats.compile_s += time.perf_counter() - started
        rows = table.rows
        first = self.stats.rows
        if not len(rows):
            self.stats.failed[path] = "no call-frame information"
            return None
        if first + len(rows) > self.stats.max_rows:
            self.stats.failed[path] = (
                f"unwind table full ({len(rows)} rows needed, {self.stats.max_rows - first} free of "
                f"{self.stats.max_rows}: raise --unwind-rows)"
            )
            return None
        self._rows.update_batch(np.arange(first, first + len(rows), dtype=np.uint32), rows)
        self.stats.objects += 1
        self.stats.rows += len(rows)
        self.stats.table_bytes += rows.nbytes
        return _Object(path, first, len(rows))

    def _publish(self, entries: list[tuple[int, int, int, int, int]]) -> None:
        half = self._half ^ 1
        if entries:
            table = np.zeros(len(entries), self._mapping_dtype)
            for name, column in zip(("start", "end", "bias", "first_row", "n_rows"), zip(*sorted(entries))):
                table[name] = np.array(column, dtype=np.uint64).astype(table.dtype[name], casting="unsafe")
            keys = np.arange(half * self._max_mappings, half * self._max_mappings + len(entries), dtype=np.uint32)
            self._mappings.update_batch(keys, table)
        live = np.zeros(1, self._live_dtype)
        live["half"] = half
        live["n_mappings"] = len(entries)
        self._live.update(0, live.tobytes())
        self._half = half
