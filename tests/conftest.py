"""Shared test set-up.

Kernel tests load and attach real BPF programs; they need root (or CAP_BPF +
CAP_PERFMON) and kernel BTF. On this project's machines and in CI they run;
elsewhere they skip with the reason.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from memwatcher import kernel

TOP = Path(__file__).resolve().parents[1]
TEST_BPF_DIR = TOP / "tests" / "bpf"


def _bpf_skip_reason() -> str | None:
    if not kernel.privileges().can_trace:
        return "needs root or CAP_BPF+CAP_PERFMON"
    if not kernel.btf_available():
        return "needs kernel BTF (/sys/kernel/btf/vmlinux)"
    return None


# The kernel matrix's guests (vm/guest-tests.sh): everything runs under emulation there,
# 10-50 times slower, and a global OOM kill harms no one.
GUEST = os.environ.get("MEMWATCHER_TEST_GUEST") == "1"

requires_bpf = pytest.mark.skipif(_bpf_skip_reason() is not None, reason=_bpf_skip_reason() or "")


def build_test_object(name: str) -> Path:
    """Compile tests/bpf/<name>.bpf.c (if stale) and return the object path."""
    out = TEST_BPF_DIR / "build"
    subprocess.run([str(TOP / "build.sh"), str(out), str(TEST_BPF_DIR / f"{name}.bpf.c")], check=True)
    return out / f"{name}.bpf.o"


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict of raw values (the oracle of per-process memory)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def kib(status: dict[str, str], key: str) -> int:
    """A /proc/PID/status "N kB" value in bytes."""
    value, unit = status[key].split()
    assert unit == "kB"
    return int(value) * 1024


def vmstat() -> dict[str, int]:
    out = {}
    for line in Path("/proc/vmstat").read_text().splitlines():
        key, value = line.split()
        out[key] = int(value)
    return out


# The console script users run sits next to the interpreter in a venv.
_SCRIPT = Path(sys.executable).with_name("memwatcher")
MEMWATCHER = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "memwatcher"]


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setpriv_nobody(caps: Sequence[str] = ()) -> list[str]:
    """A setpriv(1) prefix that runs a command as nobody (uid/gid 65534, no groups) holding
    exactly ``caps`` (e.g. "bpf", "perfmon"): inheritable, ambient, and nothing more in the bounding set."""
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if caps:
        wanted = ",".join(f"+{cap.lower()}" for cap in caps)
        cmd += [f"--inh-caps={wanted}", f"--ambient-caps={wanted}", f"--bounding-set=-all,{wanted}"]
    return cmd


def meminfo_bytes() -> dict[str, int]:
    """/proc/meminfo's kB lines, in bytes."""
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.endswith(" kB"):
            out[key] = int(value.split()[0]) * 1024
    return out


def fs_type(path: Path) -> str:
    """Filesystem type of the mount holding ``path`` (longest mount point prefix)."""
    best, fstype = "", ""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ")
        mount_point = left.split()[4]
        if str(path).startswith(mount_point) and len(mount_point) > len(best):
            best, fstype = mount_point, right.split()[0]
    return fstype


# A child that joins a cgroup (argv: its cgroup.procs, MiB), touches that much memory,
# says "ready" and sleeps.
MEMORY_HOLDER = r"""
import sys, time
with open(sys.argv[1], "w") as f:
    f.write("0")
held = bytearray(int(sys.argv[2]) << 20)
for i in range(0, len(held), 4096):
    held[i] = 1
print("ready", flush=True)
time.sleep(600)
"""

# A child that joins a cgroup (argv: its cgroup.procs), then touches memory until
# the OOM killer ends it.
OOM_HOG = r"""
import os, sys
with open(sys.argv[1], "w") as f:
    f.write(str(os.getpid()))
held = []
while True:
    held.append(bytearray(1 << 20))
"""

# A child that joins a cgroup (argv: its cgroup.procs, a file, MiB) and drives
# it into limit reclaim: writes the file (dirty page cache over the limit),
# fsyncs, drops its cache, reads it back (clean page cache), removes it.
PAGE_CACHE_WORKLOAD = r"""
import os, sys
procs, path, mib = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(procs, "w") as f:
    f.write(str(os.getpid()))
buf = os.urandom(1 << 20)
fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
try:
    for _ in range(mib):
        os.write(fd, buf)
    os.fsync(fd)
    os.close(fd)
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    while os.read(fd, 1 << 20):
        pass
    os.close(fd)
finally:
    os.unlink(path)
"""


@dataclass
class Cgroup:
    """A memory-limited cgroup; ``limited()`` says whether the limit was hit."""

    path: Path
    version: int

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"

    def reclaim_counters(self) -> tuple[int, int] | None:
        """The cgroup's own (pgscan, pgsteal) in pages; cgroup v1 has none."""
        if self.version == 1:
            return None
        stat = dict(line.split() for line in (self.path / "memory.stat").read_text().splitlines())
        return int(stat["pgscan"]), int(stat["pgsteal"])

    def without_swap(self) -> None:
        """Keep the cgroup out of swap, so that its limit is hit, not swapped around."""
        limit = (self.path / "memory.limit_in_bytes") if self.version == 1 else (self.path / "memory.max")
        for name, value in (("memory.swap.max", "0"), ("memory.memsw.limit_in_bytes", limit.read_text().strip())):
            if (self.path / name).exists():
                (self.path / name).write_text(value)

    def limited(self) -> int:
        if self.version == 1:
            return int((self.path / "memory.failcnt").read_text())
        events = dict(line.split() for line in (self.path / "memory.events").read_text().splitlines())
        return int(events["max"])


@contextmanager
def memory_limited_cgroup(name: str, limit_bytes: int) -> Iterator[Cgroup]:
    """A new cgroup limited to ``limit_bytes``, v1 memory or v2 (at /sys/fs/cgroup/unified, as on the
    project's hosts and in the test guests); skips the test without a memory controller. Its processes
    are killed and it is removed on exit."""
    v1 = Path("/sys/fs/cgroup/memory")
    v2 = Path("/sys/fs/cgroup/unified")
    if (v1 / "memory.limit_in_bytes").is_file():
        cg = Cgroup(v1 / name, 1)
        cg.path.mkdir()
        (cg.path / "memory.limit_in_bytes").write_text(str(limit_bytes))
    elif (v2 / "cgroup.controllers").is_file() and "memory" in (v2 / "cgroup.controllers").read_text().split():
        # The controller must be enabled for children (already so on systemd hosts).
        control = v2 / "cgroup.subtree_control"
        if "memory" not in control.read_text().split():
            control.write_text("+memory")
        cg = Cgroup(v2 / name, 2)
        cg.path.mkdir()
        (cg.path / "memory.max").write_text(str(limit_bytes))
    else:
        pytest.skip("no cgroup memory controller (v1 memory or v2 with +memory)")
    try:
        yield cg
    finally:
        for pid in cg.procs.read_text().split():
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while True:
            try:
                cg.path.rmdir()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
