"""Global variables of an object's data sections: `const volatile` configuration before load, state after."""

from __future__ import annotations

import errno as _errno
from typing import TYPE_CHECKING, Any

from .._libbpf import ffi, lib
from ._errors import LibbpfError, _Call
from .map import Map, _as_buffer

if TYPE_CHECKING:
    from .object import BPFObject


class Variables:
    """Global variables of one data section (``.rodata``, ``.bss``, ``.data``).

    Names, sizes and types come from the object's BTF. ``.rodata`` (the
    ``const volatile`` configuration) can be written only before load; the
    others are read and written through their array map after load.
    """

    def __init__(self, obj: BPFObject, section: str) -> None:
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_section", section)
        object.__setattr__(self, "_map", next((m for m in obj.maps.values() if m.name.endswith(section)), None))
        object.__setattr__(self, "_vars", obj.btf.datasec_vars(section) if obj.btf is not None else {})

    def names(self) -> list[str]:
        return list(self._vars)

    def _bytes(self) -> bytearray:
        m: Map = self._map
        if not self._obj.loaded:
            size = ffi.new("size_t *")
            ptr = lib.bpf_map__initial_value(m._ptr, size)
            return bytearray(ffi.unpack(ffi.cast("char *", ptr), size[0]))
        value = m.lookup(0)
        return bytearray(value or b"")

    def _var(self, name: str) -> _Var:
        try:
            return self._vars[name]
        except KeyError:
            known = ", ".join(self._vars) or "none"
            raise LibbpfError(
                _errno.ENOENT, f"find variable '{name}' in {self._section} of '{self._obj.name}' (has: {known})"
            ) from None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        var = self._var(name)
        return var.decode(self._bytes()[var.offset : var.offset + var.size])

    def __setattr__(self, name: str, value: Any) -> None:
        var = self._var(name)
        self._obj._require_open()
        m: Map = self._map
        data = self._bytes()
        data[var.offset : var.offset + var.size] = var.encode(value)
        if not self._obj.loaded:
            with _Call(f"set {self._section} variable '{name}' of '{self._obj.name}'") as call:
                call.check(lib.bpf_map__set_initial_value(m._ptr, ffi.from_buffer(data), len(data)))
        elif self._section == ".rodata":
            raise LibbpfError(_errno.EPERM, f"set const variable '{name}' after load")
        else:
            m.update(0, bytes(data))

    __getitem__ = __getattr__
    __setitem__ = __setattr__


class _Var:
    """Layout of one global variable: byte offset, size and how to convert it."""

    def __init__(self, offset: int, size: int, kind: str, signed: bool = False) -> None:
        self.offset = offset
        self.size = size
        self.kind = kind  # "int", "bool", "chars" or "bytes"
        self.signed = signed

    def decode(self, raw: bytes) -> Any:
        if self.kind == "int":
            return int.from_bytes(raw, "little", signed=self.signed)
        if self.kind == "bool":
            return raw != bytes(self.size)
        if self.kind == "chars":
            return bytes(raw).split(b"\0", 1)[0].decode(errors="replace")
        return bytes(raw)

    def encode(self, value: Any) -> bytes:
        if self.kind == "int":
            return int(value).to_bytes(self.size, "little", signed=self.signed)
        if self.kind == "bool":
            return (1 if value else 0).to_bytes(self.size, "little")
        if self.kind == "chars":
            raw = value.encode() if isinstance(value, str) else bytes(value)
            if len(raw) >= self.size:
                raise ValueError(f"string of {len(raw)} bytes does not fit in char[{self.size}]")
            return raw.ljust(self.size, b"\0")
        raw = bytes(_as_buffer(value, self.size))
        if len(raw) != self.size:
            raise ValueError(f"value of {len(raw)} bytes for a {self.size}-byte variable")
        return raw
