"""memwatcher's exception tree (importing it loads nothing else).

MemwatcherError
├── NotSupportedError     the kernel lacks a feature (exit 77)
├── PrivilegeError        no root / CAP_BPF + CAP_PERFMON (exit 77)
├── NoSuchProcessError    a --pid that does not exist (exit 1)
├── CommandNotFoundError  a command to start that does not exist (127) or cannot run (126)
└── libbpf.LibbpfError    a libbpf / bpf(2) call failed (exit 1), and as the errno says:
    ├── libbpf.LibbpfPrivilegeError     EPERM, EACCES: also a PrivilegeError (exit 77)
    ├── libbpf.LibbpfNotSupportedError  EOPNOTSUPP, ENOTSUPP, ENOENT attaching a kernel hook:
    │                                   also a NotSupportedError (exit 77)
    └── libbpf.VerifierError            the verifier rejected a program; .log has its log
"""

from __future__ import annotations

__all__ = ["CommandNotFoundError", "MemwatcherError", "NoSuchProcessError", "NotSupportedError", "PrivilegeError"]


class MemwatcherError(Exception):
    """Base class of every error memwatcher raises on purpose."""


class NotSupportedError(MemwatcherError):
    """The running kernel lacks a feature memwatcher needs."""

    def __init__(self, feature: str, minimum_kernel: str | None = None) -> None:
        self.feature = feature
        self.minimum_kernel = minimum_kernel
        need = f" (needs Linux >= {minimum_kernel})" if minimum_kernel else ""
        super().__init__(f"{feature} is not supported by this kernel{need}")


class PrivilegeError(MemwatcherError, PermissionError):
    """The process lacks the privileges to load BPF programs."""


class NoSuchProcessError(MemwatcherError):
    """A process the user named does not exist (or has exited)."""

    def __init__(self, pid: int, detail: str = "") -> None:
        self.pid = pid
        super().__init__(f"no process with pid {pid}" + (f" ({detail})" if detail else ""))


class CommandNotFoundError(MemwatcherError):
    """A command to start does not exist (status 127) or cannot be run (126), as a shell says."""

    def __init__(self, message: str, exit_status: int = 127) -> None:
        super().__init__(message)
        self.exit_status = exit_status
