"""BTF: type information of the running kernel or of an object file (structs, enums, tracepoint arguments)."""

from __future__ import annotations

import errno as _errno
import os
from typing import TYPE_CHECKING, Any

from .._libbpf import ffi, lib
from ._errors import LibbpfError, _Call
from .variables import _Var

if TYPE_CHECKING:
    from .object import BPFObject


class BTF:
    """Type information of the kernel (:meth:`vmlinux`) or of an object file."""

    _vmlinux: BTF | None = None

    def __init__(self, ptr: Any, owner: BPFObject | None = None) -> None:
        # Parsed BTF is ours to free; an object's BTF is freed with the object.
        self._raw: Any = ffi.gc(ptr, lib.btf__free) if owner is None else ptr
        self._owner = owner

    @property
    def _ptr(self) -> Any:
        if self._raw is None:
            raise LibbpfError(_errno.EBADF, "use BTF after close")
        if self._owner is not None:
            self._owner._require_open("the BTF of ")
        return self._raw

    @classmethod
    def vmlinux(cls) -> BTF:
        """The running kernel's BTF (/sys/kernel/btf/vmlinux), loaded once."""
        if cls._vmlinux is None or cls._vmlinux._raw is None:
            with _Call("load kernel BTF") as call:
                cls._vmlinux = cls(call.check_ptr(lib.btf__load_vmlinux_btf()))
        return cls._vmlinux

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> BTF:
        """BTF of an ELF object or raw BTF file."""
        with _Call(f"parse BTF of {path}") as call:
            return cls(call.check_ptr(lib.btf__parse(str(path).encode(), ffi.NULL)))

    def close(self) -> None:
        """Free parsed BTF (an object's BTF goes with the object); idempotent."""
        ptr, self._raw = self._raw, None
        if ptr is not None and self._owner is None:
            ffi.release(ptr)  # btf__free

    # -- raw access
    _KINDS = {
        "int": lib.BTF_KIND_INT,
        "struct": lib.BTF_KIND_STRUCT,
        "union": lib.BTF_KIND_UNION,
        "enum": lib.BTF_KIND_ENUM,
        "enum64": lib.BTF_KIND_ENUM64,
        "typedef": lib.BTF_KIND_TYPEDEF,
        "func": lib.BTF_KIND_FUNC,
        "datasec": lib.BTF_KIND_DATASEC,
        "var": lib.BTF_KIND_VAR,
    }

    def _type(self, type_id: int) -> Any:
        return lib.btf__type_by_id(self._ptr, type_id)

    def _name(self, off: int) -> str:
        return ffi.string(lib.btf__name_by_offset(self._ptr, off)).decode()

    @staticmethod
    def _kind(t: Any) -> int:
        return (t.info >> 24) & 0x1F

    @staticmethod
    def _vlen(t: Any) -> int:
        return t.info & 0xFFFF

    def find(self, name: str, kind: str) -> int | None:
        """Type id of ``name`` of ``kind`` ("struct", "enum", "typedef", ...), or None."""
        tid = lib.btf__find_by_name_kind(self._ptr, name.encode(), self._KINDS[kind])
        return tid if tid > 0 else None

    def _skip_mods(self, type_id: int) -> int:
        mods = (lib.BTF_KIND_TYPEDEF, lib.BTF_KIND_VOLATILE, lib.BTF_KIND_CONST, lib.BTF_KIND_RESTRICT)
        while True:
            t = self._type(type_id)
            if t == ffi.NULL or self._kind(t) not in mods:
                return type_id
            type_id = t.type

    def members(self, struct: str) -> dict[str, int]:
        """Members of a struct or union and their bit offsets (anonymous members flattened)."""
        tid = self.find(struct, "struct") or self.find(struct, "union")
        return self._members_of(tid, 0) if tid else {}

    def _members_of(self, tid: int, base_bits: int) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, bits, type_id in self._member_list(tid):
            if name:
                out[name] = base_bits + bits
            else:
                out.update(self._members_of(type_id, base_bits + bits))
        return out

    def _member_list(self, tid: int) -> list[tuple[str, int, int]]:
        """(name, bit offset, type id) of each member of a struct or union, [] for other kinds.

        Type ids skip typedefs and qualifiers; anonymous members have the name ""
        and are only kept when they are a struct or union themselves.
        """
        t = self._type(tid)
        if self._kind(t) not in (lib.BTF_KIND_STRUCT, lib.BTF_KIND_UNION):
            return []
        kflag = t.info >> 31
        arr = ffi.cast("struct btf_member *", t + 1)
        out = []
        for i in range(self._vlen(t)):
            m = arr[i]
            name = self._name(m.name_off)
            type_id = self._skip_mods(m.type)
            if name or self._kind(self._type(type_id)) in (lib.BTF_KIND_STRUCT, lib.BTF_KIND_UNION):
                out.append((name, m.offset & 0xFFFFFF if kflag else m.offset, type_id))
        return out

    def member(self, path: str) -> tuple[int, int] | None:
        """Byte offset and size of a nested member, e.g. ``bpf_attr.link_create.uprobe_multi.pid``.

        The first name is a struct or union; anonymous members are looked
        through as C does. None when any part is missing (an older kernel).
        """
        root, *names = path.split(".")
        tid = self.find(root, "struct") or self.find(root, "union")
        bits = 0
        for name in names:
            if not tid:
                return None
            tid, bits = self._find_member(tid, name, bits)
        if not tid:
            return None
        return bits // 8, lib.btf__resolve_size(self._ptr, tid)

    def _find_member(self, tid: int, name: str, base_bits: int) -> tuple[int, int]:
        """(type id, bit offset) of member ``name`` of ``tid``, searching anonymous members; type id 0 if absent."""
        for member_name, bits, type_id in self._member_list(tid):
            if member_name == name:
                return type_id, base_bits + bits
            if not member_name:
                found, found_bits = self._find_member(type_id, name, base_bits + bits)
                if found:
                    return found, found_bits
        return 0, 0

    def size_of(self, name: str, kind: str = "struct") -> int | None:
        tid = self.find(name, kind)
        return lib.btf__resolve_size(self._ptr, tid) if tid else None

    def enum_values(self, name: str) -> dict[str, int]:
        """Enumerators of ``enum name`` (32- or 64-bit enums)."""
        tid = self.find(name, "enum") or self.find(name, "enum64")
        return self._enumerators(tid) if tid else {}

    def _enumerators(self, tid: int) -> dict[str, int]:
        t = self._type(tid)
        out = {}
        if self._kind(t) == lib.BTF_KIND_ENUM:
            arr = ffi.cast("struct btf_enum *", t + 1)
            for i in range(self._vlen(t)):
                out[self._name(arr[i].name_off)] = arr[i].val
        else:
            words = ffi.cast("uint32_t *", t + 1)
            for i in range(self._vlen(t)):
                out[self._name(words[3 * i])] = words[3 * i + 1] | (words[3 * i + 2] << 32)
        return out

    def enum_containing(self, enumerator: str) -> dict[str, int]:
        """All enumerators of the (possibly anonymous) enum that defines ``enumerator``."""
        for tid in range(1, lib.btf__type_cnt(self._ptr)):
            if self._kind(self._type(tid)) in (lib.BTF_KIND_ENUM, lib.BTF_KIND_ENUM64):
                values = self._enumerators(tid)
                if enumerator in values:
                    return values
        return {}

    def enumerator(self, name: str) -> int | None:
        """Value of an enumerator ``name`` in any enum of this BTF, or None."""
        return self.enum_containing(name).get(name)

    def func_proto_params(self, typedef: str) -> list[str] | None:
        """Parameter type names of a function-pointer typedef (e.g. ``btf_trace_sched_switch``)."""
        tid = self.find(typedef, "typedef")
        if not tid:
            return None
        ptr = self._type(self._type(tid).type)  # typedef -> pointer
        proto = self._type(ptr.type)  # pointer -> func_proto
        params = ffi.cast("struct btf_param *", proto + 1)
        return [self.type_name(params[i].type) for i in range(self._vlen(proto))]

    def type_name(self, type_id: int) -> str:
        """A C spelling of a type, e.g. "struct page *" or "gfp_t"."""
        if type_id == 0:
            return "void"
        t = self._type(type_id)
        kind = self._kind(t)
        name = self._name(t.name_off)
        if kind == lib.BTF_KIND_PTR:
            return self.type_name(t.type) + " *"
        if kind == lib.BTF_KIND_CONST:
            return "const " + self.type_name(t.type)
        if kind == lib.BTF_KIND_VOLATILE:
            return "volatile " + self.type_name(t.type)
        if kind == lib.BTF_KIND_STRUCT:
            return f"struct {name}"
        if kind == lib.BTF_KIND_UNION:
            return f"union {name}"
        if kind in (lib.BTF_KIND_ENUM, lib.BTF_KIND_ENUM64):
            return f"enum {name}"
        if kind == lib.BTF_KIND_ARRAY:
            arr = ffi.cast("struct btf_array *", t + 1)
            return f"{self.type_name(arr.type)}[{arr.nelems}]"
        return name or "?"

    def datasec_vars(self, section: str) -> dict[str, _Var]:
        """Variables of a data section (".rodata", ".bss", ...) with their layout."""
        tid = self.find(section, "datasec")
        if not tid:
            return {}
        t = self._type(tid)
        infos = ffi.cast("struct btf_var_secinfo *", t + 1)
        out: dict[str, _Var] = {}
        for i in range(self._vlen(t)):
            info = infos[i]
            var = self._type(info.type)
            name = self._name(var.name_off)
            out[name] = self._var_layout(var.type, info.offset, info.size)
        return out

    def _var_layout(self, type_id: int, offset: int, size: int) -> _Var:
        tid = self._skip_mods(type_id)
        t = self._type(tid)
        kind = self._kind(t)
        if kind == lib.BTF_KIND_INT:
            encoding = (ffi.cast("uint32_t *", t + 1)[0] >> 24) & 0xF
            if self._name(t.name_off) in ("bool", "_Bool"):
                return _Var(offset, size, "bool")
            return _Var(offset, size, "int", bool(encoding & lib.BTF_INT_SIGNED))
        if kind == lib.BTF_KIND_ENUM:
            return _Var(offset, size, "int", signed=True)
        if kind == lib.BTF_KIND_ARRAY:
            arr = ffi.cast("struct btf_array *", t + 1)
            elem = self._type(self._skip_mods(arr.type))
            if self._kind(elem) == lib.BTF_KIND_INT and self._name(elem.name_off) == "char":
                return _Var(offset, size, "chars")  # plain char[]: a string; __u8[] stays bytes
        return _Var(offset, size, "bytes")
