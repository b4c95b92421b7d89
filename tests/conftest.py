"""Shared test set-up.

Kernel tests load and attach real BPF programs; they need root (or CAP_BPF +
CAP_PERFMON) and kernel BTF. On this project's machines and in CI they run;
elsewhere they skip with the reason.
"""

from __future__ import annotations

import subprocess
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
