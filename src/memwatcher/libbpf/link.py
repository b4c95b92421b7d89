"""Links: a program attached somewhere, until closed."""

from __future__ import annotations

from typing import Any

from .._libbpf import ffi, lib


class Link:
    """An attachment of a program; detached by :meth:`close` (context manager).

    ``ptr`` is libbpf's link, freed by ``destroy``; a link libbpf does not know
    (uprobe_multi) is an ``int *`` holding its fd, with a destroy that closes it.
    """

    def __init__(self, ptr: Any, program: str, target: str, destroy: Any = lib.bpf_link__destroy) -> None:
        self._ptr: Any = ffi.gc(ptr, destroy)
        self.program = program
        self.target = target

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def close(self) -> None:
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            ffi.release(ptr)  # its destroy, now and never again

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Link {self.program} -> {self.target}{' closed' if self.closed else ''}>"
