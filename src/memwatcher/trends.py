"""Which series keep growing: a bounded history per key and a verdict on each.

A report observes a level per key at each sample (memleak: the outstanding
bytes of each call stack). The last ``window`` samples of each key are kept;
from them a key is judged:

* ``freed``: it held memory in the window and holds none now;
* ``growing``: over the last ``recent`` samples it rose steadily: a straight
  line fitted by least squares rises (by at least ``min_rise``) and explains
  at least half of the samples' variance (R² >= 0.5; a sawtooth around a
  level does not);
* ``stable``: anything else, e.g. a pool or a cache that allocates and frees
  at the same rate once warm.

For a growing key, ``growth_per_s`` is the least-squares slope over the
current run of non-decreasing samples (the whole window's when the series
never dipped; the recent samples' when it dipped among them) and
``growing_for_s`` how long that run has lasted; both are 0 for the other
verdicts. A key that held nothing for a whole window is
forgotten, so memory stays bounded by keys x ``window``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

__all__ = ["Trend", "TrendTracker"]

VERDICTS = ("growing", "stable", "freed")


@dataclass(frozen=True)
class Trend:
    verdict: str  # one of VERDICTS
    growth_per_s: float  # units of the level per second (memleak: bytes/s)
    growing_for_s: float


def _fit(points: list[tuple[float, int]]) -> tuple[float, float]:
    """(slope, R²) of the least-squares line through (t, value) points; (0, 0) when flat or degenerate."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var_t = sum((t - mean_t) ** 2 for t, _ in points)
    var_v = sum((v - mean_v) ** 2 for _, v in points)
    if n < 2 or var_t == 0 or var_v == 0:
        return 0.0, 0.0
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var_t, cov * cov / (var_t * var_v)


_MIN_R2 = 0.5


class TrendTracker:
    """Levels per key at each observed time, the last ``window`` samples of each."""

    def __init__(self, window: int = 60, recent: int = 5) -> None:
        if window < 2 or not 2 <= recent <= window:
            raise ValueError("need window >= recent >= 2")
        self.window = window
        self.recent = recent
        self._series: dict[Hashable, deque[tuple[float, int]]] = {}

    def observe(self, t_s: float, levels: Mapping[Hashable, int]) -> None:
        """Record the level of every key at ``t_s`` (seconds); a known key not in ``levels`` is at 0."""
        for key, level in levels.items():
            self._series.setdefault(key, deque(maxlen=self.window)).append((t_s, level))
        for key in [k for k in self._series if k not in levels]:
            series = self._series[key]
            series.append((t_s, 0))
            if all(v == 0 for _, v in series) and len(series) == self.window:
                del self._series[key]

    def keys(self) -> list[Hashable]:
        """The keys with a history (levels seen within the window)."""
        return list(self._series)

    def trend(self, key: Hashable, min_rise: float = 0.0) -> Trend | None:
        """The verdict on ``key``, or None before it has two samples.

        ``min_rise``: what the fitted line must rise over the recent samples
        to be growing (memleak: two allocations' worth, so that a pool read
        between one free and the next allocation is not growing).
        """
        series = self._series.get(key)
        if series is None or len(series) < 2:
            return None
        points = list(series)
        recent = points[-self.recent :]
        if points[-1][1] == 0 and any(v > 0 for _, v in points):
            return Trend("freed", 0.0, 0.0)
        slope, r2 = _fit(recent)
        if slope <= 0 or r2 < _MIN_R2 or slope * (recent[-1][0] - recent[0][0]) < min_rise:
            return Trend("stable", 0.0, 0.0)
        start = len(points) - 1
        while start > 0 and points[start - 1][1] <= points[start][1]:
            start -= 1
        rising = points[start:]
        if len(rising) < len(recent):  # a dip within the recent samples: their fit is the rate
            rising = recent
        return Trend("growing", _fit(rising)[0], rising[-1][0] - rising[0][0])
