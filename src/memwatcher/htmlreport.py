"""memleak's JSON reports as one self-contained HTML page.

The page (``assets/report.html``, ``.css``, ``.js``, all inlined) shows an
icicle graph of outstanding memory by call stack, outstanding memory over
time, a table of stacks with their trends, and the run's metadata. It reads
the objects memleak prints with ``--output json``, one per interval:
:class:`LeakHistory` takes them one at a time (from ``memleak --html`` or a
saved JSON lines file), keeps the over-time series of the total and of the
largest stacks, and the last object whole.

Data goes into the page as JSON in a ``<script type="application/json">``
with ``<``, ``>`` and ``&`` written as ``\\u`` escapes, so no symbol or path
can end the script element. This module knows JSON, not BPF.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from .errors import MemwatcherError
from .output import write_atomically
from .symbolize import frame_label

__all__ = ["LeakHistory", "ReportError", "history_from_jsonl", "write_report"]

# Stacks listed per interval in the over-time series, and stacks drawn in the plot.
SERIES_STACKS = 50
PLOTTED_STACKS = 6
# Points kept per series: past twice this, every other one goes and the rest are kept at half the rate.
MAX_POINTS = 1000


class ReportError(MemwatcherError):
    """No page can be made: the input is not memleak's JSON output, or the page cannot be written."""


def _is_report(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("stacks"), list)
        and isinstance(obj.get("total_outstanding_bytes"), int)
        and isinstance(obj.get("total_outstanding_allocs"), int)
        and all(
            isinstance(s, dict)
            and isinstance(s.get("outstanding_bytes"), int)
            and isinstance(s.get("outstanding_allocs"), int)
            and isinstance(s.get("frames", []), list)
            for s in obj["stacks"]
        )
    )


class LeakHistory:
    """memleak's reports, interval by interval: the series over time and the latest report.

    Memory is bounded whatever the run's length: the largest
    :data:`SERIES_STACKS` stacks of each interval, at most ``2 * MAX_POINTS``
    intervals (older ones thinned evenly).
    """

    def __init__(self) -> None:
        self.last: dict[str, Any] | None = None
        self.intervals = 0
        self._points: list[tuple[float, int, int, dict[str, int]]] = []
        self._stride = 1  # one read in this many is kept
        self._last_kept = False
        self._first_time: datetime | None = None

    def add(self, report: Mapping[str, Any]) -> None:
        """Take one interval's report (``memwatcher.tools.memleak.report_json``'s shape)."""
        if not _is_report(report):
            raise ReportError("not a memleak JSON report (no stacks and outstanding totals)")
        self.last = dict(report)
        self.intervals += 1
        self._last_kept = (self.intervals - 1) % self._stride == 0
        if self._last_kept:
            self._points.append(self._point(report))
            if len(self._points) >= 2 * MAX_POINTS:
                self._points = self._points[::2]  # the latest goes too: page_data adds the last report back
                self._stride *= 2
                self._last_kept = False

    def _point(self, report: Mapping[str, Any]) -> tuple[float, int, int, dict[str, int]]:
        stacks = sorted(report["stacks"], key=lambda s: -s["outstanding_bytes"])[:SERIES_STACKS]
        levels = {str(s.get("stack_id")): s["outstanding_bytes"] for s in stacks}
        return self._seconds(report), report["total_outstanding_bytes"], report["total_outstanding_allocs"], levels

    def _seconds(self, report: Mapping[str, Any]) -> float:
        """Seconds since tracing began: ``traced_s``, else from the ``time`` stamps (older output)."""
        if isinstance(report.get("traced_s"), (int, float)):
            return float(report["traced_s"])
        try:
            stamp = datetime.fromisoformat(str(report.get("time")))
        except ValueError:
            return float(self.intervals - 1)
        if self._first_time is None:
            self._first_time = stamp
        return (stamp - self._first_time).total_seconds()

    def page_data(self) -> dict[str, Any]:
        """What the page's script draws: frames and stacks in compact arrays, series, metadata."""
        if self.last is None:
            raise ReportError("no memleak report in the input")
        last = self.last
        points = self._points if self._last_kept else [*self._points, self._point(last)]
        paths: dict[str, int] = {}
        frames: dict[tuple[Any, ...], int] = {}

        def path_index(path: str | None) -> int:
            return -1 if not path else paths.setdefault(path, len(paths))

        def frame_index(frame: Mapping[str, Any]) -> int:
            key = (
                _frame_name(frame),
                path_index(frame.get("file")),
                int(frame.get("line") or 0),
                path_index(frame.get("module")),
                1 if frame.get("inlined") else 0,
            )
            return frames.setdefault(key, len(frames))

        stacks = []
        for s in last["stacks"]:
            stacks.append(
                [
                    str(s.get("stack_id")),
                    s["outstanding_bytes"],
                    s["outstanding_allocs"],
                    s.get("oldest_age_s"),
                    s.get("verdict"),
                    s.get("growth_bytes_per_s"),
                    s.get("growing_for_s"),
                    [frame_index(f) for f in s.get("frames") or [] if isinstance(f, dict)],
                    s.get("allocated_bytes"),  # since tracing began (None in JSON from before they were kept)
                    s.get("freed_bytes"),
                ]
            )
        # Plotted: the stacks that held the most at any recorded time (a freed one too).
        peak: dict[str, int] = {}
        for _, _, _, levels in points:
            for sid, level in levels.items():
                peak[sid] = max(peak.get(sid, 0), level)
        known = {row[0] for row in stacks}
        plotted = [sid for sid in sorted(peak, key=lambda k: -peak[k]) if sid in known and peak[sid]][:PLOTTED_STACKS]
        meta = {k: v for k, v in last.items() if k not in ("stacks", "allocations")}
        meta["intervals"] = self.intervals
        return {
            "meta": meta,
            "paths": list(paths),
            "frames": [list(k) for k in frames],
            "stacks": stacks,
            "series": {
                "t_s": [p[0] for p in points],
                "bytes": [p[1] for p in points],
                "allocs": [p[2] for p in points],
                # A stack not among an interval's listed ones: null (unknown, drawn as a gap).
                "stacks": [[sid, [p[3].get(sid) for p in points]] for sid in plotted],
            },
        }

    def to_html(self) -> str:
        """The whole page, scripts and styles inline."""
        assets = resources.files(__package__) / "assets"
        page = Template((assets / "report.html").read_text(encoding="utf-8"))
        try:
            data = json.dumps(self.page_data(), separators=(",", ":"), allow_nan=False)
        except ValueError:  # JSON.parse in the page would refuse the file
            raise ReportError("the report holds NaN or an infinity, which JSON cannot carry") from None
        # Inside <script>, "</script" or "<!--" in a string would end or change the element.
        data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        target = str(self.last.get("target", "")) if self.last else ""
        return page.substitute(
            title=_html_text(f"memleak {target}".strip()),
            style=(assets / "report.css").read_text(encoding="utf-8"),
            script=(assets / "report.js").read_text(encoding="utf-8"),
            data=data,
        )


def _html_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _frame_name(frame: Mapping[str, Any]) -> str:
    """The frame's name by symbolize's rule, from memleak's JSON fields."""
    offset = frame.get("module_offset")
    return frame_label(
        frame.get("symbol") or None,
        frame.get("module") or None,
        offset if isinstance(offset, int) else None,
        int(frame.get("address") or 0),
    )


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def history_from_jsonl(lines: Iterable[str], source: str = "input") -> LeakHistory:
    """A history from memleak's JSON lines (``source`` names the input in errors)."""
    history = LeakHistory()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_constant=_refuse_constant)
        except ValueError as e:
            raise ReportError(f"{source} line {number} is not JSON ({e})") from None
        try:
            history.add(obj)
        except ReportError as e:
            raise ReportError(f"{source} line {number} is {e}") from None
    if history.last is None:
        raise ReportError(f"{source} holds no memleak report (make one with memwatcher memleak --output json)")
    return history


def write_report(history: LeakHistory, path: Path) -> int:
    """Write the page to ``path`` (replaced in one step); returns its size in bytes."""
    data = history.to_html().encode("utf-8")
    try:
        write_atomically(path, data)
    except OSError as e:  # checked before the trace, but a disk fills up and directories go
        raise ReportError(f"cannot write {path}: {e.strerror}") from None
    return len(data)
