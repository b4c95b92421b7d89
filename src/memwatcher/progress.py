"""Progress notes on stderr for set-up steps that may take a while."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["slow_step"]


@contextmanager
def slow_step(message: str, after_s: float = 1.0) -> Iterator[None]:
    """Print ``memwatcher: <message>`` on stderr if the block runs longer than ``after_s``."""
    timer = threading.Timer(after_s, lambda: print(f"memwatcher: {message}", file=sys.stderr, flush=True))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
