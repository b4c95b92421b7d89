"""Command-line options every report spells the same way."""

from __future__ import annotations

from typing import Annotated

import typer

from .output import OutputFormat
from .runner import Schedule

__all__ = ["Count", "Duration", "Interval", "Output", "OutputFormat", "schedule"]

Interval = Annotated[float, typer.Option("--interval", "-i", min=0.01, help="Seconds between samples.")]
Duration = Annotated[float | None, typer.Option("--duration", "-d", min=0.0, help="Stop after this many seconds.")]
Count = Annotated[int | None, typer.Option("--count", "-c", min=1, help="Stop after this many samples.")]
Output = Annotated[OutputFormat, typer.Option("--output", "-o", help="table, json (one object per line) or csv.")]


def schedule(interval: float, duration: float | None, count: int | None) -> Schedule:
    return Schedule(interval_s=interval, duration_s=duration, count=count)
