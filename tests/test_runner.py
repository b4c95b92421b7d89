"""The shared sampling loop: count, duration, signals, early stop."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time

from memwatcher.runner import Schedule, run_periodic, stop_on_signals


def test_count_limits_samples() -> None:
    calls = []
    taken = run_periodic(Schedule(interval_s=0.01, count=3), lambda: calls.append(time.monotonic()), threading.Event())
    assert taken == 3 == len(calls)
    assert calls == sorted(calls)


def test_duration_ends_with_a_final_partial_sample() -> None:
    start = time.monotonic()
    taken = run_periodic(Schedule(interval_s=0.2, duration_s=0.5), lambda: None, threading.Event())
    elapsed = time.monotonic() - start
    assert taken == 3  # at 0.2 s, 0.4 s and the final one at 0.5 s
    assert 0.45 <= elapsed < 1.5


def test_sample_returning_false_stops() -> None:
    results = iter([True, False, True])
    assert run_periodic(Schedule(interval_s=0.01, count=10), lambda: next(results), threading.Event()) == 2


def test_sigterm_stops_after_one_final_sample() -> None:
    with stop_on_signals() as stop:
        threading.Timer(0.15, os.kill, (os.getpid(), signal.SIGTERM)).start()
        start = time.monotonic()
        taken = run_periodic(Schedule(interval_s=10.0), lambda: None, stop)
    assert taken == 1
    assert time.monotonic() - start < 5
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_wait_readable_returns_for_input_a_signal_or_the_timeout() -> None:
    read_end, write_end = os.pipe()
    try:
        with stop_on_signals() as stop:
            start = time.monotonic()
            assert stop.wait_readable([read_end], 0.1) == set()
            assert time.monotonic() - start >= 0.09
            os.write(write_end, b"q")
            assert stop.wait_readable([read_end], 10) == {read_end}
            os.read(read_end, 1)
            threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGTERM)).start()
            start = time.monotonic()
            while not stop.is_set() and time.monotonic() - start < 5:
                stop.wait_readable([read_end], 10)
            assert stop.is_set() and time.monotonic() - start < 5
            assert stop.wait_readable([read_end], 10) == set()  # once set, it no longer sleeps
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_custom_wait_sleeps_between_samples() -> None:
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    taken = run_periodic(Schedule(interval_s=0.05, count=3), lambda: None, threading.Event(), wait=wait)
    assert taken == 3 and len(waits) == 3
    assert all(0 <= s <= 0.05 for s in waits)


# A handler sets the flag at random moments of wait(), thousands of times. With
# threading.Event in place of Stop this hangs within ~100 rounds: the handler's
# Event.set() waits for the lock its own thread holds inside Event.wait().
_HANDLER_SETS_DURING_WAIT = """
import random, signal, time
from memwatcher.runner import Stop

rounds = 0
end = time.monotonic() + 2
while time.monotonic() < end:
    stop = Stop()
    signal.signal(signal.SIGALRM, lambda signum, frame: stop.set())
    signal.setitimer(signal.ITIMER_REAL, random.uniform(1e-5, 3e-4))
    while not stop.wait(5e-5):
        pass
    stop.close()
    rounds += 1
print(rounds)
"""


def test_signal_handler_setting_stop_during_wait_never_deadlocks() -> None:
    proc = subprocess.run([sys.executable, "-c", _HANDLER_SETS_DURING_WAIT], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) > 500


def test_stop_set_by_another_thread_wakes_an_unbounded_wait() -> None:
    with stop_on_signals() as stop:
        threading.Timer(0.1, stop.set).start()
        start = time.monotonic()
        assert stop.wait() is True
    assert time.monotonic() - start < 5
    stop.set()  # after the block: the pipe is closed, the flag still works
    assert stop.is_set() and stop.wait(10) is True


def test_signals_and_wakeup_fd_are_restored() -> None:
    before = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(before)
    with stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C: sets the flag, raises nothing
        assert stop.wait(5) is True
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.set_wakeup_fd(before) == before


# SIGTERM arrives while Python runs a weakref callback (as the import system does for every
# module): the handler's SystemExit is dropped there. It must be neither printed nor lost.
_DROPPED_IN_CALLBACK = """
import os, signal, weakref
from memwatcher.runner import raise_on_signals, received_signal, stop_on_signals

raise_on_signals()
class Thing:
    pass
thing = Thing()
ref = weakref.ref(thing, lambda ref: os.kill(os.getpid(), signal.SIGTERM))
del thing
print("still running after", received_signal())
with stop_on_signals() as stop:
    print("stop set:", stop.is_set())
"""


def test_signal_exception_dropped_by_python_is_noted_not_printed() -> None:
    proc = subprocess.run([sys.executable, "-c", _DROPPED_IN_CALLBACK], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"still running after {int(signal.SIGTERM)}", "stop set: True"]
    assert proc.stderr == ""


def test_raise_on_signals_keeps_an_inherited_ignored_sigint() -> None:
    script = "from memwatcher.runner import raise_on_signals; import signal; raise_on_signals(); "
    script += "print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"
    # As a shell starts a background job: SIGINT ignored, which exec keeps.
    shell = f"trap '' INT; exec {shlex.quote(sys.executable)} -c {shlex.quote(script)}"
    proc = subprocess.run(["sh", "-c", shell], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "True", proc.stderr
