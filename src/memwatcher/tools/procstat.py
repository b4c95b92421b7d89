"""`memwatcher procstat`: per-process memory, event-driven, equal to /proc/PID/status.

Whenever one of a process's threads is switched out (``tp_btf/sched_switch``),
BPF reads its ``mm``: total_vm, data_vm, stack_vm, hiwater_rss, page-table
bytes and the rss counters (file, anon, shmem, swap entries), and keeps the
latest values per process (tgid) in a bounded hash map, with the largest rss
it saw, the leader's comm and a switch count. Entries leave the map when the
thread group dies (``tp_btf/sched_process_exit``). User space batch-reads the
map every interval.

Library use::

    with ProcStat(ProcStatOptions(pids=(1234,))) as ps:
        time.sleep(1)
        for proc in ps.read():   # ProcessMemory records, sizes in bytes
            print(proc.pid, proc.rss_bytes)

All sizes are in bytes (pages converted with :func:`memwatcher.kernel.page_size`).
Values are the latest snapshot, not cumulative; ``switches`` is cumulative
since the process was first seen. A process appears only after one of its
threads has been switched out since the tool started: a process that never
sleeps and is never preempted, or one that has not run since, is not known yet.
"""

from __future__ import annotations

import errno
import os
import re
import time
from contextlib import ExitStack
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Annotated, NamedTuple

import numpy as np
import typer

from .. import kernel
from ..errors import MemwatcherError, NoSuchProcessError
from ..libbpf import BPF_NOEXIST, BTF, BPFObject, LibbpfError, possible_cpus
from ..objects import header, object_path
from ..options import PID_MAX_LIMIT, Count, Duration, Interval, Output, OutputFormat, schedule
from ..output import Column, make_writer
from ..processes import PidWatch, ProcessIdentity, SharedMemory, identity, kib_fields, read_status, shared_memory
from ..progress import slow_step
from ..runner import run_periodic, stop_on_signals
from ._lifecycle import BPFReport

__all__ = [
    "SORT_KEYS",
    "NoSuchProcessError",
    "ProcStat",
    "ProcStatOptions",
    "ProcessMemory",
    "decode_entries",
    "plan",
    "register",
    "resolve_sort_key",
    "select_rows",
    "tgid_of",
]

# Kernel enumerators of the rss counters -> rodata variable receiving each.
_RSS_ITEMS = {
    "MM_FILEPAGES": "mm_filepages",
    "MM_ANONPAGES": "mm_anonpages",
    "MM_SWAPENTS": "mm_swapents",
    "MM_SHMEMPAGES": "mm_shmempages",
}
_PERCPU_HELPER = "BPF_FUNC_map_lookup_percpu_elem"


class ProcessMemory(NamedTuple):
    """Memory of one process at its latest switch-out. Sizes in bytes.

    ``rss_hwm_bytes`` is what /proc/PID/status calls VmHWM (the kernel's
    hiwater_rss, or the current rss if larger); ``rss_max_seen_bytes`` is the
    largest rss of any sample taken while tracing; ``rss_peak_bytes`` the
    larger of the two. ``pte_bytes`` is None on kernels without
    ``mm->pgtables_bytes``. ``switches`` is cumulative since the process was
    first seen; ``sample_age_s`` is how old the snapshot is. ``rss_exact`` is
    False when per-CPU rss parts could not be summed (values may then lag by
    the kernel's percpu_counter batch, 32+ pages per CPU).
    """

    pid: int
    comm: str
    vsize_bytes: int
    rss_bytes: int
    rss_peak_bytes: int
    rss_hwm_bytes: int
    rss_max_seen_bytes: int
    rss_anon_bytes: int
    rss_file_bytes: int
    rss_shmem_bytes: int
    swap_bytes: int
    data_bytes: int
    stack_bytes: int
    pte_bytes: int | None
    switches: int
    sample_age_s: float
    rss_exact: bool


@dataclass(frozen=True)
class ProcStatOptions:
    """``pids``: track only these processes (tgids; empty: all).
    ``max_processes``: capacity of the BPF map; processes beyond it are
    counted in :attr:`ProcStat.dropped`, not tracked."""

    pids: tuple[int, ...] = ()
    max_processes: int = 16384


def _exact_rss_variant(btf: BTF) -> tuple[str, bool]:
    """(description of the rss layout, whether the per-CPU offsets program loads)."""
    if btf.find("mm_rss_stat", "struct"):
        return "rss_stat atomic counters (Linux <= 6.1): exact", False
    if btf.enumerator(_PERCPU_HELPER) is None:
        return "rss_stat percpu_counter without bpf_map_lookup_percpu_elem: lags by the counter batch", False
    return "rss_stat percpu_counter: per-CPU parts summed, exact", True


def plan() -> kernel.Plan:
    """Hooks procstat needs and how it reads rss on this kernel."""
    hooks = [kernel.tracepoint_hook("sched_switch"), kernel.tracepoint_hook("sched_process_exit")]
    result = kernel.Plan("procstat", hooks)
    if not kernel.btf_available():
        result.problems.append("no kernel BTF")
        return result
    btf = BTF.vmlinux()
    missing = [name for name in _RSS_ITEMS if btf.enumerator(name) is None]
    if missing:
        result.problems.append(f"kernel BTF lacks {', '.join(missing)}")
    if "rss_stat" not in btf.members("mm_struct"):
        result.problems.append("struct mm_struct has no rss_stat")
    result.variant = "tp_btf sched_switch; " + _exact_rss_variant(btf)[0]
    return result


def tgid_of(pid: int) -> int:
    """Thread group id of ``pid`` (a thread id maps to its process)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        raise NoSuchProcessError(pid) from None
    for line in status.splitlines():
        if line.startswith("Tgid:"):
            return int(line.split()[1])
    raise NoSuchProcessError(pid)


# procstat_entry page counts seeded from /proc/PID/status (kB) for idle processes.
_SEED_FIELDS = {
    "total_vm_pages": "VmSize",
    "data_vm_pages": "VmData",
    "stack_vm_pages": "VmStk",
    "hiwater_rss_pages": "VmHWM",
    "rss_file_pages": "RssFile",
    "rss_anon_pages": "RssAnon",
    "rss_shmem_pages": "RssShmem",
    "swap_pages": "VmSwap",
}


class ProcStat(BPFReport):
    """Loads and attaches the procstat BPF programs; :meth:`read` returns snapshots.

    A context manager: entering it loads, leaving it detaches the programs and frees the map.
    """

    def __init__(self, options: ProcStatOptions | None = None) -> None:
        super().__init__()
        self.options = options or ProcStatOptions()
        self.page_size = kernel.page_size()
        self._layouts = header("procstat")
        self._obj: BPFObject | None = None
        self._seed_dropped = 0

    def _load(self) -> None:
        kernel.require_bpf()
        btf = BTF.vmlinux()
        obj = self._owned.enter_context(BPFObject.open(object_path("procstat")))
        for name, var in _RSS_ITEMS.items():
            value = btf.enumerator(name)
            if value is None:
                raise MemwatcherError(f"kernel BTF lacks the rss counter {name}")
            setattr(obj.rodata, var, value)
        obj.rodata.nr_cpus = possible_cpus()
        obj.rodata.direct_percpu_reads = btf.find("bpf_rdonly_cast", "func") is not None
        obj.rodata.filter_pids = bool(self.options.pids)
        obj.maps.procs.max_entries = self.options.max_processes
        obj.maps.pid_filter.max_entries = max(len(self.options.pids), 1)
        _, learn = _exact_rss_variant(btf)
        obj.programs.learn_cpu_offsets.autoload = learn
        obj.load()
        if learn:
            obj.programs.learn_cpu_offsets.test_run()
        for pid in self.options.pids:
            obj.maps.pid_filter.update(np.uint32(pid), np.uint8(1))
        obj.programs.procstat_switch.attach()
        obj.programs.procstat_exit.attach()
        self._obj = obj
        self._seed()

    def _seed(self) -> None:
        """Enter the processes that are not running yet (idle ones) from /proc.

        procstat samples a process when it is switched out, so one asleep since
        before we attached would stay invisible. Its /proc/PID/status numbers are
        the same kernel counters (summed exactly), taken now; the first switch-out
        replaces them. Entries BPF made meanwhile win (BPF_NOEXIST).
        """
        assert self._obj is not None
        procs = self._obj.maps.procs
        pids = self.options.pids or tuple(int(p) for p in os.listdir("/proc") if p.isdigit())
        dtype = self._layouts.procstat_entry
        no_pte = self._layouts.constants["PROCSTAT_F_NO_PGTABLES"]
        now_ns = time.monotonic_ns()
        page = self.page_size
        for pid in pids:
            status = read_status(pid)
            kib = kib_fields(status) if status is not None else {}
            if status is None or "VmSize" not in kib:  # gone, or a kernel thread
                continue
            entry = np.zeros((), dtype=dtype)
            for field, key in _SEED_FIELDS.items():
                entry[field] = kib.get(key, 0) * 1024 // page
            entry["pgtables_bytes"] = kib.get("VmPTE", 0) * 1024
            entry["flags"] = 0 if "VmPTE" in kib else no_pte
            entry["rss_max_pages"] = entry["rss_file_pages"] + entry["rss_anon_pages"] + entry["rss_shmem_pages"]
            entry["last_seen_ns"] = now_ns
            entry["tgid"] = pid
            entry["comm"] = status["Name"].encode()[: dtype["comm"].itemsize - 1]
            try:
                procs.update(np.uint32(pid), entry, BPF_NOEXIST)
            except LibbpfError as e:
                if e.errno == errno.E2BIG:  # full: counted with BPF's own drops
                    self._seed_dropped += 1
                    continue
                if e.errno != errno.EEXIST:
                    raise

    def close(self) -> None:
        self._obj = None
        super().close()

    @property
    def dropped(self) -> int:
        """Processes not tracked because the map was full (cumulative)."""
        return self._obj.bss.dropped_full + self._seed_dropped if self._obj else 0

    def read(self) -> list[ProcessMemory]:
        """Every tracked process, in map order."""
        if self._obj is None:
            raise MemwatcherError("read procstat after close")
        _, entries = self._obj.maps.procs.read_all(np.uint32, self._layouts.procstat_entry)
        return decode_entries(entries, self.page_size, time.monotonic_ns(), self._layouts.constants)


def decode_entries(entries: np.ndarray, page_size: int, now_ns: int, constants: dict[str, int]) -> list[ProcessMemory]:
    """``procstat_entry`` records -> :class:`ProcessMemory` (pages to bytes)."""
    no_pte = constants["PROCSTAT_F_NO_PGTABLES"]
    inexact = constants["PROCSTAT_F_RSS_INEXACT"]
    out = []
    for e in entries:
        rss_pages = int(e["rss_file_pages"] + e["rss_anon_pages"] + e["rss_shmem_pages"])
        hwm_pages = max(int(e["hiwater_rss_pages"]), rss_pages)
        max_seen_pages = max(int(e["rss_max_pages"]), rss_pages)
        flags = int(e["flags"])
        out.append(
            ProcessMemory(
                pid=int(e["tgid"]),
                comm=bytes(e["comm"]).split(b"\0", 1)[0].decode(errors="replace"),
                vsize_bytes=int(e["total_vm_pages"]) * page_size,
                rss_bytes=rss_pages * page_size,
                rss_peak_bytes=max(hwm_pages, max_seen_pages) * page_size,
                rss_hwm_bytes=hwm_pages * page_size,
                rss_max_seen_bytes=max_seen_pages * page_size,
                rss_anon_bytes=int(e["rss_anon_pages"]) * page_size,
                rss_file_bytes=int(e["rss_file_pages"]) * page_size,
                rss_shmem_bytes=int(e["rss_shmem_pages"]) * page_size,
                swap_bytes=int(e["swap_pages"]) * page_size,
                data_bytes=int(e["data_vm_pages"]) * page_size,
                stack_bytes=int(e["stack_vm_pages"]) * page_size,
                pte_bytes=None if flags & no_pte else int(e["pgtables_bytes"]),
                switches=int(e["switches"]),
                sample_age_s=max(0, now_ns - int(e["last_seen_ns"])) / 1e9,
                rss_exact=not flags & inexact,
            )
        )
    return out


# ---------------------------------------------------------------- CLI

# --sort names -> ProcessMemory field (the full field names are accepted too).
SORT_KEYS = {
    "rss": "rss_bytes",
    "peak": "rss_peak_bytes",
    "hwm": "rss_hwm_bytes",
    "anon": "rss_anon_bytes",
    "file": "rss_file_bytes",
    "shmem": "rss_shmem_bytes",
    "swap": "swap_bytes",
    "vsize": "vsize_bytes",
    "data": "data_bytes",
    "stack": "stack_bytes",
    "pte": "pte_bytes",
    "switches": "switches",
    "pid": "pid",
}


def resolve_sort_key(name: str) -> str:
    """--sort value -> ProcessMemory field; raises ValueError for unknown names."""
    if name in SORT_KEYS:
        return SORT_KEYS[name]
    if name in SORT_KEYS.values():
        return name
    raise ValueError(f"unknown sort key {name!r}: use one of {', '.join(SORT_KEYS)}")


def select_rows(procs: list[ProcessMemory], sort_field: str, top: int | None) -> list[ProcessMemory]:
    """Sorted largest first (pid: ascending; absent values last), at most ``top`` rows."""
    if sort_field == "pid":
        rows = sorted(procs, key=lambda p: p.pid)
    else:
        value = attrgetter(sort_field)
        rows = sorted(procs, key=lambda p: (value(p) is not None, value(p) or 0, -p.pid), reverse=True)
    return rows if top is None else rows[:top]


_MAIN_COLUMNS = [
    Column("pid", "PID"),
    Column("user", "USER", left=True),
    Column("comm", "COMM", left=True),
    Column("vsize_bytes", "VSIZE", "bytes"),
    Column("rss_bytes", "RSS", "bytes"),
    Column("rss_peak_bytes", "PEAK", "bytes"),
    Column("rss_anon_bytes", "ANON", "bytes"),
    Column("rss_file_bytes", "FILE", "bytes"),
    Column("rss_shmem_bytes", "SHMEM", "bytes"),
    Column("swap_bytes", "SWAP", "bytes"),
    Column("switches", "SWITCHES"),
    Column("cmdline", "COMMAND", left=True),
]
# The original tool's -R view.
_PAGES_COLUMNS = [
    Column("pid", "PID"),
    Column("comm", "COMM", left=True),
    Column("vsize_bytes", "VSIZE", "bytes"),
    Column("data_bytes", "DATA", "bytes"),
    Column("stack_bytes", "STACK", "bytes"),
    Column("pte_bytes", "PTE", "bytes"),
    Column("swap_bytes", "SWAP", "bytes"),
]
# JSON and CSV carry every field, and who and where each process is.
_ALL_COLUMNS = [Column(name, name) for name in (*ProcessMemory._fields, *ProcessIdentity._fields)]
_TABLE_CMDLINE_CHARS = 48  # a table cuts the command line here; JSON and CSV keep it whole


@dataclass(frozen=True)
class ProcessFilter:
    """Which processes to show: ``comm`` matching a regular expression (searched, as
    pgrep does), one ``user`` (name or uid), a memory ``cgroup`` and its descendants."""

    comm: re.Pattern[str] | None = None
    user: str | None = None
    cgroup: str | None = None

    @property
    def needs_identity(self) -> bool:
        return self.user is not None or self.cgroup is not None

    def matches(self, p: ProcessMemory, who: ProcessIdentity | None) -> bool:
        if self.comm is not None and not self.comm.search(p.comm):
            return False
        if self.user is not None and (who is None or self.user not in (who.user, str(who.uid))):
            return False
        if self.cgroup is not None:
            root = self.cgroup.rstrip("/")
            if (
                who is None
                or who.cgroup is None
                or not (who.cgroup == (root or "/") or who.cgroup.startswith(root + "/"))
            ):
                return False
        return True


def _printed_rows(
    rows: list[ProcessMemory], known: dict[int, ProcessIdentity | None], table: bool, pss: bool
) -> list[dict]:
    """Each row as a dict with who and where the process is (and with ``pss``, its PSS and USS)."""
    out = []
    for r in rows:
        who = known[r.pid] if r.pid in known else identity(r.pid, r.comm)
        row = r._asdict()
        row.update(who._asdict() if who is not None else dict.fromkeys(ProcessIdentity._fields))
        if pss:
            own = shared_memory(r.pid)
            row.update(own._asdict() if own is not None else dict.fromkeys(SharedMemory._fields))
        if table and row["cmdline"] and len(row["cmdline"]) > _TABLE_CMDLINE_CHARS:
            row["cmdline"] = row["cmdline"][: _TABLE_CMDLINE_CHARS - 3] + "..."
        out.append(row)
    return out


def register(app: typer.Typer) -> None:
    @app.command("procstat")
    def procstat_command(
        interval: Interval = 1.0,
        duration: Duration = None,
        count: Count = None,
        output: Output = OutputFormat.table,
        sort: Annotated[str, typer.Option("--sort", help=f"Sort by: {', '.join(SORT_KEYS)} (or a JSON key).")] = "rss",
        top: Annotated[int | None, typer.Option("--top", "-n", min=1, help="Show the N largest.")] = None,
        pid: Annotated[list[int] | None, typer.Option("--pid", "-p", help="Only this process (repeatable).")] = None,
        pages: Annotated[
            bool, typer.Option("--pages", "-R", help="Table of vsize, data, stack, page tables, swap.")
        ] = False,
        max_processes: Annotated[
            int, typer.Option("--max-processes", min=1, max=PID_MAX_LIMIT, help="Capacity of the in-kernel table.")
        ] = 16384,
        comm: Annotated[
            str | None, typer.Option("--comm", help="Only processes whose name matches this regular expression.")
        ] = None,
        user: Annotated[str | None, typer.Option("--user", help="Only processes of this user (name or uid).")] = None,
        cgroup: Annotated[
            str | None,
            typer.Option("--cgroup", help="Only processes in this memory cgroup or below it (a path from its root)."),
        ] = None,
        pss: Annotated[
            bool,
            typer.Option(
                "--pss",
                help="Also PSS and USS of the rows shown (smaps_rollup: the kernel walks each one's page tables).",
            ),
        ] = False,
    ) -> None:
        """Per-process memory (vsize, rss and its parts, swap, data, stack, page tables, peak).

        Sampled in the kernel each time a thread is switched out; a process
        shows up once it has been switched out since the tool started.
        Example: memwatcher procstat --top 10 --sort swap -o json
        """
        try:
            sort_field = resolve_sort_key(sort)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--sort") from None
        try:
            wanted = ProcessFilter(re.compile(comm) if comm is not None else None, user, cgroup)
        except re.error as e:
            raise typer.BadParameter(f"not a regular expression: {e}", param_hint="--comm") from None
        if cgroup is not None and not cgroup.startswith("/"):
            raise typer.BadParameter(
                "a cgroup path starts with / (as /proc/PID/cgroup shows it)", param_hint="--cgroup"
            )
        tgids = sorted({tgid_of(p) for p in pid or []})
        columns = (_PAGES_COLUMNS if pages else _MAIN_COLUMNS) if output == OutputFormat.table else _ALL_COLUMNS
        if pss:
            columns = [*columns, Column("pss_bytes", "PSS", "bytes"), Column("uss_bytes", "USS", "bytes")]
        writer = make_writer(output, columns)
        with ExitStack() as stack:
            watch = stack.enter_context(PidWatch(tgids))
            with slow_step("loading and attaching procstat..."):
                ps = stack.enter_context(ProcStat(ProcStatOptions(tuple(tgids), max_processes)))
            stop = stack.enter_context(stop_on_signals())
            reported_drops = 0

            def sample() -> bool:
                nonlocal reported_drops
                procs = ps.read()
                dropped = ps.dropped
                title = f"procstat: {len(procs)} processes"
                if dropped:
                    title += f", {dropped} not tracked (table full: raise --max-processes)"
                if dropped > reported_drops and output != OutputFormat.table:
                    writer.message(f"memwatcher: {dropped} processes not tracked (table full: raise --max-processes)")
                reported_drops = dropped
                known: dict[int, ProcessIdentity | None] = {}
                if wanted != ProcessFilter():
                    if wanted.needs_identity:
                        known = {p.pid: identity(p.pid, p.comm) for p in procs}
                    procs = [p for p in procs if wanted.matches(p, known.get(p.pid))]
                    title += f", {len(procs)} selected"
                rows = select_rows(procs, sort_field, top)
                writer.write(_printed_rows(rows, known, output == OutputFormat.table, pss), title=title)
                for gone in watch.exited():
                    writer.message(f"memwatcher: process {gone} exited")
                if tgids and not watch.alive:
                    writer.message("memwatcher: every selected process has exited")
                    return False
                return True

            run_periodic(schedule(interval, duration, count), sample, stop)
