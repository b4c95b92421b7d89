"""BPF objects: an ELF file opened (editable), then loaded into the kernel; owner of everything made from it."""

from __future__ import annotations

import errno as _errno
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._libbpf import ffi, lib
from ._errors import LibbpfError, VerifierError, _Call, _looks_like_verifier_log, _take_log, libbpf_error
from .btf import BTF
from .map import Map
from .program import Program
from .variables import Variables

if TYPE_CHECKING:
    from .link import Link
    from .ringbuf import RingBuffer


class _Named(Mapping):
    """Programs or maps of an object by name, also as attributes."""

    def __init__(self, kind: str, owner: str, items: dict[str, Any]) -> None:
        self._kind = kind
        self._owner = owner
        self._items = items

    def __getitem__(self, name: str) -> Any:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise LibbpfError(
                _errno.ENOENT, f"find {self._kind} '{name}' in object '{self._owner}' (has: {known})"
            ) from None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


class BPFObject:
    """A BPF ELF object: opened (editable) by :meth:`open`, then :meth:`load`-ed.

    Before load, set ``rodata`` variables, map ``max_entries`` and program
    ``autoload``. After load, attach programs and read maps. The object owns
    everything made from it and must be closed (it is a context manager).
    """

    def __init__(self, ptr: Any, path: Path) -> None:
        self._ptr: Any = ffi.gc(ptr, lib.bpf_object__close)
        self.path = path
        self.name = ffi.string(lib.bpf_object__name(ptr)).decode()
        self.loaded = False
        self._children: list[Link | RingBuffer] = []
        progs: dict[str, Program] = {}
        p = lib.bpf_object__next_program(ptr, ffi.NULL)
        while p != ffi.NULL:
            prog = Program(self, p)
            progs[prog.name] = prog
            p = lib.bpf_object__next_program(ptr, p)
        maps: dict[str, Map] = {}
        m = lib.bpf_object__next_map(ptr, ffi.NULL)
        while m != ffi.NULL:
            bpf_map = Map(self, m)
            maps[bpf_map.name] = bpf_map
            m = lib.bpf_object__next_map(ptr, m)
        self.programs: _Named = _Named("program", self.name, progs)
        self.maps: _Named = _Named("map", self.name, maps)
        btf = lib.bpf_object__btf(ptr)
        self.btf = BTF(btf, owner=self) if btf != ffi.NULL else None
        self.rodata = Variables(self, ".rodata")
        self.bss = Variables(self, ".bss")
        self.data = Variables(self, ".data")

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, btf_custom_path: str | os.PathLike[str] | None = None) -> BPFObject:
        """Open (parse) an object file; nothing reaches the kernel yet.

        ``btf_custom_path`` (a vmlinux ELF or raw BTF file) replaces the running
        kernel's BTF as the target of CO-RE relocations.
        """
        path = Path(path)
        opts = ffi.new("struct bpf_object_open_opts *")
        opts.sz = ffi.sizeof("struct bpf_object_open_opts")
        custom = ffi.new("char[]", os.fsencode(btf_custom_path)) if btf_custom_path is not None else ffi.NULL
        opts.btf_custom_path = custom
        with _Call(f"open BPF object {path}") as call:
            for required in (path, btf_custom_path):
                if required is not None and not Path(required).is_file():
                    raise LibbpfError(_errno.ENOENT, f"{call.operation}: {required}")
            ptr = call.check_ptr(lib.bpf_object__open_file(str(path).encode(), opts))
        return cls(ptr, path)

    def load(self) -> None:
        """Create the maps, relocate (CO-RE) and verify every autoload program."""
        self._require_open()
        with _Call(f"load BPF object '{self.name}'") as call:
            ret = lib.bpf_object__load(self._ptr)
            if ret < 0:
                log = _take_log()
                if _looks_like_verifier_log(log):
                    raise VerifierError(-ret, call.operation, log)
                raise libbpf_error(-ret, call.operation, log)
        self.loaded = True

    def attach(self) -> list[Link]:
        """Attach every loaded program by its section name; returns the links."""
        return [p.attach() for p in self.programs.values() if p.autoload]

    def _require_open(self, what: str = "") -> None:
        if self._ptr is None:
            raise LibbpfError(_errno.EBADF, f"use {what}BPF object '{self.name}' after close")

    def _adopt(self, child: Link | RingBuffer) -> None:
        self._children.append(child)

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def close(self) -> None:
        """Destroy links and ring buffers (newest first), then the object."""
        while self._children:
            # Forgotten only once closed: an exception in between leaves it for the next close.
            self._children[-1].close()
            self._children.pop()
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            ffi.release(ptr)  # bpf_object__close, now and never again

    def __enter__(self) -> BPFObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("loaded" if self.loaded else "opened")
        return f"<BPFObject {self.name} {state}>"
