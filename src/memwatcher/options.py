"""Command-line options every report spells the same way."""

from __future__ import annotations

from typing import Annotated

import typer

from .output import OutputFormat
from .runner import Schedule

__all__ = [
    "MAX_SECONDS",
    "PID_MAX_LIMIT",
    "U32_MAX",
    "U64_MAX",
    "Count",
    "Duration",
    "Interval",
    "Output",
    "OutputFormat",
    "schedule",
]

# Longer is a typo, and past ~1e10 s the clock arithmetic overflows.
MAX_SECONDS = 365 * 86400.0
U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1
# A table of processes larger than the kernel's pid ceiling (PID_MAX_LIMIT on 64-bit) is a typo.
PID_MAX_LIMIT = 1 << 22

Interval = Annotated[
    float, typer.Option("--interval", "-i", min=0.01, max=MAX_SECONDS, help="Seconds between samples.")
]
Duration = Annotated[
    float | None, typer.Option("--duration", "-d", min=0.0, max=MAX_SECONDS, help="Stop after this many seconds.")
]
Count = Annotated[int | None, typer.Option("--count", min=1, help="Stop after this many samples.")]
Output = Annotated[OutputFormat, typer.Option("--output", "-o", help="table, json (one object per line) or csv.")]


def schedule(interval: float, duration: float | None, count: int | None) -> Schedule:
    return Schedule(interval_s=interval, duration_s=duration, count=count)
