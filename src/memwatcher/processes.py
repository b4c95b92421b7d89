"""What /proc says about one process: its status fields, who and where it is, its shared memory;
and whether it still runs.

One home for reading ``/proc/PID/status``, ``cmdline``, ``cgroup`` and ``smaps_rollup``, shared
by the reports (procstat's seeding and identity columns, memleak's checks of
its target, the exporter's cgroup labels). Every reader returns None once the
process is gone. :class:`PidWatch` tells when named processes exit.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterable
from functools import lru_cache
from typing import NamedTuple

from .errors import NoSuchProcessError
from .runner import readable

__all__ = [
    "PidWatch",
    "ProcessIdentity",
    "SharedMemory",
    "cgroup_path",
    "identity",
    "kib_fields",
    "process_cgroup",
    "read_status",
    "shared_memory",
]


def _read_fields(path: str) -> dict[str, str] | None:
    """The "Key: value" lines of a /proc file as text, or None if it cannot be read (the process is gone)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def read_status(pid: int) -> dict[str, str] | None:
    """The fields of /proc/PID/status as text ("VmRSS": "1234 kB"), or None if the process is gone."""
    return _read_fields(f"/proc/{pid}/status")


def kib_fields(fields: dict[str, str]) -> dict[str, int]:
    """The fields given in kB ("1234 kB"), as ints."""
    return {key: int(value[:-3]) for key, value in fields.items() if value.endswith(" kB")}


def cgroup_path(text: str) -> str | None:
    """The memory cgroup path in the text of /proc/PID/cgroup.

    The unified hierarchy's ("0::/path") where the memory controller lives
    there, else the cgroup v1 memory hierarchy's ("N:memory:/path"); None
    when the process is in neither.
    """
    unified = None
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path
        if controllers == "":
            unified = path
    return unified


def process_cgroup(pid: int) -> str | None:
    """The process's memory cgroup path (see :func:`cgroup_path`), or None if it is gone or in none."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return cgroup_path(f.read())
    except OSError:
        return None


class ProcessIdentity(NamedTuple):
    """Who and where a process is: its effective user, whole command line, memory cgroup."""

    uid: int
    user: str
    cmdline: str
    cgroup: str | None


@lru_cache(maxsize=4096)
def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def identity(pid: int, comm: str = "") -> ProcessIdentity | None:
    """The process's identity from /proc, or None if it is gone.

    A process with no command line (a kernel thread, a zombie) is shown as
    ``[comm]``, as ps does.
    """
    status = read_status(pid)
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
        with open(f"/proc/{pid}/cgroup") as f:
            cgroup = cgroup_path(f.read())
    except OSError:
        return None
    if status is None or "Uid" not in status:
        return None
    uid = int(status["Uid"].split()[1])  # real, effective, saved, fs: ps's USER is the effective one
    cmdline = raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace") or f"[{comm or status.get('Name', '')}]"
    return ProcessIdentity(uid, _user_name(uid), cmdline, cgroup)


class SharedMemory(NamedTuple):
    """How much of a process's resident memory is its own, in bytes.

    ``pss_bytes``: each resident page divided by the number of processes
    mapping it; ``uss_bytes``: the pages no other process maps (private clean
    and dirty), what killing the process would free.
    """

    pss_bytes: int
    uss_bytes: int


def shared_memory(pid: int) -> SharedMemory | None:
    """PSS and USS from /proc/PID/smaps_rollup, or None if the process is gone (or a kernel thread).

    The kernel walks the process's page tables to answer: its cost grows with
    the resident size (5 ms for a 2 GiB process on the 2-CPU test machine), so read it for a few processes.
    """
    fields = _read_fields(f"/proc/{pid}/smaps_rollup")
    kib = kib_fields(fields) if fields is not None else {}  # its first line, the mapping's, is no kB field
    if "Pss" not in kib:
        return None
    private = kib.get("Private_Clean", 0) + kib.get("Private_Dirty", 0) + kib.get("Private_Hugetlb", 0)
    return SharedMemory(kib["Pss"] * 1024, private * 1024)


class PidWatch:
    """Processes watched for their exit through pidfds (no race with a reused pid).

    A context manager; :meth:`close` releases the pidfds. Raises
    :class:`NoSuchProcessError` if a process is already gone.
    """

    def __init__(self, pids: Iterable[int]) -> None:
        self._fds: dict[int, int] = {}
        for pid in pids:
            try:
                self._fds[pid] = os.pidfd_open(pid)
            except ProcessLookupError:
                self.close()
                raise NoSuchProcessError(pid) from None

    def exited(self, timeout_s: float = 0.0) -> list[int]:
        """The processes that exited (waiting up to ``timeout_s`` for one); they are then forgotten."""
        if not self._fds:
            return []
        ready = readable(list(self._fds.values()), timeout_s)
        gone = [pid for pid, fd in self._fds.items() if fd in ready]
        for pid in gone:
            os.close(self._fds.pop(pid))
        return gone

    @property
    def alive(self) -> list[int]:
        """The watched processes not yet seen to exit."""
        return list(self._fds)

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popitem()[1])

    def __enter__(self) -> PidWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
