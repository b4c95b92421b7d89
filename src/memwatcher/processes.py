"""What /proc says about one process: its status fields, who and where it is, its shared memory;
whether it still runs; and a command memwatcher starts and supervises.

One home for reading ``/proc/PID/status``, ``cmdline``, ``cgroup`` and ``smaps_rollup``, shared
by the reports (procstat's seeding and identity columns, memleak's checks of
its target, the exporter's cgroup labels). Every reader returns None once the
process is gone. :class:`PidWatch` tells when named processes exit;
:class:`CommandProcess` starts a command under ptrace (memleak --command).
"""

from __future__ import annotations

import ctypes
import os
import pwd
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from functools import lru_cache
from typing import NamedTuple

from .errors import CommandNotFoundError, NoSuchProcessError
from .runner import readable

__all__ = [
    "CommandProcess",
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


_PTRACE_TRACEME = 0
_PTRACE_CONT = 7
_PTRACE_SETOPTIONS = 0x4200
_PTRACE_O_TRACEEXEC = 0x10
_PTRACE_O_TRACEEXIT = 0x40
_PTRACE_EVENT_EXEC = 4
_PTRACE_EVENT_EXIT = 6


class CommandProcess:
    """A command started by memwatcher and traced (ptrace) by it for its whole life.

    A thread of its own forks the child, which asks to be traced
    (``PTRACE_TRACEME``) and execs: the kernel stops it before the new program
    runs an instruction, so probes can be attached first. :meth:`start` lets it
    run; the thread stays its tracer and

    * passes every signal sent to the command on to it;
    * at a stop by ``loader_signal`` (memleak's BPF sends it at
      ``_dl_debug_state``) calls ``on_loader_stop`` and drops the signal:
      tables of new libraries are in place before their code runs;
    * at an ``execve`` (``PTRACE_EVENT_EXEC``) calls ``on_exec``;
    * at exit (``PTRACE_EVENT_EXIT``, before the kernel tears the address space
      down) sets :attr:`held` and waits for :meth:`finish`, so a final report
      can still read the command's memory map.

    If memwatcher dies, the kernel detaches the command, which goes on (or
    finishes exiting) as if never traced. Job-control stops (SIGTSTP) are not
    kept, as the command is resumed by its tracer.
    """

    def __init__(self, argv: Sequence[str], loader_signal: int | None = None) -> None:
        if not argv:
            raise CommandNotFoundError("empty command")
        path = argv[0] if "/" in argv[0] else shutil.which(argv[0])
        if path is None or not os.path.exists(path):
            raise CommandNotFoundError(f"command not found: {argv[0]}")
        if os.path.isdir(path):
            raise CommandNotFoundError(f"{argv[0]}: is a directory", 126)
        if not os.access(path, os.X_OK):
            raise CommandNotFoundError(f"{argv[0]}: permission denied (not executable)", 126)
        self.path = path
        self.argv = list(argv)
        self.loader_signal = loader_signal
        self.pid = 0
        self.exit_status: int | None = None
        self.held = threading.Event()  # stopped at exit, its memory map intact
        self.ended = threading.Event()  # exited and reaped (exit_status is set)
        self._started = threading.Event()
        self._go = threading.Event()
        self._release = threading.Event()
        self._on_loader_stop: Callable[[], None] | None = None
        self._on_exec: Callable[[], None] | None = None
        self._error: str | None = None
        libc = ctypes.CDLL(None, use_errno=True)
        self._ptrace = libc.ptrace
        self._ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        self._thread = threading.Thread(target=self._supervise, name="memleak-command", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise CommandNotFoundError(self._error)

    def libraries(self) -> dict[str, str]:
        """Shared libraries the dynamic loader will map (soname -> path); {} if static.

        Asked of the loader itself (``ldd``): the command is stopped at its
        exec, before the loader mapped anything /proc/PID/maps could show.
        """
        exe = os.readlink(f"/proc/{self.pid}/exe")
        proc = subprocess.run(["ldd", exe], capture_output=True, text=True)
        libs = {}
        for line in proc.stdout.splitlines():
            m = re.match(r"\s*(\S+)\s+=>\s+(/\S+)", line)
            if m:
                libs[m.group(1)] = m.group(2)
        return libs

    def start(
        self, on_loader_stop: Callable[[], None] | None = None, on_exec: Callable[[], None] | None = None
    ) -> None:
        """Let the command run (once its probes are attached)."""
        self._on_loader_stop = on_loader_stop
        self._on_exec = on_exec
        self._go.set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the command is held at exit or has ended; False on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not (self.held.is_set() or self.ended.is_set()):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            self.held.wait(0.05 if left is None else min(left, 0.05))
        return True

    def finish(self) -> None:
        """Let a held command exit; end one still running (SIGTERM). Reaps it."""
        if not self._go.is_set():
            with suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self._go.set()
        elif not self.held.is_set() and not self.ended.is_set():
            with suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
        self._release.set()
        self._thread.join()

    def _ptrace_checked(self, request: int, data: int = 0) -> bool:
        return self._ptrace(request, self.pid, None, ctypes.c_void_p(data)) == 0

    def _supervise(self) -> None:
        # ptrace requests must come from the tracer thread: the one that forked.
        try:
            self.pid = os.fork()
        except OSError as e:
            self._error = f"cannot start {self.path}: {e.strerror}"
            self._started.set()
            return
        if self.pid == 0:  # child: only async-signal-safe-ish work until execv
            try:
                if self._ptrace(_PTRACE_TRACEME, 0, None, None) == 0:
                    os.execv(self.path, self.argv)
            finally:
                os._exit(127)
        _, status = os.waitpid(self.pid, 0)
        if not os.WIFSTOPPED(status):
            self._error = f"cannot execute {self.path}"
            self._started.set()
            self.exit_status = os.waitstatus_to_exitcode(status)
            self.ended.set()
            return
        self._ptrace_checked(_PTRACE_SETOPTIONS, _PTRACE_O_TRACEEXEC | _PTRACE_O_TRACEEXIT)
        self._started.set()
        self._go.wait()
        deliver = 0
        while True:
            self._ptrace_checked(_PTRACE_CONT, deliver)
            deliver = 0
            _, status = os.waitpid(self.pid, 0)
            if not os.WIFSTOPPED(status):
                self.exit_status = os.waitstatus_to_exitcode(status)
                self.ended.set()
                return
            stop_signal, event = os.WSTOPSIG(status), status >> 16
            if event == _PTRACE_EVENT_EXIT:
                self.held.set()
                self._release.wait()
            elif event == _PTRACE_EVENT_EXEC:
                if self._on_exec is not None:
                    self._on_exec()
            elif stop_signal == self.loader_signal and self._on_loader_stop is not None:
                self._on_loader_stop()
            else:
                deliver = stop_signal  # the command's own signal: pass it on

    def __enter__(self) -> CommandProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()
