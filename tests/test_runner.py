"""The shared sampling loop: count, duration, signals, early stop."""

from __future__ import annotations

import os
import signal
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
