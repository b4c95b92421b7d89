"""`memwatcher cgroups`: memory per cgroup, as a tree sorted by usage.

Where memory limits, reclaim and OOM kills happen on a server: per cgroup
(systemd services, containers, pods). Each sample reads the kernel's own
per-cgroup accounting from the cgroup file system, the numbers the memory
controller enforces limits with:

* cgroup v2 (where it holds the memory controller): ``memory.current``,
  ``memory.max``, ``memory.stat`` (anon, file, kernel; pgscan, pgsteal),
  ``memory.swap.current``, ``memory.events`` (oom_kill, max) and
  ``memory.pressure`` (PSI);
* cgroup v1's memory hierarchy otherwise: ``memory.usage_in_bytes``,
  ``memory.limit_in_bytes``, ``memory.stat`` (total_rss, total_cache, total_swap),
  ``memory.kmem.usage_in_bytes``, ``memory.failcnt`` and ``memory.oom_control``
  (oom_kill); v1 keeps no pressure or reclaim figures.

Where BPF is allowed, pr's programs also count the reclaim stalls of each
cgroup's tasks (direct reclaim when the system is short, limit reclaim when
a cgroup is): the kernel keeps no such per-cgroup count.

Paths are as ``/proc/PID/cgroup`` shows them (from the hierarchy's root), so
``procstat --cgroup`` and ``oom`` name the same cgroups. Container and pod
ids are taken from the path where a runtime's naming reveals them (docker,
containerd, CRI-O, podman, kubelet's ``kubepods`` slices).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import kernel
from ..errors import MemwatcherError, NotSupportedError
from ..kernel import page_size
from ..options import Count, Duration, Interval, Output, OutputFormat, schedule
from ..output import Column, make_writer
from ..pressure import read_pressure
from ..progress import slow_step
from ..runner import run_periodic, stop_on_signals
from . import pr

__all__ = [
    "CgroupMemory",
    "CgroupPaths",
    "container_of",
    "find_hierarchy",
    "parent_path",
    "plan",
    "read_cgroups",
    "register",
    "with_reclaim_stalls",
]

# The one report that needs no BPF program (and so runs without CAP_BPF; with it, pr's
# programs add reclaim stalls): memwatcher.doctor.
USES_BPF = False
# page_counter's "no limit" is PAGE_COUNTER_MAX pages, printed by v1 as a huge byte count.
_V1_UNLIMITED = 1 << 60


@dataclass(frozen=True)
class CgroupMemory:
    """One cgroup's memory. Sizes in bytes; None where this kernel or hierarchy has no such figure.

    ``limit_bytes`` None: unlimited. ``kernel_bytes``: slab, stacks, page tables
    and other kernel memory charged to the cgroup. ``pressure_some_avg10_pct``:
    share of the last 10 s some of its tasks stalled on memory (v2 only).
    Counts since the cgroup was made: ``limit_hits`` (charges that met the
    limit: v2 memory.events max, v1 memory.failcnt), ``reclaim_scanned_bytes``
    and ``reclaim_reclaimed_bytes`` (pages reclaim scanned and freed in it, any
    reclaimer; v2 only), ``pressure_{some,full}_total_us`` (stall time, v2 only).
    Reclaim stalls of the cgroup's tasks and its descendants' since pr's
    programs were loaded (None where they do not run: :func:`with_reclaim_stalls`):
    ``direct_reclaim_stalls`` / ``_ns`` (the system was short of memory) and
    ``memcg_reclaim_stalls`` / ``_ns`` (a cgroup's limit was met).
    """

    path: str
    depth: int
    current_bytes: int
    limit_bytes: int | None
    anon_bytes: int | None
    file_bytes: int | None
    kernel_bytes: int | None
    swap_bytes: int | None
    oom_kills: int | None
    pressure_some_avg10_pct: float | None
    pressure_full_avg10_pct: float | None
    processes: int
    container: str | None
    limit_hits: int | None = None
    reclaim_scanned_bytes: int | None = None
    reclaim_reclaimed_bytes: int | None = None
    pressure_some_total_us: int | None = None
    pressure_full_total_us: int | None = None
    direct_reclaim_stalls: int | None = None
    direct_reclaim_stall_ns: int | None = None
    memcg_reclaim_stalls: int | None = None
    memcg_reclaim_stall_ns: int | None = None

    @property
    def reclaim_stalls(self) -> int | None:
        """Direct and limit reclaim stalls together (None where pr's programs do not run)."""
        if self.direct_reclaim_stalls is None or self.memcg_reclaim_stalls is None:
            return None
        return self.direct_reclaim_stalls + self.memcg_reclaim_stalls

    @property
    def reclaim_stall_ns(self) -> int | None:
        """Time in direct and limit reclaim together (None where pr's programs do not run)."""
        if self.direct_reclaim_stall_ns is None or self.memcg_reclaim_stall_ns is None:
            return None
        return self.direct_reclaim_stall_ns + self.memcg_reclaim_stall_ns


@dataclass(frozen=True)
class Hierarchy:
    """Where the memory controller is mounted and which cgroup version it is."""

    root: Path
    version: int

    def path_of(self, directory: Path) -> str:
        """The cgroup path (as /proc/PID/cgroup shows it) of a directory below ``root``."""
        return "/" + str(directory.relative_to(self.root)).removeprefix(".").strip("/")


def parent_path(path: str) -> str | None:
    """The parent of a cgroup path ("/a/b" -> "/a", "/a" -> "/"); None for the root."""
    return None if path in ("/", "") else (path.rsplit("/", 1)[0] or "/")


def find_hierarchy(mounts: str | None = None) -> Hierarchy | None:
    """The cgroup hierarchy holding the memory controller, from /proc/self/mounts (v2 first)."""
    text = mounts if mounts is not None else Path("/proc/self/mounts").read_text()
    v1 = None
    for line in text.splitlines():
        _, where, fstype, options, *_ = line.split()
        if fstype == "cgroup2":
            controllers = Path(where, "cgroup.controllers")
            if controllers.is_file() and "memory" in controllers.read_text().split():
                return Hierarchy(Path(where), 2)
        elif fstype == "cgroup" and "memory" in options.split(","):
            v1 = Hierarchy(Path(where), 1)
    return v1


_CONTAINER_PATTERNS = (
    re.compile(r"(?:docker|cri-containerd|crio|libpod)-([0-9a-f]{12,64})\.scope$"),
    re.compile(r"^/docker/([0-9a-f]{12,64})$"),
    re.compile(
        r"/kubepods[^/]*/(?:[^/]*/)?(?:[^/]*pod)?"
        r"([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})[^/]*/"
        r"(?:[a-z-]*-)?([0-9a-f]{12,64})(?:\.scope)?$"
    ),
)


def container_of(path: str) -> str | None:
    """The container (or pod/container) a cgroup path names, if a known runtime's naming shows it.

    docker / containerd / CRI-O / podman scopes and /docker/ID give the
    container id (12 characters, as ``docker ps``); a kubelet path
    ``.../kubepods.../pod<uid>/<id>`` gives ``pod <uid>/<id>``.
    """
    kube = _CONTAINER_PATTERNS[2].search(path)
    if kube:
        return f"pod {kube.group(1).replace('_', '-')}/{kube.group(2)[:12]}"
    for pattern in _CONTAINER_PATTERNS[:2]:
        match = pattern.search(path)
        if match:
            return match.group(1)[:12]
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _number(path: Path) -> int | None:
    text = _read(path)
    return int(text) if text is not None and text.strip().isdigit() else None


def _flat_keyed(path: Path) -> dict[str, int]:
    text = _read(path) or ""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def _memory_v2(d: Path) -> dict[str, Any]:
    stat = _flat_keyed(d / "memory.stat")
    limit = (_read(d / "memory.max") or "max").strip()
    events = _flat_keyed(d / "memory.events")
    kernel_parts = ("slab", "kernel_stack", "pagetables", "sec_pagetables", "percpu", "sock", "vmalloc")
    pressure = read_pressure(str(d / "memory.pressure"))
    page_bytes = page_size()
    return {
        "current_bytes": _number(d / "memory.current"),
        "limit_bytes": None if limit == "max" else int(limit),
        "anon_bytes": stat.get("anon"),
        "file_bytes": stat.get("file"),
        "kernel_bytes": stat["kernel"] if "kernel" in stat else sum(stat.get(k, 0) for k in kernel_parts) or None,
        "swap_bytes": _number(d / "memory.swap.current"),
        "oom_kills": events.get("oom_kill"),
        "pressure_some_avg10_pct": pressure.some_avg10_pct if pressure else None,
        "pressure_full_avg10_pct": pressure.full_avg10_pct if pressure else None,
        "limit_hits": events.get("max"),
        "reclaim_scanned_bytes": stat["pgscan"] * page_bytes if "pgscan" in stat else None,
        "reclaim_reclaimed_bytes": stat["pgsteal"] * page_bytes if "pgsteal" in stat else None,
        "pressure_some_total_us": pressure.some_total_us if pressure else None,
        "pressure_full_total_us": pressure.full_total_us if pressure else None,
    }


def _memory_v1(d: Path) -> dict[str, Any]:
    stat = _flat_keyed(d / "memory.stat")
    limit = _number(d / "memory.limit_in_bytes")
    return {
        "current_bytes": _number(d / "memory.usage_in_bytes"),
        "limit_bytes": None if limit is None or limit >= _V1_UNLIMITED else limit,
        # usage_in_bytes counts the cgroup and its descendants: so do the total_* lines.
        "anon_bytes": stat.get("total_rss"),
        "file_bytes": stat.get("total_cache"),
        "kernel_bytes": _number(d / "memory.kmem.usage_in_bytes"),
        "swap_bytes": stat.get("total_swap"),
        "oom_kills": _flat_keyed(d / "memory.oom_control").get("oom_kill"),
        "pressure_some_avg10_pct": None,
        "pressure_full_avg10_pct": None,
        "limit_hits": _number(d / "memory.failcnt"),
    }


def read_cgroups(hierarchy: Hierarchy, under: str = "/", max_depth: int | None = None) -> list[CgroupMemory]:
    """Every cgroup at or below ``under`` (a path from the hierarchy's root), parents first.

    A cgroup removed while being read is left out.
    """
    start = hierarchy.root / under.strip("/")
    base_depth = 0 if under.strip("/") == "" else under.strip("/").count("/") + 1
    read_memory = _memory_v2 if hierarchy.version == 2 else _memory_v1
    out = []
    for directory, subdirs, _ in os.walk(start):
        d = Path(directory)
        rel = hierarchy.path_of(d)
        depth = 0 if rel == "/" else rel.count("/")
        if max_depth is not None and depth - base_depth >= max_depth:
            subdirs.clear()
        memory = read_memory(d)
        procs = _read(d / "cgroup.procs")
        if memory["current_bytes"] is None or procs is None:
            continue  # gone meanwhile (or v2's root, which keeps no memory.current: see sysstat)
        out.append(CgroupMemory(rel, depth, processes=len(procs.split()), container=container_of(rel), **memory))
    return out


class CgroupPaths:
    """Cgroup paths by kernfs id (the inode number of the cgroup's directory), as BPF names cgroups.

    The hierarchy is walked again only when an id not seen before comes up;
    an id still unknown then (a cgroup removed since) is remembered as such.
    """

    def __init__(self, hierarchy: Hierarchy) -> None:
        self.hierarchy = hierarchy
        self._paths: dict[int, str | None] = {}

    def paths(self, ids: Iterable[int]) -> dict[int, str | None]:
        ids = set(ids)
        if not ids <= self._paths.keys():
            for directory, _, _ in os.walk(self.hierarchy.root):
                try:
                    inode = os.stat(directory).st_ino
                except OSError:
                    continue  # removed while walking
                self._paths[inode] = self.hierarchy.path_of(Path(directory))
            for unknown in ids - self._paths.keys():
                self._paths[unknown] = None
        return {i: self._paths[i] for i in ids}


def with_reclaim_stalls(
    rows: list[CgroupMemory], latencies: Iterable[pr.CgroupLatency], names: CgroupPaths
) -> list[CgroupMemory]:
    """``rows`` with their reclaim stall fields: pr's per-cgroup latencies summed over each row's subtree."""
    latencies = list(latencies)
    paths = names.paths(lat.cgroup_id for lat in latencies)
    sums: dict[str, dict[str, int]] = {r.path: dict.fromkeys(_STALL_FIELDS, 0) for r in rows}
    for lat in latencies:
        path = paths[lat.cgroup_id]
        while path is not None:  # the cgroup and each ancestor shown
            if path in sums:
                sums[path][f"{lat.kind}_reclaim_stalls"] += lat.reclaims
                sums[path][f"{lat.kind}_reclaim_stall_ns"] += lat.total_ns
            path = parent_path(path)
    return [replace(r, **sums[r.path]) for r in rows]


_STALL_FIELDS = tuple(f"{kind}_reclaim_{what}" for kind in pr.KINDS for what in ("stalls", "stall_ns"))


def tree_order(rows: list[CgroupMemory]) -> list[CgroupMemory]:
    """Parents before their children, siblings largest first."""
    children: dict[str, list[CgroupMemory]] = {}
    paths = {r.path for r in rows}
    tops = []
    for r in rows:
        parent = parent_path(r.path)
        if parent in paths:
            children.setdefault(parent, []).append(r)
        else:
            tops.append(r)
    out: list[CgroupMemory] = []

    def visit(r: CgroupMemory) -> None:
        out.append(r)
        for child in sorted(children.get(r.path, []), key=lambda c: (-c.current_bytes, c.path)):
            visit(child)

    for r in sorted(tops, key=lambda c: (-c.current_bytes, c.path)):
        visit(r)
    return out


# ---------------------------------------------------------------- plan


def plan() -> kernel.Plan:
    """The memory controller's files (cgroup v2, or v1's memory hierarchy); reclaim stalls where BPF is allowed."""
    hierarchy = find_hierarchy()
    where = f"cgroup v{hierarchy.version} at {hierarchy.root}" if hierarchy else "not mounted"
    hook = kernel.Hook("cgroup memory controller", hierarchy is not None, detail=where if not hierarchy else "")
    why = _why_no_stalls()
    stalls = kernel.Hook("reclaim stalls (pr's programs)", why is None, required=False, detail=why or "")
    return kernel.Plan("cgroups", hooks=[hook, stalls], variant=where + ("" if why else " + reclaim stalls (BPF)"))


def _why_no_stalls() -> str | None:
    """Why pr's programs cannot count reclaim stalls here (None: they can)."""
    try:
        kernel.require_bpf()
    except MemwatcherError as e:
        return str(e)
    reclaim_plan = pr.plan()
    return None if reclaim_plan.runnable else "; ".join(reclaim_plan.problems) or "pr's tracepoints are missing"


# ---------------------------------------------------------------- CLI

_TABLE_COLUMNS = [
    Column("name", "CGROUP", left=True),
    Column("current_bytes", "CURRENT", "bytes"),
    Column("limit_bytes", "LIMIT", "bytes"),
    Column("anon_bytes", "ANON", "bytes"),
    Column("file_bytes", "FILE", "bytes"),
    Column("kernel_bytes", "KERNEL", "bytes"),
    Column("swap_bytes", "SWAP", "bytes"),
    Column("oom_kills", "OOM"),
    Column("limit_hits", "LIMHITS"),
    Column("pressure_some_avg10_pct", "SOME10"),
    Column("reclaim_stalls", "STALLS"),
    Column("reclaim_stall_ns", "STALLED", "ns"),
    Column("processes", "PROCS"),
    Column("container", "CONTAINER", left=True),
]
_ALL_COLUMNS = [Column(name, name) for name in CgroupMemory.__dataclass_fields__]


def register(app: typer.Typer) -> None:
    @app.command("cgroups")
    def cgroups_command(
        interval: Interval = 2.0,
        duration: Duration = None,
        count: Count = None,
        output: Output = OutputFormat.table,
        under: Annotated[
            str, typer.Option("--cgroup", help="Only this cgroup and those below it (a path from the root).")
        ] = "/",
        depth: Annotated[int, typer.Option("--depth", min=0, help="Levels below --cgroup to show.")] = 3,
        top: Annotated[
            int | None, typer.Option("--top", "-n", min=1, help="The N largest, as a flat list instead of a tree.")
        ] = None,
        stalls: Annotated[
            bool | None,
            typer.Option(
                "--stalls/--no-stalls",
                help="Count each cgroup's reclaim stalls with pr's BPF programs (default: where BPF is allowed).",
            ),
        ] = None,
    ) -> None:
        """Memory per cgroup (services, containers, pods): usage, limit, anon/file/kernel, swap, OOM kills, PSI.

        A tree sorted by usage, read from the memory controller's own files;
        with BPF, the reclaim stalls of each cgroup's tasks since start.
        Example: memwatcher cgroups --cgroup /system.slice --depth 1 -o json
        """
        if not under.startswith("/"):
            raise typer.BadParameter(
                "a cgroup path starts with / (as /proc/PID/cgroup shows it)", param_hint="--cgroup"
            )
        hierarchy = find_hierarchy()
        if hierarchy is None:
            raise NotSupportedError("cgroups: no cgroup hierarchy holds the memory controller here")
        if not (hierarchy.root / under.strip("/")).is_dir():
            raise typer.BadParameter(f"no cgroup {under} in {hierarchy.root}", param_hint="--cgroup")
        table = output == OutputFormat.table
        writer = make_writer(output, _TABLE_COLUMNS if table else _ALL_COLUMNS)
        with ExitStack() as stack:  # pr, once loaded, is closed on every way out
            reclaim: pr.PageReclaim | None = None
            why = _why_no_stalls() if stalls is None else None
            if why is not None:
                print(f"memwatcher: cgroups: no reclaim stalls ({why})", file=sys.stderr)
            elif stalls is not False:
                with slow_step("loading and attaching pr..."):
                    reclaim = stack.enter_context(pr.PageReclaim(pr.PrOptions(scan_control=False)))
            names = CgroupPaths(hierarchy)

            def sample() -> None:
                rows = read_cgroups(hierarchy, under, depth)
                if reclaim is not None:
                    rows = with_reclaim_stalls(rows, reclaim.cgroup_latency(), names)
                if top is not None:
                    rows = sorted(rows, key=lambda r: (-r.current_bytes, r.path))[:top]
                else:
                    rows = tree_order(rows)
                shown = []
                for r in rows:
                    row = asdict(r)
                    indent = "" if top is not None else "  " * max(0, r.depth - rows[0].depth)
                    row["name"] = indent + (r.path if top is not None or r is rows[0] else r.path.rsplit("/", 1)[1])
                    if table:
                        row["reclaim_stalls"], row["reclaim_stall_ns"] = r.reclaim_stalls, r.reclaim_stall_ns
                    shown.append(row)
                writer.write(shown, title=f"cgroups (v{hierarchy.version}): {len(rows)}")

            stop = stack.enter_context(stop_on_signals())
            run_periodic(schedule(interval, duration, count), sample, stop)
