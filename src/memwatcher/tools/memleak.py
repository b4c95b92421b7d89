"""`memwatcher memleak`: which call stacks hold memory that was never freed.

User space (``--pid PID`` or ``--command "CMD ARGS"``): uprobes and
uretprobes on the target's allocator (malloc, calloc, realloc, reallocarray,
posix_memalign, aligned_alloc, memalign, valloc, pvalloc, free, mmap, munmap,
mremap). Kernel (``--kernel``): the raw tracepoints kmem:kmalloc, kfree,
kmem_cache_alloc, kmem_cache_free, mm_page_alloc, mm_page_free(_batched) and,
with ``--percpu``, percpu_alloc_percpu / percpu_free_percpu; the program
variant matching the running kernel's tracepoint arguments is chosen from
kernel BTF (:func:`kernel_programs`).

BPF keeps every outstanding allocation (address -> size, time, stack id), the
stacks, and per-stack totals. Both modes share :class:`LeakReport` and its
writers (text, JSON, folded stacks, pprof).

Library use::

    with UserMemleak(pid) as leaks:
        time.sleep(5)
        report = leaks.read(top=10)        # LeakReport
        for stack in report.stacks:
            print(stack.outstanding_bytes, stack.outstanding_allocs, stack.frames[0].function)

Sizes are bytes as requested from the allocator (kernel: bytes actually
allocated, ``page size << order`` for pages), counts are allocations, ages are
seconds. Every value is a snapshot of what is outstanding now, not cumulative;
the ``lost_*`` diagnostics are cumulative since the tracer started.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import json
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import numpy as np
import typer

from .. import kernel
from ..cfi import header_path
from ..elf import NotElfError, function_offsets
from ..errors import CommandNotFoundError, MemwatcherError, NoSuchProcessError, PrivilegeError
from ..libbpf import BPFObject, LibbpfError, possible_cpus
from ..objects import header, object_path
from ..options import MAX_SECONDS, U32_MAX, U64_MAX, Count, Duration, Interval, schedule
from ..output import check_writable, human_bytes, timestamp, write_atomically
from ..processes import CommandProcess, PidWatch, identity, read_status
from ..procmaps import LIBC_PATH, ProcessMaps
from ..progress import slow_step
from ..records import load_header
from ..runner import run_periodic, stop_on_signals
from ..trends import Trend, TrendTracker
from ..unwinder import UnwindStats, UnwindTables
from ._lifecycle import BPFReport

if TYPE_CHECKING:  # imported where used: the symbolizer is not needed to parse options or print --help
    from ..symbolize import Frame, Symbolizer

__all__ = [
    "USER_FUNCTIONS",
    "KernelMemleak",
    "KernelPrograms",
    "LeakReport",
    "LeakStack",
    "MemleakOptions",
    "OutstandingAllocation",
    "TargetError",
    "UnwindReport",
    "UserMemleak",
    "encode_pprof",
    "format_folded",
    "format_text",
    "kernel_programs",
    "plan",
    "register",
    "report_json",
    "run_metadata",
]

# Allocator function -> its attach cookie in bpf/memleak.h. Two programs serve them
# all, user_enter and user_return: every call is closed by its return, so that calls
# nested in any of them (free included) belong to it.
USER_FUNCTIONS: dict[str, str] = {
    "malloc": "MEMLEAK_FN_MALLOC",
    "calloc": "MEMLEAK_FN_CALLOC",
    "realloc": "MEMLEAK_FN_REALLOC",
    "reallocarray": "MEMLEAK_FN_REALLOCARRAY",
    "posix_memalign": "MEMLEAK_FN_POSIX_MEMALIGN",
    "aligned_alloc": "MEMLEAK_FN_ALIGNED",
    "memalign": "MEMLEAK_FN_ALIGNED",
    "valloc": "MEMLEAK_FN_MALLOC",
    "pvalloc": "MEMLEAK_FN_MALLOC",
    "free": "MEMLEAK_FN_FREE",
    "mmap": "MEMLEAK_FN_MMAP",
    "munmap": "MEMLEAK_FN_FREE",
    "mremap": "MEMLEAK_FN_MREMAP",
}
# Attached to file offsets: through uprobe_multi links where the kernel has them (one
# link per program, detached in one grace period), else one perf-event uprobe each.
_PROBE_PROGRAMS = ("user_enter", "user_return", "dl_debug_state")
_USER_PROGRAMS = {*_PROBE_PROGRAMS, "target_exec", "forget_alloc"}

_BPF_F_USER_STACK = 1 << 8  # include/uapi/linux/bpf.h, stable ABI
# A command memwatcher started stays ptraced until ld.so has mapped its libraries: BPF
# sends this signal at _dl_debug_state and the tracer suppresses it (ignored by default).
LOADER_SIGNAL = signal.SIGURG
_LOADER_POLL_S = 0.02  # how often the dynamic loader's change count is read
UNWIND_MODES = ("auto", "dwarf", "fp")


class TargetError(MemwatcherError):
    """The process or library to trace is unusable (gone, kernel thread, no allocator)."""


@dataclass(frozen=True)
class MemleakOptions:
    """What the BPF side records. Zero values are the defaults.

    ``sample_rate`` N records one allocation in N (reports scale totals by N
    and mark them as estimates). ``max_*`` size the BPF maps: outstanding
    allocations, distinct stacks, threads inside an allocator call at once,
    unwind rows (12 bytes each). ``unwind`` picks how user stacks are walked:
    ``dwarf`` (call-frame information, frame pointers where none covers a pc),
    ``fp`` (the kernel's frame-pointer walk) or ``auto`` (dwarf on x86-64).
    """

    min_size_bytes: int = 0
    max_size_bytes: int | None = None
    sample_rate: int = 1
    combined_only: bool = False
    wa_missing_free: bool = True
    max_allocs: int = 262144
    max_stacks: int = 16384
    max_threads: int = 16384
    percpu: bool = False  # kernel mode: also percpu allocations
    unwind: str = "auto"
    max_unwind_rows: int = 1 << 20
    trend_samples: int = 60  # reads of each stack's outstanding bytes kept for its trend

    @property
    def dwarf_unwind(self) -> bool:
        """Whether user stacks are walked with DWARF CFI."""
        if self.unwind not in UNWIND_MODES:
            raise ValueError(f"unwind must be one of {', '.join(UNWIND_MODES)}, not {self.unwind!r}")
        if self.unwind == "auto":
            return os.uname().machine == "x86_64"
        return self.unwind == "dwarf"


@dataclass(frozen=True)
class OutstandingAllocation:
    """One allocation not freed yet (``--show-allocs``)."""

    address: int
    size_bytes: int
    age_s: float
    stack_id: int
    kind: str  # "user", "slab", "page" or "percpu"


@dataclass
class LeakStack:
    """Outstanding memory allocated from one call stack.

    ``frames`` are innermost first (inlined functions get their own frame);
    ``oldest_age_s`` is None with ``combined_only`` (no per-allocation times).
    With sampling, bytes and allocations are estimates (scaled). ``trend`` is
    how the stack's outstanding bytes moved over the last reads
    (:mod:`memwatcher.trends`; None on the first read of it); a stack
    ``freed`` since is reported with nothing outstanding. ``allocated_bytes``,
    ``allocations``, ``freed_bytes`` and ``frees`` count since tracing began
    (BPF counters: exact unless sampled); outstanding is allocated less freed.
    """

    stack_id: int
    outstanding_bytes: int
    outstanding_allocs: int
    oldest_age_s: float | None
    addresses: list[int]
    frames: list[Frame] = field(default_factory=list)
    trend: Trend | None = None
    allocated_bytes: int = 0
    allocations: int = 0
    freed_bytes: int = 0
    frees: int = 0


@dataclass
class UnwindReport:
    """How user stacks were walked (``mode`` "dwarf" or "fp") and what the walk could not do.

    Counts are cumulative stacks: ``no_cfi`` met a pc no CFI row covered and went on with
    frame pointers, ``unsupported`` stopped at a CFI rule the walk cannot follow,
    ``truncated`` reached the depth limit, ``read_errors`` stopped at unreadable stack
    memory. ``tables`` sizes the unwind tables and lists objects whose CFI is missing.
    """

    mode: str
    no_cfi: int = 0
    unsupported: int = 0
    truncated: int = 0
    read_errors: int = 0
    tables: UnwindStats | None = None


@dataclass
class LeakReport:
    """One snapshot of outstanding allocations, top stacks first.

    ``total_*`` cover every stack, not only the ``stacks`` shown. ``lost_*``
    are cumulative: allocations not tracked because a map was full
    (``lost_allocs``), stacks whose totals are incomplete (``lost_stacks``),
    stacks not recorded (``stack_errors``), allocator calls missed
    (``lost_inflight``) and addresses allocated twice with no free seen
    (``missed_frees``).
    """

    time: str
    target: str  # "pid 123", "kernel"
    stacks: list[LeakStack]
    total_outstanding_bytes: int
    total_outstanding_allocs: int
    estimated: bool
    sample_rate: int
    lost_allocs: int = 0
    lost_stacks: int = 0
    stack_errors: int = 0
    lost_inflight: int = 0
    missed_frees: int = 0
    allocations: list[OutstandingAllocation] = field(default_factory=list)
    final: bool = False
    unwind: UnwindReport | None = None  # user space only
    traced_s: float = 0.0  # since the probes were attached

    @property
    def lost(self) -> dict[str, int]:
        return {
            "lost_allocs": self.lost_allocs,
            "lost_stacks": self.lost_stacks,
            "stack_errors": self.stack_errors,
            "lost_inflight": self.lost_inflight,
            "missed_frees": self.missed_frees,
        }


# ---------------------------------------------------------------- kernel variants


@dataclass
class KernelPrograms:
    """Programs to load for this kernel: program name -> tracepoint, and why."""

    enabled: dict[str, str] = field(default_factory=dict)
    variants: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def kernel_programs(params_of: Callable[[str], list[str] | None], percpu: bool = False) -> KernelPrograms:
    """Choose the kernel programs from tracepoint argument lists.

    ``params_of(name)`` gives a raw tracepoint's argument type names (without
    the context pointer), None when the kernel lacks it:
    :func:`memwatcher.kernel.tracepoint_params` on the running kernel, test
    data for others.
    """
    out = KernelPrograms()

    def need(tp: str, prog: str, required: bool = True, check: Callable[[list[str]], bool] | None = None) -> bool:
        params = params_of(tp)
        if params is None:
            if required:
                out.problems.append(f"tracepoint {tp} is missing")
            return False
        if check is not None and not check(params):
            out.problems.append(f"tracepoint {tp} has unknown arguments ({', '.join(params)})")
            return False
        out.enabled[prog] = tp
        return True

    def slab_sizes(p: list[str]) -> bool:  # (call_site, ptr, bytes_req, bytes_alloc, ...)
        return len(p) >= 4 and p[1].endswith("*") and p[2] == p[3] == "size_t"

    need("kmalloc", "kmalloc", check=slab_sizes)
    # Before 6.1 the NUMA variants were separate events with the same leading arguments.
    need("kmalloc_node", "kmalloc_node", required=False, check=slab_sizes)
    need("kmem_cache_alloc_node", "kmem_cache_alloc_node", required=False, check=slab_sizes)
    cache = params_of("kmem_cache_alloc")
    if cache is None:
        out.problems.append("tracepoint kmem_cache_alloc is missing")
    elif len(cache) >= 3 and cache[2] == "struct kmem_cache *":
        out.enabled["kmem_cache_alloc_cache"] = "kmem_cache_alloc"
        out.variants.append("kmem_cache_alloc(call_site, ptr, s): size from the cache (6.1+)")
    elif slab_sizes(cache):
        out.enabled["kmem_cache_alloc_sizes"] = "kmem_cache_alloc"
        out.variants.append("kmem_cache_alloc(call_site, ptr, bytes_req, bytes_alloc) (before 6.1)")
    else:
        out.problems.append(f"tracepoint kmem_cache_alloc has unknown arguments ({', '.join(cache)})")

    def frees_ptr(p: list[str]) -> bool:  # (call_site, ptr, ...)
        return len(p) >= 2 and p[1].endswith("*")

    need("kfree", "kfree", check=frees_ptr)
    need("kmem_cache_free", "kmem_cache_free", check=frees_ptr)
    need("mm_page_alloc", "mm_page_alloc", check=lambda p: len(p) >= 2 and p[0] == "struct page *")
    need("mm_page_free", "mm_page_free", check=lambda p: len(p) >= 1 and p[0] == "struct page *")
    need("mm_page_free_batched", "mm_page_free_batched", required=False, check=lambda p: p[0] == "struct page *")
    if percpu:
        pa = params_of("percpu_alloc_percpu")
        if pa is None:
            out.problems.append("tracepoint percpu_alloc_percpu is missing")
        elif len(pa) >= 9 and pa[0] == "long unsigned int" and pa[7] == "void *":
            out.enabled["percpu_alloc_call_site"] = "percpu_alloc_percpu"
            out.variants.append("percpu_alloc_percpu(call_site, ..., ptr, bytes_alloc, gfp) (6.0+)")
        elif len(pa) >= 7 and pa[0] == "bool" and pa[6] == "void *":
            out.enabled["percpu_alloc_short"] = "percpu_alloc_percpu"
            out.variants.append("percpu_alloc_percpu(reserved, is_atomic, size, ..., ptr) (before 6.0)")
        else:
            out.problems.append(f"tracepoint percpu_alloc_percpu has unknown arguments ({', '.join(pa)})")
        need("percpu_free_percpu", "percpu_free_percpu", check=lambda p: len(p) >= 3 and p[2] == "void *")
    if any(p in out.enabled for p in ("kmalloc_node", "kmem_cache_alloc_node")):
        out.variants.append("separate *_node events (before 6.1)")
    return out


def plan() -> kernel.Plan:
    """Hooks of both modes on this kernel (uprobes for user space, tracepoints for --kernel)."""
    programs = kernel_programs(kernel.tracepoint_params, percpu=True)
    uprobe = kernel.probe_feature("uprobe")
    # Without uprobes (or the right to create them) --kernel still runs.
    multi = kernel.probe_feature("uprobe_multi")
    hooks = [
        kernel.Hook("uprobes (user space)", uprobe.available, required=False, detail=uprobe.detail),
        # Without them each probe is a perf event: the same report, seconds longer to exit.
        kernel.Hook("uprobe_multi links (user space)", multi.available, required=False, detail=multi.detail),
    ]
    hooks += [kernel.tracepoint_hook(tp) for tp in sorted(set(programs.enabled.values()))]
    variant = "; ".join(programs.variants) or "default"
    return kernel.Plan("memleak", hooks=hooks, variant=variant, problems=programs.problems)


# ---------------------------------------------------------------- tracers


class _Tracer(BPFReport):
    """Loaded memleak object and the code that turns its maps into reports (loads on entry)."""

    target = ""
    pid: int | None = None
    dwarf = False
    unwind_tables: UnwindTables | None = None

    def __init__(self, options: MemleakOptions) -> None:
        super().__init__()
        self.options = options
        self._layouts = header("memleak")
        self._symbolizer: Symbolizer | None = None
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self.warnings: list[str] = []
        self._attached_ns = time.monotonic_ns()  # set again by subclasses once attached
        self._trends = TrendTracker(window=max(2, options.trend_samples), recent=min(5, max(2, options.trend_samples)))

    def _open(self, programs: set[str], stack_flags: int) -> BPFObject:
        opts = self.options
        obj = self._owned.enter_context(BPFObject.open(object_path("memleak")))
        for prog in obj.programs.values():
            prog.autoload = prog.name in programs
        obj.rodata.min_size_bytes = opts.min_size_bytes
        obj.rodata.max_size_bytes = opts.max_size_bytes if opts.max_size_bytes is not None else (1 << 64) - 1
        obj.rodata.sample_rate = max(1, opts.sample_rate)
        obj.rodata.stack_flags = stack_flags
        obj.rodata.wa_missing_free = opts.wa_missing_free
        obj.maps.allocs.max_entries = opts.max_allocs
        # One row per stack id, plus one per error a stack walk can return (negative ids).
        obj.maps.combined.max_entries = opts.max_stacks + 16
        obj.maps.inflight.max_entries = opts.max_threads
        dwarf = stack_flags == _BPF_F_USER_STACK and opts.dwarf_unwind
        obj.rodata.dwarf_unwind = dwarf
        # Only the stack map of the chosen walk gets room.
        obj.maps.stacks.max_entries = 1 if dwarf else opts.max_stacks
        obj.maps.ustacks.max_entries = opts.max_stacks if dwarf else 1
        obj.maps.unwind_rows.max_entries = opts.max_unwind_rows if dwarf else 1
        self.dwarf = dwarf
        return obj

    def close(self) -> None:
        self._closing.set()
        for thread in self._threads:
            thread.join()
        if self._symbolizer is not None:
            self._symbolizer.close()
            self._symbolizer = None
        super().close()

    # -- reading

    def read(
        self, *, top: int | None = 10, min_age_s: float = 0.0, sort: str = "bytes", show_allocs: bool = False
    ) -> LeakReport:
        """Outstanding allocations now, grouped by stack, the ``top`` first by ``sort``."""
        obj: BPFObject = self.obj
        rate = max(1, self.options.sample_rate)
        allocations: list[OutstandingAllocation] = []
        now_ns = time.monotonic_ns()  # the clock of bpf_ktime_get_ns
        stack_keys, stack_rows = obj.maps.combined.read_all(np.int64, self._layouts.memleak_combined)
        totals = dict(zip(stack_keys.tolist(), stack_rows.tolist()))
        if self.options.combined_only:
            held = stack_rows["allocs"] > 0  # rows stay, with their totals, once all is freed
            ids = stack_keys[held].astype(np.int64)
            sizes = stack_rows["bytes"][held].astype(np.int64)
            counts = stack_rows["allocs"][held].astype(np.int64)
            oldest: np.ndarray | None = None
            held_now = dict(zip(ids.tolist(), (sizes * rate).tolist()))
        else:
            keys, values = obj.maps.allocs.read_all(np.uint64, self._layouts.memleak_alloc)
            # Stacks once: every allocation counts for the trends, those old enough for the report.
            every, at = np.unique(values["stack_id"], return_inverse=True)
            held = np.bincount(at, weights=values["size_bytes"], minlength=len(every)).astype(np.int64) * rate
            held_now = dict(zip(every.tolist(), held.tolist()))
            ages_s = np.maximum(now_ns - values["ts_ns"].astype(np.int64), 0) / 1e9
            keep = ages_s >= min_age_s
            keys, values, ages_s, at = keys[keep], values[keep], ages_s[keep], at[keep]
            sizes = np.bincount(at, weights=values["size_bytes"], minlength=len(every)).astype(np.int64)
            counts = np.bincount(at, minlength=len(every)).astype(np.int64)
            oldest = np.zeros(len(every))
            np.maximum.at(oldest, at, ages_s)
            shown = counts > 0
            ids, sizes, counts, oldest = every[shown], sizes[shown], counts[shown], oldest[shown]
            if show_allocs:
                order = np.argsort(-ages_s)
                allocations = [
                    OutstandingAllocation(
                        int(keys[i]) & ~self._tag_mask,
                        int(values["size_bytes"][i]),
                        float(ages_s[i]),
                        int(values["stack_id"][i]),
                        self._kind(int(keys[i])),
                    )
                    for i in order
                ]
        # Every stack's bytes, whatever min_age_s shows; stacks freed within the trend
        # window stay in the report, with nothing outstanding.
        self._trends.observe(now_ns / 1e9, held_now)
        freed = [k for k in self._trends.keys() if k not in held_now]
        ids = np.concatenate([ids, np.array(freed, dtype=np.int64)])
        sizes, counts = (np.concatenate([a, np.zeros(len(freed), np.int64)]) for a in (sizes, counts))
        if oldest is not None:
            oldest = np.concatenate([oldest, np.zeros(len(freed))])
        # Growing means rising by more than two allocations of the stack's average size.
        trends = [self._trends.trend(int(i), 2 * rate * sizes[n] / max(1, counts[n])) for n, i in enumerate(ids)]
        growth = np.array([t.growth_per_s if t is not None else 0.0 for t in trends])
        primary, secondary = {"bytes": (sizes, counts), "count": (counts, sizes), "growth": (growth, sizes)}[sort]
        order = np.lexsort((ids, -secondary, -primary))
        if top is not None:
            order = order[:top]
        stacks = []
        for i in order:
            addresses = self._stack_addresses(int(ids[i]))
            # (outstanding bytes, allocs, allocated bytes, allocations, freed bytes, frees)
            _, _, *since_start = totals.get(int(ids[i]), (0,) * 6)
            stacks.append(
                LeakStack(
                    int(ids[i]),
                    int(sizes[i]) * rate,
                    int(counts[i]) * rate,
                    float(oldest[i]) if oldest is not None and sizes[i] else None,
                    addresses,
                    self.frames(addresses),
                    trends[i],
                    *(int(n) * rate for n in since_start),
                )
            )
        bss = obj.bss
        return LeakReport(
            time=timestamp(),
            target=self.target,
            stacks=stacks,
            total_outstanding_bytes=int(sizes.sum()) * rate,
            total_outstanding_allocs=int(counts.sum()) * rate,
            estimated=rate > 1,
            sample_rate=rate,
            lost_allocs=bss.lost_allocs,
            lost_stacks=bss.lost_stacks,
            stack_errors=bss.stack_errors,
            lost_inflight=bss.lost_inflight,
            missed_frees=bss.missed_frees,
            allocations=allocations,
            unwind=self._unwind_report(bss),
            traced_s=(time.monotonic_ns() - self._attached_ns) / 1e9,
        )

    def _unwind_report(self, bss: Any) -> UnwindReport | None:
        return None

    _tag_mask = 0

    def _kind(self, key: int) -> str:
        return "user"

    def _stack_addresses(self, stack_id: int) -> list[int]:
        if stack_id < 0:
            return []
        raw = (self.obj.maps.ustacks if self.dwarf else self.obj.maps.stacks).lookup(stack_id)
        if raw is None:
            return []
        ips = np.frombuffer(raw, np.uint64)
        n = int(np.argmin(ips != 0)) if (ips == 0).any() else len(ips)
        return [int(a) for a in ips[:n]]

    # -- symbolization seam: the one place addresses become frames

    def frames(self, addresses: Sequence[int]) -> list[Frame]:
        """Frames of a stack, innermost first (inlined functions expanded)."""
        from ..symbolize import Frame, SymbolizeError, Symbolizer

        if not addresses:
            return []
        try:
            if self._symbolizer is None:
                self._symbolizer = Symbolizer()
            per_address = self._symbolize(self._symbolizer, addresses)
        except (SymbolizeError, OSError) as e:
            self._warn_once(f"symbolization failed ({e}); showing raw addresses")
            return [Frame(a) for a in addresses]
        return [f for frames in per_address for f in frames]

    def _symbolize(self, sym: Symbolizer, addresses: Sequence[int]) -> list[list[Frame]]:
        raise NotImplementedError

    def _warn_once(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)


def _why_no_memory(pid: int) -> str:
    status = read_status(pid)
    if status is None:
        return "it has exited"
    if status.get("State", "").startswith(("Z", "X")):
        return "it has exited (a zombie its parent has not reaped)"
    return "it is a kernel thread (memleak --kernel --pid traces what it allocates)"


def _function_offsets(binary: str, names: Sequence[str]) -> dict[str, int]:
    """File offsets of the functions ``names`` that ``binary`` defines (where uprobes go)."""
    try:
        with open(binary, "rb") as f:
            return function_offsets(f.fileno(), names)
    except FileNotFoundError:
        raise TargetError(f"{binary} does not exist (did the process exit?)") from None
    except (OSError, NotElfError) as e:
        raise TargetError(f"cannot read the symbols of {binary}: {e}") from None


def _find_mapped_library(pid: int, obj: str | None) -> str:
    """A path that opens the allocator library ``pid`` maps: the very file, wherever its root is.

    The library is the one named ``obj`` (a path as the process or we see it,
    or a name such as ``libjemalloc.so.2``), else libc, else the executable
    (statically linked). /proc/PID/maps spells paths from our root, so a
    chrooted process's libc shows as ``/srv/jail/lib/...``: the file is
    reached through ``/proc/PID/map_files`` (or ``/proc/PID/root``), never by
    its name on our side, where another file may have it.
    """
    try:
        maps = ProcessMaps.read(pid)
    except FileNotFoundError:
        raise TargetError(f"process {pid} does not exist") from None
    except PermissionError:
        raise TargetError(f"no permission to read /proc/{pid}/maps") from None
    modules = maps.modules()
    if not modules:
        raise TargetError(f"process {pid} has no user memory: {_why_no_memory(pid)}")
    if obj:
        name = os.path.basename(obj)
        chosen = next((m for m in modules if m.path.endswith(obj) or os.path.basename(m.path).startswith(name)), None)
        if chosen is None:
            raise TargetError(f"process {pid} does not map {obj}")
    else:
        chosen = maps.first_module(LIBC_PATH)
    try:
        if chosen is None:  # statically linked: the allocator is in the executable
            exe_inode = os.stat(f"/proc/{pid}/exe").st_ino
            chosen = next((m for m in modules if m.first.inode == exe_inode), modules[0])
        return maps.module_path(chosen)
    except FileNotFoundError:
        raise TargetError(f"process {pid} exited") from None
    except OSError as e:
        raise TargetError(f"cannot open the allocator library of process {pid}: {e.strerror}") from None


class UserMemleak(_Tracer):
    """Outstanding allocations of one process, from uprobes on its allocator.

    ``library`` (``--obj``) selects another allocator library than libc,
    ``symbol_prefix`` prefixed symbols (jemalloc's ``je_``). Functions the
    library lacks are skipped and listed in ``skipped``. ``binary``: the
    library path to probe when the process has not mapped it yet (a command
    held before it ran). ``traced_command``: the process is a
    :class:`CommandProcess` (ptraced by memwatcher), which BPF may stop at
    ``_dl_debug_state`` so that new libraries get unwind tables before they run.
    """

    def __init__(
        self,
        pid: int,
        options: MemleakOptions | None = None,
        *,
        library: str | None = None,
        symbol_prefix: str = "",
        binary: str | None = None,
        traced_command: bool = False,
    ) -> None:
        super().__init__(options or MemleakOptions())
        self.pid = pid
        self.target = f"pid {pid}"
        self.skipped: list[str] = []
        self._library_name = library
        self._symbol_prefix = symbol_prefix
        self._binary = binary
        self._traced_command = traced_command

    def _load(self) -> None:
        kernel.require_bpf()
        pid = self.pid
        binary = self._binary if self._binary is not None else _find_mapped_library(pid, self._library_name)
        self.library = binary
        self.obj = obj = self._open(_USER_PROGRAMS, _BPF_F_USER_STACK)
        self.multi_links = kernel.probe_feature("uprobe_multi").available
        if self.multi_links:
            for name in _PROBE_PROGRAMS:
                obj.programs[name].set_expected_attach_type("trace_uprobe_multi")
        obj.rodata.target_tgid = pid
        obj.rodata.dl_signal = int(LOADER_SIGNAL) if self._traced_command and self.dwarf else 0
        obj.load()
        if self.dwarf:
            maps = obj.maps
            self.unwind_tables = UnwindTables(
                pid, maps.unwind_rows, maps.unwind_mappings, maps.unwind_live, load_header(header_path())
            )
            self.refresh_unwind_tables()
        self._attach(binary, self._symbol_prefix)
        bss = obj.bss
        seen = (bss.dl_updates, bss.target_execs)  # before the probes below can move them
        follow_loader = self.dwarf and self._attach_loader()
        # A command memwatcher started is ptraced: its execs are seen there.
        follow_exec = not self._traced_command
        if follow_exec:
            obj.programs.target_exec.attach()
        if follow_loader or follow_exec:
            watcher = threading.Thread(
                target=self._watch_target,
                args=seen,
                name="memleak-watch",
                daemon=True,
            )
            self._threads.append(watcher)
            watcher.start()
        self._attached_ns = time.monotonic_ns()

    def forget_outstanding(self) -> None:
        """Drop every outstanding allocation: the process replaced its program (execve)."""
        maps = self.obj.maps
        for m in (maps.allocs, maps.combined, maps.inflight):
            for key in list(m.keys()):
                m.delete(key)
        self.refresh_unwind_tables()

    def refresh_unwind_tables(self) -> None:
        """Load the CFI of objects the process mapped since the last call (dwarf mode)."""
        if self.unwind_tables is None:
            return
        try:
            self.unwind_tables.refresh()
        except OSError:
            pass  # the process is gone: its last tables stay as they were

    def _attach_loader(self) -> bool:
        """Follow the dynamic loader (dlopen, dlclose) so new objects get unwind tables."""
        try:
            ldso_path = _find_mapped_library(self.pid, "ld-linux")
        except TargetError:
            return False  # statically linked: nothing is loaded later
        offsets = _function_offsets(ldso_path, ["_dl_debug_state"])
        if not offsets:
            return False  # a loader without the debugger's hook: objects dlopened later get no tables
        self._attach_probes(self.obj.programs.dl_debug_state, ldso_path, {offsets["_dl_debug_state"]: 0})
        return True

    def _watch_target(self, dl_seen: int, execs_seen: int) -> None:
        """Counts read before the probes could move them, so no change is missed."""
        while not self._closing.wait(_LOADER_POLL_S):
            bss = self.obj.bss
            dl_updates, execs = bss.dl_updates, bss.target_execs
            if execs != execs_seen:
                execs_seen = execs
                self.forget_before(bss.target_exec_ns)
            elif dl_updates != dl_seen:
                self.refresh_unwind_tables()
            dl_seen = dl_updates

    def forget_before(self, exec_ns: int) -> int:
        """Forget allocations made before ``exec_ns`` (an exec of a --pid target); returns how many."""
        keys, values = self.obj.maps.allocs.read_all(np.uint64, self._layouts.memleak_alloc)
        forget = self.obj.programs.forget_alloc
        stale = keys[values["ts_ns"] < exec_ns]
        for key in stale:
            forget.test_run(np.array([key], dtype=np.uint64).tobytes())
        self.refresh_unwind_tables()
        return len(stale)

    def _unwind_report(self, bss: Any) -> UnwindReport:
        if not self.dwarf:
            return UnwindReport("fp")
        self.refresh_unwind_tables()
        tables = self.unwind_tables
        return UnwindReport(
            "dwarf",
            no_cfi=bss.unwind_no_cfi,
            unsupported=bss.unwind_unsupported,
            truncated=bss.unwind_truncated,
            read_errors=bss.unwind_read_errors,
            tables=dataclasses.replace(tables.stats, failed=dict(tables.stats.failed)) if tables else None,
        )

    def _attach(self, binary: str, prefix: str) -> None:
        offsets = _function_offsets(binary, [f"{prefix}{name}" for name in USER_FUNCTIONS])
        self.skipped = [f"{prefix}{name}" for name in USER_FUNCTIONS if f"{prefix}{name}" not in offsets]
        if f"{prefix}malloc" in self.skipped:
            raise TargetError(f"{binary} has no {prefix}malloc symbol (use --obj for another allocator)")
        # offset -> cookie, once per offset: a probe twice at one address (memalign is
        # aligned_alloc in glibc) would run its program twice per call.
        cookies: dict[int, int] = {}
        for name, cookie_name in USER_FUNCTIONS.items():
            offset = offsets.get(f"{prefix}{name}")
            if offset is not None:
                cookies.setdefault(offset, self._layouts.constants[cookie_name])
        programs = self.obj.programs
        # Return probes first: an entry seen without its return would make
        # every later call of that thread look nested.
        self._attach_probes(programs.user_return, binary, cookies, retprobe=True)
        self._attach_probes(programs.user_enter, binary, cookies)

    def _attach_probes(self, prog: Any, binary: str, cookies: dict[int, int], *, retprobe: bool = False) -> None:
        """Attach ``prog`` at each file offset of ``binary`` with its cookie (``{offset: cookie}``)."""
        try:
            if self.multi_links:
                prog.attach_uprobe_multi(
                    binary, list(cookies), cookies=list(cookies.values()), pid=self.pid, retprobe=retprobe
                )
                return
            for offset, cookie in cookies.items():
                prog.attach_uprobe(binary, offset=offset, pid=self.pid, retprobe=retprobe, cookie=cookie)
        except LibbpfError as e:
            if e.errno == errno.ESRCH:
                raise TargetError(f"process {self.pid} exited") from None
            if e.errno in (errno.EACCES, errno.EPERM) and not kernel.privileges().cap_sys_admin:
                raise PrivilegeError(
                    f"memleak of a process needs CAP_SYS_ADMIN here: the kernel refuses uprobes "
                    f"without it ({e.strerror} attaching to {binary})"
                ) from None
            raise

    def _symbolize(self, sym: Symbolizer, addresses: Sequence[int]) -> list[list[Frame]]:
        # Sampled at the allocator's return: every address is a return address.
        return sym.symbolize(self.pid, addresses, return_addresses=True)


class KernelMemleak(_Tracer):
    """Outstanding kernel allocations (slab, pages, and with ``percpu`` percpu areas).

    ``pid``: only allocations made while that process runs (in its context);
    frees count from anywhere. Slab objects freed in bulk or through
    ``kfree_rcu`` batches fire no free tracepoint: ``wa_missing_free`` (on by
    default) treats an address allocated again as freed first.
    """

    target = "kernel"
    _tag_mask = 3

    def __init__(self, options: MemleakOptions | None = None, pid: int | None = None) -> None:
        super().__init__(options or MemleakOptions())
        self.pid = pid
        if pid is not None:
            self.target = f"kernel, pid {pid}"

    def _load(self) -> None:
        from ..symbolize import Symbolizer

        kernel.require_bpf()
        # Stacks nobody can name are no report: say so (exit 77) before tracing.
        self._symbolizer = Symbolizer()
        self._symbolizer.kernel_symbols()
        self.programs = kernel_programs(kernel.tracepoint_params, self.options.percpu)
        if self.programs.problems:
            raise kernel.NotSupportedError("; ".join(self.programs.problems))
        self.obj = obj = self._open(set(self.programs.enabled), 0)
        obj.rodata.target_tgid = self.pid or 0
        obj.rodata.page_size_bytes = kernel.page_size()
        obj.rodata.percpu_copies = possible_cpus()
        obj.load()
        for prog in self.programs.enabled:
            obj.programs[prog].attach()
        self._attached_ns = time.monotonic_ns()

    def _kind(self, key: int) -> str:
        return ("slab", "page", "percpu", "slab")[key & 3]

    def _symbolize(self, sym: Symbolizer, addresses: Sequence[int]) -> list[list[Frame]]:
        frames = sym.symbolize_stack(None, addresses)
        # The stack starts inside the BPF program and its tracepoint glue.
        skip = 0
        while skip < len(frames) - 1 and _is_tracing_frame(frames[skip]):
            skip += 1
        return frames[skip:]


def _is_tracing_frame(frames: list[Frame]) -> bool:
    name = frames[0].function or ""
    return name.startswith(("bpf_", "__bpf_", "trace_call_bpf", "perf_trace_", "__traceiter_", "__probestub_"))


def _watch_pid(pid: int, gone: threading.Event, stop: threading.Event) -> None:
    """Set ``gone`` and ``stop`` when process ``pid`` (not our child) exits."""
    try:
        watch = PidWatch([pid])
    except NoSuchProcessError:
        gone.set()
        stop.set()
        return
    with watch:
        while not stop.is_set():
            if watch.exited(0.2):
                gone.set()
                stop.set()


# ---------------------------------------------------------------- output


def format_text(report: LeakReport) -> str:
    """A backtrace per stack, largest first, with exact bytes, allocations and oldest age."""
    from ..symbolize import format_frame

    est = "~" if report.estimated else ""
    head = (
        f"{report.time[11:19]} memleak {report.target}{' (final)' if report.final else ''}: "
        f"{est}{report.total_outstanding_bytes} bytes ({human_bytes(report.total_outstanding_bytes)}) "
        f"outstanding in {est}{report.total_outstanding_allocs} allocations"
    )
    if report.estimated:
        head += f" (estimates: 1 in {report.sample_rate} sampled)"
    lines = [head]
    lost = {k: v for k, v in report.lost.items() if v}
    if lost:
        lines.append("  " + ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in lost.items()))
    for stack in report.stacks:
        age = f", oldest {stack.oldest_age_s:.1f}s" if stack.oldest_age_s is not None else ""
        lines.append(
            f"  {est}{stack.outstanding_bytes} bytes in {est}{stack.outstanding_allocs} allocations "
            f"from stack {stack.stack_id}{age}{_trend_text(stack.trend)}"
        )
        if not stack.frames:
            lines.append("    [stack not recorded]")
        lines += ["    " + format_frame(f, i) for i, f in enumerate(stack.frames)]
    lines += _unwind_footer(report.unwind)
    if report.allocations:
        lines.append("  outstanding allocations (oldest first):")
        for a in report.allocations:
            lines.append(
                f"    {a.kind:6} 0x{a.address:016x} {a.size_bytes:>10} bytes  age {a.age_s:.1f}s  stack {a.stack_id}"
            )
    return "\n".join(lines) + "\n"


def _trend_text(trend: Trend | None) -> str:
    if trend is None:
        return ""
    if trend.verdict == "growing":
        return f", growing {human_bytes(trend.growth_per_s)}/s for {trend.growing_for_s:.0f}s"
    return f", {trend.verdict}"


def _unwind_footer(unwind: UnwindReport | None) -> list[str]:
    if unwind is None or unwind.mode != "dwarf":
        return []
    text = "  unwind: dwarf"
    if unwind.tables is not None:
        t = unwind.tables
        text += f", {t.objects} objects, {t.rows} rows ({human_bytes(t.table_bytes)} of {t.max_rows} rows)"
    problems = {
        "stacks partly walked by frame pointers (no CFI)": unwind.no_cfi,
        "stopped at unsupported CFI": unwind.unsupported,
        "truncated": unwind.truncated,
        "stopped at unreadable stack": unwind.read_errors,
    }
    text += "".join(f"; {name}: {n}" for name, n in problems.items() if n)
    lines = [text]
    if unwind.tables is not None:
        lines += [f"  no unwind table for {path}: {why}" for path, why in unwind.tables.failed.items()]
        if unwind.tables.mappings_dropped:
            lines.append(f"  executable mappings left out (table full): {unwind.tables.mappings_dropped}")
    return lines


def _unwind_json(unwind: UnwindReport | None) -> dict[str, Any] | None:
    if unwind is None:
        return None
    out: dict[str, Any] = {
        "mode": unwind.mode,
        "no_cfi_stacks": unwind.no_cfi,
        "unsupported_stacks": unwind.unsupported,
        "truncated_stacks": unwind.truncated,
        "read_error_stacks": unwind.read_errors,
    }
    if unwind.tables is not None:
        t = unwind.tables
        out |= {
            "objects": t.objects,
            "rows": t.rows,
            "max_rows": t.max_rows,
            "table_bytes": t.table_bytes,
            "compile_s": round(t.compile_s, 6),
            "failed_objects": t.failed,
            "mappings_dropped": t.mappings_dropped,
        }
    return out


def _frame_json(frame: Frame) -> dict[str, Any]:
    return {
        "address": frame.address,
        "module": frame.module,
        "symbol": frame.function or frame.symbol,
        "linkage_name": frame.linkage_name,
        "offset": frame.offset,
        "module_offset": frame.elf_address,  # the address in the module's ELF file
        "file": frame.file,
        "line": frame.line,
        "inlined": frame.inlined,
    }


def report_json(report: LeakReport, run: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report as one JSON object (raw numbers, snake_case keys with units).

    ``run``: what the whole run was (command, kernel, options: :func:`run_metadata`),
    carried under ``"run"`` so that each object describes itself.
    """
    out = {
        "time": report.time,
        "target": report.target,
        "final": report.final,
        "traced_s": round(report.traced_s, 6),
        "estimated": report.estimated,
        "sample_rate": report.sample_rate,
        "total_outstanding_bytes": report.total_outstanding_bytes,
        "total_outstanding_allocs": report.total_outstanding_allocs,
        **report.lost,
        "unwind": _unwind_json(report.unwind),
        "stacks": [
            {
                "stack_id": s.stack_id,
                "outstanding_bytes": s.outstanding_bytes,
                "outstanding_allocs": s.outstanding_allocs,
                "oldest_age_s": s.oldest_age_s,
                "verdict": s.trend.verdict if s.trend else None,
                "growth_bytes_per_s": s.trend.growth_per_s if s.trend else None,
                "growing_for_s": s.trend.growing_for_s if s.trend else None,
                "allocated_bytes": s.allocated_bytes,
                "allocations": s.allocations,
                "freed_bytes": s.freed_bytes,
                "frees": s.frees,
                "frames": [_frame_json(f) for f in s.frames],
            }
            for s in report.stacks
        ],
        "allocations": [
            {"address": a.address, "size_bytes": a.size_bytes, "age_s": a.age_s, "stack_id": a.stack_id, "kind": a.kind}
            for a in report.allocations
        ],
    }
    if run is not None:
        out["run"] = run
    return out


def run_metadata(command: str | None, pid: int | None, options: dict[str, Any]) -> dict[str, Any]:
    """The run's description for the JSON and HTML reports: what was traced, where, how.

    ``command``: the command line memwatcher ran (``--command``), else the
    traced process's own; ``options``: the command-line options, by name with units.
    """
    from .. import __version__

    uname = os.uname()
    target = identity(pid) if pid is not None else None
    return {
        "command": command or (target.cmdline if target else None),
        "pid": pid,
        "user": target.user if target else None,
        "cgroup": target.cgroup if target else None,
        "kernel": uname.release,
        "machine": uname.machine,
        "hostname": uname.nodename,
        "memwatcher": __version__,
        "started": timestamp(),
        "invocation": shlex.join(["memwatcher", *sys.argv[1:]]),
        "options": options,
    }


def format_folded(report: LeakReport) -> str:
    """Folded stacks (root first, ``;``-separated) weighted by outstanding bytes."""
    from ..symbolize import frame_name

    lines = []
    for stack in (s for s in report.stacks if s.outstanding_bytes):
        names = [frame_name(f).replace(";", ":").replace(" ", "_") for f in reversed(stack.frames)] or ["[unknown]"]
        lines.append(f"{';'.join(names)} {stack.outstanding_bytes}")
    return "\n".join(lines) + ("\n" if lines else "")


def encode_pprof(report: LeakReport) -> bytes:
    """The report as a gzipped pprof ``profile.proto``: samples (inuse_objects,
    inuse_space) of the stacks holding memory, the period (one recorded
    allocation stands for ``sample_rate``) and the time traced."""
    from ..pprof import ProfileSample, encode_profile

    return encode_profile(
        [
            ProfileSample(s.frames, (s.outstanding_allocs, s.outstanding_bytes))
            for s in report.stacks
            if s.outstanding_bytes  # freed stacks hold nothing
        ],
        [("inuse_objects", "count"), ("inuse_space", "bytes")],
        period_type=("allocations", "count"),
        period=report.sample_rate,
        duration_ns=int(report.traced_s * 1e9),
        default_sample_type="inuse_space",
    )


# ---------------------------------------------------------------- CLI


class LeakFormat(str, enum.Enum):
    text = "text"
    table = "table"  # the name other reports use for the human format
    json = "json"
    folded = "folded"
    pprof = "pprof"


class UnwindMode(str, enum.Enum):
    auto = "auto"
    dwarf = "dwarf"
    fp = "fp"


class SortKey(str, enum.Enum):
    bytes = "bytes"
    count = "count"
    growth = "growth"


def _emit(report: LeakReport, fmt: LeakFormat, stream: TextIO, file: Path | None, run: dict[str, Any]) -> None:
    """Text and JSON reports go to ``stream`` one after another; folded and pprof are one
    whole profile, which replaces ``file`` atomically each time (or goes to stdout once)."""
    if fmt in (LeakFormat.pprof, LeakFormat.folded):
        data = encode_pprof(report) if fmt == LeakFormat.pprof else format_folded(report).encode()
        if file is not None:
            write_atomically(file, data)
        elif report.final:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        return
    if fmt == LeakFormat.json:
        text = json.dumps(report_json(report, run)) + "\n"
    else:
        text = format_text(report)
    stream.write(text)
    stream.flush()


def _run(
    tracer: _Tracer,
    sched: Any,
    stop: threading.Event,
    gone: threading.Event,
    read: Callable[[], LeakReport],
    emit: Callable[[LeakReport], None],
) -> None:
    deadline = time.monotonic() + sched.duration_s if sched.duration_s is not None else None
    state = {"taken": 0, "final_emitted": False}

    def sample() -> bool:
        state["taken"] += 1
        # The runner's own test for its last sample, made before this one was taken.
        last = (
            stop.is_set()
            or gone.is_set()
            or (deadline is not None and time.monotonic() >= deadline)
            or (sched.count is not None and state["taken"] >= sched.count)
        )
        report = read()
        report.final = last
        emit(report)
        state["final_emitted"] = last
        for w in tracer.warnings:
            print(f"memwatcher: {w}", file=sys.stderr)
        tracer.warnings.clear()
        return not gone.is_set()

    run_periodic(sched, sample, stop)
    if not state["final_emitted"]:
        final = read()
        final.final = True
        emit(final)


def register(app: typer.Typer) -> None:
    @app.command("memleak")
    def memleak_command(
        pid: Annotated[int | None, typer.Option("--pid", "-p", help="Trace this running process.")] = None,
        command: Annotated[
            str | None,
            typer.Option("--command", "-c", help='Run this command ("CMD ARGS") and trace it until it exits.'),
        ] = None,
        kernel_mode: Annotated[
            bool, typer.Option("--kernel", help="Trace kernel allocations (slab, pages) instead.")
        ] = False,
        percpu: Annotated[bool, typer.Option("--percpu", help="Kernel: also percpu allocations.")] = False,
        interval: Interval = 5.0,
        duration: Duration = None,
        count: Count = None,
        top: Annotated[int, typer.Option("--top", "-n", "-T", min=1, help="Show this many stacks.")] = 10,
        min_age: Annotated[
            float,
            typer.Option("--min-age", min=0.0, max=MAX_SECONDS, help="Only allocations older than this many seconds."),
        ] = 0.0,
        older_ms: Annotated[
            float | None,
            typer.Option("--older", min=0.0, max=MAX_SECONDS * 1000, help="BCC's spelling of --min-age, in ms."),
        ] = None,
        min_size: Annotated[
            int, typer.Option("--min-size", "-z", min=0, max=U64_MAX, help="Ignore smaller allocations (bytes).")
        ] = 0,
        max_size: Annotated[
            int | None, typer.Option("--max-size", "-Z", min=0, max=U64_MAX, help="Ignore larger allocations (bytes).")
        ] = None,
        sample_rate: Annotated[
            int,
            typer.Option(
                "--sample-rate", "-s", min=1, max=U32_MAX, help="Record one allocation in N (totals are estimates)."
            ),
        ] = 1,
        combined_only: Annotated[
            bool, typer.Option("--combined-only", help="Read only per-stack totals (no ages; lowest overhead).")
        ] = False,
        show_allocs: Annotated[
            bool, typer.Option("--show-allocs", "-a", help="Also list every outstanding allocation.")
        ] = False,
        sort: Annotated[
            SortKey, typer.Option("--sort", help="Order stacks by bytes, count or growth (bytes/s).")
        ] = SortKey.bytes,
        obj: Annotated[
            str | None, typer.Option("--obj", "-O", help="Allocator library to trace instead of libc.")
        ] = None,
        symbol_prefix: Annotated[
            str, typer.Option("--symbol-prefix", help="Prefix of the allocator's symbols (jemalloc: je_).")
        ] = "",
        wa_missing_free: Annotated[
            bool,
            typer.Option(
                "--wa-missing-free/--no-wa-missing-free",
                help="Treat an address allocated again, with no free seen, as freed first.",
            ),
        ] = True,
        max_allocs: Annotated[
            int, typer.Option("--max-allocs", min=1, max=U32_MAX, help="Outstanding allocations BPF can track.")
        ] = MemleakOptions.max_allocs,
        max_stacks: Annotated[
            int, typer.Option("--max-stacks", min=1, max=U32_MAX, help="Distinct stacks BPF can keep.")
        ] = MemleakOptions.max_stacks,
        unwind: Annotated[
            UnwindMode,
            typer.Option(
                "--unwind",
                help="User stacks: dwarf (call-frame information), fp (frame pointers), auto (dwarf on x86-64).",
            ),
        ] = UnwindMode.auto,
        unwind_rows: Annotated[
            int, typer.Option("--unwind-rows", min=1, max=1 << 28, help="Unwind rows BPF can hold (12 bytes each).")
        ] = MemleakOptions.max_unwind_rows,
        trend_samples: Annotated[
            int,
            typer.Option(
                "--trend-samples", min=2, max=100_000, help="Samples of each stack kept for its trend (growing, ...)."
            ),
        ] = MemleakOptions.trend_samples,
        fmt: Annotated[
            LeakFormat, typer.Option("--output", "-o", "--format", "-f", help="text, json, folded or pprof.")
        ] = LeakFormat.text,
        file: Annotated[Path | None, typer.Option("--file", help="Write the output here instead of stdout.")] = None,
        html: Annotated[
            Path | None,
            typer.Option(
                "--html",
                help="At the end, also write a self-contained HTML report here: flame graph, memory over time, "
                "stacks with their trends (memwatcher report makes one from saved --output json).",
                metavar="FILE",
            ),
        ] = None,
    ) -> None:
        """Call stacks holding memory never freed: a process (--pid, --command) or the kernel.

        Example: memwatcher memleak --command "./server --port 8080" --min-age 10 -f folded --file leaks.folded
        """
        if (pid is not None) + (command is not None) + (kernel_mode and pid is None) != 1:
            raise typer.BadParameter("give one of --pid, --command or --kernel (--kernel --pid: in that process)")
        if older_ms is not None:
            if min_age:
                raise typer.BadParameter("--older and --min-age say the same: give one")
            min_age = older_ms / 1000
        if combined_only and (min_age > 0 or show_allocs):
            raise typer.BadParameter("--min-age and --show-allocs need per-allocation data: drop --combined-only")
        if fmt == LeakFormat.pprof and file is None and sys.stdout.isatty():
            raise typer.BadParameter("pprof output is binary: give --file PATH or redirect stdout")
        if percpu and not kernel_mode:
            raise typer.BadParameter("--percpu applies to --kernel")
        if max_size is not None and max_size < min_size:
            raise typer.BadParameter(f"--max-size {max_size} is below --min-size {min_size}: nothing would be traced")
        try:
            argv = shlex.split(command) if command is not None else []
        except ValueError as e:
            raise typer.BadParameter(f"{e} in {command!r}", param_hint="--command") from None
        if command is not None and not argv:
            raise typer.BadParameter("the command is empty", param_hint="--command")
        kernel.require_bpf()
        if pid is not None and not Path(f"/proc/{pid}").is_dir():
            raise NoSuchProcessError(pid)
        options = MemleakOptions(
            min_size_bytes=min_size,
            max_size_bytes=max_size,
            sample_rate=sample_rate,
            combined_only=combined_only,
            wa_missing_free=wa_missing_free,
            max_allocs=max_allocs,
            max_stacks=max_stacks,
            percpu=percpu,
            unwind=unwind.value,
            max_unwind_rows=unwind_rows,
            trend_samples=trend_samples,
        )
        periodic = fmt in (LeakFormat.text, LeakFormat.table, LeakFormat.json)
        sched = schedule(interval, duration, count)
        with ExitStack() as stack:
            if file is not None and (problem := check_writable(file)) is not None:
                raise typer.BadParameter(problem, param_hint="--file")
            if html is not None and (problem := check_writable(html)) is not None:
                raise typer.BadParameter(problem, param_hint="--html")
            out: TextIO = stack.enter_context(open(file, "w")) if file is not None and periodic else sys.stdout
            history = None
            if html is not None:
                from ..htmlreport import LeakHistory, write_report

                history = LeakHistory()
            # Exports (flame graphs, pprof, the HTML report) carry every stack; --top limits what is printed.
            shown = top if periodic else None
            stop = stack.enter_context(stop_on_signals())
            gone = threading.Event()
            proc: CommandProcess | None = None
            if command is not None:
                try:
                    proc = CommandProcess(argv, loader_signal=LOADER_SIGNAL)
                except CommandNotFoundError as e:
                    print(f"memwatcher: {e}", file=sys.stderr)
                    raise typer.Exit(e.exit_status) from None
                stack.callback(proc.finish)
                libs = proc.libraries()
                exe = os.readlink(f"/proc/{proc.pid}/exe")
                libc = next((p for n, p in libs.items() if LIBC_PATH.search(n)), exe)
                binary = libc
                if obj is not None:
                    binary = obj if "/" in obj else next((p for n, p in libs.items() if n.startswith(obj)), "")
                    if not binary:
                        raise TargetError(f"{command.split()[0]} does not load {obj}")
                with slow_step("attaching the allocator probes..."):
                    tracer: _Tracer = stack.enter_context(
                        UserMemleak(proc.pid, options, symbol_prefix=symbol_prefix, binary=binary, traced_command=True)
                    )

                def wait_command() -> None:
                    proc.wait()
                    gone.set()
                    stop.set()

                proc.start(tracer.refresh_unwind_tables if tracer.dwarf else None, tracer.forget_outstanding)
                threading.Thread(target=wait_command, daemon=True).start()
            elif kernel_mode:
                with slow_step("loading and attaching the kernel allocation probes..."):
                    tracer = stack.enter_context(KernelMemleak(options, pid))
            else:
                with slow_step("attaching the allocator probes..."):
                    tracer = stack.enter_context(UserMemleak(pid, options, library=obj, symbol_prefix=symbol_prefix))
            if pid is not None:
                threading.Thread(target=_watch_pid, args=(pid, gone, stop), daemon=True).start()
            for name in getattr(tracer, "skipped", []):
                print(f"memwatcher: {name} not found in the allocator library; not traced", file=sys.stderr)
            traced_pid = proc.pid if proc is not None else pid
            settings = {
                "kernel_mode": kernel_mode,
                "interval_s": sched.interval_s,
                "duration_s": sched.duration_s,
                "count": sched.count,
                "top": top,
                "sort": sort.value,
                "min_age_s": min_age,
                **dataclasses.asdict(options),
                "show_allocs": show_allocs,
                "obj": obj,
                "symbol_prefix": symbol_prefix,
            }
            run = run_metadata(shlex.join(argv) if argv else None, traced_pid, settings)
            print(f"memwatcher: tracing {tracer.target}; Ctrl-C to stop", file=sys.stderr)

            def emit(report: LeakReport) -> None:
                if history is not None:
                    history.add(report_json(report, run))
                    if shown is not None:
                        report = dataclasses.replace(report, stacks=report.stacks[:shown])
                _emit(report, fmt, out, file, run)

            def read() -> LeakReport:
                return tracer.read(
                    top=None if history is not None else shown,
                    min_age_s=min_age,
                    sort=sort.value,
                    show_allocs=show_allocs,
                )

            _run(tracer, sched, stop, gone, read, emit)
            if history is not None:
                size_bytes = write_report(history, html)
                print(f"memwatcher: HTML report written to {html} ({human_bytes(size_bytes)})", file=sys.stderr)
            if proc is not None:
                proc.finish()
                status = proc.exit_status if proc.exit_status is not None else 1
                print(f"memwatcher: command exited with status {status}", file=sys.stderr)
                if status:
                    # The command's status, as a shell gives it (128 + signal for a signal).
                    raise typer.Exit(status if status > 0 else 128 - status)
