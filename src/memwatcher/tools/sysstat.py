"""`memwatcher sysstat`: where the system's memory is, like /proc/meminfo, event-driven.

BPF snapshots every NUMA node's ``vm_stat`` counters (and the sums over each
node's zones) on page allocations (``mm_page_alloc``), at most once per
``SysStatOptions.min_period_ms``, so the numbers follow the workload. When nothing
was allocated lately, :meth:`SysStat.read` takes a fresh snapshot itself by
test-running a second BPF program: a snapshot is never older than the rate
limit.

Library use::

    with SysStat() as stat:
        total = stat.read()[0]               # SysSample, node None: all nodes
        print(total.dirty_bytes, total.free_bytes)
        per_node = stat.read(per_node=True)  # one SysSample per node

Every counter is a current level (not cumulative) in bytes: page counts are
multiplied by the page size of this machine, KiB counters by 1024. A value of
``None`` means the running kernel does not have that counter (e.g.
``bounce_bytes`` after bounce buffering was removed), never zero.

Units per kernel version, from the enumerator names in kernel BTF (supported
kernels are >= 5.15):

* ``NR_SLAB_RECLAIMABLE_B`` / ``NR_SLAB_UNRECLAIMABLE_B`` (5.9+; without the
  ``_B`` before): memcg keeps them in bytes, but node and global counters
  hold pages under both names, which is what BPF reads.
* ``NR_ANON_THPS``, ``NR_SHMEM_THPS``, ``NR_FILE_THPS`` and the
  ``*_PMDMAPPED`` counters count base pages since 5.13 (huge pages before,
  older than the supported floor). ``/proc/vmstat`` prints them divided by
  the huge page size; ``/proc/meminfo`` in kB, as here.
* ``NR_KERNEL_STACK_KB`` counts KiB, a node item since 5.9.

Beside the snapshot, each report row has the system's swap space and the rates
of page faults, major faults and swap traffic since the previous row (group
``swap`` and ``faults``): counters BPF cannot reach here, read from /proc
(see :mod:`memwatcher.vmevents`). Like pressure, they are system-wide.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, NamedTuple

import numpy as np
import typer

from .. import kernel
from ..libbpf import BTF, BPFObject, MemwatcherError
from ..objects import header, object_path
from ..options import Count, Duration, Interval, Output, OutputFormat, schedule
from ..output import Column, Writer, make_writer, timestamp
from ..pressure import SYSTEM_MEMORY_PRESSURE, Pressure, read_pressure
from ..progress import slow_step
from ..runner import run_periodic, stop_on_signals
from ..topology import node_id_count, node_ids
from ..vmevents import EventRates, read_swap_space
from ._lifecycle import BPFReport

__all__ = [
    "COUNTERS",
    "GROUPS",
    "Counter",
    "NodeDataError",
    "SnapshotStats",
    "SysSample",
    "SysStat",
    "SysStatOptions",
    "columns_for",
    "mem_available",
    "plan",
    "register",
]

_VARIANTS = ("tp_btf", "raw_tp")
_PROGRAMS = {"tp_btf": "snapshot_on_alloc", "raw_tp": "snapshot_on_alloc_raw"}
_TRIGGERS = {1: "alloc", 2: "forced"}
_ROUND_NS = 1_000_000  # entries this close to the newest belong to the same snapshot round


class NodeDataError(MemwatcherError):
    """BPF could not reach the kernel's per-node memory statistics."""


# ---------------------------------------------------------------- counters


@dataclass(frozen=True)
class Counter:
    """One reported counter: the sum of kernel vm_stat slots, converted to bytes.

    ``slots`` name ``SYSSTAT_*`` slots of bpf/sysstat.h; ``kib`` marks a
    counter the kernel keeps in KiB (all others are in pages). ``meminfo`` is
    the /proc/meminfo line with the same meaning, ``vmstat`` the /proc/vmstat
    line (in pages) where one exists.
    """

    key: str
    header: str
    group: str
    slots: tuple[str, ...]
    meminfo: str | None = None
    vmstat: str | None = None
    kib: bool = False


COUNTERS: tuple[Counter, ...] = (
    # part1: the original tool's default view (LRU lists, dirty state, mappings), plus free.
    Counter("active_bytes", "ACTIVE", "part1", ("ACTIVE_ANON", "ACTIVE_FILE"), "Active"),
    Counter("inactive_bytes", "INACTIVE", "part1", ("INACTIVE_ANON", "INACTIVE_FILE"), "Inactive"),
    Counter("active_anon_bytes", "ANON_ACT", "part1", ("ACTIVE_ANON",), "Active(anon)", "nr_active_anon"),
    Counter("inactive_anon_bytes", "ANON_INA", "part1", ("INACTIVE_ANON",), "Inactive(anon)", "nr_inactive_anon"),
    Counter("active_file_bytes", "FILE_ACT", "part1", ("ACTIVE_FILE",), "Active(file)", "nr_active_file"),
    Counter("inactive_file_bytes", "FILE_INA", "part1", ("INACTIVE_FILE",), "Inactive(file)", "nr_inactive_file"),
    Counter("unevictable_bytes", "UNEVICT", "part1", ("UNEVICTABLE",), "Unevictable", "nr_unevictable"),
    Counter("dirty_bytes", "DIRTY", "part1", ("FILE_DIRTY",), "Dirty", "nr_dirty"),
    Counter("writeback_bytes", "WRITEBK", "part1", ("WRITEBACK",), "Writeback", "nr_writeback"),
    Counter("anon_pages_bytes", "ANONPAG", "part1", ("ANON_MAPPED",), "AnonPages", "nr_anon_pages"),
    Counter("mapped_bytes", "MAPPED", "part1", ("FILE_MAPPED",), "Mapped", "nr_mapped"),
    Counter("shmem_bytes", "SHMEM", "part1", ("SHMEM",), "Shmem", "nr_shmem"),
    Counter("free_bytes", "FREE", "part1", ("FREE_PAGES",), "MemFree", "nr_free_pages"),
    Counter("available_bytes", "AVAIL", "part1", (), "MemAvailable"),  # derived: mem_available()
    Counter("total_bytes", "TOTAL", "part1", ("MANAGED",), "MemTotal"),
    # part2: the original's -n view (kernel memory) plus huge pages and the rest of meminfo's vm_stat lines.
    Counter("kreclaimable_bytes", "KRECLM", "part2", ("SLAB_RECLAIMABLE", "KERNEL_MISC_RECLAIMABLE"), "KReclaimable"),
    Counter("slab_bytes", "SLAB", "part2", ("SLAB_RECLAIMABLE", "SLAB_UNRECLAIMABLE"), "Slab"),
    Counter("sreclaimable_bytes", "SRECLM", "part2", ("SLAB_RECLAIMABLE",), "SReclaimable", "nr_slab_reclaimable"),
    Counter("sunreclaim_bytes", "SUNRECL", "part2", ("SLAB_UNRECLAIMABLE",), "SUnreclaim", "nr_slab_unreclaimable"),
    Counter("anon_huge_bytes", "ANONHUGE", "part2", ("ANON_THPS",), "AnonHugePages"),
    Counter("shmem_huge_bytes", "SHMEMHUGE", "part2", ("SHMEM_THPS",), "ShmemHugePages"),
    Counter("shmem_pmd_mapped_bytes", "SHMEMPMD", "part2", ("SHMEM_PMDMAPPED",), "ShmemPmdMapped"),
    Counter("file_huge_bytes", "FILEHUGE", "part2", ("FILE_THPS",), "FileHugePages"),
    Counter("file_pmd_mapped_bytes", "FILEPMD", "part2", ("FILE_PMDMAPPED",), "FilePmdMapped"),
    Counter("kernel_stack_bytes", "KSTACK", "part2", ("KERNEL_STACK_KB",), "KernelStack", "nr_kernel_stack", True),
    Counter("page_tables_bytes", "PGTABLE", "part2", ("PAGETABLE",), "PageTables", "nr_page_table_pages"),
    Counter(
        "sec_page_tables_bytes",
        "SECPGTBL",
        "part2",
        ("SECONDARY_PAGETABLE",),
        "SecPageTables",
        "nr_sec_page_table_pages",
    ),
    Counter("mlocked_bytes", "MLOCKED", "part2", ("MLOCK",), "Mlocked", "nr_mlock"),
    Counter("file_pages_bytes", "FILEPAG", "part2", ("FILE_PAGES",), None, "nr_file_pages"),
    Counter("swap_cached_bytes", "SWAPCACHE", "part2", ("SWAPCACHE",), "SwapCached", "nr_swapcached"),
    Counter("cma_free_bytes", "CMAFREE", "part2", ("FREE_CMA_PAGES",), "CmaFree", "nr_free_cma"),
    Counter("bounce_bytes", "BOUNCE", "part2", ("BOUNCE",), "Bounce", "nr_bounce"),
    Counter("writeback_tmp_bytes", "WBTMP", "part2", ("WRITEBACK_TEMP",), "WritebackTmp", "nr_writeback_temp"),
    Counter("low_watermark_bytes", "WMARKLOW", "part2", ("WMARK_LOW",)),
    Counter("reserved_bytes", "RESERVED", "part2", ("TOTALRESERVE",)),
)
# System-wide groups, not per node: "pressure" (PSI, memwatcher.pressure), "swap" (swap
# space and traffic) and "faults" (fault rates), from memwatcher.vmevents.
GROUPS = ("part1", "part2", "pressure", "swap", "faults")
# (key, table header, unit, group) of the system-wide columns from /proc.
_SYSTEM_COLUMNS = (
    ("swap_total_bytes", "SWAPTOT", "bytes", "swap"),
    ("swap_free_bytes", "SWAPFREE", "bytes", "swap"),
    ("swap_in_bytes_per_s", "SWPIN/s", "bytes", "swap"),
    ("swap_out_bytes_per_s", "SWPOUT/s", "bytes", "swap"),
    ("page_faults_per_s", "FLT/s", "", "faults"),
    ("major_faults_per_s", "MAJFLT/s", "", "faults"),
)


@dataclass(frozen=True)
class SysSample:
    """Memory counters of one snapshot: all nodes (``node`` None) or one node.

    Every ``*_bytes`` field is a current level in bytes (not cumulative);
    ``None`` means this kernel lacks the counter. ``snapshot_ns`` is when BPF
    took the snapshot (CLOCK_MONOTONIC ns, as ``time.monotonic_ns()``), and
    ``trigger`` what took it: "alloc" (a page allocation) or "forced"
    (user space, no allocation since the rate-limit period).
    """

    node: int | None
    snapshot_ns: int
    trigger: str
    active_bytes: int | None
    inactive_bytes: int | None
    active_anon_bytes: int | None
    inactive_anon_bytes: int | None
    active_file_bytes: int | None
    inactive_file_bytes: int | None
    unevictable_bytes: int | None
    dirty_bytes: int | None
    writeback_bytes: int | None
    anon_pages_bytes: int | None
    mapped_bytes: int | None
    shmem_bytes: int | None
    free_bytes: int | None
    available_bytes: int | None
    total_bytes: int | None
    kreclaimable_bytes: int | None
    slab_bytes: int | None
    sreclaimable_bytes: int | None
    sunreclaim_bytes: int | None
    anon_huge_bytes: int | None
    shmem_huge_bytes: int | None
    shmem_pmd_mapped_bytes: int | None
    file_huge_bytes: int | None
    file_pmd_mapped_bytes: int | None
    kernel_stack_bytes: int | None
    page_tables_bytes: int | None
    sec_page_tables_bytes: int | None
    mlocked_bytes: int | None
    file_pages_bytes: int | None
    swap_cached_bytes: int | None
    cma_free_bytes: int | None
    bounce_bytes: int | None
    writeback_tmp_bytes: int | None
    low_watermark_bytes: int | None
    reserved_bytes: int | None

    def counters(self) -> dict[str, int | None]:
        """The ``*_bytes`` fields by name."""
        return {c.key: getattr(self, c.key) for c in COUNTERS}


class SnapshotStats(NamedTuple):
    """Cumulative counts since load: snapshots taken (all triggers), the
    forced ones, and snapshots that could not reach the node data."""

    snapshots: int
    forced: int
    walk_failures: int


def counters_from_slots(
    values: np.ndarray, present: int, slot_ids: dict[str, int], page_bytes: int
) -> dict[str, int | None]:
    """Bytes per counter from raw slot values (kernel units) and the ``present`` bit mask."""
    out: dict[str, int | None] = {}
    for c in COUNTERS:
        if not c.slots:
            continue
        ids = [slot_ids[s] for s in c.slots]
        if not all(present >> i & 1 for i in ids):
            out[c.key] = None
            continue
        # A vm_stat counter can dip below 0 while per-CPU deltas are unfolded: the
        # kernel reads it as 0 (node_page_state, global_node_page_state), and so do we.
        raw = sum(max(0, int(values[i])) for i in ids)
        out[c.key] = raw * (1024 if c.kib else page_bytes)
    out["available_bytes"] = mem_available(out)
    return out


def mem_available(counters: dict[str, int | None]) -> int | None:
    """The kernel's MemAvailable estimate (si_mem_available) from the other counters, in bytes.

    Free memory less the reserve kept for the kernel, plus the page cache and
    the reclaimable kernel memory that reclaim could free: half of each at
    least, and all but the low watermark's worth. Not additive: totals are
    computed from summed inputs, never by adding nodes' estimates.
    """
    inputs = ("free_bytes", "reserved_bytes", "active_file_bytes", "inactive_file_bytes", "kreclaimable_bytes")
    values = [counters.get(key) for key in (*inputs, "low_watermark_bytes")]
    if any(v is None for v in values):
        return None
    free, reserved, active_file, inactive_file, reclaimable, low = values
    page_cache = active_file + inactive_file
    available = free - reserved
    available += page_cache - min(page_cache // 2, low)
    available += reclaimable - min(reclaimable // 2, low)
    return max(0, available)


# ---------------------------------------------------------------- plan


def _walk_status() -> tuple[bool, str]:
    """Whether BTF has what the root-memcg -> pglist_data walk needs."""
    btf = BTF.vmlinux()
    if "memory_cgrp_id" not in btf.enum_values("cgroup_subsys_id"):
        return False, "no memory cgroup controller (CONFIG_MEMCG)"
    if "pgdat" not in btf.members("lruvec") or "nodeinfo" not in btf.members("mem_cgroup"):
        return False, "struct lruvec has no pgdat / mem_cgroup no nodeinfo"
    try:
        for line in Path("/proc/cgroups").read_text().splitlines():
            parts = line.split()
            if parts and parts[0] == "memory" and parts[-1] == "0":
                return False, "memory cgroup controller disabled (cgroup_disable=memory)"
    except OSError:
        pass
    return True, ""


def plan() -> kernel.Plan:
    """Hooks sysstat needs here and the program variant it will load."""
    walk_ok, walk_detail = _walk_status()
    hooks = [
        kernel.tracepoint_hook("mm_page_alloc"),
        kernel.Hook("node data via root memory cgroup", walk_ok, True, walk_detail),
    ]
    tp_btf = kernel.probe_feature("tp_btf").available
    return kernel.Plan("sysstat", hooks, variant="tp_btf" if tp_btf else "raw_tp")


# ---------------------------------------------------------------- library


@dataclass(frozen=True)
class SysStatOptions:
    """How to load sysstat; the zero value is the default.

    ``min_period_ms``: allocation events take at most one snapshot per this
    many milliseconds. ``variant``: "tp_btf" or "raw_tp" programs (None:
    probe, tp_btf where available).
    """

    min_period_ms: float = 10.0
    variant: str | None = None


class SysStat(BPFReport):
    """Loaded and attached sysstat BPF programs (a context manager: loads on entry; close() is idempotent)."""

    def __init__(self, options: SysStatOptions | None = None) -> None:
        super().__init__()
        self.options = options or SysStatOptions()
        if self.options.min_period_ms < 0:
            raise ValueError("min_period_ms must be >= 0")

    def _load(self) -> None:
        kernel.require_bpf()
        variant = self.options.variant or plan().variant
        if variant not in _VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(_VARIANTS)}")
        walk_ok, walk_detail = _walk_status()
        if not walk_ok:
            raise NodeDataError(f"sysstat cannot reach the node statistics: {walk_detail}")
        self.variant = variant
        self.page_bytes = kernel.page_size()
        layouts = header("sysstat")
        self._dtype = layouts.sysstat_node
        self._slot_ids = {
            name.removeprefix("SYSSTAT_"): value
            for name, value in layouts.constants.items()
            if name.startswith("SYSSTAT_") and not name.startswith(("SYSSTAT_TRIGGER_", "SYSSTAT_NR_"))
        }
        self.nr_nodes = node_id_count()
        self.memory_nodes = node_ids("has_memory")
        self._obj = obj = self._owned.enter_context(BPFObject.open(object_path("sysstat")))
        obj.rodata.min_period_ns = int(self.options.min_period_ms * 1_000_000)
        obj.rodata.nr_nodes = self.nr_nodes
        obj.maps.nodes.max_entries = self.nr_nodes
        for name, prog in _PROGRAMS.items():
            obj.programs[prog].autoload = name == variant
        obj.load()
        obj.programs[_PROGRAMS[variant]].attach()

    def snapshot(self) -> None:
        """Take a snapshot now (BPF_PROG_TEST_RUN of ``snapshot_now``)."""
        self._obj.programs.snapshot_now.test_run()

    def stats(self) -> SnapshotStats:
        bss = self._obj.bss
        return SnapshotStats(bss.snapshots, bss.forced_snapshots, bss.walk_failures)

    def _latest(self) -> np.ndarray:
        """The nodes' entries of the newest snapshot round.

        Each entry of the ``nodes`` map is that node's newest snapshot; an
        entry much older than the newest one belongs to a node the latest
        walks did not reach. Snapshots racing on two CPUs are microseconds
        apart, so one round spans well under _ROUND_NS.
        """
        _, values = self._obj.maps.nodes.read_all(np.uint32, self._dtype)
        values = values[values["seq"] > 0]
        if not len(values):
            return values
        return values[values["ts_ns"] >= values["ts_ns"].max() - _ROUND_NS]

    def read(self, per_node: bool = False, max_age_s: float | None = None) -> list[SysSample]:
        """The latest snapshot: one all-node sample, or one per node (``per_node``).

        A snapshot older than ``max_age_s`` (default: the rate-limit period)
        is replaced by a forced one first; ``max_age_s=inf`` never forces.
        Raises :class:`NodeDataError` if no snapshot reached the node data.
        """
        max_age_ns = (self.options.min_period_ms / 1000 if max_age_s is None else max_age_s) * 1e9
        latest = self._latest()
        if not len(latest) or time.monotonic_ns() - int(latest["ts_ns"].max()) > max_age_ns:
            self.snapshot()
            latest = self._latest()
        if not len(latest):
            raise NodeDataError(
                "sysstat could not reach any node's statistics through the root memory cgroup "
                f"({self.stats().walk_failures} failed walks)"
            )
        rows = [self._sample(int(r["node"]), r) for r in latest]
        return rows if per_node else [self._total(rows)]

    def missing_nodes(self) -> list[int]:
        """Nodes with memory that the latest snapshot did not reach (left out of totals)."""
        seen = set(self._latest()["node"].tolist())
        return [n for n in self.memory_nodes if n not in seen]

    def _sample(self, node: int | None, rec: np.void) -> SysSample:
        counters = counters_from_slots(rec["value"], int(rec["present"]), self._slot_ids, self.page_bytes)
        return SysSample(node, int(rec["ts_ns"]), _TRIGGERS.get(int(rec["trigger"]), "?"), **counters)

    @staticmethod
    def _total(rows: Sequence[SysSample]) -> SysSample:
        sums: dict[str, int | None] = {}
        for c in COUNTERS:
            parts = [getattr(r, c.key) for r in rows]
            sums[c.key] = None if any(p is None for p in parts) else sum(parts)
        sums["available_bytes"] = mem_available(sums)
        newest = max(rows, key=lambda r: r.snapshot_ns)
        return SysSample(None, newest.snapshot_ns, newest.trigger, **sums)


# ---------------------------------------------------------------- CLI


def columns_for(groups: Sequence[str], per_node: bool, table: bool = False) -> list[Column]:
    """Output columns for the chosen groups, in COUNTERS order (plus NODE), then pressure, swap, faults.

    Those three are system-wide: no columns per node; a table shows pressure's 10 s averages only.
    """
    cols = [Column("node", "NODE")] if per_node else []
    cols += [Column(c.key, c.header, "bytes") for c in COUNTERS if c.group in groups]
    if per_node:
        return cols
    if "pressure" in groups:
        keys = [k for k in _PRESSURE_KEYS if not table or k.endswith("avg10_pct")]
        cols += [Column(k, k.removeprefix("pressure_").removesuffix("_pct").upper().replace("_AVG", "")) for k in keys]
    cols += [Column(key, header, unit) for key, header, unit, group in _SYSTEM_COLUMNS if group in groups]
    return cols


_PRESSURE_KEYS = Pressure.keys()


class _Reporter:
    def __init__(self, stat: SysStat, writer: Writer, per_node: bool) -> None:
        self.stat = stat
        self.writer = writer
        self.per_node = per_node
        self._warned_missing = False
        self._warned_no_pressure = False
        self._rates = EventRates()  # the first row's rates cover the time since start

    def _pressure(self) -> dict[str, float | int | None]:
        pressure = read_pressure()
        if pressure is None:
            if not self._warned_no_pressure:
                self.writer.message(f"sysstat: no {SYSTEM_MEMORY_PRESSURE}: this kernel keeps no PSI figures")
                self._warned_no_pressure = True
            return dict.fromkeys(_PRESSURE_KEYS)
        return pressure.fields()

    def _system(self) -> dict[str, float | int | None]:
        """Swap space, and fault and swap rates since the previous row."""
        row = self._rates.since_last(self.stat.page_bytes)
        swap = read_swap_space()
        row["swap_total_bytes"] = swap.total_bytes if swap else None
        row["swap_free_bytes"] = swap.free_bytes if swap else None
        return row

    def sample(self) -> None:
        rows = self.stat.read(per_node=self.per_node)
        missing = self.stat.missing_nodes()
        if missing and not self._warned_missing:
            self.writer.message(f"sysstat: node(s) {', '.join(map(str, missing))} not reachable, left out of totals")
            self._warned_missing = True
        out = []
        for r in rows:
            row: dict[str, float | int | None] = dict(r.counters())
            if self.per_node:
                row["node"] = r.node
            else:
                row.update(self._pressure())
                row.update(self._system())
            out.append(row)
        st = self.stat.stats()
        self.writer.write(out, timestamp(), title=f"snapshots {st.snapshots} (forced {st.forced})")


def _resolve_groups(groups: list[str] | None, all_groups: bool, output: OutputFormat) -> list[str]:
    if all_groups or (groups and "all" in groups):
        return list(GROUPS)
    if groups:
        bad = sorted(set(groups) - set(GROUPS))
        if bad:
            raise typer.BadParameter(f"unknown group {', '.join(bad)} (choose from {', '.join(GROUPS)}, all)")
        return [g for g in GROUPS if g in groups]
    # Machine-readable output carries every counter unless asked otherwise.
    return ["part1", "pressure"] if output == OutputFormat.table else list(GROUPS)


def register(app: typer.Typer) -> None:
    @app.command("sysstat")
    def sysstat_command(
        interval: Interval = 1.0,
        duration: Duration = None,
        count: Count = None,
        output: Output = OutputFormat.table,
        group: Annotated[
            list[str] | None,
            typer.Option(
                "--group",
                "-g",
                help="Column group: part1 (LRU, dirty, mapped, available), part2 "
                "(slab, huge pages, kernel; the original -n), pressure (PSI; with part1 the table default), "
                "swap (space, bytes swapped in/out per s), faults (page and major faults per s), "
                "all. Repeatable.",
            ),
        ] = None,
        all_groups: Annotated[bool, typer.Option("--all", help="Every column group.")] = False,
        per_node: Annotated[bool, typer.Option("--per-node", "-N", help="One row per NUMA node.")] = False,
        min_period_ms: Annotated[
            float, typer.Option("--min-period-ms", min=0.0, help="At most one BPF snapshot per this many ms.")
        ] = 10.0,
        variant: Annotated[
            str | None, typer.Option("--variant", help="Force tp_btf or raw_tp programs (default: probe).")
        ] = None,
    ) -> None:
        """System memory like /proc/meminfo, from vm_stat snapshots taken on page allocations.

        Bytes; '-' (JSON null, empty CSV cell) marks a counter this kernel lacks.
        Example: memwatcher sysstat -i 1 --all -o json
        """
        if variant is not None and variant not in _VARIANTS:
            raise typer.BadParameter(f"--variant must be one of {', '.join(_VARIANTS)}")
        groups = _resolve_groups(group, all_groups, output)
        with ExitStack() as stack:
            with slow_step("loading and attaching sysstat..."):
                stat = stack.enter_context(SysStat(SysStatOptions(min_period_ms=min_period_ms, variant=variant)))
            stop = stack.enter_context(stop_on_signals())
            writer = make_writer(output, columns_for(groups, per_node, table=output == OutputFormat.table))
            run_periodic(schedule(interval, duration, count), _Reporter(stat, writer, per_node).sample, stop)
