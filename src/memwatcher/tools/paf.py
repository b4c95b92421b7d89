"""`memwatcher paf`: page allocation pressure per zone, from tracepoints.

``tp_btf/mm_page_alloc`` counts every page allocation in the kernel, keyed by
(node, zone, order, migratetype, gfp mask); a NULL page is a failure.
``tp_btf/mm_vmscan_wakeup_kswapd`` counts kswapd wakeups per zone. Failures
and wakeups can also be streamed (``--events``) with the zone's watermarks,
present, managed and free pages read at that moment.

How zones are found without hard-coded offsets or addresses:

* ``node_data[]`` is not reachable from BPF here (kernel BTF only describes
  per-CPU variables, kallsyms lists data only with CONFIG_KALLSYMS_ALL), so the
  BPF side reaches each node's ``pglist_data`` through the current task's
  memory cgroup (``mem_cgroup->nodeinfo[nid]->lruvec.pgdat``), then
  ``node_zones[zid]``. Field offsets and enum indices come from CO-RE.
* The zone of an allocated page is ``page_zonenum()``: a bit field of
  ``page->flags`` whose position depends on the kernel configuration. The
  candidate position is derived from kernel BTF (MAX_NUMNODES, MAX_NR_ZONES)
  and then checked against one page taken from each zone's own free lists
  (a page there belongs to that zone by construction). If no candidate
  passes, successful allocations are shown under zone ``?``.
* A failed allocation has no page: it is booked to the highest zone its gfp
  zone modifiers allow on the CPU's node, lowered to the first zone with
  managed pages (where the allocator's zonelist walk starts).

The periodic view snapshots every zone through BPF (a ``raw_tp`` program run
with BPF_PROG_TEST_RUN): watermarks, boost, present, managed and free pages.
``min/low/high`` are the effective watermarks the allocator compares against
(``_watermark[]`` plus ``watermark_boost``), the numbers /proc/zoneinfo shows.

Library use::

    with PageAllocTracer(PafOptions(pid=1234)) as paf:
        first = paf.sample()             # PafSample: counts since the tracer started
        time.sleep(1)
        second = paf.sample()
        for z in (second - first).zones:  # ZoneStats, pages; counts of that second
            print(z.zone, z.free_pages, z.allocs)

All sizes are in pages (see :func:`memwatcher.kernel.page_size`).
"""

from __future__ import annotations

import ctypes
import re
import struct
from contextlib import ExitStack
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, NamedTuple

import numpy as np
import typer

from .. import kernel
from ..errors import NoSuchProcessError, NotSupportedError
from ..libbpf import BTF, BPFObject, RingBuffer
from ..objects import header, object_path
from ..options import Count, Duration, Interval, Output, OutputFormat, schedule
from ..output import Column, make_writer, timestamp
from ..progress import slow_step
from ..runner import run_periodic, stop_on_signals
from ..topology import node_id_count
from ._lifecycle import BPFReport

__all__ = [
    "AllocCount",
    "FlagsLayout",
    "GfpNames",
    "NoSuchProcessError",
    "PafEvent",
    "PafOptions",
    "PafSample",
    "PageAllocTracer",
    "ZoneStats",
    "eval_c_constant",
    "find_flags_layout",
    "plan",
    "register",
]

_ALLOC_PARAMS = ["struct page *", "unsigned int", "gfp_t", "int"]
_KSWAPD_PARAMS = ["int", "int", "int", "gfp_t"]

# ---------------------------------------------------------------- GFP names

_TOKEN = re.compile(r"\s*(0[xX][0-9a-fA-F]+|\d+)[uUlL]*|\s*(<<|>>|[()~|&^+\-*])|\s*([A-Za-z_]\w*)")
_TYPE_WORDS = frozenset(
    {"unsigned", "signed", "long", "int", "short", "char", "gfp_t", "__force", "u8", "u16", "u32", "u64", "size_t"}
)
_BINARY = [("|",), ("^",), ("&",), ("<<", ">>"), ("+", "-"), ("*",)]
_MASK64 = (1 << 64) - 1


def eval_c_constant(expr: str) -> int:
    """Value of an integer C constant expression as tracepoint formats print them.

    Handles literals with suffixes, casts to integer types, ``~ | & ^ << >> + - *``
    and parentheses, in unsigned 64-bit arithmetic. Raises ValueError otherwise.
    """
    tokens: list[str] = []
    pos = 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot parse {expr[pos : pos + 20]!r}")
        tokens.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
        while pos < len(expr) and expr[pos].isspace():
            pos += 1
    value, rest = _parse_binary(tokens, 0)
    if rest != len(tokens):
        raise ValueError(f"trailing tokens in {expr!r}")
    return value & _MASK64


def _parse_binary(tokens: list[str], i: int, level: int = 0) -> tuple[int, int]:
    if level == len(_BINARY):
        return _parse_unary(tokens, i)
    value, i = _parse_binary(tokens, i, level + 1)
    while i < len(tokens) and tokens[i] in _BINARY[level]:
        op = tokens[i]
        rhs, i = _parse_binary(tokens, i + 1, level + 1)
        value = {
            "|": lambda a, b: a | b,
            "^": lambda a, b: a ^ b,
            "&": lambda a, b: a & b,
            "<<": lambda a, b: a << b,
            ">>": lambda a, b: a >> b,
            "+": lambda a, b: a + b,
            "-": lambda a, b: a - b,
            "*": lambda a, b: a * b,
        }[op](value, rhs) & _MASK64
    return value, i


def _parse_unary(tokens: list[str], i: int) -> tuple[int, int]:
    if i >= len(tokens):
        raise ValueError("unexpected end of expression")
    tok = tokens[i]
    if tok == "~":
        value, i = _parse_unary(tokens, i + 1)
        return ~value & _MASK64, i
    if tok == "-":
        value, i = _parse_unary(tokens, i + 1)
        return -value & _MASK64, i
    if tok == "(":
        j = i + 1
        while j < len(tokens) and tokens[j] in _TYPE_WORDS:
            j += 1
        if j > i + 1 and j < len(tokens) and tokens[j] == ")":
            return _parse_unary(tokens, j + 1)  # a cast: integer types keep the value here
        value, j = _parse_binary(tokens, i + 1)
        if j >= len(tokens) or tokens[j] != ")":
            raise ValueError("unbalanced parentheses")
        return value, j + 1
    if tok[0].isdigit():
        return int(tok, 0), i + 1
    raise ValueError(f"unexpected token {tok!r}")


_FLAG_ENTRY = re.compile(r'\{\s*([^{}"]*?)\s*,\s*"([^"]*)"\s*\}')


@dataclass(frozen=True)
class GfpNames:
    """The kernel's table of gfp flag names, in the order its tracepoints print them.

    ``table`` is a list of (mask, name): compound masks (GFP_KERNEL, ...) first,
    then single flags, as ``show_gfp_flags()`` lists them. ``source`` says where
    it came from: ``"format"`` (a tracepoint's format file) or ``"btf"`` (the
    ``___GFP_*_BIT`` enum: single flags only).
    """

    table: tuple[tuple[int, str], ...]
    source: str

    @classmethod
    def from_format(cls, text: str, field_name: str = "gfp_flags") -> GfpNames | None:
        """Parse the ``__print_flags(REC-><field_name>, ...)`` table of a format file."""
        start = text.find(f"__print_flags(REC->{field_name},")
        if start < 0:
            return None
        entries = []
        for expr, name in _FLAG_ENTRY.findall(text[start : _table_end(text, start)]):
            try:
                entries.append((eval_c_constant(expr), name))
            except ValueError:
                continue  # a name whose value this kernel prints symbolically: leave it out
        return cls(tuple(entries), "format") if entries else None

    @classmethod
    def from_btf(cls, btf: BTF) -> GfpNames | None:
        """Single flags from the ``___GFP_<NAME>_BIT`` enumerators (Linux >= 6.9)."""
        if btf.enumerator("___GFP_DMA_BIT") is None:
            return None
        entries = []
        for tid_name, bit in _gfp_bit_enum(btf).items():
            name = tid_name.removeprefix("___GFP_").removesuffix("_BIT")
            if name in ("LAST", "UNUSED") or name.startswith("UNUSED"):
                continue
            entries.append((1 << bit, f"__GFP_{name}"))
        entries.sort()
        return cls(tuple(entries), "btf")

    @classmethod
    def for_kernel(cls) -> GfpNames:
        """The running kernel's names: the mm_page_alloc format file, else BTF."""
        names = _kernel_gfp_names()
        if names is None:
            raise NotSupportedError("gfp flag names (neither tracefs kmem/mm_page_alloc/format nor BTF ___GFP_*_BIT)")
        return names

    def decode(self, mask: int) -> str:
        """``mask`` as the kernel's trace output prints it (e.g. ``GFP_KERNEL|__GFP_ZERO``).

        The kernel's rule (trace_print_flags_seq): walk the table in order,
        take every entry whose bits are all still set and clear them; print
        what is left over in hex; a zero mask is "none".
        """
        if mask == 0:
            return "none"
        parts = []
        for bits, name in self.table:
            if not mask:
                break
            if mask & bits == bits:
                parts.append(name)
                mask &= ~bits
        if mask:
            parts.append(f"{mask:#x}")
        return "|".join(parts)

    def mask_of(self, name: str) -> int:
        """Mask of a single flag such as ``__GFP_DMA`` (0 if this kernel lacks it)."""
        return next((bits for bits, n in self.table if n == name), 0)


def _table_end(text: str, start: int) -> int:
    """Index just past the closing parenthesis of the __print_flags( call at ``start``."""
    depth = 0
    for i in range(text.index("(", start), len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


def _gfp_bit_enum(btf: BTF) -> dict[str, int]:
    """The (anonymous) enum holding ``___GFP_DMA_BIT`` and its siblings."""
    values = btf.enum_containing("___GFP_DMA_BIT")
    return {k: v for k, v in values.items() if k.startswith("___GFP_") and k.endswith("_BIT")}


@cache
def _kernel_gfp_names() -> GfpNames | None:
    text = kernel.tracepoint_format("kmem", "mm_page_alloc")
    names = GfpNames.from_format(text) if text else None
    return names or GfpNames.from_btf(BTF.vmlinux())


# ---------------------------------------------------------------- page->flags layout


@dataclass(frozen=True)
class FlagsLayout:
    """Where ``page->flags`` keeps the zone (and node) number; node_bits 0: not there."""

    zone_shift: int
    zone_bits: int
    node_shift: int = 0
    node_bits: int = 0

    def zone_of(self, flags: int) -> int:
        return (flags >> self.zone_shift) & ((1 << self.zone_bits) - 1)

    def node_of(self, flags: int) -> int | None:
        return (flags >> self.node_shift) & ((1 << self.node_bits) - 1) if self.node_bits else None


def _layout_candidates(max_nr_zones: int, max_numnodes: int, bits_per_long: int) -> list[FlagsLayout]:
    """include/linux/page-flags-layout.h: from the top, [section][node][zone]...

    The section field exists only for SPARSEMEM without VMEMMAP and its width is
    not in BTF, so the layouts without it are the candidates, node field first.
    """
    zone_bits = max(max_nr_zones - 1, 0).bit_length()
    node_bits = max(max_numnodes - 1, 0).bit_length()
    top = bits_per_long
    out = []
    if node_bits:
        out.append(FlagsLayout(top - node_bits - zone_bits, zone_bits, top - node_bits, node_bits))
    out.append(FlagsLayout(top - zone_bits, zone_bits))
    return out


def find_flags_layout(
    samples: list[tuple[int, int, int]], max_nr_zones: int, max_numnodes: int, bits_per_long: int = 64
) -> FlagsLayout | None:
    """The page->flags layout that every sample (node, zone, flags) agrees with.

    Samples are pages taken from each zone's free lists. A BTF-derived
    candidate is accepted if it decodes every sample to its zone (and node);
    otherwise a zone field found by search is accepted only if the samples
    span at least two zones and exactly one position fits (node then unknown).
    """
    if not samples or max_nr_zones < 2:
        return None
    for layout in _layout_candidates(max_nr_zones, max_numnodes, bits_per_long):
        if all(layout.zone_of(f) == z and layout.node_of(f) in (None, n) for n, z, f in samples) and (
            layout.node_bits or len({n for n, _, _ in samples}) == 1
        ):
            return layout
    zone_bits = (max_nr_zones - 1).bit_length()
    if len({z for _, z, _ in samples}) < 2:
        return None
    fits = [
        s
        for s in range(bits_per_long - zone_bits + 1)
        if all(FlagsLayout(s, zone_bits).zone_of(f) == z for _, z, f in samples)
    ]
    return FlagsLayout(fits[0], zone_bits) if len(fits) == 1 else None


# ---------------------------------------------------------------- records


class ZoneStats(NamedTuple):
    """One zone: state now (pages) and its activity.

    ``min_pages``/``low_pages``/``high_pages`` are the effective watermarks
    (``_watermark[]`` + ``boost_pages``), as the allocator and /proc/zoneinfo
    use them. ``allocs`` counts allocations (of any order), ``failures`` those
    that returned no page, ``kswapd_wakeups`` the wakeups for this zone: since
    the tracer started in a :meth:`PageAllocTracer.sample`, between two samples
    in their difference (``later - earlier``). The state fields are None for
    the row of allocations no zone could be found for.
    """

    node: int
    zone: str
    min_pages: int | None
    low_pages: int | None
    high_pages: int | None
    boost_pages: int | None
    present_pages: int | None
    managed_pages: int | None
    free_pages: int | None
    allocs: int
    failures: int
    kswapd_wakeups: int


class AllocCount(NamedTuple):
    """Allocations of one (node, zone, order, migratetype, gfp) key, cumulative since start."""

    node: int
    zone: str
    order: int
    migratetype: str
    gfp: int
    gfp_names: str
    allocs: int
    failures: int

    @property
    def key(self) -> tuple[int, str, int, str, int]:
        """What the counts map keys it by: (node, zone, order, migratetype, gfp)."""
        return self[:5]

    @property
    def pages(self) -> int:
        """Pages handed out by the successful allocations of this key."""
        return (self.allocs - self.failures) << self.order


class PafEvent(NamedTuple):
    """A failed allocation (``kind`` "failure") or a kswapd wakeup ("kswapd").

    The zone fields are in pages, read when the event happened; ``zone_read``
    is False when the zone could not be read (its fields are then 0).
    ``ts_ns`` is CLOCK_MONOTONIC. ``migratetype`` is "" for kswapd wakeups.
    """

    ts_ns: int
    kind: str
    pid: int
    tid: int
    comm: str
    node: int
    zone: str
    order: int
    migratetype: str
    gfp: int
    gfp_names: str
    min_pages: int
    low_pages: int
    high_pages: int
    boost_pages: int
    present_pages: int
    managed_pages: int
    free_pages: int
    zone_read: bool


@dataclass
class PafSample:
    """What one :meth:`PageAllocTracer.sample` call found: zones and their counts (cumulative since
    the tracer started), the events since the previous call, and the drops so far.

    ``later - earlier`` is the activity between two samples: the zone state of
    ``later``, with every count (zones, keys, drops) the difference; events are
    ``later``'s, which come once.
    """

    zones: list[ZoneStats]
    counts: list[AllocCount]
    events: list[PafEvent]
    events_dropped: int  # ring buffer full
    keys_dropped: int  # allocations not counted, counts map full

    def __sub__(self, earlier: PafSample) -> PafSample:
        before_zone = {(z.node, z.zone): z for z in earlier.zones}
        zones = []
        for z in self.zones:
            b = before_zone.get((z.node, z.zone))
            if b is not None:
                z = z._replace(
                    allocs=z.allocs - b.allocs,
                    failures=z.failures - b.failures,
                    kswapd_wakeups=z.kswapd_wakeups - b.kswapd_wakeups,
                )
            zones.append(z)
        before_key = {c.key: c for c in earlier.counts}
        counts = []
        for c in self.counts:
            b = before_key.get(c.key)
            counts.append(c if b is None else c._replace(allocs=c.allocs - b.allocs, failures=c.failures - b.failures))
        return PafSample(
            zones,
            counts,
            self.events,
            self.events_dropped - earlier.events_dropped,
            self.keys_dropped - earlier.keys_dropped,
        )


@dataclass(frozen=True)
class PafOptions:
    """``pid``: only allocations by this process (tgid); None: all.
    ``events``: stream failures and kswapd wakeups. ``max_keys``: capacity of
    the in-kernel counts table."""

    pid: int | None = None
    events: bool = False
    max_keys: int = 16384


# ---------------------------------------------------------------- kernel facts


def _max_numnodes(btf: BTF) -> int:
    size = btf.size_of("nodemask_t", "typedef")
    return size * 8 if size else 1


def _migratetype_names(btf: BTF) -> dict[int, str]:
    return {
        v: k.removeprefix("MIGRATE_")
        for k, v in btf.enum_values("migratetype").items()
        if k.startswith("MIGRATE_") and k != "MIGRATE_TYPES"
    }


def _gfp_zone_table(zones: dict[str, int], gfp: GfpNames) -> tuple[list[int], dict[str, int]]:
    """Highest zone per combination of the gfp zone modifiers (the kernel's GFP_ZONE_TABLE).

    Index bits: DMA 1, HIGHMEM 2, DMA32 4, MOVABLE 8. Combinations the kernel
    calls invalid map to ZONE_NORMAL.
    """
    normal = zones["ZONE_NORMAL"]
    dma = zones.get("ZONE_DMA", normal)
    dma32 = zones.get("ZONE_DMA32", normal)
    highmem = zones.get("ZONE_HIGHMEM", normal)
    movable = zones.get("ZONE_MOVABLE", normal)
    table = [normal] * 16
    table[1] = table[1 | 8] = dma
    table[2] = highmem
    table[4] = table[4 | 8] = dma32
    table[2 | 8] = movable
    masks = {m: gfp.mask_of(f"__GFP_{m.upper()}") for m in ("dma", "highmem", "dma32", "movable")}
    return table, masks


def plan() -> kernel.Plan:
    """Hooks: tp_btf mm_page_alloc and mm_vmscan_wakeup_kswapd; memcg path to node data."""
    hooks = [kernel.tracepoint_hook("mm_page_alloc"), kernel.tracepoint_hook("mm_vmscan_wakeup_kswapd")]
    problems = []
    if kernel.btf_available():
        if kernel.tracepoint_params("mm_page_alloc") not in (None, _ALLOC_PARAMS):
            problems.append(f"mm_page_alloc arguments {kernel.tracepoint_params('mm_page_alloc')}")
        if kernel.tracepoint_params("mm_vmscan_wakeup_kswapd") not in (None, _KSWAPD_PARAMS):
            problems.append(f"mm_vmscan_wakeup_kswapd arguments {kernel.tracepoint_params('mm_vmscan_wakeup_kswapd')}")
        if "pgdat" not in BTF.vmlinux().members("lruvec"):
            problems.append("no lruvec->pgdat (CONFIG_MEMCG): node data unreachable")
    return kernel.Plan("paf", hooks, "tp_btf + memcg->nodeinfo->pgdat", problems)


# ---------------------------------------------------------------- the tracer


def _zone_state(rec: np.void) -> tuple[int, int, int, int, int, int, int]:
    """(min, low, high, boost, present, managed, free) pages of a ``paf_zone_state`` record.

    Watermarks are the effective ones (``_watermark[]`` + boost), as the
    allocator and /proc/zoneinfo use them; a transiently negative free count
    reads as 0.
    """
    boost = int(rec["boost_pages"])
    return (
        int(rec["wmark_min_pages"]) + boost,
        int(rec["wmark_low_pages"]) + boost,
        int(rec["wmark_high_pages"]) + boost,
        boost,
        int(rec["present_pages"]),
        int(rec["managed_pages"]),
        max(int(rec["free_pages"]), 0),
    )


class PageAllocTracer(BPFReport):
    """Loads and attaches paf.bpf.o; a context manager (loads on entry, closes everything on exit)."""

    def __init__(self, options: PafOptions | None = None) -> None:
        super().__init__()
        self.options = options or PafOptions()
        self.layout: FlagsLayout | None = None
        self._obj: BPFObject | None = None
        self._ring: RingBuffer | None = None

    def _load(self) -> None:
        kernel.require_bpf()
        pid = self.options.pid
        if pid is not None and not Path(f"/proc/{pid}").exists():
            raise NoSuchProcessError(pid)
        p = plan()
        if not p.runnable:
            raise NotSupportedError("paf: " + "; ".join(p.reasons()))
        btf = BTF.vmlinux()
        self._layouts = header("paf")
        self.gfp = GfpNames.for_kernel()
        zone_enum = btf.enum_values("zone_type")
        self.nr_zones = zone_enum["__MAX_NR_ZONES"]
        self.nr_nodes = min(node_id_count(), self._layouts.constants["PAF_MAX_NODES"])
        self.zone_names = kernel.zone_names(btf)
        self.migratetypes = _migratetype_names(btf)
        self.layout = self._calibrate(btf)
        self._open(zone_enum)

    def _configure(self, obj: BPFObject) -> None:
        obj.rodata.nr_nodes = self.nr_nodes
        obj.rodata.nr_zones = self.nr_zones

    def _calibrate(self, btf: BTF) -> FlagsLayout | None:
        """Find the page->flags layout from pages on each zone's free lists."""
        samples = []
        with BPFObject.open(object_path("paf")) as obj:
            self._configure(obj)
            for prog in obj.programs.values():
                prog.autoload = prog.name == "snapshot"
            obj.load()
            for nid in range(self.nr_nodes):
                obj.programs.snapshot.test_run(struct.pack("QQ", nid, 1))
            _, zones = obj.maps.zones.read_all(np.uint32, self._layouts.paf_zone)
            for z in zones:
                if z["valid"] and z["has_sample"]:
                    samples.append((int(z["node"]), int(z["zone"]), int(z["sample_flags"])))
        return find_flags_layout(samples, self.nr_zones, _max_numnodes(btf), 8 * ctypes.sizeof(ctypes.c_long))

    def _open(self, zone_enum: dict[str, int]) -> None:
        obj = self._owned.enter_context(BPFObject.open(object_path("paf")))
        self._obj = obj
        self._configure(obj)
        obj.rodata.target_tgid = self.options.pid or 0
        obj.rodata.stream_events = self.options.events
        if self.layout is not None:
            obj.rodata.zone_shift = self.layout.zone_shift
            obj.rodata.zone_bits = self.layout.zone_bits
            obj.rodata.node_shift = self.layout.node_shift
            obj.rodata.node_bits = self.layout.node_bits
        table, masks = _gfp_zone_table(zone_enum, self.gfp)
        obj.rodata.gfp_zone_table = np.array(table, dtype="<u4").tobytes()
        for name, mask in masks.items():
            setattr(obj.rodata, f"gfp_{name}", mask)
        obj.maps.counts.max_entries = self.options.max_keys
        obj.load()
        self._refresh()
        obj.programs.on_page_alloc.attach()
        obj.programs.on_wakeup_kswapd.attach()
        if self.options.events:
            self._ring = RingBuffer(obj.maps.events, self._layouts.paf_event)

    def _refresh(self) -> None:
        for nid in range(self.nr_nodes):
            self._obj.programs.snapshot.test_run(struct.pack("QQ", nid, 0))

    def _zone_name(self, zid: int, raw: bytes = b"") -> str:
        if zid == self._layouts.constants["PAF_UNKNOWN"]:
            return "?"
        return raw.decode(errors="replace") or self.zone_names.get(zid, str(zid))

    def _counts(self, keys: np.ndarray, values: np.ndarray) -> list[AllocCount]:
        """Allocation counts per key (the counts map's entries), cumulative since the tracer started."""
        if not len(keys):
            return []
        allocs = values["allocs"].sum(axis=1)
        failures = values["failures"].sum(axis=1)
        out = []
        for k, a, f in zip(keys, allocs, failures):
            gfp = int(k["gfp"])
            out.append(
                AllocCount(
                    int(k["node"]),
                    self._zone_name(int(k["zone"])),
                    int(k["order"]),
                    self.migratetypes.get(int(k["migratetype"]), str(int(k["migratetype"]))),
                    gfp,
                    self.gfp.decode(gfp),
                    int(a),
                    int(f),
                )
            )
        return out

    def sample(self) -> PafSample:
        """Zones now with their counts since the tracer started, plus the events since the previous call."""
        obj = self._obj
        self._refresh()
        zmax = self._layouts.constants["PAF_MAX_ZONES"]
        _, zones = obj.maps.zones.read_all(np.uint32, self._layouts.paf_zone)
        _, wakeups = obj.maps.kswapd_wakeups.read_all(np.uint32, np.uint64)
        keys, values = obj.maps.counts.read_all(self._layouts.paf_key, self._layouts.paf_counts)
        totals: dict[tuple[int, int], list[int]] = {}
        if len(keys):
            allocs = values["allocs"].sum(axis=1)
            failures = values["failures"].sum(axis=1)
            for k, a, f in zip(keys, allocs, failures):
                t = totals.setdefault((int(k["node"]), int(k["zone"])), [0, 0])
                t[0] += int(a)
                t[1] += int(f)
        counts = self._counts(keys, values)
        rows = []
        for z in zones:
            if not z["valid"]:
                continue
            node, zid = int(z["node"]), int(z["zone"])
            rows.append(
                self._row(
                    node,
                    zid,
                    self._zone_name(zid, z["name"]),
                    z,
                    totals.pop((node, zid), [0, 0]),
                    int(wakeups[node * zmax + zid]),
                )
            )
        for (node, zid), t in sorted(totals.items()):
            rows.append(self._row(node, zid, self._zone_name(zid), None, t, 0))
        events = self._events()
        return PafSample(rows, counts, events, int(obj.bss.events_dropped), int(obj.bss.keys_dropped))

    def _row(self, node: int, zid: int, name: str, z: np.void | None, totals: list[int], wakeups: int) -> ZoneStats:
        state = _zone_state(z["state"]) if z is not None else (None,) * 7
        return ZoneStats(node, name, *state, totals[0], totals[1], wakeups)

    def _events(self) -> list[PafEvent]:
        if self._ring is None:
            return []
        out = []
        for e in self._ring.consume():
            kswapd = int(e["kind"]) == self._layouts.constants["PAF_EV_KSWAPD"]
            zid = int(e["zone"])
            gfp = int(e["gfp"])
            mt = int(e["migratetype"])
            out.append(
                PafEvent(
                    int(e["ts_ns"]),
                    "kswapd" if kswapd else "failure",
                    int(e["pid"]),
                    int(e["tid"]),
                    e["comm"].decode(errors="replace"),
                    int(e["node"]),
                    self._zone_name(zid),
                    int(e["order"]),
                    "" if kswapd else self.migratetypes.get(mt, str(mt)),
                    gfp,
                    self.gfp.decode(gfp),
                    *_zone_state(e["zone_state"]),
                    bool(e["zone_valid"]),
                )
            )
        return out

    def close(self) -> None:
        self._ring = None
        self._obj = None
        super().close()


# ---------------------------------------------------------------- CLI

_ZONE_COLUMNS = [
    Column("node", "NODE"),
    Column("zone", "ZONE", left=True),
    Column("min_pages", "MIN"),
    Column("low_pages", "LOW"),
    Column("high_pages", "HIGH"),
    Column("boost_pages", "BOOST"),
    Column("present_pages", "PRESENT"),
    Column("managed_pages", "MANAGED"),
    Column("free_pages", "FREE"),
    Column("allocs", "ALLOCS"),
    Column("failures", "FAILS"),
    Column("kswapd_wakeups", "KSWAPD"),
]

_EVENT_COLUMNS = [
    Column("kind", "EVENT", left=True),
    Column("pid", "PID"),
    Column("comm", "COMM", left=True),
    Column("node", "NODE"),
    Column("zone", "ZONE", left=True),
    Column("order", "ORDER"),
    Column("min_pages", "MIN"),
    Column("low_pages", "LOW"),
    Column("high_pages", "HIGH"),
    Column("free_pages", "FREE"),
    Column("managed_pages", "MANAGED"),
    Column("gfp_flags", "GFP", left=True),
]
_EVENT_JSON_COLUMNS = [
    Column(k, k)
    for k in (
        "ts_ns",
        "kind",
        "pid",
        "tid",
        "comm",
        "node",
        "zone",
        "order",
        "migratetype",
        "gfp",
        "gfp_flags",
        "min_pages",
        "low_pages",
        "high_pages",
        "boost_pages",
        "present_pages",
        "managed_pages",
        "free_pages",
    )
]


def register(app: typer.Typer) -> None:
    @app.command("paf")
    def paf_command(
        interval: Interval = 1.0,
        duration: Duration = None,
        count: Count = None,
        output: Output = OutputFormat.table,
        pid: Annotated[int | None, typer.Option("--pid", "-p", help="Only allocations by this process.")] = None,
        events: Annotated[
            bool, typer.Option("--events", "-e", help="Stream each failed allocation and kswapd wakeup.")
        ] = False,
    ) -> None:
        """Zone watermarks, free pages, allocations, failures and kswapd wakeups per interval.

        Example: memwatcher paf -i 5 -o json;  memwatcher paf --events
        """
        columns = (_EVENT_COLUMNS if output == OutputFormat.table else _EVENT_JSON_COLUMNS) if events else _ZONE_COLUMNS
        writer = make_writer(output, columns)
        with ExitStack() as stack:
            with slow_step("calibrating, loading and attaching paf..."):
                paf = stack.enter_context(PageAllocTracer(PafOptions(pid=pid, events=events)))
            stop = stack.enter_context(stop_on_signals())
            if paf.layout is None:
                writer.message("memwatcher: page->flags zone field not found: successful allocations shown as zone ?")
            previous: list[PafSample | None] = [None]  # the first interval starts when the tracer did

            def sample() -> bool:
                current = paf.sample()
                s = current if previous[0] is None else current - previous[0]
                previous[0] = current
                now = timestamp()
                for n, what in (
                    (s.events_dropped, "events lost (ring buffer full)"),
                    (s.keys_dropped, "allocations not counted (table full)"),
                ):
                    if n:
                        writer.message(f"memwatcher: {n} {what}")
                if events:
                    if s.events:
                        writer.write([_event_row(e) for e in s.events], time=now, title="paf events")
                else:
                    writer.write([z._asdict() for z in s.zones], time=now, title="paf: zones (pages)")
                if pid is not None and not Path(f"/proc/{pid}").exists():
                    writer.message(f"memwatcher: process {pid} exited")
                    return False
                return True

            run_periodic(schedule(interval, duration, count), sample, stop)


def _event_row(e: PafEvent) -> dict:
    row = e._asdict()
    row["gfp_flags"] = e.gfp_names
    return row
