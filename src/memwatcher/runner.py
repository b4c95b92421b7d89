"""The sampling loop every periodic report shares, and how signals end a run.

``run_periodic`` calls a report's ``sample`` function every ``interval_s``
until ``count`` samples, ``duration_s`` seconds, SIGINT/SIGTERM, or the
report itself says stop. Signals only set a flag, so the loop unwinds
normally and every ``with`` block (BPF objects, links) closes. Before a
report's loop runs (importing, probing, loading), :func:`raise_on_signals`
makes SIGINT and SIGTERM unwind every ``with`` block by an exception.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["Schedule", "Stop", "raise_on_signals", "readable", "received_signal", "run_periodic", "stop_on_signals"]

# Signals whose handler raised. Python runs a handler between any two bytecodes, also in a
# __del__ method or a weakref callback (the import system runs some for every module it
# imports), and there it prints the exception and drops it: the signal would be lost. Its
# number stays here for the next check (memwatcher.__main__ after the imports, stop_on_signals).
_received: list[int] = []


def _raise_for(signum: int, frame: object) -> None:
    _received.append(signum)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def _unraisable(unraisable: Any) -> None:
    if _received and issubclass(unraisable.exc_type, (KeyboardInterrupt, SystemExit)):
        return  # a signal's exception, dropped where it was raised: noted in _received, not printed
    sys.__unraisablehook__(unraisable)


def raise_on_signals() -> None:
    """SIGINT raises KeyboardInterrupt and SIGTERM ``SystemExit(143)`` (main thread, until a report's own handler).

    Either exception unwinds every ``with`` block, closing whatever was
    loaded; the command exits 130 or 143, what a shell shows for a death by
    that signal. An inherited SIG_IGN for SIGINT (a background job) stays.
    """
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _raise_for)
    signal.signal(signal.SIGTERM, _raise_for)
    sys.unraisablehook = _unraisable


def received_signal() -> int | None:
    """The first SIGINT or SIGTERM that :func:`raise_on_signals` turned into an exception, if any."""
    return _received[0] if _received else None


@dataclass(frozen=True)
class Schedule:
    """When to sample: every ``interval_s``, at most ``count`` times / ``duration_s`` seconds."""

    interval_s: float = 1.0
    duration_s: float | None = None
    count: int | None = None


class Stop:
    """A request to stop, set by SIGINT/SIGTERM or by any thread; never cleared.

    Used like ``threading.Event`` (``set``, ``is_set``, ``wait``), which a
    signal handler must not set: Python runs the handler in the main thread
    between two bytecodes, possibly while that thread holds the event's own
    lock inside ``Event.wait()``, and ``Event.set()`` then waits for it
    forever. Here ``set()`` in the main thread takes no lock: it raises a
    flag and writes a byte to a pipe. ``wait()`` sleeps in ``select()`` on
    that pipe, which :func:`stop_on_signals` also hands to the C-level signal
    handler (``signal.set_wakeup_fd``), so a signal that arrives just before
    the sleep begins still ends it. ``wait()`` is for the main thread and
    the ``stop_on_signals`` block; ``set()`` and ``is_set()`` work anywhere,
    at any time.
    """

    def __init__(self) -> None:
        self._flag = False
        fds = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._read: int | None = fds[0]
        self._write: int | None = fds[1]
        self._lock = threading.Lock()  # other threads' set() against close(): never a reused fd

    def set(self) -> None:
        self._flag = True
        if threading.current_thread() is threading.main_thread():
            self._wake()  # perhaps in a signal handler: no lock (close() runs in this thread too)
        else:
            with self._lock:
                self._wake()

    def _wake(self) -> None:
        fd = self._write
        if fd is not None:
            try:
                os.write(fd, b"\0")
            except BlockingIOError:
                pass  # full: a waiter wakes anyway

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until set or until ``timeout`` seconds have passed; returns :meth:`is_set`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = self._read
        while not self._flag and fd is not None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            if readable([fd], left):
                _drain(fd)  # signal numbers from the wakeup fd; the flag says whether to stop
        return self._flag

    def wait_readable(self, fds: list[int], timeout: float | None) -> set[int]:
        """Sleep until set, until one of ``fds`` is readable, or ``timeout`` seconds; returns the readable ``fds``.

        For a loop that also waits for input (the dashboard's keys); like
        :meth:`wait`, for the main thread.
        """
        fd = self._read
        if self._flag or fd is None:
            return set()
        ready = readable([fd, *fds], timeout)
        if fd in ready:
            _drain(fd)
        return ready - {fd}

    def close(self) -> None:
        """Release the pipe; the flag keeps working."""
        with self._lock:
            fds, self._read, self._write = (self._read, self._write), None, None
        for fd in fds:
            if fd is not None:
                os.close(fd)


def readable(fds: list[int], timeout_s: float | None) -> set[int]:
    """Which of ``fds`` are readable (or hung up) within ``timeout_s``; poll(2): any fd number."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    timeout_ms = None if timeout_s is None else max(0, int(timeout_s * 1000 + 0.999))
    return {fd for fd, _ in poller.poll(timeout_ms)}


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


@contextmanager
def stop_on_signals() -> Iterator[Stop]:
    """A :class:`Stop` set by SIGINT or SIGTERM while the block runs (handlers in the main thread only).

    It is set from the start if an earlier signal's exception was dropped (see :func:`received_signal`).
    """
    stop = Stop()
    if received_signal() is not None:
        stop.set()
    if threading.current_thread() is not threading.main_thread():
        try:
            yield stop
        finally:
            stop.close()
        return

    def handler(signum: int, frame: object) -> None:
        stop.set()

    previous_fd = signal.set_wakeup_fd(stop._write, warn_on_full_buffer=False)
    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield stop
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
    finally:
        signal.set_wakeup_fd(previous_fd)
        stop.close()


def run_periodic(
    schedule: Schedule,
    sample: Callable[[], bool | None],
    stop: Stop | threading.Event,
    wait: Callable[[float], object] | None = None,
) -> int:
    """Call ``sample`` on the schedule; it returns False to end early. Returns samples taken.

    When ``duration_s`` expires or a signal arrives between ticks, one last
    (partial-interval) sample is taken so that nothing measured is dropped.
    ``wait(seconds)`` sleeps between samples (default ``stop.wait``): one that
    does other work meanwhile (the dashboard reads keys) returns when the time
    is up or ``stop`` is set.
    """
    wait = wait or stop.wait
    start = time.monotonic()
    deadline = start + schedule.duration_s if schedule.duration_s is not None else None
    taken = 0
    next_at = start + schedule.interval_s
    while True:
        wake = next_at if deadline is None else min(next_at, deadline)
        wait(max(0.0, wake - time.monotonic()))
        final = stop.is_set() or (deadline is not None and time.monotonic() >= deadline)
        keep_going = sample()
        taken += 1
        next_at += schedule.interval_s
        if final or keep_going is False or (schedule.count is not None and taken >= schedule.count):
            return taken
