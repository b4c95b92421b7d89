"""The sampling loop every periodic report shares.

``run_periodic`` calls a report's ``sample`` function every ``interval_s``
until ``count`` samples, ``duration_s`` seconds, SIGINT/SIGTERM, or the
report itself says stop. Signals only set a flag, so the loop unwinds
normally and every ``with`` block (BPF objects, links) closes.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["Schedule", "run_periodic", "stop_on_signals"]


@dataclass(frozen=True)
class Schedule:
    """When to sample: every ``interval_s``, at most ``count`` times / ``duration_s`` seconds."""

    interval_s: float = 1.0
    duration_s: float | None = None
    count: int | None = None


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM while the block runs (main thread only)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_periodic(schedule: Schedule, sample: Callable[[], bool | None], stop: threading.Event) -> int:
    """Call ``sample`` on the schedule; it returns False to end early. Returns samples taken.

    When ``duration_s`` expires or a signal arrives between ticks, one last
    (partial-interval) sample is taken so that nothing measured is dropped.
    """
    start = time.monotonic()
    deadline = start + schedule.duration_s if schedule.duration_s is not None else None
    taken = 0
    next_at = start + schedule.interval_s
    while True:
        wake = next_at if deadline is None else min(next_at, deadline)
        stop.wait(max(0.0, wake - time.monotonic()))
        final = stop.is_set() or (deadline is not None and time.monotonic() >= deadline)
        keep_going = sample()
        taken += 1
        next_at += schedule.interval_s
        if final or keep_going is False or (schedule.count is not None and taken >= schedule.count):
            return taken
