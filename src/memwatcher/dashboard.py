"""`memwatcher top`: the whole memory picture from one set of loaded programs.

System memory (sysstat), every process with its user, command line, cgroup,
rss, swap, PSS and growth since the dashboard started (procstat), reclaim
activity and direct-reclaim stalls (pr), zones and allocation failures (paf),
OOM kills (oom) and memory per cgroup (the memory controller's files). A
report that cannot load on this kernel is shown as unavailable with its
reason; the others still run.

:class:`Dashboard` gathers a :class:`DashboardState` per refresh, plain data
with the recent history sparklines are drawn from; :func:`render_text` and
:mod:`memwatcher.tui` only format states, so either can be tested without BPF.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field

from .output import human_bytes, human_ns, timestamp
from .pressure import Pressure, read_pressure
from .processes import ProcessIdentity, identity, shared_memory
from .reports import Reports
from .tools import cgroups, oom, paf, pr, procstat, sysstat
from .vmevents import EventRates, SwapSpace, read_swap_space

__all__ = ["Dashboard", "DashboardEvent", "DashboardState", "ProcessRow", "fancy_terminal", "render_text"]

# System memory rows: (label, SysSample field).
MEMORY_ROWS = (
    ("total", "total_bytes"),
    ("available", "available_bytes"),
    ("free", "free_bytes"),
    ("anon", "anon_pages_bytes"),
    ("file", "file_pages_bytes"),
    ("active", "active_bytes"),
    ("inactive", "inactive_bytes"),
    ("shmem", "shmem_bytes"),
    ("dirty", "dirty_bytes"),
    ("writeback", "writeback_bytes"),
    ("slab", "slab_bytes"),
    ("page tables", "page_tables_bytes"),
    ("kernel stack", "kernel_stack_bytes"),
    ("unevictable", "unevictable_bytes"),
)
# The sparklines cover the last five minutes at the default 2 s interval (150
# samples); a ring per process keeps the memory bounded at any interval.
HISTORY_SAMPLES = 150
# Events kept for the live event line: the newest is shown, the rest are context.
EVENTS_KEPT = 20


@dataclass
class ProcessRow:
    """One process. Sizes in bytes; ``growth_bytes`` is rss now minus rss when first seen.

    ``pss_bytes`` is None where it was not read (it costs a page-table walk:
    see :class:`Dashboard`). ``rss_history_bytes`` holds the rss of the last
    samples, oldest first.
    """

    pid: int
    comm: str
    rss_bytes: int
    rss_peak_bytes: int
    growth_bytes: int
    swap_bytes: int
    user: str = ""
    cmdline: str = ""
    cgroup: str | None = None
    pss_bytes: int | None = None
    rss_history_bytes: tuple[int, ...] = ()


@dataclass(frozen=True)
class DashboardEvent:
    """Something the live event line announces: an OOM kill, or allocations that failed in an interval."""

    time: str
    oom_kill: oom.OomKill | None = None
    alloc_failures: int = 0


@dataclass
class DashboardState:
    """One refresh. Interval figures cover the time since the previous refresh; histories are oldest first."""

    time: str
    interval_s: float
    memory: sysstat.SysSample | None = None
    pressure: Pressure | None = None  # the system's memory PSI; None without PSI
    swap: SwapSpace | None = None  # None: a kernel without swap support
    # page_faults_per_s, major_faults_per_s, swap_in_bytes_per_s, swap_out_bytes_per_s since the last refresh
    vm_rates: dict[str, float | None] = field(default_factory=dict)
    processes: list[ProcessRow] = field(default_factory=list)  # by rss, largest first
    reclaim: pr.ReclaimSample | None = None
    reclaim_total: pr.ReclaimSample | None = None
    zones: list[paf.ZoneStats] = field(default_factory=list)  # counts over the interval
    page_size_bytes: int = 4096  # zones count pages: multiply for bytes
    alloc_failures_total: int = 0
    kswapd_wakeups_total: int = 0
    oom_kills_total: int = 0
    last_oom_kill: oom.OomKill | None = None
    events: list[DashboardEvent] = field(default_factory=list)  # newest last
    available_history_bytes: tuple[int, ...] = ()
    pressure_history_pct: tuple[float, ...] = ()  # PSI some avg10
    cgroups: list[cgroups.CgroupMemory] = field(default_factory=list)  # tree order, largest siblings first
    cgroup_version: int | None = None  # None: no memory controller mounted, or not read
    unavailable: dict[str, str] = field(default_factory=dict)


class Dashboard:
    """Loads procstat, sysstat, pr, paf and oom together; :meth:`sample` gives a state.

    ``top``: the processes a state keeps (the largest by rss; None: all).
    ``pss_rows``: read PSS (``smaps_rollup``) for the processes that are the
    ``pss_rows`` largest by PSS; since PSS never exceeds rss, walking them in
    rss order can stop early, so the cost is about ``pss_rows`` page-table
    walks per sample. ``cgroup_depth``: read cgroups this many levels below
    the root (None: none).
    """

    def __init__(
        self,
        top: int | None = 10,
        pss_rows: int = 0,
        cgroup_depth: int | None = None,
        history_samples: int = HISTORY_SAMPLES,
    ) -> None:
        self.top = top
        self.pss_rows = pss_rows
        self.cgroup_depth = cgroup_depth
        self.reports = Reports()
        self._hierarchy = cgroups.find_hierarchy() if cgroup_depth is not None else None
        self._cgroup_paths = cgroups.CgroupPaths(self._hierarchy) if self._hierarchy is not None else None
        self._first_rss: dict[int, int] = {}
        self._who: dict[int, tuple[str, ProcessIdentity | None]] = {}  # pid -> (comm it had, identity)
        self._rss_history: dict[int, deque[int]] = {}
        self._available_history: deque[int] = deque(maxlen=history_samples)
        self._pressure_history: deque[float] = deque(maxlen=history_samples)
        self._history_samples = history_samples
        self._events: deque[DashboardEvent] = deque(maxlen=EVENTS_KEPT)
        self._reclaim_start: pr.Snapshot | None = None
        self._reclaim_prev: pr.Snapshot | None = None
        self._paf_prev: paf.PafSample | None = None
        self._oom_kills_total = 0
        self._last_oom_kill: oom.OomKill | None = None
        self._last = time.monotonic()
        self._vm_rates = EventRates()

    def __enter__(self) -> Dashboard:
        self.reports.__enter__()
        if self.reports.pr is not None:
            self._reclaim_start = self._reclaim_prev = self.reports.pr.read()
        if self.reports.paf is not None:
            self._paf_prev = self.reports.paf.sample()
        self._last = time.monotonic()
        self._vm_rates.restart()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.reports.close()

    def sample(self) -> DashboardState:
        now = time.monotonic()
        loaded = self.reports
        state = DashboardState(
            timestamp(),
            now - self._last,
            page_size_bytes=os.sysconf("SC_PAGE_SIZE"),
            unavailable=dict(loaded.unavailable),
        )
        self._last = now
        if loaded.sysstat is not None:
            state.memory = loaded.sysstat.read()[0]
            if state.memory.available_bytes is not None:
                self._available_history.append(state.memory.available_bytes)
        state.vm_rates = self._vm_rates.since_last(state.page_size_bytes)
        state.swap = read_swap_space()
        state.pressure = read_pressure()
        if state.pressure is not None:
            self._pressure_history.append(state.pressure.some_avg10_pct)
        if loaded.procstat is not None:
            state.processes = self._processes(loaded.procstat.read())
        if loaded.pr is not None:
            snap = loaded.pr.read()
            state.reclaim = (snap - self._reclaim_prev).total()
            state.reclaim_total = (snap - self._reclaim_start).total()
            self._reclaim_prev = snap
        if loaded.paf is not None and self._paf_prev is not None:
            since_start = loaded.paf.sample()
            interval = since_start - self._paf_prev
            self._paf_prev = since_start
            state.zones = [z for z in interval.zones if z.managed_pages]
            failures = sum(z.failures for z in interval.zones)
            if failures:
                self._events.append(DashboardEvent(state.time, alloc_failures=failures))
            state.alloc_failures_total = sum(z.failures for z in since_start.zones)
            state.kswapd_wakeups_total = sum(z.kswapd_wakeups for z in since_start.zones)
        if loaded.oom is not None:
            kills = loaded.oom.consume()
            self._events.extend(DashboardEvent(state.time, oom_kill=k) for k in kills)
            self._oom_kills_total += len(kills)
            self._last_oom_kill = kills[-1] if kills else self._last_oom_kill
        if self._hierarchy is not None and self.cgroup_depth is not None:
            rows = cgroups.read_cgroups(self._hierarchy, "/", self.cgroup_depth)
            if loaded.pr is not None and self._cgroup_paths is not None:
                rows = cgroups.with_reclaim_stalls(rows, loaded.pr.cgroup_latency(), self._cgroup_paths)
            state.cgroups = cgroups.tree_order(rows)
            state.cgroup_version = self._hierarchy.version
        state.oom_kills_total = self._oom_kills_total
        state.last_oom_kill = self._last_oom_kill
        state.events = list(self._events)
        state.available_history_bytes = tuple(self._available_history)
        state.pressure_history_pct = tuple(self._pressure_history)
        return state

    def _identity(self, p: procstat.ProcessMemory) -> ProcessIdentity | None:
        # Read once per process: an exec changes the comm, and then the command line is read again.
        known = self._who.get(p.pid)
        if known is None or known[0] != p.comm:
            known = self._who[p.pid] = (p.comm, identity(p.pid, p.comm))
        return known[1]

    def _processes(self, procs: list[procstat.ProcessMemory]) -> list[ProcessRow]:
        for p in procs:
            self._first_rss.setdefault(p.pid, p.rss_bytes)
            self._rss_history.setdefault(p.pid, deque(maxlen=self._history_samples)).append(p.rss_bytes)
        live = {p.pid for p in procs}
        for table in (self._first_rss, self._who, self._rss_history):
            for pid in [pid for pid in table if pid not in live]:
                del table[pid]
        rows = []
        for p in sorted(procs, key=lambda p: p.rss_bytes, reverse=True)[: self.top]:
            who = self._identity(p)
            rows.append(
                ProcessRow(
                    p.pid,
                    p.comm,
                    p.rss_bytes,
                    p.rss_peak_bytes,
                    p.rss_bytes - self._first_rss[p.pid],
                    p.swap_bytes,
                    user=who.user if who else "",
                    cmdline=who.cmdline if who else f"[{p.comm}]",
                    cgroup=who.cgroup if who else None,
                    rss_history_bytes=tuple(self._rss_history[p.pid]),
                )
            )
        self._read_pss(rows)
        return rows

    def _read_pss(self, rows: list[ProcessRow]) -> None:
        """PSS of the ``pss_rows`` largest by PSS: rows come by rss, and PSS <= rss bounds the rest."""
        if self.pss_rows <= 0:
            return
        largest: list[int] = []  # the pss_rows largest PSS so far, ascending
        for row in rows:
            if len(largest) >= self.pss_rows and row.rss_bytes < largest[0]:
                break
            shared = shared_memory(row.pid)
            if shared is None:
                continue
            row.pss_bytes = shared.pss_bytes
            largest = sorted([*largest, shared.pss_bytes])[-self.pss_rows :]


# ---------------------------------------------------------------- plain text


def _bytes(value: int | None) -> str:
    return "-" if value is None else human_bytes(value)


def signed_bytes(value: int) -> str:
    """+1.5M, -2.0K, 0: a growth in bytes."""
    return ("+" if value > 0 else "") + human_bytes(value) if value else "0"


def reclaim_lines(r: pr.ReclaimSample) -> list[tuple[str, str]]:
    """(label, value) rows describing reclaim over an interval."""

    def n(v: int | None) -> str:
        return "-" if v is None else str(v)

    stall = "-" if not r.direct_reclaims else human_ns((r.direct_reclaim_ns or 0) / r.direct_reclaims)
    return [
        ("scanned / reclaimed pages", f"{r.scanned_pages} / {r.reclaimed_pages}"),
        ("dirty / writeback pages", f"{n(r.dirty_pages)} / {n(r.writeback_pages)}"),
        ("direct reclaims (avg stall)", f"{n(r.direct_reclaims)} ({stall})"),
        ("memcg reclaims", n(r.memcg_reclaims)),
        ("kswapd wakeups", n(r.kswapd_wakeups)),
    ]


def oom_line(state: DashboardState) -> str:
    line = f"OOM kills: {state.oom_kills_total} since start"
    k = state.last_oom_kill
    if k is not None:
        where = f"{k.kind or '?'} OOM" + (f" in {k.cgroup}" if k.cgroup else "")
        line += f"; last: {k.victim_pid} {k.victim_comm}, rss {human_bytes(k.rss_bytes)}, {where}"
    return line


def swap_faults_line(state: DashboardState) -> str:
    """Swap used of its size and traffic, fault rates: what the system paged since the last refresh."""
    rates = state.vm_rates

    def per_s(key: str, unit: str = "") -> str:
        value = rates.get(key)
        if value is None:
            return "-"
        return f"{human_bytes(value)}/s" if unit == "bytes" else f"{value:,.0f}/s"

    parts = []
    if state.swap is not None:
        parts.append(f"swap {human_bytes(state.swap.used_bytes)} of {human_bytes(state.swap.total_bytes)}")
    parts.append(f"in {per_s('swap_in_bytes_per_s', 'bytes')} out {per_s('swap_out_bytes_per_s', 'bytes')}")
    parts.append(f"faults {per_s('page_faults_per_s')} (major {per_s('major_faults_per_s')})")
    return "  ".join(parts)


def pressure_line(p: Pressure) -> str:
    return (
        f"some {p.some_avg10_pct:.2f}% full {p.full_avg10_pct:.2f}% (10 s); "
        f"some {p.some_avg60_pct:.2f}% full {p.full_avg60_pct:.2f}% (60 s)"
    )


def render_text(state: DashboardState, top: int | None = None) -> str:
    """The plain-text view (pipes, dumb terminals, the final summary): the ``top`` largest processes by rss."""
    out = [f"memwatcher  {state.time}  (interval {state.interval_s:.1f}s)"]
    if state.memory is not None:
        cells = [f"{label} {_bytes(getattr(state.memory, key))}" for label, key in MEMORY_ROWS]
        out.append("memory:  " + "  ".join(cells))
    if state.pressure is not None:
        out.append("pressure:  " + pressure_line(state.pressure))
    if state.swap is not None or state.vm_rates:
        out.append("swap, faults:  " + swap_faults_line(state))
    if state.processes:
        out.append(f"{'PID':>8} {'COMM':<16} {'RSS':>9} {'PEAK':>9} {'GROWTH':>9} {'SWAP':>9}")
        for p in state.processes[:top]:
            out.append(
                f"{p.pid:>8} {p.comm:<16} {human_bytes(p.rss_bytes):>9} {human_bytes(p.rss_peak_bytes):>9} "
                f"{signed_bytes(p.growth_bytes):>9} {human_bytes(p.swap_bytes):>9}"
            )
    if state.reclaim is not None:
        out.append("reclaim (interval):  " + "  ".join(f"{k}: {v}" for k, v in reclaim_lines(state.reclaim)))
    if state.zones or state.alloc_failures_total or state.kswapd_wakeups_total:
        out.append(
            f"allocation failures: {state.alloc_failures_total}  kswapd wakeups: {state.kswapd_wakeups_total}"
            " (since start)"
        )
        page = state.page_size_bytes
        for z in state.zones:
            marks = "/".join(_bytes(None if v is None else v * page) for v in (z.min_pages, z.low_pages, z.high_pages))
            out.append(
                f"  node {z.node} {z.zone:<8} free {_bytes(None if z.free_pages is None else z.free_pages * page)}"
                f"  min/low/high {marks}  allocs {z.allocs}  failures {z.failures}"
            )
    if state.oom_kills_total:
        out.append(oom_line(state))
    for name, reason in state.unavailable.items():
        out.append(f"{name}: unavailable ({reason})")
    return "\n".join(out) + "\n"


def fancy_terminal() -> bool:
    """Whether stdout is a terminal that can take a live, redrawn view."""
    return sys.stdout.isatty() and os.environ.get("TERM", "dumb") not in ("", "dumb")
