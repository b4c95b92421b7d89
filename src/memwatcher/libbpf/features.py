"""What the loaded libbpf and the running kernel offer: version, CPUs, program and map types."""

from __future__ import annotations

import os
import re

from .._libbpf import ffi, lib
from ..procmaps import ProcessMaps
from ._errors import libbpf_error


def libbpf_version() -> str:
    """Version of the libbpf actually loaded, e.g. ``"1.1"``."""
    return ffi.string(lib.libbpf_version_string()).decode().lstrip("v")


def libbpf_path() -> str:
    """File of the libbpf shared library this process actually mapped."""
    mapped = ProcessMaps.read(os.getpid()).first_module(re.compile(r"/libbpf[^/]*\.so"))
    return mapped.path if mapped is not None else "statically linked"


def possible_cpus() -> int:
    """Number of possible CPUs: the width of per-CPU map values."""
    n = lib.libbpf_num_possible_cpus()
    if n < 0:
        raise libbpf_error(-n, "count possible CPUs")
    return n


def probe_prog_type(name: str) -> bool:
    """Whether the kernel can load programs of type ``name`` (e.g. "tracing")."""
    value = getattr(lib, f"BPF_PROG_TYPE_{name.upper()}")
    return lib.libbpf_probe_bpf_prog_type(value, ffi.NULL) == 1


def probe_map_type(name: str) -> bool:
    """Whether the kernel can create maps of type ``name`` (e.g. "ringbuf")."""
    value = getattr(lib, f"BPF_MAP_TYPE_{name.upper()}")
    return lib.libbpf_probe_bpf_map_type(value, ffi.NULL) == 1
