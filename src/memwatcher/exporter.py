"""`memwatcher export`: Prometheus metrics from the procstat, sysstat, paf, pr and oom programs.

The four reports' BPF programs stay loaded; every scrape reads their maps in
batches through the reports' library APIs (``ProcStat.read``,
``SysStat.read``, ``PageAllocTracer.sample``, ``PageReclaim.read`` /
``latency``) and turns the records into metric families. Nothing slow happens
during a scrape: no symbolization, no sleeping; /proc is read only for the
memory cgroup of a process not seen in the previous scrape. Concurrent
scrapes are serialized by a lock (OOM kills are counted from the oom
report's event stream, which a read consumes once). HTTP is served by
:class:`~memwatcher.metrics_server.MetricsServer`: one thread, a bounded
number of connections and a bounded time per client.

Library use::

    with Reports() as reports:
        collector = MemwatcherCollector(reports, top_processes=20)  # comm + cgroup series
        registry = CollectorRegistry()
        registry.register(collector)
        print(generate_latest(registry).decode())

Conventions (checked by tests/test_exporter.py): every name starts with
``memwatcher_``; sizes are in bytes (pages are converted with the page size
of this machine), durations in seconds; counters end in ``_total`` and count
from the moment the exporter loaded its programs; current levels are gauges.
Label cardinality is bounded: per-process series are opt-in (``top_processes``),
the top N by rss, keyed by ``comm`` + ``cgroup`` (processes alike summed) unless
``process_key="pid"``; ``node``/``zone``/``lru``/``kind`` take a handful of values.
"""

from __future__ import annotations

import os
import re
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from typing import Annotated, NamedTuple

import numpy as np
import typer
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from . import kernel, processes
from .errors import MemwatcherError
from .metrics_server import DEFAULT_CLIENT_TIMEOUT_S, DEFAULT_MAX_CONNECTIONS, MetricsServer
from .options import PID_MAX_LIMIT, Duration
from .pressure import Pressure, read_pressure
from .progress import slow_step
from .reports import REPORT_NAMES, Reports
from .runner import stop_on_signals
from .tools import cgroups, pr, procstat, sysstat
from .vmevents import SwapSpace, VmEvents, read_swap_space, read_vm_events

__all__ = [
    "DEFAULT_LISTEN",
    "MemwatcherCollector",
    "latency_buckets",
    "parse_listen",
    "register",
]

DEFAULT_LISTEN = "127.0.0.1:9464"

# Histogram buckets kept from pr's log2 latency slots: upper bounds 2^10 ns
# (about 1 us) to 2^36 ns (about 69 s). Dropping le buckets of a cumulative
# histogram loses no counts: faster reclaims fall in the first bucket, slower
# ones in +Inf.
_LE_MIN_EXP = 10
_LE_MAX_EXP = 36

# (ProcessMemory field, metric name suffix, HELP) for the top-N processes.
_PROCESS_GAUGES = (
    ("rss_bytes", "rss_bytes", "Resident set size (VmRSS): anon + file + shmem"),
    ("rss_anon_bytes", "rss_anon_bytes", "Resident anonymous memory (RssAnon)"),
    ("rss_file_bytes", "rss_file_bytes", "Resident file-backed memory (RssFile)"),
    ("rss_shmem_bytes", "rss_shmem_bytes", "Resident shared memory (RssShmem)"),
    ("swap_bytes", "swap_bytes", "Swapped-out anonymous memory (VmSwap)"),
    ("vsize_bytes", "virtual_memory_bytes", "Virtual memory size (VmSize)"),
    ("rss_peak_bytes", "rss_peak_bytes", "Largest rss seen: VmHWM or a larger traced sample"),
)

# sysstat keys renamed so that "pages" (the kernel's AnonPages / nr_file_pages)
# is not mistaken for a unit: the values are bytes.
# "sec" (secondary page tables, SecPageTables) would read as an abbreviated unit.
_MEMORY_NAMES = {
    "anon_pages_bytes": "anon_mapped_bytes",
    "file_pages_bytes": "file_cache_bytes",
    "sec_page_tables_bytes": "secondary_page_tables_bytes",
}

# (ZoneStats field, metric name suffix, HELP) per zone; pages converted to bytes.
_ZONE_GAUGES = (
    ("free_pages", "free_bytes", "Free memory in the zone"),
    ("min_pages", "watermark_min_bytes", "Effective min watermark (_watermark[WMARK_MIN] + boost)"),
    ("low_pages", "watermark_low_bytes", "Effective low watermark: kswapd wakes below it"),
    ("high_pages", "watermark_high_bytes", "Effective high watermark: kswapd sleeps above it"),
    ("boost_pages", "watermark_boost_bytes", "Watermark boost (already included in min/low/high)"),
    ("managed_pages", "managed_bytes", "Memory managed by the buddy allocator in the zone"),
    ("present_pages", "present_bytes", "Physical memory present in the zone"),
)

# (ReclaimSample field, metric name, HELP) of pr's per-node reclaim_stat breakdown (pages -> bytes).
_RECLAIM_STAT_COUNTERS = (
    ("dirty_pages", "reclaim_dirty_bytes_total", "Dirty pages met by inactive-list shrinking"),
    ("unqueued_dirty_pages", "reclaim_unqueued_dirty_bytes_total", "Dirty pages not yet queued for writeback"),
    ("congested_pages", "reclaim_congested_bytes_total", "Pages under writeback to a congested device"),
    ("writeback_pages", "reclaim_writeback_bytes_total", "Pages under writeback met by reclaim"),
    ("immediate_pages", "reclaim_immediate_bytes_total", "Writeback pages marked for immediate reclaim"),
    ("pageout_pages", "reclaim_pageout_bytes_total", "Pages reclaim wrote out itself"),
    ("activated_pages", "reclaim_activated_bytes_total", "Pages moved back to the active list"),
    ("active_scanned_pages", "reclaim_active_scanned_bytes_total", "Pages taken from the active lists"),
    ("deactivated_pages", "reclaim_deactivated_bytes_total", "Pages moved from the active to the inactive lists"),
)


# ---------------------------------------------------------------- pure helpers


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` (``[v6addr]:PORT`` for IPv6) -> (addr, port).

    The address is required: listening on every interface must be asked for
    explicitly (``0.0.0.0:9464`` or ``[::]:9464``). Raises ValueError.
    """
    m = re.fullmatch(r"\[([0-9A-Fa-f:.%\w]+)\]:(\d+)|([^:\[\]]+):(\d+)", text.strip())
    if not m:
        raise ValueError(
            f"expected ADDR:PORT such as {DEFAULT_LISTEN} (0.0.0.0:PORT or [::]:PORT for all interfaces), got {text!r}"
        )
    addr = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range 1-65535")
    return addr, port


def latency_buckets(slots: Sequence[int]) -> list[tuple[str, float]]:
    """pr's log2 latency slots -> cumulative Prometheus buckets (``le`` in seconds, then +Inf).

    Slot ``s`` counts reclaims of [2^s, 2^(s+1)) ns (:func:`pr.bucket_bounds`),
    so the cumulative count up to slot ``s`` is the bucket ``le = 2^(s+1) ns``.
    (``le`` means <=; a reclaim of exactly 2^(s+1) ns lands one bucket higher,
    a 1 ns difference.)
    """
    buckets = []
    running = 0
    for s, n in enumerate(slots):
        running += int(n)
        _, high_ns = pr.bucket_bounds(s, len(slots))
        if high_ns is not None and (1 << _LE_MIN_EXP) <= high_ns <= (1 << _LE_MAX_EXP):
            buckets.append((floatToGoString(high_ns / 1e9), float(running)))
    buckets.append(("+Inf", float(running)))
    return buckets


def top_by_rss(procs: list[procstat.ProcessMemory], n: int) -> list[procstat.ProcessMemory]:
    """The ``n`` processes with the largest rss (ties: lower pid first)."""
    return procstat.select_rows(procs, "rss_bytes", n)


# What identifies a per-process series (--process-key), as its labels. "name" survives
# restarts and keeps the series count bounded: processes sharing comm and cgroup are summed.
PROCESS_KEYS = {"name": ("comm", "cgroup"), "pid": ("pid", "comm", "cgroup")}


class ProcessSeries(NamedTuple):
    """One per-process series: its label values (as PROCESS_KEYS names them), how many
    processes it sums, and their sizes in bytes by ProcessMemory field."""

    labels: tuple[str, ...]
    processes: int
    sizes: dict[str, int]


def process_series(
    procs: list[procstat.ProcessMemory], n: int, key: str, cgroup_of: Callable[[procstat.ProcessMemory], str | None]
) -> list[ProcessSeries]:
    """The ``n`` largest series by rss (ties: by labels). ``cgroup_of(process)`` gives a process's
    memory cgroup path (None: unknown, exported as "")."""
    if key not in PROCESS_KEYS:
        raise ValueError(f"process key must be one of {', '.join(PROCESS_KEYS)}")
    if key == "pid":
        procs = top_by_rss(procs, n)  # one process per series: only the top ones need a cgroup
    members: dict[tuple[str, ...], list[procstat.ProcessMemory]] = {}
    for p in procs if n else ():
        cgroup = cgroup_of(p) or ""
        labels = (p.comm, cgroup) if key == "name" else (str(p.pid), p.comm, cgroup)
        members.setdefault(labels, []).append(p)
    series = [
        ProcessSeries(labels, len(group), {f: sum(getattr(p, f) for p in group) for f, _, _ in _PROCESS_GAUGES})
        for labels, group in members.items()
    ]
    series.sort(key=lambda s: (-s.sizes["rss_bytes"], s.labels))
    return series[:n]


# ---------------------------------------------------------------- collector


def _name(suffix: str) -> str:
    return "memwatcher_" + suffix


def _pressure_metrics(pressure: Pressure | None) -> list[Metric]:
    """The system's memory pressure (PSI): stall time counters and the kernel's running averages.

    None (a kernel without PSI) exports nothing.
    """
    if pressure is None:
        return []
    stalled = CounterMetricFamily(
        _name("memory_pressure_stalled_seconds"),
        "Time some (at least one) or full (all non-idle) tasks stalled on memory, from /proc/pressure/memory",
        labels=["kind"],
    )
    ratio = GaugeMetricFamily(
        _name("memory_pressure_ratio"),
        "Share of time tasks stalled on memory, the kernel's running average over the window",
        labels=["kind", "window"],
    )
    for kind in ("some", "full"):
        stalled.add_metric([kind], getattr(pressure, f"{kind}_total_us") / 1e6)
        for window in ("10", "60", "300"):
            ratio.add_metric([kind, f"{window}s"], getattr(pressure, f"{kind}_avg{window}_pct") / 100)
    return [stalled, ratio]


def _vm_event_metrics(events: VmEvents, swap: SwapSpace | None, page_bytes: int) -> list[Metric]:
    """Faults and swap traffic since boot (from /proc/vmstat), and swap space (from /proc/meminfo)."""
    out = []
    for field, name, help_, scale in (
        ("page_faults", "page_faults", "Page faults, minor and major, since boot", 1),
        ("major_faults", "major_page_faults", "Page faults that waited for I/O, since boot", 1),
        ("swap_in_pages", "swap_in_bytes", "Memory read back from swap since boot, bytes", page_bytes),
        ("swap_out_pages", "swap_out_bytes", "Memory written out to swap since boot, bytes", page_bytes),
    ):
        value = getattr(events, field)
        if value is not None:
            counter = CounterMetricFamily(_name(name), help_)
            counter.add_metric([], value * scale)
            out.append(counter)
    if swap is not None:
        for name, value, help_ in (
            ("memory_swap_size_bytes", swap.total_bytes, "Swap space of every active swap area (SwapTotal)"),
            ("memory_swap_free_bytes", swap.free_bytes, "Unused swap space (SwapFree)"),
        ):
            gauge = GaugeMetricFamily(_name(name), help_)
            gauge.add_metric([], value)
            out.append(gauge)
    return out


class MemwatcherCollector(Collector):
    """A prometheus_client collector over loaded :class:`Reports`.

    ``collect()`` reads every report once (batched map reads) under a lock and
    returns fresh metric families. Counters (``*_total``, histograms) count
    from when the programs were loaded (BPF keeps them so); OOM kills are
    counted here from the events each read consumes. :meth:`close` waits for a running
    scrape and makes later ones empty, so the BPF objects can then be closed.
    """

    def __init__(
        self, reports: Reports, top_processes: int = 0, top_cgroups: int = 0, process_key: str = "name"
    ) -> None:
        if process_key not in PROCESS_KEYS:
            raise ValueError(f"process key must be one of {', '.join(PROCESS_KEYS)}")
        self.reports = reports
        self.top_processes = top_processes
        self.process_key = process_key
        # (pid, comm) -> memory cgroup, for the processes of the last scrape.
        self._cgroups_by_process: dict[tuple[int, str], str | None] = {}
        self.top_cgroups = top_cgroups
        self._cgroup_hierarchy = cgroups.find_hierarchy() if top_cgroups else None
        self._cgroup_paths = cgroups.CgroupPaths(self._cgroup_hierarchy) if self._cgroup_hierarchy else None
        self.page_bytes = kernel.page_size()
        self._lock = threading.Lock()
        self._closed = False
        self._read_errors = dict.fromkeys(REPORT_NAMES, 0)
        self._scrapes = 0
        # OOM kills since load by kind ("unknown": the killer's oom_control was not found).
        self._oom_kills = {"global": 0, "memcg": 0}

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if self._closed:
                return iter(())
            started = time.perf_counter()
            families: list[Metric] = []
            for name, read in (
                ("procstat", self._procstat),
                ("sysstat", self._sysstat),
                ("paf", self._paf),
                ("pr", self._pr),
                ("oom", self._oom),
            ):
                if getattr(self.reports, name) is None:
                    continue
                try:
                    families += read()
                except (MemwatcherError, OSError) as e:
                    self._read_errors[name] += 1
                    print(f"memwatcher: export: reading {name} failed: {e}", file=sys.stderr)
            if self._cgroup_hierarchy is not None:
                try:
                    families += self._cgroups()
                except OSError as e:
                    print(f"memwatcher: export: reading cgroups failed: {e}", file=sys.stderr)
            self._scrapes += 1
            families += self._self_metrics(time.perf_counter() - started)
            return iter(families)

    # ---- procstat

    def _procstat(self) -> list[Metric]:
        ps = self.reports.procstat
        procs = ps.read()
        labels = list(PROCESS_KEYS[self.process_key])
        summed = ", summed over the processes of a comm and cgroup" if self.process_key == "name" else ""
        gauges = {
            field: GaugeMetricFamily(
                _name("process_" + suffix), f"{help_}, bytes{summed}; the top series by rss", labels=labels
            )
            for field, suffix, help_ in _PROCESS_GAUGES
        }
        instances = GaugeMetricFamily(
            _name("process_instances"), "Processes summed into the series; the top series by rss", labels=labels
        )
        known = self._cgroups_by_process
        self._cgroups_by_process = {}

        def cgroup_of(p: procstat.ProcessMemory) -> str | None:
            # A pid reused by another program gets another comm, so a new lookup.
            key = (p.pid, p.comm)
            found = known[key] if key in known else processes.process_cgroup(p.pid)
            self._cgroups_by_process[key] = found
            return found

        for series in process_series(procs, self.top_processes, self.process_key, cgroup_of):
            for field, gauge in gauges.items():
                gauge.add_metric(list(series.labels), series.sizes[field])
            instances.add_metric(list(series.labels), series.processes)
        tracked = GaugeMetricFamily(
            _name("processes_tracked"), "Processes procstat currently holds (seen switching out since load)"
        )
        tracked.add_metric([], len(procs))
        untracked = CounterMetricFamily(
            _name("processes_untracked"), "Processes not tracked because procstat's table was full"
        )
        untracked.add_metric([], ps.dropped)
        return [*gauges.values(), instances, tracked, untracked]

    # ---- sysstat

    def _sysstat(self) -> list[Metric]:
        stat = self.reports.sysstat
        rows = stat.read(per_node=True)
        out = []
        for c in sysstat.COUNTERS:
            g = GaugeMetricFamily(
                _name("memory_" + _MEMORY_NAMES.get(c.key, c.key)),
                f"System memory: {c.meminfo or c.vmstat or c.key.removesuffix('_bytes')} (vm_stat snapshot, bytes), "
                "per NUMA node",
                labels=["node"],
            )
            for r in rows:
                value = getattr(r, c.key)
                if value is not None:
                    g.add_metric([str(r.node)], value)
            if g.samples:
                out.append(g)
        age = GaugeMetricFamily(_name("memory_snapshot_age_seconds"), "Age of the vm_stat snapshot read")
        newest_ns = max(r.snapshot_ns for r in rows)
        age.add_metric([], max(0, time.monotonic_ns() - newest_ns) / 1e9)
        st = stat.stats()
        snaps = CounterMetricFamily(
            _name("memory_snapshots"), "vm_stat snapshots taken by BPF, by trigger", labels=["trigger"]
        )
        snaps.add_metric(["alloc"], st.snapshots - st.forced)
        snaps.add_metric(["forced"], st.forced)
        return [
            *out,
            age,
            snaps,
            *_pressure_metrics(read_pressure()),
            *_vm_event_metrics(read_vm_events(), read_swap_space(), stat.page_bytes),
        ]

    # ---- paf

    def _paf(self) -> list[Metric]:
        sample = self.reports.paf.sample()
        zone_labels = ["node", "zone"]
        gauges = {
            field: GaugeMetricFamily(_name("zone_" + suffix), f"{help_}, bytes", labels=zone_labels)
            for field, suffix, help_ in _ZONE_GAUGES
        }
        for z in sample.zones:
            if not z.present_pages:
                continue  # an empty zone (or the row of unattributed allocations)
            for field, gauge in gauges.items():
                value = getattr(z, field)
                if value is not None:
                    gauge.add_metric([str(z.node), z.zone], value * self.page_bytes)
        allocs = CounterMetricFamily(
            _name("page_allocations"), "Page allocations (any order), by zone of the page", labels=zone_labels
        )
        failures = CounterMetricFamily(
            _name("page_allocation_failures"),
            "Page allocations that returned no page, by the zone they were booked to",
            labels=zone_labels,
        )
        wakeups = CounterMetricFamily(
            _name("kswapd_wakeup_requests"),
            "Requests to wake kswapd for a zone (mm_vmscan_wakeup_kswapd)",
            labels=zone_labels,
        )
        for z in sample.zones:  # counts since the programs were loaded
            allocs.add_metric([str(z.node), z.zone], z.allocs)
            failures.add_metric([str(z.node), z.zone], z.failures)
            wakeups.add_metric([str(z.node), z.zone], z.kswapd_wakeups)
        uncounted = CounterMetricFamily(
            _name("page_allocations_uncounted"), "Page allocations not counted because paf's table was full"
        )
        uncounted.add_metric([], sample.keys_dropped)
        return [*gauges.values(), allocs, failures, wakeups, uncounted]

    # ---- pr

    def _pr(self) -> list[Metric]:
        reclaim = self.reports.pr
        snap = reclaim.read()
        nodes = snap.per_node()
        page = self.page_bytes
        scanned = CounterMetricFamily(
            _name("reclaim_scanned_bytes"),
            "Memory isolated from the inactive LRU lists for reclaim (mm_vmscan_lru_shrink_inactive)",
            labels=["node", "lru"],
        )
        reclaimed = CounterMetricFamily(
            _name("reclaim_reclaimed_bytes"), "Memory reclaimed from the inactive LRU lists", labels=["node", "lru"]
        )
        for n in nodes:
            node = str(n.node)
            scanned.add_metric([node, "anon"], n.scanned_anon_pages * page)
            scanned.add_metric([node, "file"], n.scanned_file_pages * page)
            reclaimed.add_metric([node, "anon"], n.reclaimed_anon_pages * page)
            reclaimed.add_metric([node, "file"], n.reclaimed_file_pages * page)
        out: list[Metric] = [scanned, reclaimed]
        for field, suffix, help_ in _RECLAIM_STAT_COUNTERS:
            c = CounterMetricFamily(_name(suffix.removesuffix("_total")), f"{help_} (bytes)", labels=["node"])
            for n in nodes:
                value = getattr(n, field)
                if value is not None:
                    c.add_metric([str(n.node)], value * page)
            if c.samples:
                out.append(c)
        for field, suffix, help_ in (
            ("kswapd_wakeups", "kswapd_wakeups", "Times kswapd woke up to reclaim (mm_vmscan_kswapd_wake)"),
            ("kswapd_sleeps", "kswapd_sleeps", "Times kswapd went back to sleep (mm_vmscan_kswapd_sleep)"),
        ):
            c = CounterMetricFamily(_name(suffix), help_, labels=["node"])
            for n in nodes:
                value = getattr(n, field)
                if value is not None:
                    c.add_metric([str(n.node)], value)
            if c.samples:
                out.append(c)
        out += self._reclaim_latency(reclaim, snap)
        lost = CounterMetricFamily(
            _name("reclaim_events_lost"), "Reclaim events pr could not book, by reason", labels=["reason"]
        )
        for reason, value in snap.lost.items():
            lost.add_metric([reason], value)
        out.append(lost)
        return out

    def _reclaim_latency(self, reclaim: pr.PageReclaim, snap: pr.Snapshot) -> list[Metric]:
        """Direct and memcg reclaim stalls: a histogram (seconds) and reclaimed bytes, by kind."""
        slots = {kind: np.zeros(reclaim.layouts.constants["PR_HIST_SLOTS"], dtype=np.uint64) for kind in pr.KINDS}
        sums_ns = dict.fromkeys(pr.KINDS, 0)
        for h in reclaim.latency():
            slots[h.kind] += np.asarray(h.slots, dtype=np.uint64)
            sums_ns[h.kind] += h.total_ns
        hist = HistogramMetricFamily(
            _name("reclaim_stall_seconds"),
            "Time tasks spent in direct reclaim (kind=direct) or memory cgroup limit reclaim (kind=memcg)",
            labels=["kind"],
        )
        for kind in pr.KINDS:
            hist.add_metric([kind], latency_buckets(slots[kind].tolist()), sums_ns[kind] / 1e9)
        total = snap.total()
        stall_reclaimed = CounterMetricFamily(
            _name("reclaim_stall_reclaimed_bytes"), "Memory reclaimed by direct / memcg reclaim", labels=["kind"]
        )
        for kind, pages in (("direct", total.direct_reclaimed_pages), ("memcg", total.memcg_reclaimed_pages)):
            if pages is not None:
                stall_reclaimed.add_metric([kind], pages * self.page_bytes)
        return [hist, stall_reclaimed]

    # ---- the exporter itself

    # ---- cgroups

    def _cgroups(self) -> list[Metric]:
        """The largest ``top_cgroups`` cgroups (below the root) by usage: at most that many series each."""
        assert self._cgroup_hierarchy is not None
        rows = [r for r in cgroups.read_cgroups(self._cgroup_hierarchy) if r.path != "/"]
        rows = sorted(rows, key=lambda r: (-r.current_bytes, r.path))[: self.top_cgroups]
        if self.reports.pr is not None and self._cgroup_paths is not None:
            rows = cgroups.with_reclaim_stalls(rows, self.reports.pr.cgroup_latency(), self._cgroup_paths)
        labels = ["cgroup", "container"]
        usage = GaugeMetricFamily(
            _name("cgroup_memory_bytes"), "Memory charged to the cgroup and its descendants", labels=labels
        )
        limit = GaugeMetricFamily(
            _name("cgroup_memory_limit_bytes"), "The cgroup's memory limit (limited only)", labels=labels
        )
        counters = {
            field: CounterMetricFamily(_name(name), help_, labels=labels)
            for field, name, help_ in (
                ("oom_kills", "cgroup_oom_kills", "OOM kills in the cgroup (its own count)"),
                ("limit_hits", "cgroup_memory_limit_hits", "Charges that met the cgroup's limit (v2 max, v1 failcnt)"),
                ("reclaim_scanned_bytes", "cgroup_reclaim_scanned_bytes", "Memory reclaim scanned in the cgroup"),
                ("reclaim_reclaimed_bytes", "cgroup_reclaim_reclaimed_bytes", "Memory reclaim freed in the cgroup"),
            )
        }
        stalled = CounterMetricFamily(
            _name("cgroup_memory_pressure_stalled_seconds"),
            "Time some or all of the cgroup's tasks stalled on memory (memory.pressure)",
            labels=[*labels, "kind"],
        )
        reclaim_stalls = CounterMetricFamily(
            _name("cgroup_reclaim_stalls"),
            "Direct (kind=direct) and limit (kind=memcg) reclaims that tasks of the cgroup (and below) waited in",
            labels=[*labels, "kind"],
        )
        reclaim_stall_seconds = CounterMetricFamily(
            _name("cgroup_reclaim_stall_seconds"),
            "Time tasks of the cgroup (and below) waited in direct (kind=direct) or limit (kind=memcg) reclaim",
            labels=[*labels, "kind"],
        )
        for r in rows:
            values = [r.path, r.container or ""]
            usage.add_metric(values, r.current_bytes)
            for kind in pr.KINDS:
                stalls, stall_ns = getattr(r, f"{kind}_reclaim_stalls"), getattr(r, f"{kind}_reclaim_stall_ns")
                if stalls is not None:
                    reclaim_stalls.add_metric([*values, kind], stalls)
                    reclaim_stall_seconds.add_metric([*values, kind], stall_ns / 1e9)
            if r.limit_bytes is not None:
                limit.add_metric(values, r.limit_bytes)
            for field, counter in counters.items():
                value = getattr(r, field)
                if value is not None:
                    counter.add_metric(values, value)
            for kind in ("some", "full"):
                total_us = getattr(r, f"pressure_{kind}_total_us")
                if total_us is not None:
                    stalled.add_metric([*values, kind], total_us / 1e6)
        return [usage, limit, *counters.values(), stalled, reclaim_stalls, reclaim_stall_seconds]

    # ---- oom

    def _oom(self) -> list[Metric]:
        watcher = self.reports.oom
        for kill in watcher.consume():
            kind = kill.kind or "unknown"
            self._oom_kills[kind] = self._oom_kills.get(kind, 0) + 1
        kills = CounterMetricFamily(
            _name("oom_kills"), "Processes the OOM killer killed since the exporter started", labels=["kind"]
        )
        for kind, n in self._oom_kills.items():
            kills.add_metric([kind], n)
        dropped = CounterMetricFamily(_name("oom_kill_records_dropped"), "OOM kills lost to a full ring buffer")
        dropped.add_metric([], watcher.events_dropped)
        return [kills, dropped]

    def _self_metrics(self, duration_s: float) -> list[Metric]:
        loaded = GaugeMetricFamily(
            _name("exporter_report_loaded"), "1 if the report's BPF programs are loaded, 0 if not", labels=["report"]
        )
        errors = CounterMetricFamily(
            _name("exporter_read_errors"), "Scrapes in which reading the report failed", labels=["report"]
        )
        for name in REPORT_NAMES:
            loaded.add_metric([name], 0 if getattr(self.reports, name) is None else 1)
            errors.add_metric([name], self._read_errors[name])
        took = GaugeMetricFamily(
            _name("exporter_collect_duration_seconds"), "Time this scrape spent reading the BPF maps"
        )
        took.add_metric([], duration_s)
        scrapes = CounterMetricFamily(_name("exporter_scrapes"), "Scrapes served since the exporter started")
        scrapes.add_metric([], self._scrapes)
        return [loaded, errors, took, scrapes]


# ---------------------------------------------------------------- CLI


def _parse_listen_option(text: str) -> tuple[str, int]:
    try:
        return parse_listen(text)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--listen") from None


# File descriptors kept free beyond the connection limit: BPF objects, the
# listener, a burst of accepted connections about to be closed.
_FD_MARGIN = 256


def ensure_open_files(max_connections: int) -> None:
    """Raise the soft RLIMIT_NOFILE so that ``max_connections`` sockets fit, or fail with one line.

    Run out of descriptors, a server can neither accept nor answer; the
    connection limit must be reachable first.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = len(os.listdir("/proc/self/fd")) + max_connections + _FD_MARGIN
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise MemwatcherError(
                f"--max-connections {max_connections} needs about {need} open files, but the limit is {hard} "
                "(raise LimitNOFILE= or ulimit -n, or lower --max-connections)"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_command(
        listen: Annotated[
            str,
            typer.Option(
                "--listen",
                "-l",
                help="ADDR:PORT to serve /metrics on; 0.0.0.0:PORT or [::]:PORT listens on every interface.",
            ),
        ] = DEFAULT_LISTEN,
        top_processes: Annotated[
            int,
            typer.Option(
                "--top-processes",
                "--top",
                "-n",
                min=0,
                help="Export per-process series, the N largest by rss (0: none). Each series costs 8 time series.",
            ),
        ] = 0,
        process_key: Annotated[
            str,
            typer.Option(
                "--process-key",
                help="What a per-process series is: 'name' (comm and cgroup, processes alike summed; stable "
                "across restarts) or 'pid' (one per process, a new series for every new pid).",
            ),
        ] = "name",
        max_processes: Annotated[
            int,
            typer.Option("--max-processes", min=1, max=PID_MAX_LIMIT, help="Capacity of procstat's in-kernel table."),
        ] = 16384,
        top_cgroups: Annotated[
            int,
            typer.Option(
                "--top-cgroups", min=0, max=10_000, help="Export the memory of the N largest cgroups (0: none)."
            ),
        ] = 20,
        max_connections: Annotated[
            int,
            typer.Option(
                "--max-connections",
                min=1,
                max=65536,
                help="HTTP connections kept open at most; at the limit the oldest is closed for a new one.",
            ),
        ] = DEFAULT_MAX_CONNECTIONS,
        client_timeout: Annotated[
            float,
            typer.Option(
                "--client-timeout",
                min=0.1,
                max=3600,
                help="Seconds a client has to send its request, and again to take the response.",
            ),
        ] = DEFAULT_CLIENT_TIMEOUT_S,
        duration: Duration = None,
    ) -> None:
        """Serve Prometheus metrics from procstat, sysstat, paf, pr, oom and cgroups over HTTP.

        Per-process memory (top N by rss), system memory per node and its
        pressure, zone watermarks and free memory, allocation failures, kswapd,
        page reclaim and a reclaim stall histogram, OOM kills, and the largest
        cgroups. Stops on SIGINT/SIGTERM (or --duration).
        Example: memwatcher export --listen 127.0.0.1:9464 --top-processes 20 --top-cgroups 20
        """
        if process_key not in PROCESS_KEYS:
            raise typer.BadParameter(f"must be one of {', '.join(PROCESS_KEYS)}", param_hint="--process-key")
        addr, port = _parse_listen_option(listen)
        ensure_open_files(max_connections)
        with stop_on_signals() as stop, ExitStack() as stack:
            with slow_step("loading and attaching the procstat, sysstat, paf, pr and oom programs..."):
                reports = stack.enter_context(Reports(max_processes=max_processes))
            for name, reason in reports.unavailable.items():
                print(f"memwatcher: export: {name} unavailable: {reason}", file=sys.stderr)
            collector = MemwatcherCollector(reports, top_processes, top_cgroups, process_key)
            stack.callback(collector.close)  # runs before the reports close: waits for a running scrape
            registry = CollectorRegistry()
            registry.register(collector)
            ProcessCollector(namespace="memwatcher_exporter", registry=registry)
            server = MetricsServer(registry, addr, port, max_connections, client_timeout)
            try:
                server.start()
            except OSError as e:
                raise MemwatcherError(f"cannot listen on {listen}: {e.strerror or e}") from None
            stack.callback(server.close)  # first: no scrape starts once the reports begin closing
            registry.register(server)
            print(f"memwatcher: serving metrics on http://{listen}/metrics", file=sys.stderr, flush=True)
            stop.wait(duration)
