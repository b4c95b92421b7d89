"""The four periodic reports (procstat, sysstat, paf, pr) and the OOM kill watcher, loaded together.

Shared by the dashboard and the Prometheus exporter.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from . import kernel
from .errors import MemwatcherError
from .tools import oom, paf, pr, procstat, sysstat

__all__ = ["REPORT_NAMES", "Reports"]

REPORT_NAMES = ("procstat", "sysstat", "paf", "pr", "oom")


class Reports:
    """The procstat, sysstat, paf, pr and oom programs, loaded and attached together.

    A context manager; a report that cannot load on this kernel is left out
    (its reason is in :attr:`unavailable`), the others still run. Raises
    MemwatcherError if none loads.
    """

    def __init__(self, max_processes: int = 16384) -> None:
        self.max_processes = max_processes
        self.unavailable: dict[str, str] = {}
        self._stack = ExitStack()
        self.procstat: procstat.ProcStat | None = None
        self.sysstat: sysstat.SysStat | None = None
        self.paf: paf.PageAllocTracer | None = None
        self.pr: pr.PageReclaim | None = None
        self.oom: oom.OomWatcher | None = None

    def _load(self, name: str, factory: Callable[[], Any]) -> Any:
        try:
            return self._stack.enter_context(factory())
        except MemwatcherError as e:
            self.unavailable[name] = str(e)
            return None

    def __enter__(self) -> Reports:
        kernel.require_bpf()
        try:
            self.procstat = self._load(
                "procstat", lambda: procstat.ProcStat(procstat.ProcStatOptions(max_processes=self.max_processes))
            )
            self.sysstat = self._load("sysstat", sysstat.SysStat)
            self.paf = self._load("paf", paf.PageAllocTracer)
            self.pr = self._load("pr", pr.PageReclaim)
            self.oom = self._load("oom", oom.OomWatcher)
        except BaseException:
            self.close()
            raise
        if len(self.unavailable) == len(REPORT_NAMES):
            self.close()
            raise MemwatcherError(
                "no report could load: " + "; ".join(f"{k}: {v}" for k, v in self.unavailable.items())
            )
        return self

    def close(self) -> None:
        self.procstat = self.sysstat = self.paf = self.pr = self.oom = None
        self._stack.close()

    def __exit__(self, *exc: object) -> None:
        self.close()
