"""Record layouts shared by BPF C and Python.

Each report's ``bpf/<report>.h`` is the single definition of the structs its
BPF program writes into maps and ring buffers. The build ships the header next
to the object; here it is parsed (preprocessor lines dropped, integer
``#define``s kept) and every struct becomes a numpy structured dtype whose
field offsets and size are the C compiler's, as computed by cffi. A test
checks them against the BTF the compiler emitted into the object.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

__all__ = ["Layouts", "load_header"]

# Types the headers may use; in BPF C they come from vmlinux.h.
_PRELUDE = """
typedef uint8_t __u8; typedef int8_t __s8;
typedef uint16_t __u16; typedef int16_t __s16;
typedef uint32_t __u32; typedef int32_t __s32;
typedef uint64_t __u64; typedef int64_t __s64;
"""

_DEFINE = re.compile(
    r"^\s*#\s*define\s+([A-Z_][A-Z0-9_]*)\s+(\(?-?(?:0x[0-9a-fA-F]+|\d+)[uUlL]*\)?)\s*(?:/\*.*\*/\s*)?$"
)


class Layouts(SimpleNamespace):
    """Dtypes of a header's structs by struct name, and its integer constants."""

    constants: dict[str, int]


def _clean(source: str) -> tuple[str, dict[str, int]]:
    lines, constants = [], {}
    for line in source.splitlines():
        m = _DEFINE.match(line)
        if m:
            constants[m.group(1)] = int(m.group(2).strip("()").rstrip("uUlL"), 0)
            lines.append(f"#define {m.group(1)} {constants[m.group(1)]}")
        elif not line.lstrip().startswith("#"):
            lines.append(line)
    return "\n".join(lines), constants


def _dtype(ffi: Any, ctype: Any) -> np.dtype:
    if ctype.kind == "primitive":
        size = ffi.sizeof(ctype)
        if ctype.cname in ("char", "_Bool", "bool"):
            return np.dtype("S1") if ctype.cname == "char" else np.dtype(np.bool_)
        signed = ffi.cast(ctype, -1) < 0
        return np.dtype(f"{'i' if signed else 'u'}{size}")
    if ctype.kind == "array":
        item = ctype.item
        if item.kind == "primitive" and item.cname == "char":
            return np.dtype(f"S{ctype.length}")
        return np.dtype((_dtype(ffi, item), (ctype.length,)))
    if ctype.kind == "struct":
        names, formats, offsets = [], [], []
        for name, field in ctype.fields:
            names.append(name)
            formats.append(_dtype(ffi, field.type))
            offsets.append(field.offset)
        return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": ffi.sizeof(ctype)})
    if ctype.kind == "enum":
        return np.dtype(f"i{ffi.sizeof(ctype)}")
    raise TypeError(f"no numpy equivalent for {ctype.cname}")


@cache
def load_header(path: str | Path) -> Layouts:
    """Parse a record header: ``layouts.<struct name>`` is its numpy dtype."""
    source, constants = _clean(Path(path).read_text())
    import cffi  # here: ~20 ms that a command's --help need not pay

    ffi = cffi.FFI()
    ffi.cdef(_PRELUDE + source)
    layouts = Layouts(constants=constants)
    for name in re.findall(r"\bstruct\s+(\w+)\s*\{", source):
        setattr(layouts, name, _dtype(ffi, ffi.typeof(f"struct {name}")))
    return layouts
