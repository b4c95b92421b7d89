"""Memory pressure (PSI): the share of time tasks stalled waiting for memory.

The kernel keeps these figures for the whole system (``/proc/pressure/memory``)
and per cgroup v2 (``memory.pressure``), in one format: a ``some`` line (at
least one task stalled) and a ``full`` line (every non-idle task stalled), each
with running averages over 10, 60 and 300 s in percent and the total stall
time in microseconds since boot. A kernel without PSI (``CONFIG_PSI=n``, or
``psi=0`` on its command line) has no such file or refuses to read it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

__all__ = ["SYSTEM_MEMORY_PRESSURE", "Pressure", "parse_pressure", "read_pressure"]

SYSTEM_MEMORY_PRESSURE = "/proc/pressure/memory"


@dataclass(frozen=True)
class Pressure:
    """One reading of a pressure file: averages in percent, totals in microseconds."""

    some_avg10_pct: float
    some_avg60_pct: float
    some_avg300_pct: float
    some_total_us: int
    full_avg10_pct: float
    full_avg60_pct: float
    full_avg300_pct: float
    full_total_us: int

    def fields(self, prefix: str = "pressure_") -> dict[str, float | int]:
        """The readings by name, each prefixed (``pressure_some_avg10_pct``...)."""
        return {prefix + key: value for key, value in asdict(self).items()}

    @classmethod
    def keys(cls, prefix: str = "pressure_") -> list[str]:
        """The names :meth:`fields` gives, in order."""
        return [prefix + f.name for f in dataclasses.fields(cls)]


def parse_pressure(text: str) -> Pressure:
    """Parse the text of a pressure file; ValueError if it is not one."""
    lines: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        kind, *pairs = line.split()
        lines[kind] = dict(pair.split("=", 1) for pair in pairs)
    try:
        some, full = lines["some"], lines["full"]
        return Pressure(
            float(some["avg10"]),
            float(some["avg60"]),
            float(some["avg300"]),
            int(some["total"]),
            float(full["avg10"]),
            float(full["avg60"]),
            float(full["avg300"]),
            int(full["total"]),
        )
    except KeyError as e:
        raise ValueError(f"not a pressure file: no {e}") from None


def read_pressure(path: str = SYSTEM_MEMORY_PRESSURE) -> Pressure | None:
    """The pressure file at ``path``, or None where the kernel keeps no pressure figures."""
    try:
        with open(path) as f:
            return parse_pressure(f.read())
    except OSError:  # absent (CONFIG_PSI=n) or EOPNOTSUPP (psi=0)
        return None
