"""Errors of the binding, and the wrapper that runs a libbpf call and raises them.

libbpf logs through one process-wide print callback; the C side collects the
lines in a buffer, and :class:`_Call` takes them (under a lock) into the
error of the call that failed.
"""

from __future__ import annotations

import errno as _errno
import threading
from typing import Any

from .._libbpf import ffi, lib
from ..errors import MemwatcherError, NotSupportedError, PrivilegeError

lib.mw_log_install()
_log_lock = threading.Lock()
# Kernel errno for "operation not supported" that has no Python name (ENOTSUPP).
_ENOTSUPP = 524


class LibbpfError(MemwatcherError, OSError):
    """A libbpf or bpf(2) call failed.

    ``errno`` is the error number, ``operation`` names what was attempted
    (with the object, program or map involved) and ``log`` holds every line
    libbpf printed meanwhile, the verifier log included.
    """

    def __init__(self, err: int, operation: str, log: str = "") -> None:
        OSError.__init__(self, err, _strerror(err))
        self.operation = operation
        self.log = log

    def __str__(self) -> str:
        hint = _last_meaningful_line(self.log)
        text = f"{self.operation}: {self.strerror}"
        return f"{text} ({hint})" if hint else text


class VerifierError(LibbpfError):
    """The kernel verifier rejected a program; ``log`` has its full log."""

    def __str__(self) -> str:
        lines = [line.strip() for line in self.log.splitlines()]
        # The verifier states its verdict on the line before its statistics.
        verdict = next((lines[i - 1] for i in range(len(lines) - 1, 0, -1) if lines[i].startswith("processed ")), "")
        text = f"{self.operation}: rejected by the verifier"
        return f"{text}: {verdict} (full log in .log)" if verdict else f"{text}: {self.strerror}"


class LibbpfPrivilegeError(LibbpfError, PrivilegeError):
    """The kernel refused a call for lack of privileges (EPERM, EACCES): no CAP_BPF, CAP_PERFMON, ..."""


class LibbpfNotSupportedError(LibbpfError, NotSupportedError):
    """The kernel lacks what a call needed: the operation (EOPNOTSUPP, ENOTSUPP) or the hook attached to (ENOENT)."""

    def __init__(self, err: int, operation: str, log: str = "") -> None:
        super().__init__(err, operation, log)
        self.feature = operation
        self.minimum_kernel = None


def libbpf_error(err: int, operation: str, log: str = "", *, attaching: bool = False) -> LibbpfError:
    """The error for a call the kernel or libbpf failed with ``err``; its class says what that means.

    ``attaching``: the call attached to a kernel hook (tracepoint, kernel function),
    where ENOENT means this kernel has no such hook.
    """
    if err in (_errno.EPERM, _errno.EACCES):
        return LibbpfPrivilegeError(err, operation, log)
    if err in (_errno.EOPNOTSUPP, _ENOTSUPP) or (attaching and err == _errno.ENOENT):
        return LibbpfNotSupportedError(err, operation, log)
    return LibbpfError(err, operation, log)


def _looks_like_verifier_log(log: str) -> bool:
    return "BEGIN PROG LOAD LOG" in log or "processed " in log or "R0 " in log


def _strerror(err: int) -> str:
    buf = ffi.new("char[]", 256)
    lib.libbpf_strerror(err, buf, 256)
    return ffi.string(buf).decode(errors="replace")


def _last_meaningful_line(log: str) -> str:
    for line in reversed(log.splitlines()):
        line = line.strip()
        if line and not line.startswith(("--", "libbpf: failed to load object", "processed ")):
            return line.removeprefix("libbpf: ")
    return ""


def _take_log() -> str:
    buf = ffi.new("char[]", 256 * 1024)
    n = lib.mw_log_take(buf, 256 * 1024)
    return ffi.unpack(buf, n).decode(errors="replace")


def set_debug_log(on: bool) -> None:
    """Also collect libbpf's debug-level lines (very verbose)."""
    lib.mw_log_set_debug(1 if on else 0)


class _Call:
    """Runs one libbpf call with a clean log and turns failures into errors."""

    def __init__(self, operation: str, *, attaching: bool = False) -> None:
        self.operation = operation
        self.attaching = attaching

    def __enter__(self) -> _Call:
        _log_lock.acquire()
        _take_log()
        return self

    def __exit__(self, *exc: object) -> None:
        _log_lock.release()

    def check(self, ret: int) -> int:
        if ret < 0:
            raise self.error(-ret)
        return ret

    def check_ptr(self, ptr: Any) -> Any:
        if ptr == ffi.NULL:
            raise self.error(ffi.errno or _errno.EINVAL)
        return ptr

    def error(self, err: int) -> LibbpfError:
        """The error for this call failing with ``err``, with what libbpf logged meanwhile."""
        return libbpf_error(err, self.operation, _take_log(), attaching=self.attaching)
