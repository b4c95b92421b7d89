"""`memwatcher oom`: one record per OOM kill, as it happens.

The OOM killer sends its victim SIGKILL and then marks it (``oom:mark_victim``),
both from the task that ran out of memory (the *trigger*: the task whose
allocation or cgroup charge failed). BPF remembers each thread's last SIGKILL
(``tp_btf/signal_generate``) and, when the task marked is the one its thread
just killed, reads at that moment:

* the victim from its ``task_struct`` and ``mm`` (CO-RE): pid, thread, comm,
  uid, ``oom_score_adj``, rss by kind (the kernel's own counters, the numbers
  its "Killed process" log line prints), swap entries, page tables, total VM;
* the victim's memory cgroup (``task->cgroups``): its path from the
  hierarchy's root (cgroup v2, or v1's memory hierarchy), usage and limit from
  its page counter;
* the killer's ``struct oom_control``, found on the trigger's own stack (no
  tracepoint passes it; see ``bpf/oom.bpf.c``): whether the OOM was global
  (``kind`` "global") or a memory cgroup's (``"memcg"``), the allocation's
  order and gfp mask, the constraint, and the cgroup whose limit was hit
  (``oom_cgroup``, with its usage and limit).

A mark without the SIGKILL (a task already exiting given access to memory
reserves) is not a kill: it is counted in :attr:`OomWatcher.marks_without_kill`,
not reported. Kernels whose ``mark_victim`` passes only a pid (before Linux
6.8 and its stable backports) find the victim's task the same way.

Library use::

    with OomWatcher() as oom:
        for kill in oom.poll(timeout_s=1.0):   # OomKill records, sizes in bytes
            print(kill.victim_pid, kill.cgroup, kill.kind, kill.rss_bytes)

All sizes are in bytes. A field the kernel did not let us read is None.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Annotated, NamedTuple

import numpy as np
import typer

from .. import kernel
from ..errors import MemwatcherError, NotSupportedError
from ..libbpf import BTF, BPFObject, RingBuffer
from ..objects import header, object_path
from ..options import Duration, Output, OutputFormat
from ..output import Column, make_writer
from ..progress import slow_step
from ..runner import stop_on_signals
from ._lifecycle import BPFReport
from .paf import GfpNames

__all__ = ["OomKill", "OomOptions", "OomWatcher", "decode_kills", "plan", "register"]

# Kernel enumerators of the rss counters -> rodata variable receiving each.
_RSS_ITEMS = {
    "MM_FILEPAGES": "mm_filepages",
    "MM_ANONPAGES": "mm_anonpages",
    "MM_SWAPENTS": "mm_swapents",
    "MM_SHMEMPAGES": "mm_shmempages",
}
_SIGNAL_PARAMS_TASK = 2  # signal_generate(int sig, struct kernel_siginfo *info, struct task_struct *task, ...)


class OomKill(NamedTuple):
    """One OOM kill. Sizes in bytes, as they were at the kill.

    ``victim_pid`` is the process (thread group), ``victim_tid`` the thread the
    kernel marked. ``cgroup`` is the victim's memory cgroup path from its
    hierarchy's root (as /proc/PID/cgroup shows it), None without memory
    cgroups (a path too long for the record ends in "..."); ``cgroup_limit_bytes``
    is None when unlimited. ``kind`` is
    "global" or "memcg" (None: the killer's oom_control was not found, and
    then ``constraint``, ``order``, ``gfp``, ``gfp_flags`` and the
    ``oom_cgroup*`` fields are None too). ``oom_cgroup`` is the cgroup whose
    limit was hit (memcg OOMs only): the victim's own or an ancestor.
    ``order`` -1 means the OOM killer was invoked by sysrq, not by an
    allocation. ``oom_domain_bytes`` is the memory the killer weighed the
    victims' usage against: the OOM cgroup's limit (plus the swap it may
    use), or RAM plus swap for a global OOM. The trigger is the task that ran the OOM killer. rss values
    are the kernel's counters without per-CPU parts (what its "Killed process"
    log line prints); ``pte_bytes`` is None on kernels without
    ``mm->pgtables_bytes``. ``ts_ns`` is CLOCK_MONOTONIC.
    """

    ts_ns: int
    victim_pid: int
    victim_tid: int
    victim_comm: str
    victim_uid: int
    cgroup: str | None
    cgroup_id: int | None
    kind: str | None
    constraint: str | None
    rss_bytes: int
    rss_anon_bytes: int
    rss_file_bytes: int
    rss_shmem_bytes: int
    swap_bytes: int
    vsize_bytes: int
    pte_bytes: int | None
    oom_score_adj: int
    cgroup_usage_bytes: int | None
    cgroup_limit_bytes: int | None
    oom_cgroup: str | None
    oom_cgroup_usage_bytes: int | None
    oom_cgroup_limit_bytes: int | None
    trigger_pid: int
    trigger_tid: int
    trigger_comm: str
    order: int | None
    gfp: int | None
    gfp_flags: str | None
    oom_domain_bytes: int | None


@dataclass(frozen=True)
class OomOptions:
    """How to load oom. The zero value is the default.

    ``ring_bytes``: size of the ring buffer (a power of two, at least a page);
    kills that find it full are counted in :attr:`OomWatcher.events_dropped`.
    ``victim_from_pid`` (tests): find the victim from its pid alone, as on
    kernels whose mark_victim passes no task_struct.
    """

    ring_bytes: int = 256 * 1024
    victim_from_pid: bool = False


def _mark_victim_variant() -> str | None:
    """What oom:mark_victim passes on this kernel: "task", "pid", or None (absent or unknown)."""
    params = kernel.tracepoint_params("mark_victim")
    if not params:
        return None
    return {"struct task_struct *": "task", "int": "pid"}.get(params[0])


def plan() -> kernel.Plan:
    """Hooks: tp_btf mark_victim (task or pid variant) and signal_generate."""
    hooks = [kernel.tracepoint_hook("mark_victim"), kernel.tracepoint_hook("signal_generate")]
    result = kernel.Plan("oom", hooks)
    if not kernel.btf_available():
        result.problems.append("no kernel BTF")
        return result
    btf = BTF.vmlinux()
    variant = _mark_victim_variant()
    if kernel.tracepoint_params("mark_victim") is not None and variant is None:
        result.problems.append(f"mark_victim arguments {kernel.tracepoint_params('mark_victim')}")
    signal = kernel.tracepoint_params("signal_generate")
    if signal is not None and signal[_SIGNAL_PARAMS_TASK : _SIGNAL_PARAMS_TASK + 1] != ["struct task_struct *"]:
        result.problems.append(f"signal_generate arguments {signal}")
    missing = [name for name in _RSS_ITEMS if btf.enumerator(name) is None]
    if missing:
        result.problems.append(f"kernel BTF lacks {', '.join(missing)}")
    parts = [
        f"tp_btf mark_victim({variant or '?'}) + signal_generate",
        "kind, order, gfp from the killer's oom_control",
    ]
    if btf.enumerator("memory_cgrp_id") is None:
        parts.append("no memory cgroups (CONFIG_MEMCG)")
    result.variant = "; ".join(parts)
    return result


@cache
def _constraint_names() -> dict[int, str]:
    """enum oom_constraint of the running kernel: CONSTRAINT_MEMORY_POLICY -> "memory_policy"."""
    values = BTF.vmlinux().enum_values("oom_constraint")
    return {v: k.removeprefix("CONSTRAINT_").lower() for k, v in values.items()}


def _gfp_names() -> GfpNames | None:
    try:
        return GfpNames.for_kernel()
    except NotSupportedError:
        return None


def decode_kills(
    records: np.ndarray,
    constants: dict[str, int],
    page_size: int,
    constraint_names: dict[int, str],
    gfp_names: GfpNames | None,
) -> list[OomKill]:
    """Ring buffer records (``struct oom_kill``) as :class:`OomKill`."""
    # include/linux/page_counter.h: PAGE_COUNTER_MAX is LONG_MAX / PAGE_SIZE on
    # 64-bit; a counter's max at or above it means "no limit".
    unlimited = (2**63 - 1) // page_size

    def limit(pages: int) -> int | None:
        return None if pages >= unlimited else pages * page_size

    def text(raw: bytes) -> str:
        return raw.decode(errors="replace")

    def path(raw: bytes, cut: int) -> str:
        return text(raw) + ("..." if cut else "")

    out = []
    for r in records:
        flags = int(r["flags"])
        memcg = bool(flags & constants["OOM_F_MEMCG"])
        control = bool(flags & constants["OOM_F_CONTROL"])
        oom_memcg = bool(flags & constants["OOM_F_OOM_MEMCG"])
        anon, file, shmem = (int(r[f"rss_{k}_pages"]) * page_size for k in ("anon", "file", "shmem"))
        gfp = int(r["gfp"]) if control else None
        out.append(
            OomKill(
                ts_ns=int(r["ts_ns"]),
                victim_pid=int(r["victim_pid"]),
                victim_tid=int(r["victim_tid"]),
                victim_comm=text(r["victim_comm"]),
                victim_uid=int(r["victim_uid"]),
                cgroup=path(r["cgroup"], flags & constants["OOM_F_PATH_CUT"]) if memcg else None,
                cgroup_id=int(r["cgroup_id"]) if memcg else None,
                kind=("memcg" if oom_memcg else "global") if control else None,
                constraint=constraint_names.get(int(r["constraint"])) if control else None,
                rss_bytes=anon + file + shmem,
                rss_anon_bytes=anon,
                rss_file_bytes=file,
                rss_shmem_bytes=shmem,
                swap_bytes=int(r["swap_pages"]) * page_size,
                vsize_bytes=int(r["total_vm_pages"]) * page_size,
                pte_bytes=None if flags & constants["OOM_F_NO_PGTABLES"] else int(r["pgtables_bytes"]),
                oom_score_adj=int(r["oom_score_adj"]),
                cgroup_usage_bytes=int(r["cgroup_usage_pages"]) * page_size if memcg else None,
                cgroup_limit_bytes=limit(int(r["cgroup_limit_pages"])) if memcg else None,
                oom_cgroup=path(r["oom_cgroup"], flags & constants["OOM_F_OOM_PATH_CUT"]) if oom_memcg else None,
                oom_cgroup_usage_bytes=int(r["oom_cgroup_usage_pages"]) * page_size if oom_memcg else None,
                oom_cgroup_limit_bytes=limit(int(r["oom_cgroup_limit_pages"])) if oom_memcg else None,
                trigger_pid=int(r["trigger_pid"]),
                trigger_tid=int(r["trigger_tid"]),
                trigger_comm=text(r["trigger_comm"]),
                order=int(r["order"]) if control else None,
                gfp=gfp,
                gfp_flags=gfp_names.decode(gfp) if gfp is not None and gfp_names is not None else None,
                oom_domain_bytes=int(r["totalpages"]) * page_size if control else None,
            )
        )
    return out


class OomWatcher(BPFReport):
    """Loaded and attached oom programs (a context manager: loads on entry; :meth:`close` is idempotent)."""

    def __init__(self, options: OomOptions | None = None) -> None:
        super().__init__()
        self.options = options or OomOptions()
        self._obj: BPFObject | None = None
        self._ring: RingBuffer | None = None

    def _load(self) -> None:
        kernel.require_bpf()
        p = plan()
        if not p.runnable:
            raise NotSupportedError("oom: " + "; ".join(p.reasons()))
        self.variant = _mark_victim_variant()
        self.page_size = kernel.page_size()
        self.layouts = header("oom")
        self.constraint_names = _constraint_names()
        self.gfp_names = _gfp_names()
        btf = BTF.vmlinux()
        obj = self._owned.enter_context(BPFObject.open(object_path("oom")))
        for name, var in _RSS_ITEMS.items():
            setattr(obj.rodata, var, btf.enumerator(name))
        obj.rodata.victim_from_pid = self.options.victim_from_pid
        obj.programs.oom_mark_victim.autoload = self.variant == "task"
        obj.programs.oom_mark_victim_pid.autoload = self.variant == "pid"
        obj.maps.events.max_entries = self.options.ring_bytes
        obj.load()
        # The SIGKILL tracker first: a kill must never be marked before it is seen.
        obj.programs.oom_signal_generate.attach()
        obj.programs["oom_mark_victim" if self.variant == "task" else "oom_mark_victim_pid"].attach()
        self._ring = RingBuffer(obj.maps.events, self.layouts.oom_kill, batch_records=64)
        self._obj = obj

    @property
    def obj(self) -> BPFObject:
        if self._obj is None:
            raise MemwatcherError("oom: use after close")
        return self._obj

    def _decode(self, records: np.ndarray) -> list[OomKill]:
        return decode_kills(records, self.layouts.constants, self.page_size, self.constraint_names, self.gfp_names)

    @property
    def ring(self) -> RingBuffer:
        if self._ring is None:
            raise MemwatcherError("oom: use after close")
        return self._ring

    def poll(self, timeout_s: float) -> list[OomKill]:
        """Kills reported since the last call, waiting up to ``timeout_s`` for one."""
        return self._decode(self.ring.poll(max(0, round(timeout_s * 1000))))

    def consume(self) -> list[OomKill]:
        """Kills reported since the last call (never blocks)."""
        return self._decode(self.ring.consume())

    @property
    def events_dropped(self) -> int:
        """Kills not reported because the ring buffer was full (cumulative)."""
        return int(self.obj.bss.events_dropped)

    @property
    def marks_without_kill(self) -> int:
        """oom:mark_victim of tasks not sent SIGKILL (already exiting; cumulative)."""
        return int(self.obj.bss.marks_without_kill)

    def close(self) -> None:
        self._ring = None
        self._obj = None
        super().close()


# ---------------------------------------------------------------- CLI


def _event_time(ts_ns: int) -> str:
    """Wall-clock ISO time of a CLOCK_MONOTONIC timestamp."""
    wall = time.time() - (time.monotonic_ns() - ts_ns) / 1e9
    return datetime.fromtimestamp(wall).astimezone().isoformat(timespec="microseconds")


_TABLE_COLUMNS = [
    Column("victim_pid", "PID"),
    Column("victim_comm", "COMM", left=True),
    Column("kind", "KIND", left=True),
    Column("cgroup", "CGROUP", left=True),
    Column("rss_bytes", "RSS", "bytes"),
    Column("rss_anon_bytes", "ANON", "bytes"),
    Column("rss_file_bytes", "FILE", "bytes"),
    Column("rss_shmem_bytes", "SHMEM", "bytes"),
    Column("swap_bytes", "SWAP", "bytes"),
    Column("oom_score_adj", "ADJ"),
    Column("limit_bytes", "LIMIT", "bytes"),
    Column("usage_bytes", "USAGE", "bytes"),
    Column("trigger", "TRIGGER", left=True),
    Column("order", "ORDER"),
    Column("gfp_flags", "GFP", left=True),
]
_JSON_COLUMNS = [Column("event_time", "event_time")] + [Column(k, k) for k in OomKill._fields]


def _table_row(k: OomKill) -> dict:
    row = k._asdict()
    # The cgroup whose limit was hit if known, else the victim's own.
    limited = k.oom_cgroup is not None
    row["limit_bytes"] = k.oom_cgroup_limit_bytes if limited else k.cgroup_limit_bytes
    row["usage_bytes"] = k.oom_cgroup_usage_bytes if limited else k.cgroup_usage_bytes
    row["trigger"] = f"{k.trigger_pid} {k.trigger_comm}"
    return row


def register(app: typer.Typer) -> None:
    @app.command("oom")
    def oom_command(
        duration: Duration = None,
        count: Annotated[int | None, typer.Option("--count", min=1, help="Stop after this many kills.")] = None,
        output: Output = OutputFormat.table,
    ) -> None:
        """OOM kills as they happen: victim, its memory and cgroup, global or cgroup OOM, trigger.

        One record per kill, from the oom:mark_victim tracepoint.
        Example: memwatcher oom -o json
        """
        json_like = output != OutputFormat.table
        writer = make_writer(output, _JSON_COLUMNS if json_like else _TABLE_COLUMNS)
        with ExitStack() as stack:
            with slow_step("loading and attaching oom..."):
                oom = stack.enter_context(OomWatcher())
            stop = stack.enter_context(stop_on_signals())
            writer.message("memwatcher: watching for OOM kills (Ctrl-C to stop)")
            if not json_like:
                writer.write([], title="OOM kills (waiting)")
            deadline = None if duration is None else time.monotonic() + duration
            seen = dropped = 0
            while not stop.is_set():
                wait = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
                kills = oom.poll(max(wait, 0.0))
                if kills:
                    kills = kills[: count - seen] if count is not None else kills
                    rows = [
                        {**k._asdict(), "event_time": _event_time(k.ts_ns)} if json_like else _table_row(k)
                        for k in kills
                    ]
                    writer.write(rows, title="OOM kills")
                    seen += len(kills)
                if oom.events_dropped != dropped:
                    writer.message(f"oom: {oom.events_dropped - dropped} kills not reported (ring buffer full)")
                    dropped = oom.events_dropped
                if (count is not None and seen >= count) or (deadline is not None and time.monotonic() >= deadline):
                    break
