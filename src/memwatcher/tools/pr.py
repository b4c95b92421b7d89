"""`memwatcher pr`: what page reclaim is doing, from the vmscan tracepoints.

BPF sums every ``mm_vmscan_lru_shrink_inactive`` event (pages scanned and
reclaimed, and the ``struct reclaim_stat`` breakdown: dirty, unqueued dirty,
congested, writeback, immediate, activated, ref-keep, unmap-fail) and every
``mm_vmscan_lru_shrink_active`` event per node and LRU type (anon/file) in
per-CPU counters; times direct reclaim (``mm_vmscan_direct_reclaim_begin/end``)
and memcg reclaim (``mm_vmscan_memcg_reclaim_begin/end``) per process into
log2 histograms; counts kswapd wakeups and sleeps per node. User space reads
the cumulative counters every interval and prints the differences.

Where the kernel allows fentry/fexit programs (and ``shrink_node`` is a real
function in its BTF), a richer variant also hooks ``shrink_node()``, the
reclaim of one node that every kind of reclaim goes through, and reads its
``struct scan_control`` through CO-RE: the reclaim priority (how hard the
kernel is struggling), order, reclaim_idx, nr_to_reclaim, and the growth of
``nr_scanned``/``nr_reclaimed`` over each call, per reclaim kind (kswapd,
direct, memcg, proactive). It is chosen automatically and skipped, falling
back to the tracepoints alone, when it cannot load or attach.

Library use::

    with PageReclaim() as pr:
        before = pr.read()
        ...
        sample = (pr.read() - before).total()   # ReclaimSample, pages and ns

Counts are in pages (of :func:`memwatcher.kernel.page_size` bytes; large
folios count as their number of pages, as the kernel's own counters do) and
durations in nanoseconds. A value of ``None`` means this kernel lacks the
counter (a missing ``reclaim_stat`` field or tracepoint), never zero.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, NamedTuple

import numpy as np
import typer

from .. import kernel
from ..errors import NotSupportedError, PrivilegeError
from ..libbpf import BTF, BPFObject, LibbpfError, MemwatcherError, RingBuffer, possible_cpus
from ..objects import header, object_path
from ..options import Count, Duration, Interval, Output, OutputFormat, schedule
from ..output import Column, Writer, human_ns, make_writer, timestamp
from ..progress import slow_step
from ..runner import run_periodic, stop_on_signals
from ..topology import node_id_count
from ._lifecycle import BPFReport

__all__ = [
    "LatencyHistogram",
    "PageReclaim",
    "PrOptions",
    "ReclaimSample",
    "ScanControlStats",
    "ShrinkEvent",
    "Snapshot",
    "bucket_bounds",
    "format_histogram",
    "histogram_quantile_ns",
    "latency_delta",
    "plan",
    "register",
]

KINDS = ("direct", "memcg")  # PR_KIND_DIRECT, PR_KIND_MEMCG
RECLAIMERS = ("direct", "memcg", "other")  # event reclaimer values (pr.h PR_KIND_*)
LRUS = ("anon", "file")
SC_KINDS = ("kswapd", "direct", "memcg", "proactive")  # pr.h PR_SC_*
# shrink_node() variant: its programs and the scan_control members it reads.
_SC_PROGRAMS = ("fentry_shrink_node", "fexit_shrink_node")
_SC_MEMBERS = ("nr_to_reclaim", "target_mem_cgroup", "order", "priority", "reclaim_idx", "nr_scanned", "nr_reclaimed")

# Tracepoint -> (argument types the programs read, as a prefix of the BTF
# argument list; program name suffix; hook group). Arguments appended by a
# later kernel do not matter to tp_btf/raw_tp programs, which read by position.
_HOOKS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "mm_vmscan_lru_shrink_inactive": (
        ("int", "long unsigned int", "long unsigned int", "struct reclaim_stat *", "int", "int"),
        "shrink_inactive",
        "inactive",
    ),
    "mm_vmscan_lru_shrink_active": (
        ("int",) + ("long unsigned int",) * 4 + ("int", "int"),
        "shrink_active",
        "active",
    ),
    "mm_vmscan_kswapd_wake": (("int",), "kswapd_wake", "kswapd"),
    "mm_vmscan_kswapd_sleep": (("int",), "kswapd_sleep", "kswapd"),
    "mm_vmscan_direct_reclaim_begin": ((), "direct_begin", "direct"),
    "mm_vmscan_direct_reclaim_end": (("long unsigned int",), "direct_end", "direct"),
    "mm_vmscan_memcg_reclaim_begin": ((), "memcg_begin", "memcg"),
    "mm_vmscan_memcg_reclaim_end": (("long unsigned int",), "memcg_end", "memcg"),
}
_VARIANTS = ("tp_btf", "raw_tp")

# struct pr_lru counters (named without their _pages) that come from a struct reclaim_stat member.
_STAT_MEMBERS = {
    "dirty": "nr_dirty",
    "unqueued_dirty": "nr_unqueued_dirty",
    "congested": "nr_congested",
    "writeback": "nr_writeback",
    "immediate": "nr_immediate",
    "pageout": "nr_pageout",
    "activated": "nr_activate",
    "ref_keep": "nr_ref_keep",
    "unmap_fail": "nr_unmap_fail",
}


def _hook_status() -> dict[str, tuple[bool, str]]:
    """For each group of hooks: whether every tracepoint exists with the expected arguments."""
    groups: dict[str, tuple[bool, str]] = {}
    for tp, (expected, _, group) in _HOOKS.items():
        params = kernel.tracepoint_params(tp)
        if params is None:
            ok, detail = False, f"{tp} not in kernel BTF"
        elif tuple(params[: len(expected)]) != expected:
            ok, detail = False, f"{tp} arguments are ({', '.join(params)})"
        else:
            ok, detail = True, ""
        prev_ok, prev_detail = groups.get(group, (True, ""))
        groups[group] = (prev_ok and ok, prev_detail or detail)
    return groups


def scan_control_status() -> tuple[bool, str]:
    """Whether the shrink_node() fentry/fexit variant can be tried here, and why not.

    Needs fentry programs (found by loading one), ``shrink_node`` as a function
    in kernel BTF (a function inlined into every caller has no entry to hook)
    and the ``struct scan_control`` members the programs read.
    """
    fentry = kernel.probe_feature("fentry")
    if not fentry.available:
        return False, "fentry unavailable"
    btf = BTF.vmlinux()
    if btf.find("shrink_node", "func") is None:
        return False, "shrink_node not a function in kernel BTF"
    members = btf.members("scan_control")
    missing = [m for m in _SC_MEMBERS if m not in members]
    if missing:
        return False, f"scan_control lacks {', '.join(missing)}"
    return True, ""


def plan() -> kernel.Plan:
    """Hooks pr needs here and the program variant it will load."""
    status = _hook_status()
    hooks = [
        kernel.Hook(f"tracepoint {tp}", status[group][0], group == "inactive", status[group][1])
        for tp, (_, _, group) in _HOOKS.items()
    ]
    sc_ok, sc_why = scan_control_status()
    hooks.append(kernel.Hook("fentry/fexit shrink_node", sc_ok, False, sc_why))
    tp_btf = kernel.probe_feature("tp_btf").available
    members = BTF.vmlinux().members("reclaim_stat")
    missing = [f for f, m in _STAT_MEMBERS.items() if m not in members]
    variant = ("tp_btf" if tp_btf else "raw_tp") + (" + fentry/fexit shrink_node (scan_control)" if sc_ok else "")
    variant += "" if sc_ok else f"; no scan_control variant ({sc_why})"
    variant += f"; reclaim_stat lacks {', '.join(missing)}" if missing else ""
    return kernel.Plan("pr", hooks, variant=variant)


# ---------------------------------------------------------------- records


class ReclaimSample(NamedTuple):
    """Reclaim activity over an interval (or since load), system-wide or of one node.

    All ``*_pages`` are page counts and ``*_ns`` nanoseconds. The ``scanned``
    to ``unmap_fail`` group sums ``mm_vmscan_lru_shrink_inactive`` events
    (``scanned_pages`` is the original tool's "reclaim": pages isolated from
    the inactive LRUs and handed to reclaim). Invocation counts are direct
    reclaims (``try_to_free_pages``) and memcg limit reclaims that ended in
    the interval. Per-node samples have ``None`` for those: the
    tracepoints do not say which node they reclaimed from.
    """

    node: int | None
    scanned_pages: int
    reclaimed_pages: int
    dirty_pages: int | None
    unqueued_dirty_pages: int | None
    congested_pages: int | None
    writeback_pages: int | None
    immediate_pages: int | None
    pageout_pages: int | None
    activated_pages: int | None
    ref_keep_pages: int | None
    unmap_fail_pages: int | None
    scanned_anon_pages: int
    scanned_file_pages: int
    reclaimed_anon_pages: int
    reclaimed_file_pages: int
    shrink_inactive_calls: int
    active_scanned_pages: int | None
    deactivated_pages: int | None
    direct_reclaims: int | None
    direct_reclaim_ns: int | None
    direct_reclaimed_pages: int | None
    memcg_reclaims: int | None
    memcg_reclaim_ns: int | None
    memcg_reclaimed_pages: int | None
    kswapd_wakeups: int | None
    kswapd_sleeps: int | None
    # shrink_node() variant (None without it, and in per-node samples): calls,
    # summed per-call growth of sc->nr_scanned / nr_reclaimed, and the lowest
    # (hardest) reclaim priority of the calls.
    node_shrinks: int | None = None
    node_scanned_pages: int | None = None
    node_reclaimed_pages: int | None = None
    min_priority: int | None = None


class ScanControlStats(NamedTuple):
    """``shrink_node()`` calls of one reclaim kind at one priority (fentry variant).

    ``kind`` is "kswapd", "direct", "memcg" (cgroup limit reclaim) or
    "proactive" (memory.reclaim); ``priority`` is ``sc->priority`` at entry
    (the kernel starts at DEF_PRIORITY and counts down as passes fail: lower
    means harder). ``scanned_pages``/``reclaimed_pages`` sum the growth of
    ``sc->nr_scanned``/``sc->nr_reclaimed`` over each call (nr_reclaimed
    also takes slab pages the kernel credits to the reclaim);
    ``to_reclaim_pages`` sums ``sc->nr_to_reclaim`` (the whole reclaim's
    goal, per call); ``goal_met_calls`` counts calls returning with the goal
    reached. Cumulative since load from :meth:`Snapshot.scan_control`, per
    interval on a difference of snapshots.
    """

    kind: str
    priority: int
    calls: int
    scanned_pages: int
    reclaimed_pages: int
    to_reclaim_pages: int
    goal_met_calls: int
    duration_ns: int

    @property
    def reclaimed_per_scanned(self) -> float | None:
        """Reclaim efficiency: pages freed per page scanned (None when nothing was scanned)."""
        return self.reclaimed_pages / self.scanned_pages if self.scanned_pages else None


class LatencyHistogram(NamedTuple):
    """Reclaim latency of one process and kind ("direct" or "memcg").

    ``slots[s]`` counts reclaims lasting [2^s, 2^(s+1)) ns (slot 0: 0-1 ns;
    the last slot has no upper bound). Cumulative since load from
    :meth:`PageReclaim.latency`, per interval after :func:`latency_delta`.
    """

    pid: int
    comm: str
    kind: str
    reclaims: int
    total_ns: int
    reclaimed_pages: int
    slots: tuple[int, ...]


class CgroupLatency(NamedTuple):
    """Reclaim stalls of the tasks of one memory cgroup, of one kind ("direct" or "memcg").

    ``cgroup_id``: the cgroup's kernfs id, which is the inode number of its
    directory in the memory controller's hierarchy (``cgroups.CgroupPaths``
    maps them to paths). Booked where the stalled task was, which may be
    below the cgroup whose limit it met. ``slots`` as in
    :class:`LatencyHistogram`; cumulative since load.
    """

    cgroup_id: int
    kind: str
    reclaims: int
    total_ns: int
    reclaimed_pages: int
    slots: tuple[int, ...]


class ShrinkEvent(NamedTuple):
    """One ``mm_vmscan_lru_shrink_inactive`` event (pages; ``ts_ns`` is CLOCK_MONOTONIC).

    ``reclaimer`` is "direct" or "memcg" when the task was inside that
    reclaim, else "other" (kswapd, proactive reclaim). Absent
    ``reclaim_stat`` fields are ``None``.
    """

    ts_ns: int
    pid: int
    tid: int
    comm: str
    node: int
    lru: str
    reclaimer: str
    priority: int
    scanned_pages: int
    reclaimed_pages: int
    dirty_pages: int | None
    unqueued_dirty_pages: int | None
    congested_pages: int | None
    writeback_pages: int | None
    immediate_pages: int | None
    pageout_pages: int | None
    activated_pages: int | None
    ref_keep_pages: int | None
    unmap_fail_pages: int | None


@dataclass(frozen=True)
class Available:
    """Which counters this kernel provides (from kernel BTF, before load)."""

    stat_fields: frozenset[str]  # struct pr_lru names backed by a reclaim_stat member
    active: bool
    kswapd: bool
    direct: bool
    memcg: bool

    @classmethod
    def probe(cls) -> Available:
        members = BTF.vmlinux().members("reclaim_stat")
        status = _hook_status()
        return cls(
            frozenset(k for k, m in _STAT_MEMBERS.items() if m in members),
            status["active"][0],
            status["kswapd"][0],
            status["direct"][0],
            status["memcg"][0],
        )


def _u64_view(values: np.ndarray) -> np.ndarray:
    """Structs made only of __u64 as a 2-D uint64 array (one row per struct)."""
    flat = np.ascontiguousarray(values)
    return flat.view(np.uint64).reshape(flat.size, flat.dtype.itemsize // 8)


def _cpu_sum(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A per-CPU map's values (one row of CPUs per key, all-__u64 structs) summed over CPUs."""
    summed = _u64_view(values).reshape(len(values), possible_cpus(), -1).sum(axis=1, dtype=np.uint64)
    return np.ascontiguousarray(summed).view(dtype).reshape(len(values))


@dataclass
class Snapshot:
    """Cumulative counters since load (or their difference: ``later - earlier``).

    ``nodes[n]`` is a ``struct pr_node`` (pages and counts per LRU type, kswapd
    wakeups and sleeps) of node ``n``; ``totals`` a ``struct pr_totals``
    (direct/memcg reclaim counts, nanoseconds and pages).
    """

    nodes: np.ndarray
    totals: np.ndarray
    available: Available
    monotonic_ns: int = field(default_factory=time.monotonic_ns)
    # shrink_node() variant only: ``struct pr_sc_prio`` by kind * PR_PRIO_SLOTS
    # + priority, ``struct pr_sc_kind`` by kind, and zone names by index.
    sc_prios: np.ndarray | None = None
    sc_kinds: np.ndarray | None = None
    zone_names: dict[int, str] = field(default_factory=dict)

    def __sub__(self, earlier: Snapshot) -> Snapshot:
        # Counters only grow; uint64 subtraction also survives a wrap.
        def sub(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return (_u64_view(a) - _u64_view(b)).view(a.dtype).reshape(a.shape)

        return Snapshot(
            sub(self.nodes, earlier.nodes),
            sub(self.totals, earlier.totals),
            self.available,
            self.monotonic_ns - earlier.monotonic_ns,
            None if self.sc_prios is None or earlier.sc_prios is None else sub(self.sc_prios, earlier.sc_prios),
            None if self.sc_kinds is None or earlier.sc_kinds is None else sub(self.sc_kinds, earlier.sc_kinds),
            self.zone_names,
        )

    def scan_control(self) -> list[ScanControlStats]:
        """shrink_node() calls per reclaim kind and priority (only those with calls), or [] without the variant."""
        if self.sc_prios is None:
            return []
        slots = len(self.sc_prios) // len(SC_KINDS)
        out = []
        for key, r in enumerate(self.sc_prios):
            if r["calls"]:
                out.append(
                    ScanControlStats(
                        kind=SC_KINDS[key // slots],
                        priority=key % slots,
                        calls=int(r["calls"]),
                        scanned_pages=int(r["scanned_pages"]),
                        reclaimed_pages=int(r["reclaimed_pages"]),
                        to_reclaim_pages=int(r["to_reclaim_pages"]),
                        goal_met_calls=int(r["goal_met_calls"]),
                        duration_ns=int(r["duration_ns"]),
                    )
                )
        return out

    def _calls_per_kind(self, field_name: str, label: Callable[[int], Any]) -> dict[str, dict[Any, int]]:
        """Per kind, the non-zero slots of ``pr_sc_kind.<field_name>``, keyed by ``label(slot)``."""
        if self.sc_kinds is None:
            return {}
        return {
            kind: {label(i): int(n) for i, n in enumerate(self.sc_kinds[k][field_name]) if n}
            for k, kind in enumerate(SC_KINDS)
            if self.sc_kinds[k][field_name].any()
        }

    def scan_orders(self) -> dict[str, dict[int, int]]:
        """shrink_node() calls per kind and allocation order (``sc->order``) with calls."""
        return self._calls_per_kind("orders", int)

    def scan_zones(self) -> dict[str, dict[str, int]]:
        """shrink_node() calls per kind and highest eligible zone (``sc->reclaim_idx``, by zone name)."""
        return self._calls_per_kind("zones", lambda z: self.zone_names.get(z, str(z)))

    def scan_control_summary(self) -> dict[str, dict[str, Any]]:
        """Per reclaim kind: totals, calls per priority, order and zone (JSON-friendly)."""
        summed = ("calls", "scanned_pages", "reclaimed_pages", "to_reclaim_pages", "goal_met_calls", "duration_ns")
        out: dict[str, dict[str, Any]] = {}
        for r in self.scan_control():
            k = out.setdefault(r.kind, dict.fromkeys(summed, 0) | {"priorities": {}})
            for name in summed:
                k[name] += getattr(r, name)
            k["priorities"][str(r.priority)] = r.calls
        for kind, orders in self.scan_orders().items():
            out.setdefault(kind, {})["orders"] = {str(o): n for o, n in orders.items()}
        for kind, zones in self.scan_zones().items():
            out.setdefault(kind, {})["zones"] = zones
        return out

    def total(self) -> ReclaimSample:
        """All nodes together."""
        summed = _u64_view(self.nodes).sum(axis=0).view(self.nodes.dtype)[0]
        return self._sample(summed, None)

    def per_node(self) -> list[ReclaimSample]:
        """One sample per possible node."""
        return [self._sample(self.nodes[n], n) for n in range(len(self.nodes))]

    def _sample(self, node: np.void, nid: int | None) -> ReclaimSample:
        av = self.available
        anon, file = node["lru"][0], node["lru"][1]

        def lru(name: str) -> int:
            return int(anon[name]) + int(file[name])

        def stat(name: str) -> int | None:
            return lru(f"{name}_pages") if name in av.stat_fields else None

        def whole(name: str, ok: bool) -> int | None:
            return int(self.totals[name]) if ok and nid is None else None

        return ReclaimSample(
            node=nid,
            scanned_pages=lru("scanned_pages"),
            reclaimed_pages=lru("reclaimed_pages"),
            dirty_pages=stat("dirty"),
            unqueued_dirty_pages=stat("unqueued_dirty"),
            congested_pages=stat("congested"),
            writeback_pages=stat("writeback"),
            immediate_pages=stat("immediate"),
            pageout_pages=stat("pageout"),
            activated_pages=stat("activated"),
            ref_keep_pages=stat("ref_keep"),
            unmap_fail_pages=stat("unmap_fail"),
            scanned_anon_pages=int(anon["scanned_pages"]),
            scanned_file_pages=int(file["scanned_pages"]),
            reclaimed_anon_pages=int(anon["reclaimed_pages"]),
            reclaimed_file_pages=int(file["reclaimed_pages"]),
            shrink_inactive_calls=lru("inactive_shrinks"),
            active_scanned_pages=lru("active_taken_pages") if av.active else None,
            deactivated_pages=lru("deactivated_pages") if av.active else None,
            direct_reclaims=whole("direct_reclaims", av.direct),
            direct_reclaim_ns=whole("direct_reclaim_ns", av.direct),
            direct_reclaimed_pages=whole("direct_reclaimed_pages", av.direct),
            memcg_reclaims=whole("memcg_reclaims", av.memcg),
            memcg_reclaim_ns=whole("memcg_reclaim_ns", av.memcg),
            memcg_reclaimed_pages=whole("memcg_reclaimed_pages", av.memcg),
            kswapd_wakeups=int(node["kswapd_wakeups"]) if av.kswapd else None,
            kswapd_sleeps=int(node["kswapd_sleeps"]) if av.kswapd else None,
            **(self._scan_control_totals() if nid is None else {}),
        )

    def _scan_control_totals(self) -> dict[str, int | None]:
        if self.sc_prios is None:
            return {}
        rows = self.scan_control()
        return {
            "node_shrinks": sum(r.calls for r in rows),
            "node_scanned_pages": sum(r.scanned_pages for r in rows),
            "node_reclaimed_pages": sum(r.reclaimed_pages for r in rows),
            "min_priority": min((r.priority for r in rows), default=None),
        }

    @property
    def lost(self) -> dict[str, int]:
        """Events that could not be booked (all zero in a healthy run)."""
        keys = ["bad_node", "unmatched_ends", "starts_full", "hist_full", "cgroup_hist_full"]
        if self.sc_prios is not None:
            keys += ["sc_unmatched", "sc_starts_full", "sc_out_of_range"]
        return {k: int(self.totals[k]) for k in keys}


# ---------------------------------------------------------------- histograms


def bucket_bounds(slot: int, slots: int) -> tuple[int, int | None]:
    """[low, high) nanoseconds of a log2 slot; the last slot has no upper bound (None)."""
    low = 0 if slot == 0 else 1 << slot
    return low, (None if slot == slots - 1 else 1 << (slot + 1))


def histogram_quantile_ns(slots: Sequence[int], q: float) -> int | None:
    """Upper bound (ns) of the slot holding quantile ``q`` (0..1); None if empty.

    A log2 histogram cannot say more precisely: the true value lies within a
    factor of two below the result. The open last slot reports its lower bound.
    """
    total = sum(slots)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for s, n in enumerate(slots):
        seen += n
        if n and seen >= rank:
            low, high = bucket_bounds(s, len(slots))
            return high if high is not None else low
    return None  # unreachable: seen == total >= rank at the last non-empty slot


def latency_delta(earlier: Iterable[LatencyHistogram], later: Iterable[LatencyHistogram]) -> list[LatencyHistogram]:
    """Per-interval histograms: ``later - earlier`` for each (pid, kind) that changed."""
    before = {(h.pid, h.kind): h for h in earlier}
    out = []
    for h in later:
        b = before.get((h.pid, h.kind))
        if b is None:
            d = h
        else:
            d = h._replace(
                reclaims=h.reclaims - b.reclaims,
                total_ns=h.total_ns - b.total_ns,
                reclaimed_pages=h.reclaimed_pages - b.reclaimed_pages,
                slots=tuple(x - y for x, y in zip(h.slots, b.slots)),
            )
        if d.reclaims:
            out.append(d)
    return out


def format_histogram(slots: Sequence[int], width: int = 40) -> list[str]:
    """Text lines of a log2 histogram, from the first to the last non-empty slot."""
    used = [s for s, n in enumerate(slots) if n]
    if not used:
        return []
    peak = max(slots)
    lines = []
    for s in range(used[0], used[-1] + 1):
        low, high = bucket_bounds(s, len(slots))
        span = f"{human_ns(low):>8} -> {human_ns(high) if high is not None else 'inf':<8}"
        bar = "*" * (round(slots[s] * width / peak) if peak else 0)
        lines.append(f"  {span}: {slots[s]:<8} |{bar:<{width}}|")
    return lines


# ---------------------------------------------------------------- loader


@dataclass(frozen=True)
class PrOptions:
    """How to load pr. The zero value is the default.

    ``events`` streams each shrink_inactive event (ring buffer of
    ``ring_bytes``, a power of two); ``variant`` forces "tp_btf" or "raw_tp"
    instead of probing; ``max_processes`` and ``max_cgroups`` bound the
    latency histogram maps (per process and kind, per memory cgroup and kind).
    ``scan_control``: None adds the shrink_node() fentry/fexit programs where
    :func:`scan_control_status` allows and they load and attach (else pr runs
    without them), True requires them (error if impossible), False leaves
    them out.
    """

    events: bool = False
    ring_bytes: int = 1 << 20
    variant: str | None = None
    max_processes: int = 4096
    max_cgroups: int = 4096
    scan_control: bool | None = None


class PageReclaim(BPFReport):
    """Loaded and attached pr programs (a context manager: loads on entry; :meth:`close` is idempotent).

    Once entered, ``variant`` is the tracepoint flavor loaded, ``scan_control``
    whether the shrink_node() programs run, ``scan_control_error`` why not
    (None if they run or were not wanted).
    """

    def __init__(self, options: PrOptions | None = None) -> None:
        super().__init__()
        self.options = options or PrOptions()
        self._obj: BPFObject | None = None
        self._ring: RingBuffer | None = None

    def _load(self) -> None:
        kernel.require_bpf()
        self.available = Available.probe()
        self.layouts = header("pr")
        self.node_count = node_id_count()
        variants = [self.options.variant] if self.options.variant else list(_VARIANTS)
        want = self.options.scan_control
        self.scan_control_error: str | None = None
        if want is not False:
            ok, why = scan_control_status()
            if not ok:
                if want:
                    raise NotSupportedError(f"pr --scan-control (fentry/fexit on shrink_node: {why})")
                self.scan_control_error = why
                want = False
        # With scan_control auto, try it with the first tracepoint flavor, then
        # every flavor without it (fentry and tp_btf need the same program type).
        attempts = {None: [(variants[0], True)], True: [(v, True) for v in variants], False: []}[want]
        if not want:
            attempts += [(v, False) for v in variants]
        failures: list[tuple[str, LibbpfError]] = []
        for variant, with_sc in attempts:
            try:
                self._obj = self._open(variant, with_sc)
                self.variant = variant
                self.scan_control = with_sc
                break
            except LibbpfError as e:
                failures.append((f"{variant}{' + shrink_node' if with_sc else ''}", e))
                if with_sc and want is None:
                    self.scan_control_error = str(e)
        if self._obj is None:
            if all(isinstance(e, PrivilegeError) for _, e in failures):
                raise failures[-1][1]  # the kernel refused us every time: exit 77, like any report
            raise MemwatcherError("cannot load the pr programs: " + "; ".join(f"{what}: {e}" for what, e in failures))
        self.zone_names = kernel.zone_names(BTF.vmlinux()) if self.scan_control else {}
        self._ring = RingBuffer(self._obj.maps.events, self.layouts.pr_event) if self.options.events else None

    def _open(self, variant: str, scan_control: bool) -> BPFObject:
        """pr's object with one variant's programs loaded and attached, then owned; closed again if a step fails."""
        status = _hook_status()
        with ExitStack() as attempt:
            obj = attempt.enter_context(BPFObject.open(object_path("pr")))
            for _, suffix, group in _HOOKS.values():
                for v in _VARIANTS:
                    obj.programs[f"{v}_{suffix}"].autoload = v == variant and status[group][0]
            for name in _SC_PROGRAMS:
                obj.programs[name].autoload = scan_control
            obj.rodata.emit_events = self.options.events
            obj.maps.nodes.max_entries = self.node_count
            obj.maps.hists.max_entries = self.options.max_processes
            obj.maps.cgroup_hists.max_entries = self.options.max_cgroups
            obj.maps.events.max_entries = self.options.ring_bytes if self.options.events else 4096
            obj.load()
            obj.attach()
            self._owned.enter_context(attempt.pop_all())
        return obj

    @property
    def obj(self) -> BPFObject:
        if self._obj is None:
            raise MemwatcherError("pr: use after close")
        return self._obj

    def read(self) -> Snapshot:
        """Cumulative counters since load."""
        _, nodes = self.obj.maps.nodes.read_all(np.uint32, self.layouts.pr_node)
        _, totals = self.obj.maps.totals.read_all(np.uint32, self.layouts.pr_totals)
        snap = Snapshot(
            _cpu_sum(nodes, self.layouts.pr_node),
            _cpu_sum(totals, self.layouts.pr_totals).reshape(()),
            self.available,
        )
        if self.scan_control:
            _, prios = self.obj.maps.sc_prios.read_all(np.uint32, self.layouts.pr_sc_prio)
            _, kinds = self.obj.maps.sc_kinds.read_all(np.uint32, self.layouts.pr_sc_kind)
            snap.sc_prios = _cpu_sum(prios, self.layouts.pr_sc_prio)
            snap.sc_kinds = _cpu_sum(kinds, self.layouts.pr_sc_kind)
            snap.zone_names = self.zone_names
        return snap

    def latency(self) -> list[LatencyHistogram]:
        """Cumulative reclaim latency histograms per process and kind."""
        keys, values = self.obj.maps.hists.read_all(self.layouts.pr_hist_key, self.layouts.pr_hist)
        return [
            LatencyHistogram(
                int(k["id"]), v["comm"].decode(errors="replace"), KINDS[int(k["kind"])], *_latency(v["latency"])
            )
            for k, v in zip(keys, values)
        ]

    def cgroup_latency(self) -> list[CgroupLatency]:
        """Cumulative reclaim latency histograms per memory cgroup and kind."""
        keys, values = self.obj.maps.cgroup_hists.read_all(self.layouts.pr_cgroup_key, self.layouts.pr_latency)
        return [CgroupLatency(int(k["cgroup_id"]), KINDS[int(k["kind"])], *_latency(v)) for k, v in zip(keys, values)]

    def events(self) -> list[ShrinkEvent]:
        """Shrink events submitted since the last call, oldest first (needs ``PrOptions.events``)."""
        if self._ring is None:
            raise MemwatcherError("pr: events were not enabled (PrOptions(events=True))")
        return decode_events(self._ring.consume(), self.available)

    @property
    def events_dropped(self) -> int:
        """Events lost because the ring buffer was full (cumulative)."""
        return int(self.obj.bss.events_dropped)

    def close(self) -> None:
        self._ring = None
        self._obj = None
        super().close()


def _latency(v: np.void) -> tuple[int, int, int, tuple[int, ...]]:
    """A ``struct pr_latency``: (reclaims, total_ns, reclaimed_pages, slots)."""
    return int(v["count"]), int(v["total_ns"]), int(v["reclaimed_pages"]), tuple(int(x) for x in v["slots"])


def decode_events(records: np.ndarray, available: Available) -> list[ShrinkEvent]:
    """Ring buffer records (``struct pr_event``) as :class:`ShrinkEvent`."""
    present = available.stat_fields

    def stat(r: np.void, name: str) -> int | None:
        return int(r[f"{name}_pages"]) if name in present else None

    out = []
    for r in records:
        out.append(
            ShrinkEvent(
                ts_ns=int(r["ts_ns"]),
                pid=int(r["pid"]),
                tid=int(r["tid"]),
                comm=r["comm"].decode(errors="replace"),
                node=int(r["nid"]),
                lru=LRUS[1 if r["file"] else 0],
                reclaimer=RECLAIMERS[min(int(r["reclaimer"]), 2)],
                priority=int(r["priority"]),
                scanned_pages=int(r["scanned_pages"]),
                reclaimed_pages=int(r["reclaimed_pages"]),
                dirty_pages=stat(r, "dirty"),
                unqueued_dirty_pages=stat(r, "unqueued_dirty"),
                congested_pages=stat(r, "congested"),
                writeback_pages=stat(r, "writeback"),
                immediate_pages=stat(r, "immediate"),
                pageout_pages=stat(r, "pageout"),
                activated_pages=(
                    int(r["activate_anon_pages"]) + int(r["activate_file_pages"]) if "activated" in present else None
                ),
                ref_keep_pages=stat(r, "ref_keep"),
                unmap_fail_pages=stat(r, "unmap_fail"),
            )
        )
    return out


# ---------------------------------------------------------------- CLI

_INTERVAL_COLUMNS = [
    Column("node", "NODE"),
    Column("scanned_pages", "RECLAIM"),
    Column("reclaimed_pages", "RECLAIMED"),
    Column("dirty_pages", "DIRTY"),
    Column("unqueued_dirty_pages", "UNQUEUE_DIRTY"),
    Column("congested_pages", "CONGESTED"),
    Column("writeback_pages", "WRITEBACK"),
    Column("immediate_pages", "IMMEDIATE"),
    Column("activated_pages", "ACTIVATE"),
    Column("ref_keep_pages", "REF_KEEP"),
    Column("unmap_fail_pages", "UNMAP_FAIL"),
    Column("pageout_pages", "PAGEOUT"),
    Column("scanned_anon_pages", "SCAN_ANON"),
    Column("scanned_file_pages", "SCAN_FILE"),
    Column("reclaimed_anon_pages", "RECL_ANON"),
    Column("reclaimed_file_pages", "RECL_FILE"),
    Column("shrink_inactive_calls", "SHRINKS"),
    Column("active_scanned_pages", "ACT_SCAN"),
    Column("deactivated_pages", "DEACT"),
    Column("direct_reclaims", "DIRECT"),
    Column("direct_reclaim_ns", "DIRECT_T", "ns"),
    Column("direct_reclaimed_pages", "DIRECT_RECL"),
    Column("memcg_reclaims", "MEMCG"),
    Column("memcg_reclaim_ns", "MEMCG_T", "ns"),
    Column("memcg_reclaimed_pages", "MEMCG_RECL"),
    Column("kswapd_wakeups", "KSWAPD_WAKE"),
    Column("kswapd_sleeps", "KSWAPD_SLEEP"),
]
# Only with the shrink_node() variant loaded.
_SC_COLUMNS = [
    Column("node_shrinks", "SHRINK_NODE"),
    Column("min_priority", "MIN_PRIO"),
    Column("node_scanned_pages", "SN_SCANNED"),
    Column("node_reclaimed_pages", "SN_RECLAIMED"),
]
# The table keeps the columns an operator scans for (the original's first).
_TABLE_KEYS = (
    "scanned_pages reclaimed_pages dirty_pages unqueued_dirty_pages congested_pages writeback_pages "
    "immediate_pages activated_pages direct_reclaims direct_reclaim_ns memcg_reclaims memcg_reclaim_ns "
    "kswapd_wakeups node_shrinks min_priority"
).split()

_SCAN_CONTROL_COLUMNS = [
    Column("kind", "KIND", left=True),
    Column("priority", "PRIO"),
    Column("calls", "CALLS"),
    Column("scanned_pages", "SCANNED"),
    Column("reclaimed_pages", "RECLAIMED"),
    Column("reclaimed_per_scanned", "RECL/SCAN"),
    Column("to_reclaim_pages", "TO_RECLAIM"),
    Column("goal_met_calls", "GOAL_MET"),
    Column("duration_ns", "TIME", "ns"),
]

_LATENCY_COLUMNS = [
    Column("pid", "PID"),
    Column("comm", "COMM", left=True),
    Column("kind", "KIND", left=True),
    Column("reclaims", "COUNT"),
    Column("total_ns", "TOTAL", "ns"),
    Column("avg_ns", "AVG", "ns"),
    Column("p50_ns", "P50<=", "ns"),
    Column("p99_ns", "P99<=", "ns"),
    Column("reclaimed_pages", "RECLAIMED"),
]

_EVENT_COLUMNS = [
    Column("event_time", "TIME", left=True),
    Column("pid", "PID"),
    Column("comm", "COMM", left=True),
    Column("node", "NODE"),
    Column("lru", "LRU", left=True),
    Column("reclaimer", "BY", left=True),
    Column("priority", "PRIO"),
    Column("scanned_pages", "RECLAIM"),
    Column("reclaimed_pages", "RECLAIMED"),
    Column("dirty_pages", "DIRTY"),
    Column("unqueued_dirty_pages", "UNQUEUE_DIRTY"),
    Column("congested_pages", "CONGESTED"),
    Column("writeback_pages", "WRITEBACK"),
    Column("immediate_pages", "IMMEDIATE"),
    Column("pageout_pages", "PAGEOUT"),
    Column("activated_pages", "ACTIVATE"),
    Column("ref_keep_pages", "REF_KEEP"),
    Column("unmap_fail_pages", "UNMAP_FAIL"),
]


def _interval_columns(output: OutputFormat, per_node: bool, scan_control: bool) -> list[Column]:
    cols = [c for c in _INTERVAL_COLUMNS if per_node or c.key != "node"]
    if scan_control:
        cols += _SC_COLUMNS
        if output == OutputFormat.json:
            cols.append(Column("scan_control", "SCAN_CONTROL"))
    if output == OutputFormat.table:
        cols = [c for c in cols if c.key in _TABLE_KEYS or c.key == "node"]
    return cols


def scan_control_row(r: ScanControlStats) -> dict[str, Any]:
    """Output row of one (kind, priority) of the shrink_node() variant."""
    eff = r.reclaimed_per_scanned
    return {**r._asdict(), "reclaimed_per_scanned": None if eff is None else round(eff, 4)}


def latency_row(h: LatencyHistogram) -> dict[str, Any]:
    """Output row of one histogram; JSON/CSV also get the non-empty buckets."""
    buckets = []
    for s, n in enumerate(h.slots):
        if n:
            low, high = bucket_bounds(s, len(h.slots))
            buckets.append({"low_ns": low, "high_ns": high, "count": n})
    return {
        "pid": h.pid,
        "comm": h.comm,
        "kind": h.kind,
        "reclaims": h.reclaims,
        "total_ns": h.total_ns,
        "avg_ns": h.total_ns // h.reclaims if h.reclaims else None,
        "p50_ns": histogram_quantile_ns(h.slots, 0.5),
        "p99_ns": histogram_quantile_ns(h.slots, 0.99),
        "reclaimed_pages": h.reclaimed_pages,
        "buckets": buckets,
    }


def _event_time(ts_ns: int) -> str:
    """Wall-clock ISO time of a CLOCK_MONOTONIC timestamp."""
    wall = time.time() - (time.monotonic_ns() - ts_ns) / 1e9
    return datetime.fromtimestamp(wall).astimezone().isoformat(timespec="microseconds")


class _Reporter:
    """Writes one interval of the chosen view."""

    def __init__(self, pr: PageReclaim, view: str, output: OutputFormat, per_node: bool) -> None:
        self.pr = pr
        self.view = view
        self.output = output
        self.per_node = per_node
        columns = {
            "counters": _interval_columns(output, per_node, pr.scan_control),
            "latency": _LATENCY_COLUMNS + ([Column("buckets", "BUCKETS")] if output == OutputFormat.json else []),
            "events": _EVENT_COLUMNS,
            "scan_control": _SCAN_CONTROL_COLUMNS,
        }[view]
        self.writer: Writer = make_writer(output, columns)
        self.prev = pr.read()
        self.prev_hists = pr.latency()
        self.dropped = 0
        self.lost: dict[str, int] = {}

    def sample(self) -> None:
        now = timestamp()
        if self.view in ("counters", "scan_control"):
            cur = self.pr.read()
            delta = cur - self.prev
            self.prev = cur
        if self.view == "counters":
            rows = [r._asdict() for r in (delta.per_node() if self.per_node else [delta.total()])]
            if self.pr.scan_control and not self.per_node:
                rows[0]["scan_control"] = delta.scan_control_summary()
            self.writer.write(rows, time=now, title="page reclaim (pages per interval)")
        elif self.view == "scan_control":
            rows = [scan_control_row(r) for r in delta.scan_control()]
            self.writer.write(rows, time=now, title="shrink_node calls per reclaim kind and priority")
        elif self.view == "latency":
            cur_h = self.pr.latency()
            hists = sorted(latency_delta(self.prev_hists, cur_h), key=lambda h: -h.total_ns)
            self.prev_hists = cur_h
            self.writer.write([latency_row(h) for h in hists], time=now, title="reclaim latency per process")
            if self.output == OutputFormat.table:
                for h in hists:
                    print(f"  pid {h.pid} ({h.comm}) {h.kind} reclaim latency:", file=self.writer.stream)
                    print("\n".join(format_histogram(h.slots)) + "\n", file=self.writer.stream, flush=True)
        else:
            events = self.pr.events()
            if events or self.output != OutputFormat.table:
                rows = [{**e._asdict(), "event_time": _event_time(e.ts_ns)} for e in events]
                self.writer.write(rows, time=now, title="shrink_inactive events")
            dropped = self.pr.events_dropped
            if dropped != self.dropped:
                self.writer.message(f"pr: {dropped - self.dropped} events dropped (ring buffer full)")
                self.dropped = dropped
        if self.view in ("counters", "scan_control"):
            lost = {k: v for k, v in self.prev.lost.items() if v > self.lost.get(k, 0)}
            if lost:
                self.writer.message("pr: not booked so far: " + ", ".join(f"{k}={v}" for k, v in lost.items()))
                self.lost.update(lost)


def register(app: typer.Typer) -> None:
    @app.command("pr")
    def pr_command(
        interval: Interval = 1.0,
        duration: Duration = None,
        count: Count = None,
        output: Output = OutputFormat.table,
        per_node: Annotated[bool, typer.Option("--per-node", "-N", help="One row per NUMA node.")] = False,
        latency: Annotated[
            bool, typer.Option("--latency", "-L", help="Direct/memcg reclaim latency histograms per process.")
        ] = False,
        events: Annotated[bool, typer.Option("--events", "-e", help="Stream every shrink_inactive event.")] = False,
        scan_control: Annotated[
            bool,
            typer.Option(
                "--scan-control",
                help="shrink_node() calls per reclaim kind and priority (needs fentry; shown by doctor).",
            ),
        ] = False,
        variant: Annotated[
            str | None, typer.Option("--variant", help="Force tp_btf or raw_tp programs (default: probe).")
        ] = None,
    ) -> None:
        """What page reclaim is doing: pages scanned/reclaimed with their fate, per interval.

        Also direct and memcg reclaim counts and latency, kswapd wakeups.
        Example: memwatcher pr -i 1 --per-node -o json
        """
        if latency + events + scan_control > 1:
            raise typer.BadParameter("--latency, --events and --scan-control are different views: choose one")
        if variant is not None and variant not in _VARIANTS:
            raise typer.BadParameter(f"--variant must be one of {', '.join(_VARIANTS)}")
        view = "latency" if latency else ("events" if events else ("scan_control" if scan_control else "counters"))
        opts = PrOptions(events=events, variant=variant, scan_control=True if scan_control else None)
        with ExitStack() as stack:
            with slow_step("loading and attaching pr..."):
                pr = stack.enter_context(PageReclaim(opts))
            stop = stack.enter_context(stop_on_signals())
            reporter = _Reporter(pr, view, output, per_node)
            run_periodic(schedule(interval, duration, count), reporter.sample, stop)
