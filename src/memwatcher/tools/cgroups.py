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

Paths are as ``/proc/PID/cgroup`` shows them (from the hierarchy's root), so
``procstat --cgroup`` and ``oom`` name the same cgroups. Container and pod
ids are taken from the path where a runtime's naming reveals them (docker,
containerd, CRI-O, podman, kubelet's ``kubepods`` slices).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import kernel
from ..errors import NotSupportedError
from ..kernel import page_size
from ..options import Count, Duration, Interval, Output, OutputFormat, schedule
from ..output import Column, make_writer
from ..pressure import read_pressure
from ..runner import run_periodic, stop_on_signals

__all__ = ["CgroupMemory", "container_of", "find_hierarchy", "plan", "read_cgroups", "register"]

# The one report that loads no BPF program (and so runs without CAP_BPF): memwatcher.doctor.
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


@dataclass(frozen=True)
class Hierarchy:
    """Where the memory controller is mounted and which cgroup version it is."""

    root: Path
    version: int


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
        rel = "/" + str(d.relative_to(hierarchy.root)).removeprefix(".").strip("/")
        depth = 0 if rel == "/" else rel.count("/")
        if max_depth is not None and depth - base_depth >= max_depth:
            subdirs.clear()
        memory = read_memory(d)
        procs = _read(d / "cgroup.procs")
        if memory["current_bytes"] is None or procs is None:
            continue  # gone meanwhile (or v2's root, which keeps no memory.current: see sysstat)
        out.append(CgroupMemory(rel, depth, processes=len(procs.split()), container=container_of(rel), **memory))
    return out


def tree_order(rows: list[CgroupMemory]) -> list[CgroupMemory]:
    """Parents before their children, siblings largest first."""
    children: dict[str, list[CgroupMemory]] = {}
    paths = {r.path for r in rows}
    tops = []
    for r in rows:
        parent = r.path.rsplit("/", 1)[0] or "/"
        if r.path != "/" and parent in paths:
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
    """No BPF: the memory controller's files (cgroup v2, or v1's memory hierarchy)."""
    hierarchy = find_hierarchy()
    where = f"cgroup v{hierarchy.version} at {hierarchy.root}" if hierarchy else "not mounted"
    hook = kernel.Hook("cgroup memory controller", hierarchy is not None, detail=where if not hierarchy else "")
    return kernel.Plan("cgroups", hooks=[hook], variant=where)


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
    ) -> None:
        """Memory per cgroup (services, containers, pods): usage, limit, anon/file/kernel, swap, OOM kills, PSI.

        A tree sorted by usage, read from the memory controller's own files.
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

        def sample() -> None:
            rows = read_cgroups(hierarchy, under, depth)
            if top is not None:
                rows = sorted(rows, key=lambda r: (-r.current_bytes, r.path))[:top]
            else:
                rows = tree_order(rows)
            shown = []
            for r in rows:
                row = asdict(r)
                indent = "" if top is not None else "  " * max(0, r.depth - rows[0].depth)
                row["name"] = indent + (r.path if top is not None or r is rows[0] else r.path.rsplit("/", 1)[1])
                shown.append(row)
            writer.write(shown, title=f"cgroups (v{hierarchy.version}): {len(rows)}")

        with stop_on_signals() as stop:
            run_periodic(schedule(interval, duration, count), sample, stop)
