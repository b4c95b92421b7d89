"""oom: OOM kills reported as they happen, checked against kills the test causes.

A child joins a memory-limited cgroup without swap, names itself, sets its
oom_score_adj, records its anonymous rss and then touches anonymous memory 1 MiB
at a time, reporting each MiB, until the memory cgroup's OOM killer kills it.
Oracles: the child's pid, name, adj, uid and its own reports (anonymous rss
before + MiB touched); the cgroup's path and the limit the test set; the
kernel's own OOM report in /dev/kmsg: "Killed process ..." (always printed:
exact rss, total-vm, page tables, adj, and "Memory cgroup out of memory" for a
memcg OOM) and, unless rate-limited, "... invoked oom-killer: gfp_mask=...,
order=..." and "oom-kill:constraint=...,oom_memcg=...,task_memcg=...".

Only processes inside the test's own cgroup are ever killed: a memory cgroup
OOM picks its victims in that cgroup.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from conftest import GUEST, Cgroup, memory_limited_cgroup, requires_bpf
from memwatcher.libbpf import possible_cpus
from memwatcher.objects import header
from memwatcher.tools import oom
from memwatcher.tools.paf import GfpNames

PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1 << 20
LIMIT_BYTES = 48 * MIB
MEMWATCHER = [sys.executable, "-m", "memwatcher.cli"]

# argv: cgroup.procs (or - to stay), comm, oom_score_adj, then "grow" (touch
# until killed) or "hold MIB" (touch that much, say "ready", sleep). Prints
# "base <RssAnon bytes>" before touching and "touched <bytes>" after each MiB.
CHILD = r"""
import ctypes, mmap, os, sys, time
procs, comm, adj, mode = sys.argv[1:5]
if procs != "-":
    with open(procs, "w") as f:
        f.write(str(os.getpid()))
with open("/proc/self/oom_score_adj", "w") as f:
    f.write(adj)
ctypes.CDLL(None).prctl(15, comm.encode(), 0, 0, 0)  # PR_SET_NAME
def rss_anon():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
size = 1 << 30 if mode == "grow" else int(sys.argv[5]) << 20
m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
page = mmap.PAGESIZE
print("base", rss_anon(), flush=True)
for mib in range(size >> 20):
    for off in range(mib << 20, (mib + 1) << 20, page):
        m[off] = 1
    print("touched", (mib + 1) << 20, flush=True)
print("ready", flush=True)
time.sleep(60)
"""


# ---------------------------------------------------------------- unit tests (no BPF)


def _record(**fields: object) -> np.ndarray:
    rec = np.zeros(1, header("oom").oom_kill)
    for k, v in fields.items():
        rec[0][k] = v
    return rec


def test_decode_kills_units_unknowns_and_unlimited() -> None:
    c = header("oom").constants
    gfp = GfpNames(((0xCC0, "GFP_KERNEL"), (0x100, "__GFP_ZERO")), "test")
    memcg_kill = _record(
        victim_pid=10,
        victim_tid=11,
        victim_comm=b"victim",
        trigger_pid=20,
        trigger_comm=b"trigger",
        flags=c["OOM_F_VICTIM_TASK"] | c["OOM_F_MEMCG"] | c["OOM_F_CONTROL"] | c["OOM_F_OOM_MEMCG"],
        rss_anon_pages=3,
        rss_file_pages=2,
        rss_shmem_pages=1,
        total_vm_pages=100,
        pgtables_bytes=8192,
        cgroup=b"/a/b",
        cgroup_limit_pages=(2**63 - 1) // PAGE,  # PAGE_COUNTER_MAX: unlimited
        cgroup_usage_pages=7,
        oom_cgroup=b"/a",
        oom_cgroup_limit_pages=8,
        oom_cgroup_usage_pages=8,
        gfp=0xDC0,
        order=0,
        totalpages=8,
        constraint=3,
        oom_score_adj=-500,
    )
    (k,) = oom.decode_kills(memcg_kill, c, PAGE, {0: "none", 3: "memcg"}, gfp)
    assert (k.victim_pid, k.victim_tid, k.victim_comm, k.trigger_pid, k.trigger_comm) == (
        10,
        11,
        "victim",
        20,
        "trigger",
    )
    assert (k.rss_bytes, k.rss_anon_bytes, k.rss_file_bytes, k.rss_shmem_bytes) == (6 * PAGE, 3 * PAGE, 2 * PAGE, PAGE)
    assert (k.vsize_bytes, k.pte_bytes, k.oom_score_adj) == (100 * PAGE, 8192, -500)
    assert (k.cgroup, k.cgroup_limit_bytes, k.cgroup_usage_bytes) == ("/a/b", None, 7 * PAGE)
    assert (k.oom_cgroup, k.oom_cgroup_limit_bytes, k.oom_cgroup_usage_bytes) == ("/a", 8 * PAGE, 8 * PAGE)
    assert (k.kind, k.constraint, k.order, k.gfp, k.gfp_flags) == ("memcg", "memcg", 0, 0xDC0, "GFP_KERNEL|__GFP_ZERO")
    assert k.oom_domain_bytes == 8 * PAGE

    # oom_control not found, no memory cgroup, no pgtables: None, never a made-up 0.
    bare = _record(victim_pid=1, flags=c["OOM_F_VICTIM_TASK"] | c["OOM_F_NO_PGTABLES"], gfp=5, order=3)
    (k,) = oom.decode_kills(bare, c, PAGE, {0: "none"}, gfp)
    assert k.victim_pid == 1
    assert k.kind is k.constraint is k.order is k.gfp is k.gfp_flags is k.oom_domain_bytes is None
    assert k.cgroup is k.cgroup_id is k.cgroup_limit_bytes is k.cgroup_usage_bytes is k.pte_bytes is None
    assert k.oom_cgroup is k.oom_cgroup_limit_bytes is None

    # A cgroup path too long for the record says so.
    cut = _record(flags=c["OOM_F_MEMCG"] | c["OOM_F_PATH_CUT"], cgroup=b"/very/long")
    assert oom.decode_kills(cut, c, PAGE, {}, None)[0].cgroup == "/very/long..."

    # A global OOM: oom_control found, no memcg in it.
    glob = _record(victim_pid=1, flags=c["OOM_F_CONTROL"], order=-1, constraint=0)
    (k,) = oom.decode_kills(glob, c, PAGE, {0: "none"}, None)
    assert (k.kind, k.constraint, k.order, k.gfp, k.gfp_flags, k.oom_cgroup) == ("global", "none", -1, 0, None, None)


def test_mark_victim_variant_follows_kernel_btf(monkeypatch: pytest.MonkeyPatch) -> None:
    for params, variant in (
        (["struct task_struct *", "uid_t"], "task"),
        (["struct task_struct *"], "task"),
        (["int"], "pid"),
        (["long"], None),
        (None, None),
    ):
        monkeypatch.setattr(oom.kernel, "tracepoint_params", lambda name, p=params: p)
        assert oom._mark_victim_variant() == variant


# ---------------------------------------------------------------- real kills


class Kmsg:
    """New records of the kernel log (/dev/kmsg), or none if it cannot be read."""

    def __init__(self) -> None:
        try:
            self.fd: int | None = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
            os.lseek(self.fd, 0, os.SEEK_END)
        except OSError:
            self.fd = None
        self.lines: list[str] = []

    def read(self) -> list[str]:
        while self.fd is not None:
            try:
                rec = os.read(self.fd, 8192).decode(errors="replace")
            except BlockingIOError:
                break
            except BrokenPipeError:  # records overwritten before we read them
                continue
            self.lines.append(rec.split(";", 1)[-1].split("\n", 1)[0])
        return self.lines

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)


@contextmanager
def kmsg() -> Iterator[Kmsg]:
    k = Kmsg()
    try:
        yield k
    finally:
        k.close()


def _killed_line(lines: list[str], pid: int) -> tuple[str, dict[str, int]] | None:
    """(message, {total-vm, anon-rss, ...}) of the kernel's "Killed process PID" line."""
    for line in lines:
        m = re.match(rf"(.*): Killed process {pid} \(", line)
        if m:
            values = dict(re.findall(r"([\w-]+):(-?\d+)", line[m.end() :]))
            return m.group(1), {k: int(v) for k, v in values.items()}
    return None


@contextmanager
def limited_cgroup(tag: str) -> Iterator[Cgroup]:
    with memory_limited_cgroup(f"mwtest-oom-{tag}-{os.getpid()}", LIMIT_BYTES) as cg:
        cg.without_swap()
        yield cg


def _start(cg: Cgroup | None, comm: str, adj: int, *mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(cg.procs) if cg else "-", comm, str(adj), *mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _grow_until_killed(cg: Cgroup, comm: str, adj: int) -> tuple[subprocess.Popen[str], int, int]:
    """Run the growing child to its death: (process, its base RssAnon, bytes it reported touched)."""
    child = _start(cg, comm, adj, "grow")
    out, err = child.communicate(timeout=60)
    assert child.returncode == -9, f"not killed by the OOM killer (exit {child.returncode}): {err}"
    lines = out.split()
    base = int(lines[lines.index("base") + 1])
    touched = max([int(v) for k, v in itertools.pairwise(lines) if k == "touched"], default=0)
    return child, base, touched


def _kills_of(watcher: oom.OomWatcher, pids: set[int], timeout_s: float = 10.0) -> dict[int, oom.OomKill]:
    found: dict[int, oom.OomKill] = {}
    deadline = time.monotonic() + timeout_s
    while not pids <= found.keys() and time.monotonic() < deadline:
        found.update({k.victim_pid: k for k in watcher.poll(0.2) if k.victim_pid in pids})
    assert pids <= found.keys(), f"no record for {pids - found.keys()}"
    return found


def _check_cgroup_fields(k: oom.OomKill, cg: Cgroup) -> None:
    path = "/" + cg.path.name
    assert (k.kind, k.constraint) == ("memcg", "memcg")
    assert (k.cgroup, k.oom_cgroup) == (path, path)
    assert k.cgroup_id == cg.path.stat().st_ino
    assert k.cgroup_limit_bytes == k.oom_cgroup_limit_bytes == LIMIT_BYTES
    # At the kill the cgroup is full: the charge that failed did not fit.
    for usage in (k.cgroup_usage_bytes, k.oom_cgroup_usage_bytes):
        assert LIMIT_BYTES - 2 * MIB <= usage <= LIMIT_BYTES
    # The killer weighs usage against the limit plus the swap the cgroup may use: none.
    assert k.oom_domain_bytes == LIMIT_BYTES


def _check_kernel_report(k: oom.OomKill, lines: list[str], comm: str) -> None:
    """The record against the kernel's own OOM report of the same kill.

    The kernel prints its "Killed process" line a moment after marking the
    victim. A victim that is itself the trigger is busy running the OOM killer
    meanwhile, so its counters are the same; another victim, just sent
    SIGKILL, may already be exiting on another CPU and move them (up to 6.1 it
    first folds in its per-thread rss cache, up to 64 faults' worth).
    """
    killed = _killed_line(lines, k.victim_pid)
    assert killed is not None, f"no 'Killed process {k.victim_pid}' in the kernel log"
    message, v = killed
    assert message == "Memory cgroup out of memory"
    assert v["oom_score_adj"] == k.oom_score_adj
    assert v["UID"] == k.victim_uid
    if k.victim_pid == k.trigger_pid:
        assert v["anon-rss"] * 1024 == k.rss_anon_bytes
        assert v["file-rss"] * 1024 == k.rss_file_bytes
        assert v["shmem-rss"] * 1024 == k.rss_shmem_bytes
        assert v["total-vm"] * 1024 == k.vsize_bytes
        if "pgtables" in v:
            assert v["pgtables"] == k.pte_bytes >> 10
    else:
        moved = 64 * PAGE + possible_cpus() * max(32, 2 * possible_cpus()) * PAGE
        assert abs(v["anon-rss"] * 1024 - k.rss_anon_bytes) <= moved
    # Rate-limited lines (10 per 5 s): checked when present.
    for line in lines:
        m = re.match(rf"{re.escape(comm)} invoked oom-killer: gfp_mask=(0x[0-9a-f]+)\(.*\), order=(-?\d+)", line)
        if m:
            assert (k.gfp, k.order) == (int(m.group(1), 16), int(m.group(2)))
        if line.startswith("oom-kill:") and f",pid={k.victim_pid}," in line:
            assert re.search(r"constraint=CONSTRAINT_MEMCG\b", line)
            assert f"oom_memcg={k.oom_cgroup}," in line and f"task_memcg={k.cgroup}," in line


@requires_bpf
@pytest.mark.parametrize("victim_from_pid", [False, True], ids=["task", "pid-only"])
def test_memcg_oom_kill_is_reported_with_its_victim_and_cgroup(victim_from_pid: bool) -> None:
    comm = "mwtest-oom"
    adj = 500
    with (
        oom.OomWatcher(oom.OomOptions(victim_from_pid=victim_from_pid)) as watcher,
        limited_cgroup("grow") as cg,
        kmsg() as log,
    ):
        child, base, touched = _grow_until_killed(cg, comm, adj)
        kill = _kills_of(watcher, {child.pid})[child.pid]
        lines = log.read()
        assert watcher.events_dropped == 0
        _check_cgroup_fields(kill, cg)

    assert (kill.victim_pid, kill.victim_tid, kill.victim_comm) == (child.pid, child.pid, comm)
    assert (kill.trigger_pid, kill.trigger_tid, kill.trigger_comm) == (child.pid, child.pid, comm)
    assert (kill.oom_score_adj, kill.victim_uid) == (adj, os.getuid())
    # A page fault's charge: order 0, a gfp mask the kernel names.
    assert kill.order == 0 and kill.gfp and kill.gfp_flags
    # The child's own account: its anonymous rss before, plus what it touched, plus at
    # most the MiB it was touching when killed. The kernel's shared counter lags the
    # per-CPU parts by less than the counter batch (max(32, 2 * CPUs) pages) per CPU.
    lag = possible_cpus() * max(32, 2 * possible_cpus()) * PAGE
    assert touched >= LIMIT_BYTES // 2
    assert base + touched - lag <= kill.rss_anon_bytes <= base + touched + 2 * MIB
    assert kill.rss_bytes == kill.rss_anon_bytes + kill.rss_file_bytes + kill.rss_shmem_bytes
    assert kill.swap_bytes == 0 and kill.pte_bytes > 0 and kill.vsize_bytes >= (1 << 30)
    if log.fd is not None:
        _check_kernel_report(kill, lines, comm)


@requires_bpf
def test_oom_group_members_share_the_oom_control() -> None:
    with oom.OomWatcher() as watcher, limited_cgroup("group") as cg, kmsg() as log:
        if not (cg.path / "memory.oom.group").exists():
            pytest.skip("memory.oom.group needs cgroup v2's memory controller")
        (cg.path / "memory.oom.group").write_text("1")
        holder = _start(cg, "mwtest-hold", 0, "hold", "8")
        try:
            _wait_ready(holder)
            grower, _, _ = _grow_until_killed(cg, "mwtest-grow", 0)
            holder.wait(timeout=30)
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait()
        kills = _kills_of(watcher, {grower.pid, holder.pid})
        lines = log.read()
        for k in kills.values():
            _check_cgroup_fields(k, cg)
    assert holder.returncode == -9
    # The grower holds the most memory: chosen, then the rest of the group.
    chosen, member = kills[grower.pid], kills[holder.pid]
    assert chosen.ts_ns < member.ts_ns
    for k, comm in ((chosen, "mwtest-grow"), (member, "mwtest-hold")):
        assert k.victim_comm == comm
        assert (k.trigger_pid, k.trigger_comm) == (grower.pid, "mwtest-grow")
        assert (k.order, k.gfp) == (chosen.order, chosen.gfp)
    if log.fd is not None:
        _check_kernel_report(member, lines, "mwtest-grow")


def _wait_ready(child: subprocess.Popen[str]) -> None:
    for line in iter(child.stdout.readline, ""):
        if line.strip() == "ready":
            return
    pytest.fail(f"the child did not start: {child.communicate()}")


def _meminfo_bytes(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0]) * 1024
    raise KeyError(key)


@requires_bpf
@pytest.mark.skipif(
    not GUEST,
    reason="a global OOM kill (sysrq-f) picks its victim machine-wide: only in the disposable test guests "
    "(MEMWATCHER_TEST_GUEST=1, set by vm/guest-tests.sh)",
)
def test_global_oom_by_sysrq_in_a_test_guest() -> None:
    # oom_score_adj 1000 makes the child the system's first choice: its badness
    # exceeds the whole of memory, nobody else's can.
    with oom.OomWatcher() as watcher, kmsg() as log:
        child = _start(None, "mwtest-global", 1000, "hold", "8")
        try:
            _wait_ready(child)
            Path("/proc/sysrq-trigger").write_text("f")
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        kill = _kills_of(watcher, {child.pid})[child.pid]
        lines = log.read()
    assert child.returncode == -9
    assert (kill.victim_comm, kill.oom_score_adj) == ("mwtest-global", 1000)
    # sysrq-f: a kworker runs the OOM killer for no allocation (order -1, GFP_KERNEL).
    assert (kill.kind, kill.constraint, kill.order, kill.oom_cgroup) == ("global", "none", -1, None)
    assert kill.trigger_comm.startswith("kworker") and kill.gfp_flags == "GFP_KERNEL"
    # The domain of a global OOM: all RAM plus swap (totalram_pages is MemTotal).
    assert kill.oom_domain_bytes == _meminfo_bytes("MemTotal") + _meminfo_bytes("SwapTotal")
    if log.fd is not None:
        killed = _killed_line(lines, child.pid)
        assert killed is not None and killed[0] == "Out of memory"
        summary = [line for line in lines if line.startswith("oom-kill:") and f",pid={child.pid}," in line]
        assert all("constraint=CONSTRAINT_NONE" in line for line in summary)


@requires_bpf
def test_cli_json_one_object_per_kill() -> None:
    proc = subprocess.Popen(
        [*MEMWATCHER, "oom", "--output", "json", "--count", "1", "--duration", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in iter(proc.stderr.readline, ""):
            if "watching for OOM kills" in line:
                break
        else:
            pytest.fail(f"oom did not start: {proc.communicate()}")
        with limited_cgroup("cli") as cg:
            child, _, _ = _grow_until_killed(cg, "mwtest-cli", 0)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 1
    row = rows[0]
    assert set(oom.OomKill._fields) | {"time", "event_time"} == set(row)
    assert (row["victim_pid"], row["victim_comm"], row["cgroup"], row["kind"]) == (
        child.pid,
        "mwtest-cli",
        "/" + cg.path.name,
        "memcg",
    )
    assert row["rss_bytes"] >= LIMIT_BYTES // 2 and row["cgroup_limit_bytes"] == LIMIT_BYTES
