"""The one lifecycle of a report's BPF side: open -> configure -> load -> attach in ``__enter__``.

Constructing a report only records its options; entering it loads. Whatever
the loading makes (objects, links, ring buffers) goes on the
report's ExitStack as soon as it exists, so a failure at any step closes
exactly what exists, newest first, before the error propagates.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import TypeVar

__all__ = ["BPFReport"]

_Report = TypeVar("_Report", bound="BPFReport")


class BPFReport:
    """Base of the reports' loaded state; a context manager whose :meth:`close` is idempotent.

    Subclasses implement :meth:`_load` and push everything they own onto
    ``self._owned``; those that keep more than the stack (threads, caches)
    extend :meth:`close` and call this one last.
    """

    def __init__(self) -> None:
        self._owned = ExitStack()

    def _load(self) -> None:
        """Open, configure, load and attach, handing each thing made to ``self._owned``."""
        raise NotImplementedError

    def __enter__(self: _Report) -> _Report:
        try:
            self._load()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Detach and free everything owned, newest first."""
        self._owned.close()

    def __exit__(self, *exc: object) -> None:
        self.close()
