"""SIGINT and SIGTERM at random points of start-up: never a crash, never a traceback (issue 16).

Each run starts the ``memwatcher`` command, waits until it handles SIGTERM
(memwatcher's entry point sets that up first; before, the interpreter
itself is starting and the signals' default actions are Python's), waits a
random delay of 0 to MAX_DELAY_S more and sends SIGINT or SIGTERM. The delays
cover importing, probing the kernel, loading, attaching and the first
samples. The seed is printed; MEMWATCHER_SIGNAL_SEED replays it and
MEMWATCHER_SIGNAL_RUNS sets the number of runs. Accepted ends:

- 0: the report's own handler was in place (it stops, prints and closes),
  or doctor had finished (with its own status, also accepted);
- 130 after SIGINT, 143 after SIGTERM (``128 + signum``, as a shell shows a
  death by that signal): the signal came while importing, probing or
  loading, and everything unwound.

Never a death by a signal (the crash was SIGSEGV: 139 in a shell), never a
traceback on stderr, never a command still running EXIT_TIMEOUT_S after
the signal.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import MEMWATCHER, requires_bpf

COMMANDS = {
    "doctor": ["doctor"],
    "paf": ["paf", "--interval", "0.5"],
    "pr": ["pr", "--interval", "0.5"],
    "procstat": ["procstat", "--interval", "0.5"],
    "sysstat": ["sysstat", "--interval", "0.5"],
}
RUNS = int(os.environ.get("MEMWATCHER_SIGNAL_RUNS", 200))
PARALLEL = 3
MAX_DELAY_S = 1.5
HANDLER_TIMEOUT_S = 10
EXIT_TIMEOUT_S = 30
# What Python prints when something went wrong (a traceback, an exception it swallowed, a crash).
_BAD_STDERR = ("Traceback", "Exception ignored", "Fatal Python error", "Segmentation fault", "core dumped")


@dataclass(frozen=True)
class Outcome:
    command: str
    signum: int
    delay_s: float  # after the command began to handle SIGTERM
    sent: bool  # False when the command had finished before
    returncode: int
    stderr: str

    def problem(self, doctor_status: int) -> str | None:
        """What went wrong, or None."""
        accepted = {0, 128 + self.signum}
        if self.command == "doctor":
            accepted.add(doctor_status)
        if self.returncode < 0:
            return f"killed by {signal.Signals(-self.returncode).name}"
        if self.returncode not in accepted:
            return f"exit status {self.returncode}"
        bad = [marker for marker in _BAD_STDERR if marker in self.stderr]
        return f"stderr has {', '.join(bad)}" if bad else None

    def __str__(self) -> str:
        what = signal.Signals(self.signum).name if self.sent else "no signal (finished before)"
        tail = "\n    ".join(self.stderr.strip().splitlines()[-40:])
        return f"{self.command}: {what} {self.delay_s:.3f} s in -> {self.returncode}\n    {tail}"


def _catches_sigterm(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0")
    return bool(int(caught, 16) >> (signal.SIGTERM - 1) & 1)


def _where(pid: int) -> str:
    """Where a process that does not end is (kernel stack, signal masks), before faulthandler's dump."""
    lines = []
    for name in ("stack", "wchan", "status"):
        try:
            text = Path(f"/proc/{pid}/{name}").read_text()
        except OSError:
            continue
        keep = [line for line in text.splitlines() if name != "status" or line.startswith(("State", "Sig", "Shd"))]
        lines.append(f"{name}: " + " | ".join(keep))
    return "\n".join(lines)


def _run_once(command: str, signum: int, delay_s: float) -> Outcome:
    proc = subprocess.Popen(
        [*MEMWATCHER, *COMMANDS[command]],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},  # SIGABRT prints every thread's Python stack
    )
    # Not reaped before the kill, so the pid cannot have been reused.
    give_up = time.monotonic() + HANDLER_TIMEOUT_S
    while proc.poll() is None and not _catches_sigterm(proc.pid):
        if time.monotonic() > give_up:
            proc.kill()
            note = f"(no SIGTERM handler {HANDLER_TIMEOUT_S} s after start)"
            return Outcome(command, signum, delay_s, False, proc.wait(), note)
        time.sleep(0.002)
    time.sleep(delay_s)
    sent = proc.poll() is None
    if sent:
        os.kill(proc.pid, signum)
    try:
        _, err = proc.communicate(timeout=EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        where = _where(proc.pid)
        proc.send_signal(signal.SIGABRT)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        err += f"\n(still running {EXIT_TIMEOUT_S} s after the signal)\n{where}".encode()
    return Outcome(command, signum, delay_s, sent, proc.returncode, err.decode(errors="replace"))


@contextmanager
def _children_get_default_signals() -> Iterator[None]:
    """A child inherits an ignored SIGINT (tests run as a shell's background job); a caught one resets on exec."""
    previous = {}
    for s in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(s) == signal.SIG_IGN:
            previous[s] = signal.signal(s, signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@requires_bpf
def test_signals_during_startup_never_crash() -> None:
    seed = int(os.environ.get("MEMWATCHER_SIGNAL_SEED", time.time_ns() % 2**32))
    print(f"MEMWATCHER_SIGNAL_SEED={seed}: {RUNS} runs, {PARALLEL} at a time, {' '.join(MEMWATCHER)}")
    rng = random.Random(seed)
    names = sorted(COMMANDS)
    plan = [
        (names[i % len(names)], rng.choice((signal.SIGINT, signal.SIGTERM)), rng.uniform(0.0, MAX_DELAY_S))
        for i in range(RUNS)
    ]
    rng.shuffle(plan)
    started = time.monotonic()
    with _children_get_default_signals(), ThreadPoolExecutor(PARALLEL) as pool:
        outcomes = list(pool.map(lambda run: _run_once(*run), plan))
    elapsed = time.monotonic() - started

    print(f"{len(outcomes)} runs in {elapsed:.1f} s; status: runs")
    for command in names:
        statuses = Counter(o.returncode for o in outcomes if o.command == command)
        print(f"  {command}: " + ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items())))
    doctor_status = 0
    if any(o.command == "doctor" and not o.sent for o in outcomes):  # its status when it ends by itself
        doctor_status = subprocess.run([*MEMWATCHER, "doctor"], capture_output=True, timeout=120).returncode
    failures = [(o, p) for o in outcomes if (p := o.problem(doctor_status)) is not None]
    if failures:
        kinds = Counter((o.command, p) for o, p in failures)
        summary = "\n".join(f"  {command}: {p} x{n}" for (command, p), n in sorted(kinds.items()))
        examples = "\n".join(f"{p}: {o}" for o, p in failures[:5])
        pytest.fail(f"seed {seed}: {len(failures)} of {len(outcomes)} runs went wrong\n{summary}\n{examples}")


# Imported by memwatcher.__main__._run in place of memwatcher.cli: defining the class signals the process.
_SIGNAL_IN_SET_NAME = """
import os, signal, time

class Hook:
    def __set_name__(self, owner, name):
        os.kill(os.getpid(), signal.{signame})
        time.sleep(5)  # the handler runs here, inside __set_name__

class Owner:
    hook = Hook()

def main():
    print("ran")
"""


@pytest.mark.parametrize(("signame", "status"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_inside_a_wrapping_hook_during_imports_is_still_a_signal(
    signame: str, status: int, tmp_path: Path
) -> None:
    # What CI saw once in 200 runs: SIGTERM while `platform` defined a class, so the
    # handler's SystemExit came out of __set_name__ as a RuntimeError.
    (tmp_path / "signal_in_set_name.py").write_text(_SIGNAL_IN_SET_NAME.format(signame=signame))
    run = subprocess.run(
        [sys.executable, "-c", "from memwatcher.__main__ import _run; _run('signal_in_set_name')"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert run.returncode == status, run.stderr
    assert "ran" not in run.stdout
    assert not any(bad in run.stderr for bad in _BAD_STDERR), run.stderr
