"""Shipped objects: a stale or missing object in a source checkout is rebuilt, never used."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from memwatcher import objects

TOP = Path(__file__).resolve().parents[1]


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A minimal source checkout (build.sh, bpf/, vmlinux/) that objects.py builds into."""
    for item in ("build.sh", "vmlinux"):
        src = TOP / item
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp_path / item)
    (tmp_path / "bpf").mkdir()
    for src in (TOP / "bpf").glob("features.bpf.c"):
        shutil.copy2(src, tmp_path / "bpf" / src.name)
    shutil.copy2(TOP / "bpf" / "records.bpf.h", tmp_path / "bpf" / "records.bpf.h")
    package_bpf = tmp_path / "src" / "memwatcher" / "bpf"
    package_bpf.mkdir(parents=True)
    monkeypatch.setattr(objects, "_SOURCE_TOP", tmp_path)
    monkeypatch.setattr(objects, "_PACKAGE_DIR", package_bpf)
    return tmp_path


@pytest.mark.skipif(shutil.which("clang") is None, reason="needs clang")
def test_missing_then_stale_object_is_rebuilt(checkout: Path) -> None:
    obj = objects.object_path("features")
    assert obj.is_file()
    built = obj.stat().st_mtime_ns
    time.sleep(0.01)
    src = checkout / "bpf" / "features.bpf.c"
    future = time.time() + 5
    os.utime(src, (future, future))
    assert objects.object_path("features").stat().st_mtime_ns > built


def test_broken_source_is_an_error_not_a_stale_object(checkout: Path) -> None:
    src = checkout / "bpf" / "features.bpf.c"
    src.write_text(src.read_text() + "\nthis is not C;\n")
    with pytest.raises(objects.ObjectMissingError, match=r"features\.bpf\.o"):
        objects.object_path("features")


def test_installed_package_without_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(objects, "_SOURCE_TOP", tmp_path)  # no sources: an installed package
    monkeypatch.setattr(objects, "_PACKAGE_DIR", tmp_path)
    with pytest.raises(objects.ObjectMissingError, match="reinstall"):
        objects.object_path("features")
