"""procstat against /proc/PID/status, on a child whose memory the test controls.

The child (C, compiled here) touches known amounts of anonymous memory, a
file mapping and memfd shared memory, starts a second thread, then sleeps in
2 ms bursts so it is switched out again and again. The test freezes it with
SIGSTOP (stopping switches it out once more, so the last sample is taken
after the last change) and compares every counter with /proc/PID/status read
while it is frozen: the same kernel counters, so they must be equal to the
page (the per-CPU rss parts are summed, as /proc does since Linux 6.16; no
slack is allowed).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import kib, memory_limited_cgroup, proc_status, requires_bpf
from memwatcher import kernel
from memwatcher.libbpf import BTF
from memwatcher.tools import procstat
from memwatcher.tools.procstat import (
    NoSuchProcessError,
    ProcessMemory,
    ProcStat,
    ProcStatOptions,
    decode_entries,
    resolve_sort_key,
    select_rows,
    tgid_of,
)

MEMWATCHER = [sys.executable, "-m", "memwatcher.cli"]
MIB = 1 << 20
ANON_BYTES = 24 * MIB
FILE_BYTES = 6 * MIB
SHMEM_BYTES = 3 * MIB

CHILD_SOURCE = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile int thread_tid;

static void *sleeper(void *arg)
{
    thread_tid = gettid();
    for (;;)
        usleep(5000);
    return arg;
}

int main(int argc, char **argv)
{
    size_t anon = strtoul(argv[1], 0, 0), file = strtoul(argv[2], 0, 0), shm = strtoul(argv[3], 0, 0);
    long page = sysconf(_SC_PAGESIZE);
    volatile char sink = 0;
    pthread_t thread;
    char *a, *f, *s;
    int fd, mfd;

    a = mmap(0, anon, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    fd = open(argv[4], O_RDONLY);
    f = mmap(0, file, PROT_READ, MAP_SHARED, fd, 0);
    mfd = memfd_create("procstat-test", 0);
    if (a == MAP_FAILED || fd < 0 || f == MAP_FAILED || mfd < 0 || ftruncate(mfd, shm))
        return 1;
    s = mmap(0, shm, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (s == MAP_FAILED)
        return 1;
    /* no huge pages: rss must grow by exactly the pages touched */
    madvise(a, anon, MADV_NOHUGEPAGE);
    for (size_t i = 0; i < anon; i += page)
        a[i] = 1;
    for (size_t i = 0; i < file; i += page)
        sink += f[i];
    for (size_t i = 0; i < shm; i += page)
        s[i] = 1;
    if (pthread_create(&thread, 0, sleeper, 0))
        return 1;
    while (!thread_tid)
        usleep(1000);
    printf("%d\n", thread_tid);
    fflush(stdout);
    for (;;)
        usleep(2000);
}
"""


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def child_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = tmp_path_factory.mktemp("procstat")
    src = build / "child.c"
    src.write_text(CHILD_SOURCE)
    exe = build / "child"
    subprocess.run(["gcc", "-O1", "-pthread", "-o", str(exe), str(src)], check=True)
    data = build / "data.bin"
    data.write_bytes(os.urandom(FILE_BYTES))
    return exe


class Child:
    def __init__(self, exe: Path) -> None:
        self.proc = subprocess.Popen(
            [str(exe), str(ANON_BYTES), str(FILE_BYTES), str(SHMEM_BYTES), str(exe.parent / "data.bin")],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pid = self.proc.pid
        line = self.proc.stdout.readline()
        assert line, "child failed to set up its memory"
        self.thread_tid = int(line)

    def stop(self) -> None:
        """SIGSTOP and wait until stopped (the stop itself is a switch-out)."""
        os.kill(self.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while not proc_status(self.pid)["State"].startswith("T"):
            assert time.monotonic() < deadline, "child did not stop"
            time.sleep(0.005)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def child(child_binary: Path) -> Iterator[Child]:
    c = Child(child_binary)
    try:
        yield c
    finally:
        c.kill()


def wait_for(ps: ProcStat, pid: int, min_switches: int = 1, timeout_s: float = 5.0) -> ProcessMemory:
    deadline = time.monotonic() + timeout_s
    while True:
        found = [p for p in ps.read() if p.pid == pid]
        if found and found[0].switches >= min_switches:
            return found[0]
        assert time.monotonic() < deadline, f"pid {pid} never appeared"
        time.sleep(0.02)


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MEMWATCHER, "procstat", *args], capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- kernel tests


def split_rss_lag_bytes() -> int:
    """How far the mm's rss counters may trail a thread's own faults on this kernel."""
    # struct mm_rss_stat is the pre-6.2 layout, which comes with per-thread caching.
    split = BTF.vmlinux().size_of("mm_rss_stat") is not None
    return 64 * os.sysconf("SC_PAGE_SIZE") if split else 0  # TASK_RSS_EVENTS_THRESH pages


@requires_bpf
def test_matches_proc_status_exactly(child: Child) -> None:
    with ProcStat() as ps:
        first = wait_for(ps, child.pid, min_switches=3)
        child.stop()
        time.sleep(0.05)
        status = proc_status(child.pid)
        got = next(p for p in ps.read() if p.pid == child.pid)
    assert got.switches > first.switches  # the stop was sampled
    assert got.rss_exact
    # The workload landed where it should (the rest is libc, stack, binary).
    # (A data file on tmpfs, as in a VM with /tmp in RAM, counts as shmem.)
    # Before 6.2 each thread caches up to 64 rss events before the mm sees
    # them (SPLIT_RSS_COUNTING), so /proc and we may both be that far behind.
    lag = split_rss_lag_bytes()
    assert got.rss_anon_bytes >= ANON_BYTES - lag
    assert got.rss_shmem_bytes >= SHMEM_BYTES - lag
    assert got.rss_file_bytes + got.rss_shmem_bytes >= FILE_BYTES + SHMEM_BYTES - lag
    # Same counters, frozen process: equal to the byte (the /proc values are in kB).
    assert got.rss_anon_bytes == kib(status, "RssAnon")
    assert got.rss_file_bytes == kib(status, "RssFile")
    assert got.rss_shmem_bytes == kib(status, "RssShmem")
    assert got.rss_bytes == kib(status, "VmRSS")
    assert got.rss_hwm_bytes == kib(status, "VmHWM")
    assert got.rss_peak_bytes >= got.rss_hwm_bytes
    assert got.vsize_bytes == kib(status, "VmSize")
    assert got.data_bytes == kib(status, "VmData")
    assert got.stack_bytes == kib(status, "VmStk")
    assert got.swap_bytes == kib(status, "VmSwap")
    assert got.pte_bytes is not None and got.pte_bytes // 1024 * 1024 == kib(status, "VmPTE")
    assert got.comm == status["Name"]


IDLE_HOLDER = "import sys, time\nheld = bytearray(64 << 20)\nprint('ready', flush=True)\nsys.stdin.read()\n"


@requires_bpf
def test_an_idle_process_is_there_from_the_first_sample() -> None:
    """A process asleep since before procstat started (no switch to sample) is listed at once."""
    holder = subprocess.Popen([sys.executable, "-c", IDLE_HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"ready"
        time.sleep(0.2)  # asleep in read(2) from here on
        status = proc_status(holder.pid)
        with ProcStat() as ps:
            got = {p.pid: p for p in ps.read()}.get(holder.pid)
            assert got is not None, "an idle process is missing"
            assert got.switches == 0  # seeded, not sampled: it has not run since
            assert got.rss_bytes == kib(status, "VmRSS") and got.rss_anon_bytes >= 64 << 20
            assert got.vsize_bytes == kib(status, "VmSize") and got.comm == status["Name"]
        # The command line with --pid: the one row on the first sample.
        proc = run_cli("--pid", str(holder.pid), "--count", "1", "--interval", "0.2", "--output", "json")
        rows = [json.loads(line) for line in proc.stdout.splitlines()]
        assert [r["pid"] for r in rows] == [holder.pid], proc.stderr
        assert rows[0]["rss_bytes"] == kib(proc_status(holder.pid), "VmRSS")
    finally:
        holder.kill()
        holder.wait()


# Sleeps as uid 65534 in a cgroup, under a command line the test chooses.
_TAGGED = "import sys, time; sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(600)"


@requires_bpf
def test_user_command_line_and_cgroup_columns_and_filters(tmp_path: Path) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv(1)")
    name = f"mwtest-procstat-{os.getpid()}"
    argv = [sys.executable, "-c", _TAGGED, "tag-argument", "x" * 60]
    with memory_limited_cgroup(name, 256 << 20) as cg:
        tagged = subprocess.Popen(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv], stdout=subprocess.PIPE, text=True
        )
        try:
            cg.procs.write_text(str(tagged.pid))
            assert tagged.stdout is not None and tagged.stdout.readline() == "ready\n"
            # The oracles: the process's own files, read by the test.
            user = pwd.getpwuid(65534).pw_name
            by_cgroup = run_cli("--cgroup", f"/{name}", "--count", "1", "-i", "0.2", "-o", "json")
            rows = [json.loads(line) for line in by_cgroup.stdout.splitlines()]
            assert [r["pid"] for r in rows] == [tagged.pid], by_cgroup.stderr
            assert (rows[0]["uid"], rows[0]["user"], rows[0]["cgroup"]) == (65534, user, f"/{name}")
            assert rows[0]["cmdline"] == " ".join(argv)  # whole in JSON
            # A parent cgroup selects its descendants; a sibling prefix does not.
            assert tagged.pid in _pids(run_cli("--cgroup", "/", "--count", "1", "-i", "0.2", "-o", "json"))
            assert _pids(run_cli("--cgroup", f"/{name}-", "--count", "1", "-i", "0.2", "-o", "json")) == []
            mine = run_cli("--user", user, "--comm", "^python", "--count", "1", "-i", "0.2", "-o", "json")
            assert tagged.pid in _pids(mine)
            assert tagged.pid not in _pids(run_cli("--user", "0", "--count", "1", "-i", "0.2", "-o", "json"))
            assert tagged.pid not in _pids(run_cli("--comm", "^nomatch$", "--count", "1", "-i", "0.2", "-o", "json"))
            table = run_cli("--cgroup", f"/{name}", "--count", "1", "-i", "0.2")
            row = table.stdout.splitlines()[2]
            assert row.split()[1] == user and row.endswith("...") and " ".join(argv)[:40] in row  # cut in a table
        finally:
            tagged.kill()
            tagged.wait()


# Fills 32 MiB of shared memory and forks; then each process maps all of it (a fork does
# not copy the page tables of shared mappings) and touches 16 MiB of its own.
_SHARING = """
import mmap, os, sys, time
shared = mmap.mmap(-1, 32 << 20, flags=mmap.MAP_SHARED)
shared.write(b"x" * (32 << 20))
child = os.fork()
assert sum(shared[i] for i in range(0, len(shared), 4096)) == ord("x") * (len(shared) // 4096)
own = bytearray(16 << 20)
for i in range(0, len(own), 4096):
    own[i] = 1
if child:
    print(child, flush=True)
time.sleep(600)
"""


@requires_bpf
def test_pss_and_uss_split_what_two_processes_share() -> None:
    parent = subprocess.Popen([sys.executable, "-c", _SHARING], stdout=subprocess.PIPE, text=True)
    child_pid = 0
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        time.sleep(0.3)  # the child has touched its own 16 MiB too
        proc = run_cli("--pid", str(parent.pid), "--pid", str(child_pid), "--pss", "--count", "1", "-o", "json")
        rows = {r["pid"]: r for r in map(json.loads, proc.stdout.splitlines())}
        assert rows.keys() == {parent.pid, child_pid}, proc.stderr
        mib = 1 << 20
        for r in rows.values():
            # The shared 32 MiB: half in each one's PSS, none in either's USS.
            assert r["pss_bytes"] - r["uss_bytes"] >= 16 * mib - 64 * 1024
            assert 16 * mib <= r["uss_bytes"] <= r["rss_bytes"] - 32 * mib
    finally:
        parent.kill()
        parent.wait()
        if child_pid:
            os.kill(child_pid, signal.SIGKILL)


def _pids(proc: subprocess.CompletedProcess) -> list[int]:
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line)["pid"] for line in proc.stdout.splitlines()]


@requires_bpf
def test_threads_are_booked_to_the_process_and_exit_removes_it(child: Child) -> None:
    with ProcStat() as ps:
        wait_for(ps, child.pid, min_switches=5)
        pids = {p.pid for p in ps.read()}
        assert child.thread_tid != child.pid and child.thread_tid not in pids
        child.kill()
        deadline = time.monotonic() + 5
        while child.pid in {p.pid for p in ps.read()}:
            assert time.monotonic() < deadline, "exited process stayed in the map"
            time.sleep(0.02)


@requires_bpf
def test_pid_filter_tracks_only_that_process(child: Child) -> None:
    with ProcStat(ProcStatOptions(pids=(child.pid,))) as ps:
        wait_for(ps, child.pid, min_switches=3)
        time.sleep(0.1)
        assert {p.pid for p in ps.read()} == {child.pid}


@requires_bpf
def test_full_map_counts_drops() -> None:
    with ProcStat(ProcStatOptions(max_processes=1)) as ps:
        deadline = time.monotonic() + 5
        # This process and a sleeping child are both switched out.
        while ps.dropped == 0:
            assert time.monotonic() < deadline, "no drop counted with a one-entry map"
            subprocess.run(["sleep", "0.05"], check=True)
        assert len(ps.read()) == 1


@requires_bpf
def test_cli_json_lines_carry_every_key(child: Child) -> None:
    proc = run_cli("-o", "json", "-i", "0.3", "--count", "2", "--pid", str(child.pid))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert rows and all(r["pid"] == child.pid for r in rows)
    keys = {
        "time", "pid", "comm", "vsize_bytes", "rss_bytes", "rss_peak_bytes", "rss_anon_bytes", "rss_file_bytes",
        "rss_shmem_bytes", "swap_bytes", "data_bytes", "pte_bytes", "stack_bytes",
    }  # fmt: skip
    for row in rows:
        assert keys <= row.keys()
        assert row["rss_anon_bytes"] >= ANON_BYTES
    # --count 2: two samples, one row each (the child is switched out every 2 ms).
    assert len(rows) == 2 and rows[0]["time"] != rows[1]["time"]


@requires_bpf
def test_cli_csv_has_header(child: Child) -> None:
    proc = run_cli("-o", "csv", "-i", "0.2", "--count", "1", "--pid", str(child.pid))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split(",")[:4] == ["time", "pid", "comm", "vsize_bytes"]
    assert len(lines) == 2 and lines[1].split(",")[1] == str(child.pid)


@requires_bpf
def test_cli_table_views(child: Child) -> None:
    proc = run_cli("-i", "0.2", "--count", "1", "--pid", str(child.pid), "-R")
    assert proc.returncode == 0, proc.stderr
    header = proc.stdout.splitlines()[1].split()
    assert header == ["PID", "COMM", "VSIZE", "DATA", "STACK", "PTE", "SWAP"]
    proc = run_cli("-i", "0.2", "--count", "1", "--top", "3", "--sort", "vsize")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line]
    assert lines[1].split()[:5] == ["PID", "USER", "COMM", "VSIZE", "RSS"]
    assert lines[1].split()[-1] == "COMMAND"
    assert 1 <= len(lines) - 2 <= 3


@requires_bpf
def test_cli_stops_when_filtered_process_exits(child: Child) -> None:
    cli = subprocess.Popen(
        [*MEMWATCHER, "procstat", "-o", "json", "-i", "0.2", "--pid", str(child.pid)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert json.loads(cli.stdout.readline())["pid"] == child.pid  # running and sampling
        child.kill()
        _, err = cli.communicate(timeout=30)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 0, err
    assert f"process {child.pid} exited" in err
    assert "every selected process has exited" in err


def test_cli_nonexistent_pid_is_one_line_exit_1() -> None:
    pid = 4_000_000  # above the largest pid_max (2^22)
    proc = run_cli("--pid", str(pid))
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"memwatcher: no process with pid {pid}"
    assert "Traceback" not in proc.stderr


def test_cli_bad_sort_is_usage_error() -> None:
    proc = run_cli("--sort", "colour")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- pure logic


def _entries(**fields: int) -> np.ndarray:
    dt = procstat.header("procstat").procstat_entry
    e = np.zeros(1, dt)
    for name, value in fields.items():
        e[name] = value
    return e


def test_decode_converts_pages_and_flags() -> None:
    layouts = procstat.header("procstat")
    e = _entries(
        total_vm_pages=100, data_vm_pages=40, stack_vm_pages=3, hiwater_rss_pages=50, rss_file_pages=10,
        rss_anon_pages=20, rss_shmem_pages=5, swap_pages=7, rss_max_pages=60, pgtables_bytes=8192, switches=9,
        last_seen_ns=1_000_000_000, tgid=42,
    )  # fmt: skip
    e["comm"] = b"worker"
    (p,) = decode_entries(e, 16384, 3_000_000_000, layouts.constants)
    assert p.pid == 42 and p.comm == "worker"
    assert p.vsize_bytes == 100 * 16384 and p.rss_bytes == 35 * 16384
    assert p.rss_hwm_bytes == 50 * 16384 and p.rss_max_seen_bytes == 60 * 16384 and p.rss_peak_bytes == 60 * 16384
    assert p.swap_bytes == 7 * 16384 and p.data_bytes == 40 * 16384 and p.stack_bytes == 3 * 16384
    assert p.pte_bytes == 8192 and p.switches == 9 and p.sample_age_s == 2.0 and p.rss_exact
    # hiwater_rss lags (moved only when rss drops): VmHWM is then the current rss.
    e["hiwater_rss_pages"] = 1
    e["flags"] = layouts.constants["PROCSTAT_F_NO_PGTABLES"] | layouts.constants["PROCSTAT_F_RSS_INEXACT"]
    (p,) = decode_entries(e, 4096, 0, layouts.constants)
    assert p.rss_hwm_bytes == 35 * 4096 and p.pte_bytes is None and not p.rss_exact and p.sample_age_s == 0


def _proc(pid: int, rss: int, swap: int, pte: int | None = 0) -> ProcessMemory:
    return ProcessMemory(pid, "x", 0, rss, rss, rss, rss, 0, 0, 0, swap, 0, 0, pte, 0, 0.0, True)


def test_sort_and_top() -> None:
    procs = [_proc(3, 10, 5), _proc(1, 30, 0), _proc(2, 20, 9, None)]
    assert [p.pid for p in select_rows(procs, resolve_sort_key("rss"), None)] == [1, 2, 3]
    assert [p.pid for p in select_rows(procs, resolve_sort_key("swap_bytes"), 2)] == [2, 3]
    assert [p.pid for p in select_rows(procs, resolve_sort_key("pid"), None)] == [1, 2, 3]
    assert [p.pid for p in select_rows(procs, resolve_sort_key("pte"), None)][-1] == 2  # absent sorts last
    with pytest.raises(ValueError, match="unknown sort key"):
        resolve_sort_key("comm")


def test_tgid_of() -> None:
    assert tgid_of(os.getpid()) == os.getpid()
    with pytest.raises(NoSuchProcessError):
        tgid_of(4_000_000)


@pytest.mark.skipif(not kernel.btf_available(), reason="needs kernel BTF")
def test_plan_names_the_rss_layout() -> None:
    p = procstat.plan()
    assert p.runnable, p.reasons()
    old_layout = BTF.vmlinux().find("mm_rss_stat", "struct") is not None
    assert ("atomic" in p.variant) == old_layout
