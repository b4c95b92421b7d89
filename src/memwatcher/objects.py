"""Where the compiled BPF objects and their record headers are.

An installed package carries ``memwatcher/bpf/<name>.bpf.o`` and
``<name>.h`` (built by ``build.sh`` during ``pip install``). When running
from a source checkout, an object older than its sources is rebuilt first,
never used stale.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .libbpf import MemwatcherError
from .records import Layouts, load_header

__all__ = ["ObjectMissingError", "header", "object_path", "objects_dir"]

_PACKAGE_DIR = Path(__file__).resolve().parent / "bpf"
_SOURCE_TOP = Path(__file__).resolve().parents[2]


class ObjectMissingError(MemwatcherError):
    """A BPF object is missing from the installation and cannot be built."""


def objects_dir() -> Path:
    """Directory holding the shipped ``.bpf.o`` objects."""
    return _PACKAGE_DIR


def _in_source_tree(name: str) -> Path | None:
    src = _SOURCE_TOP / "bpf" / f"{name}.bpf.c"
    return src if src.is_file() and (_SOURCE_TOP / "build.sh").is_file() else None


def _stale(obj: Path, src: Path) -> bool:
    if not obj.is_file():
        return True
    built = obj.stat().st_mtime
    deps = [src, *src.parent.glob("*.h"), _SOURCE_TOP / "vmlinux" / "vmlinux.h", _SOURCE_TOP / "build.sh"]
    return any(d.is_file() and d.stat().st_mtime > built for d in deps)


def object_path(name: str) -> Path:
    """Path of ``<name>.bpf.o``, rebuilding it first in a stale source checkout."""
    obj = _PACKAGE_DIR / f"{name}.bpf.o"
    src = _in_source_tree(name)
    if src is not None and _stale(obj, src):
        # Only this object: another report's broken source must not block this one.
        proc = subprocess.run(
            [str(_SOURCE_TOP / "build.sh"), str(_PACKAGE_DIR), str(src)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            detail = (proc.stderr.strip().splitlines() or ["build.sh failed"])[-1]
            raise ObjectMissingError(f"rebuilding stale BPF object {name}.bpf.o failed: {detail}")
    if not obj.is_file():
        raise ObjectMissingError(f"BPF object {obj} is missing: reinstall memwatcher (pip install .)")
    return obj


def header(name: str) -> Layouts:
    """Record dtypes of report ``name`` (from its shipped ``<name>.h``)."""
    object_path(name)
    # In a source checkout the header next to the BPF source is the truth (read
    # in place: the package directory may not be ours to write).
    src = _in_source_tree(name)
    source_header = src.parent / f"{name}.h" if src is not None else None
    return load_header(source_header if source_header and source_header.is_file() else _PACKAGE_DIR / f"{name}.h")
