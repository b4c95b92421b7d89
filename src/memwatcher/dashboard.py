"""`memwatcher top`: the whole memory picture from one set of loaded programs.

System memory (sysstat), the top processes by rss with their growth since the
dashboard started (procstat), reclaim activity and direct-reclaim stalls
(pr), allocation failures and kswapd wakeups (paf). A report that cannot load
on this kernel is shown as unavailable with its reason; the others still run.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from .output import human_bytes, human_ns, timestamp
from .pressure import Pressure, read_pressure
from .reports import Reports
from .tools import oom, paf, pr, procstat, sysstat

__all__ = ["Dashboard", "DashboardState", "render_rich", "render_text"]

# System memory rows: (label, SysSample field).
_MEMORY_ROWS = (
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


@dataclass
class ProcessRow:
    pid: int
    comm: str
    rss_bytes: int
    rss_peak_bytes: int
    growth_bytes: int
    swap_bytes: int


@dataclass
class DashboardState:
    """One refresh. Interval figures cover the time since the previous refresh."""

    time: str
    interval_s: float
    memory: sysstat.SysSample | None = None
    pressure: Pressure | None = None  # the system's memory PSI; None without PSI
    processes: list[ProcessRow] = field(default_factory=list)
    reclaim: pr.ReclaimSample | None = None
    reclaim_total: pr.ReclaimSample | None = None
    zones: list[paf.ZoneStats] = field(default_factory=list)
    alloc_failures_total: int = 0
    kswapd_wakeups_total: int = 0
    oom_kills_total: int = 0
    last_oom_kill: oom.OomKill | None = None
    unavailable: dict[str, str] = field(default_factory=dict)


class Dashboard:
    """Loads procstat, sysstat, pr, paf and oom together; :meth:`sample` gives a state."""

    def __init__(self, top: int = 10) -> None:
        self.top = top
        self.reports = Reports()
        self._first_rss: dict[int, int] = {}
        self._reclaim_start: pr.Snapshot | None = None
        self._reclaim_prev: pr.Snapshot | None = None
        self._failures_total = 0
        self._kswapd_total = 0
        self._oom_kills_total = 0
        self._last_oom_kill: oom.OomKill | None = None
        self._last = time.monotonic()

    def __enter__(self) -> Dashboard:
        self.reports.__enter__()
        if self.reports.pr is not None:
            self._reclaim_start = self._reclaim_prev = self.reports.pr.read()
        self._last = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.reports.close()

    def sample(self) -> DashboardState:
        now = time.monotonic()
        loaded = self.reports
        state = DashboardState(timestamp(), now - self._last, unavailable=dict(loaded.unavailable))
        self._last = now
        if loaded.sysstat is not None:
            state.memory = loaded.sysstat.read()[0]
        state.pressure = read_pressure()
        if loaded.procstat is not None:
            state.processes = self._top_processes(loaded.procstat.read())
        if loaded.pr is not None:
            snap = loaded.pr.read()
            state.reclaim = (snap - self._reclaim_prev).total()
            state.reclaim_total = (snap - self._reclaim_start).total()
            self._reclaim_prev = snap
        if loaded.paf is not None:
            sample = loaded.paf.sample()
            state.zones = [z for z in sample.zones if z.managed_pages]
            self._failures_total += sum(z.failures for z in sample.zones)
            self._kswapd_total += sum(z.kswapd_wakeups for z in sample.zones)
        if loaded.oom is not None:
            kills = loaded.oom.consume()
            self._oom_kills_total += len(kills)
            self._last_oom_kill = kills[-1] if kills else self._last_oom_kill
        state.alloc_failures_total = self._failures_total
        state.kswapd_wakeups_total = self._kswapd_total
        state.oom_kills_total = self._oom_kills_total
        state.last_oom_kill = self._last_oom_kill
        return state

    def _top_processes(self, procs: list[procstat.ProcessMemory]) -> list[ProcessRow]:
        rows = []
        for p in procs:
            first = self._first_rss.setdefault(p.pid, p.rss_bytes)
            rows.append(ProcessRow(p.pid, p.comm, p.rss_bytes, p.rss_peak_bytes, p.rss_bytes - first, p.swap_bytes))
        live = {p.pid for p in procs}
        for pid in [pid for pid in self._first_rss if pid not in live]:
            del self._first_rss[pid]
        rows.sort(key=lambda r: r.rss_bytes, reverse=True)
        return rows[: self.top]


# ---------------------------------------------------------------- rendering


def _bytes(value: int | None) -> str:
    return "-" if value is None else human_bytes(value)


def _signed_bytes(value: int) -> str:
    return ("+" if value > 0 else "") + human_bytes(value) if value else "0"


def _reclaim_lines(r: pr.ReclaimSample | None) -> list[tuple[str, str]]:
    if r is None:
        return []

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


def _oom_line(state: DashboardState) -> str:
    line = f"OOM kills: {state.oom_kills_total} since start"
    k = state.last_oom_kill
    if k is not None:
        where = f"{k.kind or '?'} OOM" + (f" in {k.cgroup}" if k.cgroup else "")
        line += f"; last: {k.victim_pid} {k.victim_comm}, rss {human_bytes(k.rss_bytes)}, {where}"
    return line


def _pressure_line(p: Pressure) -> str:
    return (
        f"some {p.some_avg10_pct:.2f}% full {p.full_avg10_pct:.2f}% (10 s); "
        f"some {p.some_avg60_pct:.2f}% full {p.full_avg60_pct:.2f}% (60 s)"
    )


def render_text(state: DashboardState) -> str:
    """The plain-text view (pipes, dumb terminals, the final summary)."""
    out = [f"memwatcher  {state.time}  (interval {state.interval_s:.1f}s)"]
    if state.memory is not None:
        cells = [f"{label} {_bytes(getattr(state.memory, key))}" for label, key in _MEMORY_ROWS]
        out.append("memory:  " + "  ".join(cells))
    if state.pressure is not None:
        out.append("pressure:  " + _pressure_line(state.pressure))
    if state.processes:
        out.append(f"{'PID':>8} {'COMM':<16} {'RSS':>9} {'PEAK':>9} {'GROWTH':>9} {'SWAP':>9}")
        for p in state.processes:
            out.append(
                f"{p.pid:>8} {p.comm:<16} {human_bytes(p.rss_bytes):>9} {human_bytes(p.rss_peak_bytes):>9} "
                f"{_signed_bytes(p.growth_bytes):>9} {human_bytes(p.swap_bytes):>9}"
            )
    if state.reclaim is not None:
        out.append("reclaim (interval):  " + "  ".join(f"{k}: {v}" for k, v in _reclaim_lines(state.reclaim)))
    if state.zones or state.alloc_failures_total or state.kswapd_wakeups_total:
        out.append(
            f"allocation failures: {state.alloc_failures_total}  kswapd wakeups: {state.kswapd_wakeups_total}"
            " (since start)"
        )
        for z in state.zones:
            out.append(
                f"  node {z.node} {z.zone:<8} free {z.free_pages} pages  min/low/high {z.min_pages}/{z.low_pages}/"
                f"{z.high_pages}  allocs {z.allocs}  failures {z.failures}"
            )
    if state.oom_kills_total:
        out.append(_oom_line(state))
    for name, reason in state.unavailable.items():
        out.append(f"{name}: unavailable ({reason})")
    return "\n".join(out) + "\n"


def render_rich(state: DashboardState) -> Any:
    """The rich view for terminals: panels of tables."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table

    parts: list[Any] = []
    if state.memory is not None:
        mem = Table.grid(padding=(0, 2))
        labels = [label for label, _ in _MEMORY_ROWS]
        values = [_bytes(getattr(state.memory, key)) for _, key in _MEMORY_ROWS]
        half = (len(labels) + 1) // 2
        for i in range(half):
            row = [labels[i], values[i]]
            if i + half < len(labels):
                row += [labels[i + half], values[i + half]]
            mem.add_row(*row)
        if state.pressure is not None:
            mem.add_row("pressure", _pressure_line(state.pressure))
        parts.append(Panel(mem, title="system memory (sysstat)", expand=False))
    if state.processes:
        procs = Table(title="top processes by rss (procstat)", title_justify="left")
        for name, justify in (
            ("PID", "right"),
            ("COMM", "left"),
            ("RSS", "right"),
            ("PEAK", "right"),
            ("GROWTH", "right"),
            ("SWAP", "right"),
        ):
            procs.add_column(name, justify=justify)
        for p in state.processes:
            growth = _signed_bytes(p.growth_bytes)
            style = "red" if p.growth_bytes > 0 else None
            procs.add_row(
                str(p.pid),
                p.comm,
                human_bytes(p.rss_bytes),
                human_bytes(p.rss_peak_bytes),
                f"[{style}]{growth}[/]" if style else growth,
                human_bytes(p.swap_bytes),
            )
        parts.append(procs)
    if state.reclaim is not None:
        rec = Table.grid(padding=(0, 2))
        for key, value in _reclaim_lines(state.reclaim):
            rec.add_row(key, value)
        parts.append(Panel(rec, title=f"reclaim, last {state.interval_s:.1f}s (pr)", expand=False))
    if state.zones:
        zones = Table(
            title=(
                f"zones (paf): {state.alloc_failures_total} allocation failures, "
                f"{state.kswapd_wakeups_total} kswapd wakeups since start"
            ),
            title_justify="left",
        )
        for name in ("NODE", "ZONE", "FREE", "MIN", "LOW", "HIGH", "ALLOCS", "FAILURES"):
            zones.add_column(name, justify="left" if name == "ZONE" else "right")
        for z in state.zones:
            zones.add_row(
                str(z.node),
                z.zone,
                str(z.free_pages),
                str(z.min_pages),
                str(z.low_pages),
                str(z.high_pages),
                str(z.allocs),
                str(z.failures),
            )
        parts.append(zones)
    if state.oom_kills_total:
        parts.append(f"[bold red]{_oom_line(state)}[/]")
    for name, reason in state.unavailable.items():
        parts.append(f"[yellow]{name} unavailable:[/] {reason}")
    return Group(*parts)


def fancy_terminal() -> bool:
    """Whether stdout is a terminal that can take a live, redrawn view."""
    return sys.stdout.isatty() and os.environ.get("TERM", "dumb") not in ("", "dumb")
