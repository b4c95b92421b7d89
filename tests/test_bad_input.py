"""Bad input to every command: one line naming the problem and the right exit status, never a traceback.

Usage errors (exit 2) are caught before anything is loaded; runtime ones
(1: no such process, a zombie, a kernel thread, a file that is no BTF; 126/127:
a --command that cannot run, as a shell says; 77: a kernel feature missing)
after the privilege check, so those need BPF. Each case is the command line,
the exit status and a fragment of the message (issue 16).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import requires_bpf

MEMWATCHER = [sys.executable, "-m", "memwatcher"]
_BAD_STDERR = ("Traceback", "Exception ignored", "Fatal Python error")

USAGE = [
    (["no-such-report"], "No such command"),
    (["pr", "--bogus"], "No such option"),
    (["sysstat", "--interval", "0"], "--interval"),
    (["sysstat", "--interval", "1e10"], "--interval"),
    (["procstat", "--interval", "inf"], "--interval"),
    (["paf", "--duration", "1e300"], "--duration"),
    (["sysstat", "--output", "xml"], "--output"),
    (["sysstat", "1", "2", "3"], "extra argument"),
    (["procstat", "--sort", "nope"], "--sort"),
    (["procstat", "--max-processes", str(2**32)], "--max-processes"),
    (["oom", "--count", "0"], "--count"),
    (["top", "--interval", "0"], "--interval"),
    (["export", "--max-processes", str(2**32)], "--max-processes"),
    (["export", "--listen", "garbage"], "--listen"),
    (["export", "--listen", "127.0.0.1:99999"], "out of range"),
    (["memleak"], "give one of --pid, --command or --kernel"),
    (["memleak", "--percpu", "--pid", "1"], "--percpu applies to --kernel"),
    (["memleak", "--kernel", "--max-size", str(2**64)], "--max-size"),
    (["memleak", "--kernel", "--max-allocs", str(2**32)], "--max-allocs"),
    (["memleak", "--kernel", "--min-age", "1e300"], "--min-age"),
    (["memleak", "--kernel", "--min-size", "100", "--max-size", "10"], "below --min-size"),
    (["memleak", "--command", 'echo "unbalanced'], "No closing quotation"),
    (["memleak", "--command", "  "], "the command is empty"),
    (["memleak", "--kernel", "-f", "folded", "--file", "{directory}"], "is a directory"),
    (["memleak", "--kernel", "-f", "pprof", "--file", "{directory}/missing/leaks.pb.gz"], "does not exist"),
    (["memleak", "--kernel", "-f", "folded", "--file", "/proc/version"], "cannot write"),
    (["doctor", "--btf", "/nonexistent.btf"], "no such file"),
]

RUNTIME = [
    (["procstat", "--pid", "{no_such_pid}", "--count", "1"], 1, "no process with pid"),
    (["paf", "--pid", "{no_such_pid}", "--count", "1"], 1, "no process with pid"),
    (["memleak", "--pid", "{no_such_pid}"], 1, "no process with pid"),
    (["memleak", "--pid", "{zombie}"], 1, "zombie"),
    (["memleak", "--pid", "2"], 1, "kernel thread"),  # kthreadd
    (["memleak", "--command", "no-such-command-memwatcher"], 127, "command not found"),
    (["memleak", "--command", "/etc/passwd"], 126, "permission denied"),
    (["memleak", "--command", "{directory}"], 126, "is a directory"),
    (["doctor", "--btf", "/etc/passwd"], 1, "parse BTF"),
    (["export", "--listen", "192.0.2.1:9464", "--duration", "1"], 1, "cannot listen"),  # TEST-NET-1: not ours
]


@pytest.fixture(scope="module")
def values(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """What the placeholders of the tables stand for; the zombie lives as long as the module."""
    parent = subprocess.Popen(
        [sys.executable, "-c", "import os, time\nif os.fork() == 0: os._exit(0)\ntime.sleep(600)"],
    )
    zombie = ""
    for _ in range(200):
        children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
        zombie = children.read_text().split()[0] if children.exists() and children.read_text().split() else ""
        if zombie and "State:\tZ" in Path(f"/proc/{zombie}/status").read_text():
            break
        time.sleep(0.05)
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    no_such_pid = next(p for p in range(pid_max - 1, 1, -1) if not Path(f"/proc/{p}").exists())
    yield {"directory": str(tmp_path_factory.mktemp("bad-input")), "zombie": zombie, "no_such_pid": str(no_such_pid)}
    parent.kill()
    parent.wait()


def _run(args: list[str], values: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = [a.format(**values) for a in args]
    return subprocess.run([*MEMWATCHER, *argv], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def _check_message(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert not any(bad in proc.stderr for bad in _BAD_STDERR), proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith("memwatcher: ") for line in lines), proc.stderr
    assert fragment in lines[-1], proc.stderr


@pytest.mark.parametrize(("args", "fragment"), USAGE, ids=[" ".join(a) for a, _ in USAGE])
def test_usage_error(args: list[str], fragment: str, values: dict[str, str]) -> None:
    proc = _run(args, values)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    _check_message(proc, fragment)
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "--help" in proc.stderr, "a usage error points at the command's help"


@requires_bpf
@pytest.mark.parametrize(("args", "status", "fragment"), RUNTIME, ids=[" ".join(a) for a, _, _ in RUNTIME])
def test_runtime_error(args: list[str], status: int, fragment: str, values: dict[str, str]) -> None:
    if "{zombie}" in args:
        assert values["zombie"], "the test could not make a zombie"
    proc = _run(args, values)
    assert proc.returncode == status, (proc.returncode, proc.stderr)
    _check_message(proc, fragment)


@requires_bpf
def test_scan_control_without_fentry_is_77() -> None:
    from memwatcher import kernel

    if kernel.probe_feature("fentry").available:
        pytest.skip("fentry works on this kernel: pr --scan-control runs")
    proc = _run(["pr", "--scan-control", "--count", "1"], {})
    assert proc.returncode == 77, proc.stderr
    _check_message(proc, "fentry")


@requires_bpf
def test_more_pids_than_the_old_filter_held(tmp_path: Path) -> None:
    """1,100 --pid (the filter map held 1,024: E2BIG) are all followed."""
    sleepers = [subprocess.Popen(["sleep", "120"]) for _ in range(1100)]
    try:
        args = [a for p in sleepers for a in ("--pid", str(p.pid))]
        cmd = [*MEMWATCHER, "procstat", *args, "--interval", "2", "--count", "1", "--top", "2000", "--output", "json"]
        # Files, not pipes: 1,100 JSON lines would fill a pipe nobody reads until the end.
        out, err = tmp_path / "stdout", tmp_path / "stderr"
        with out.open("w") as stdout_file, err.open("w") as stderr_file:
            report = subprocess.Popen(cmd, stdout=stdout_file, stderr=stderr_file)
        # procstat sees a process when it is scheduled: stopping and continuing wakes the sleepers.
        while report.poll() is None:
            for p in sleepers:
                p.send_signal(signal.SIGSTOP)
                p.send_signal(signal.SIGCONT)
            time.sleep(0.2)
        stdout, stderr = out.read_text(), err.read_text()
        assert report.returncode == 0, stderr[-2000:]
        seen = {json.loads(line)["pid"] for line in stdout.splitlines()}
        assert seen == {p.pid for p in sleepers}
    finally:
        for p in sleepers:
            p.kill()
        for p in sleepers:
            p.wait()
