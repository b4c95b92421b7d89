"""The privilege model of the README, checked by running every command as another user (issue 16).

- No capabilities: every report exits 77 with one line naming CAP_BPF and
  CAP_PERFMON; ``doctor`` still diagnoses (exit 1, "needs root or ...").
- CAP_BPF + CAP_PERFMON, not root: procstat, sysstat, paf, pr, oom, top and
  export run (tracefs, root-only, is never needed). ``memleak --kernel`` runs
  if this user can read kallsyms addresses, else exits 77 naming CAP_SYSLOG;
  ``memleak --command`` runs where the kernel grants uprobes to CAP_PERFMON,
  else exits 77 naming CAP_SYS_ADMIN.

Never a traceback. The user is uid/gid 65534 (nobody) through setpriv(1);
the tests skip where that user cannot run this interpreter (a checkout under
a private home directory).
"""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys

import pytest

from conftest import MEMWATCHER, build_test_object, free_port, requires_bpf, setpriv_nobody

pytestmark = requires_bpf

TIMEOUT_S = 90
_BAD_STDERR = ("Traceback", "Exception ignored", "Fatal Python error")


# Each report with arguments that end it by itself within seconds.
REPORTS = {
    "procstat": ["procstat", "--count", "1", "--top", "3"],
    "sysstat": ["sysstat", "--count", "1"],
    "paf": ["paf", "--count", "1"],
    "pr": ["pr", "--count", "1"],
    "oom": ["oom", "--duration", "1"],
    "top": ["top", "--count", "1"],
    "export": ["export", "--listen", f"127.0.0.1:{free_port()}", "--duration", "1"],
    "memleak --kernel": ["memleak", "--kernel", "--duration", "1"],
    "memleak --command": ["memleak", "--command", "true", "--duration", "5"],
}


def _as_nobody(args: list[str], caps: bool) -> subprocess.CompletedProcess[str]:
    cmd = [*setpriv_nobody(("bpf", "perfmon") if caps else ()), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, cwd="/")


@pytest.fixture(scope="module", autouse=True)
def _nobody_can_run_us() -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    probe = _as_nobody([sys.executable, "-c", "import memwatcher"], caps=False)
    if probe.returncode != 0:
        pytest.skip(f"uid 65534 cannot run {sys.executable}: {probe.stderr.strip()[-200:]}")


def _kallsyms_readable_with_bpf_caps() -> bool:
    """The oracle for memleak --kernel: does that user see kernel addresses?"""
    lines = _as_nobody(["head", "-n", "50", "/proc/kallsyms"], caps=True).stdout.splitlines()
    return any(line.split()[0].strip("0") for line in lines if line.strip())


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert not any(bad in proc.stderr for bad in _BAD_STDERR), proc.stderr
    assert lines, "no error message"
    return lines[-1]


@pytest.mark.parametrize("report", [*REPORTS, "doctor"])
def test_without_capabilities_every_command_says_what_it_needs(report: str) -> None:
    args = REPORTS.get(report, ["doctor"])
    proc = _as_nobody([*MEMWATCHER, *args], caps=False)
    if report == "doctor":
        assert proc.returncode == 1, proc.stderr
        assert "needs root or CAP_BPF+CAP_PERFMON" in proc.stdout
        assert not any(bad in proc.stderr for bad in _BAD_STDERR), proc.stderr
        return
    assert proc.returncode == 77, (proc.returncode, proc.stderr)
    line = _one_line_error(proc)
    assert "CAP_BPF" in line and "CAP_PERFMON" in line, line
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("report", ["procstat", "sysstat", "paf", "pr", "oom", "top", "export"])
def test_bpf_and_perfmon_are_enough_for_the_reports(report: str) -> None:
    proc = _as_nobody([*MEMWATCHER, *REPORTS[report]], caps=True)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert not any(bad in proc.stderr for bad in _BAD_STDERR), proc.stderr
    assert proc.stdout.strip() or report in ("export",), "no output"


@pytest.mark.parametrize("caps", [False, True])
def test_cgroups_needs_no_bpf_and_counts_stalls_with_it(caps: bool) -> None:
    proc = _as_nobody([*MEMWATCHER, "cgroups", "--count", "1", "--depth", "1", "-o", "json"], caps=caps)
    assert proc.returncode == 0, proc.stderr
    assert not any(bad in proc.stderr for bad in _BAD_STDERR), proc.stderr
    row = json.loads(proc.stdout.splitlines()[0])
    if caps:
        assert isinstance(row["memcg_reclaim_stalls"], int) and isinstance(row["direct_reclaim_stall_ns"], int)
    else:  # the files are read; what BPF would add is null, and said so once
        assert row["memcg_reclaim_stalls"] is None and row["current_bytes"] > 0
        line = _one_line_error(proc)
        assert "no reclaim stalls" in line and "CAP_BPF" in line, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_doctor_with_bpf_and_perfmon() -> None:
    proc = _as_nobody([*MEMWATCHER, "doctor", "--output", "json"], caps=True)
    assert not any(bad in proc.stderr for bad in _BAD_STDERR), proc.stderr
    diagnosis = json.loads(proc.stdout)
    assert diagnosis["checks"]["privileges"] == {"ok": True, "detail": "CAP_BPF+CAP_PERFMON"}
    for report in ("procstat", "sysstat", "paf", "pr", "oom", "memleak"):
        assert diagnosis["reports"][report]["runnable"], diagnosis["reports"][report]


def test_memleak_kernel_needs_kernel_symbols() -> None:
    proc = _as_nobody([*MEMWATCHER, *REPORTS["memleak --kernel"]], caps=True)
    if _kallsyms_readable_with_bpf_caps():
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert not any(bad in proc.stderr for bad in _BAD_STDERR), proc.stderr
    else:
        assert proc.returncode == 77, (proc.returncode, proc.stderr)
        assert "CAP_SYSLOG" in _one_line_error(proc)


def test_memleak_of_a_command_runs_or_names_cap_sys_admin() -> None:
    proc = _as_nobody([*MEMWATCHER, *REPORTS["memleak --command"]], caps=True)
    if proc.returncode == 77:
        assert "CAP_SYS_ADMIN" in _one_line_error(proc), proc.stderr
    else:
        assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
        assert "command exited with status 0" in proc.stderr
        assert not any(bad in proc.stderr for bad in _BAD_STDERR), proc.stderr


# Loads an object as told, bypassing every pre-check, and prints what the binding raised.
LOAD_OBJECT = """
import sys
from memwatcher.libbpf import BPFObject
try:
    with BPFObject.open(sys.argv[1]) as obj:
        obj.load()
except Exception as e:
    print(*(c.__name__ for c in type(e).__mro__), e.errno)
"""


def test_a_load_the_kernel_refuses_is_a_privilege_error() -> None:
    proc = _as_nobody([sys.executable, "-c", LOAD_OBJECT, str(build_test_object("trigger"))], caps=False)
    assert proc.returncode == 0, proc.stderr
    *classes, err = proc.stdout.split()
    assert classes[0] == "LibbpfPrivilegeError", proc.stdout
    assert {"LibbpfError", "PrivilegeError"} <= set(classes), proc.stdout
    assert int(err) == errno.EPERM


# The CLI without kernel.require_bpf(), the pre-check that names the capabilities.
WITHOUT_PRE_CHECK = """
import sys
from memwatcher import cli, kernel
kernel.require_bpf = lambda: None
sys.argv = ["memwatcher", *sys.argv[1:]]
cli.main()
"""


@pytest.mark.parametrize("report", ["procstat", "sysstat", "paf", "pr", "oom"])
def test_exit_77_comes_from_the_kernel_refusal_too(report: str) -> None:
    proc = _as_nobody([sys.executable, "-c", WITHOUT_PRE_CHECK, *REPORTS[report]], caps=False)
    assert proc.returncode == 77, (proc.returncode, proc.stderr)
    assert "Operation not permitted" in _one_line_error(proc)
