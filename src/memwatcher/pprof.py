"""pprof's ``profile.proto``, gzipped: what ``go tool pprof``, speedscope and Pyroscope read.

A profile is samples (a call stack and one value per sample type), the stacks'
locations (an address, with its inlined functions as lines) in mappings (the
objects the addresses are in), and the functions. The few messages needed are
encoded here by hand (protobuf's wire format: varints and length-delimited
fields), so no protobuf package is needed. Field numbers are profile.proto's.
"""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .symbolize import Frame, frame_name

__all__ = ["ProfileSample", "encode_profile"]


@dataclass(frozen=True)
class ProfileSample:
    """One stack (frames innermost first, inlined ones included) and its values, one per sample type."""

    frames: Sequence[Frame]
    values: Sequence[int]


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 fields: two's complement, as protobuf does
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _pb_int(field_no: int, value: int) -> bytes:
    return _varint(field_no << 3) + _varint(value) if value else b""


def _pb_bytes(field_no: int, payload: bytes) -> bytes:
    return _varint(field_no << 3 | 2) + _varint(len(payload)) + payload


def _pb_packed(field_no: int, values: Sequence[int]) -> bytes:
    return _pb_bytes(field_no, b"".join(_varint(v) for v in values)) if values else b""


@dataclass
class _Mapping:
    id: int
    start: int  # the load bias: address - ELF address (0 for the kernel)
    limit: int
    build_id: str
    symbolized: bool  # some frame in it has a function name


def _mappings(samples: Sequence[ProfileSample]) -> dict[str, _Mapping]:
    """One mapping per object the frames are in, the executable first (pprof's "main binary").

    The range covers the addresses seen (a profile need not carry the process's
    memory map); ``start`` is chosen so that address - start is the ELF
    address, which is what pprof wants for a file offset of 0.
    """
    seen: dict[str, _Mapping] = {}
    for sample in samples:
        for f in sample.frames:
            if f.module is None:
                continue
            bias = f.address - f.elf_address if f.elf_address is not None else 0
            m = seen.get(f.module)
            if m is None:
                symbolized = f.function is not None
                seen[f.module] = _Mapping(0, min(bias, f.address), f.address + 1, f.build_id or "", symbolized)
            else:
                m.start = min(m.start, bias, f.address)
                m.limit = max(m.limit, f.address + 1)
                m.symbolized = m.symbolized or f.function is not None
    # The executable: the first object that is not a shared library (kernel: vmlinux).
    main = next((name for name in seen if name == "vmlinux" or ".so" not in os.path.basename(name)), None)
    ordered = ([main] if main else []) + [name for name in seen if name != main]
    mappings = {name: seen[name] for name in ordered}
    for number, m in enumerate(mappings.values(), 1):
        m.id = number
    return mappings


def encode_profile(
    samples: Sequence[ProfileSample],
    sample_types: Sequence[tuple[str, str]],
    *,
    period_type: tuple[str, str],
    period: int,
    duration_ns: int,
    default_sample_type: str | None = None,
) -> bytes:
    """The samples as a gzipped ``profile.proto``. ``sample_types`` and ``period_type`` are
    (type, unit) pairs, e.g. ("inuse_space", "bytes"); ``period`` is how many events one
    recorded event stands for; ``duration_ns`` the time profiled."""
    strings: dict[str, int] = {"": 0}

    def s(text: str) -> int:
        return strings.setdefault(text, len(strings))

    functions: dict[tuple[str, str], int] = {}
    locations: dict[tuple[int, tuple], int] = {}
    mappings = _mappings(samples)
    body = bytearray()
    for kind, unit in sample_types:
        body += _pb_bytes(1, _pb_int(1, s(kind)) + _pb_int(2, s(unit)))
    func_msgs, loc_msgs = bytearray(), bytearray()
    for sample in samples:
        # One location per address; its lines are the inlined frames, innermost first.
        by_address: list[tuple[int, list[Frame]]] = []
        for f in sample.frames:
            if by_address and by_address[-1][0] == f.address and by_address[-1][1][-1].inlined:
                by_address[-1][1].append(f)
            else:
                by_address.append((f.address, [f]))
        loc_ids = []
        for address, frames in by_address:
            key = (address, tuple(frame_name(f) for f in frames))
            if key not in locations:
                locations[key] = len(locations) + 1
                lines = bytearray()
                for f in frames:
                    fkey = (frame_name(f), f.file or "")
                    if fkey not in functions:
                        functions[fkey] = len(functions) + 1
                        func_msgs += _pb_bytes(
                            5,
                            _pb_int(1, functions[fkey])
                            + _pb_int(2, s(fkey[0]))
                            + _pb_int(3, s(f.linkage_name or fkey[0]))  # system_name: the mangled name
                            + _pb_int(4, s(fkey[1])),
                        )
                    lines += _pb_bytes(4, _pb_int(1, functions[fkey]) + _pb_int(2, f.line or 0))
                mapping = mappings.get(frames[0].module or "")
                loc_msgs += _pb_bytes(
                    4,
                    _pb_int(1, locations[key])
                    + _pb_int(2, mapping.id if mapping else 0)
                    + _pb_int(3, address)
                    + bytes(lines),
                )
            loc_ids.append(locations[key])
        body += _pb_bytes(2, _pb_packed(1, loc_ids) + _pb_packed(2, list(sample.values)))
    for name, m in mappings.items():
        symbolized = int(m.symbolized)
        body += _pb_bytes(
            3,
            _pb_int(1, m.id)
            + _pb_int(2, m.start)
            + _pb_int(3, m.limit)
            + _pb_int(5, s("[kernel.kallsyms]" if name == "vmlinux" else name))
            + _pb_int(6, s(m.build_id) if m.build_id else 0)
            + _pb_int(7, symbolized)  # has_functions
            + _pb_int(8, symbolized)  # has_filenames
            + _pb_int(9, symbolized)  # has_line_numbers
            + _pb_int(10, symbolized),  # has_inline_frames
        )
    body += loc_msgs + func_msgs
    body += _pb_int(9, time.time_ns())
    body += _pb_int(10, duration_ns)
    body += _pb_bytes(11, _pb_int(1, s(period_type[0])) + _pb_int(2, s(period_type[1])))
    body += _pb_int(12, period)
    if default_sample_type is not None:
        body += _pb_int(14, s(default_sample_type))
    # Last: every string above has its index by now (insertion order is index order).
    for text in strings:
        body += _pb_bytes(6, text.encode())
    return gzip.compress(bytes(body))
