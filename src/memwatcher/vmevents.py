"""The kernel's memory event counters (faults, swap traffic) and its swap space, from /proc.

Page faults, major faults and pages swapped in and out are per-CPU event
counters (``vm_event_states``); swap space is two plain globals
(``total_swap_pages``, ``nr_swap_pages``). BPF reaches neither on kernels built
without ``CONFIG_KALLSYMS_ALL`` (no ``__ksym`` for data symbols), so they are
read where the kernel sums them: ``/proc/vmstat`` and ``/proc/meminfo``. They
are counts since boot and levels, so a periodic read loses nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["VM_EVENTS_PATH", "EventRates", "SwapSpace", "VmEvents", "read_swap_space", "read_vm_events"]

VM_EVENTS_PATH = "/proc/vmstat"
_MEMINFO_PATH = "/proc/meminfo"
# /proc/vmstat line -> VmEvents field. pswpin/pswpout exist only with CONFIG_SWAP.
_VMSTAT_NAMES = {
    "pgfault": "page_faults",
    "pgmajfault": "major_faults",
    "pswpin": "swap_in_pages",
    "pswpout": "swap_out_pages",
}


@dataclass(frozen=True)
class VmEvents:
    """Event counts since boot as the kernel had them at ``monotonic_ns``; None: no such counter."""

    monotonic_ns: int
    page_faults: int | None
    major_faults: int | None
    swap_in_pages: int | None
    swap_out_pages: int | None

    def rates(self, earlier: VmEvents, page_bytes: int) -> dict[str, float | None]:
        """Per second since ``earlier``: faults, major faults, and bytes swapped in and out."""
        elapsed_s = (self.monotonic_ns - earlier.monotonic_ns) / 1e9

        def per_s(now: int | None, then: int | None, scale: int = 1) -> float | None:
            if now is None or then is None or elapsed_s <= 0:
                return None
            return (now - then) * scale / elapsed_s

        return {
            "page_faults_per_s": per_s(self.page_faults, earlier.page_faults),
            "major_faults_per_s": per_s(self.major_faults, earlier.major_faults),
            "swap_in_bytes_per_s": per_s(self.swap_in_pages, earlier.swap_in_pages, page_bytes),
            "swap_out_bytes_per_s": per_s(self.swap_out_pages, earlier.swap_out_pages, page_bytes),
        }


def read_vm_events(path: str = VM_EVENTS_PATH) -> VmEvents:
    """The event counters now."""
    counts: dict[str, int | None] = dict.fromkeys(_VMSTAT_NAMES.values())
    with open(path) as f:
        for line in f:
            name, _, value = line.partition(" ")
            field = _VMSTAT_NAMES.get(name)
            if field is not None:
                counts[field] = int(value)
    return VmEvents(time.monotonic_ns(), **counts)


class EventRates:
    """The event counters' rates between successive calls of :meth:`since_last` (the first: since made)."""

    def __init__(self) -> None:
        self._last = read_vm_events()

    def restart(self) -> None:
        """The next rates count from now."""
        self._last = read_vm_events()

    def since_last(self, page_bytes: int) -> dict[str, float | None]:
        """:meth:`VmEvents.rates` since the previous call."""
        now = read_vm_events()
        rates = now.rates(self._last, page_bytes)
        self._last = now
        return rates


@dataclass(frozen=True)
class SwapSpace:
    """Swap space of every active swap area, in bytes (both 0 without swap)."""

    total_bytes: int
    free_bytes: int

    @property
    def used_bytes(self) -> int:
        return self.total_bytes - self.free_bytes


def read_swap_space(path: str = _MEMINFO_PATH) -> SwapSpace | None:
    """Swap space now, or None on a kernel without swap support (no SwapTotal line)."""
    fields: dict[str, int] = {}
    with open(path) as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("SwapTotal", "SwapFree"):
                fields[name] = int(value.split()[0]) * 1024  # kB
    if len(fields) < 2:
        return None
    return SwapSpace(fields["SwapTotal"], fields["SwapFree"])
