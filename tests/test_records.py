"""Record layouts: the numpy dtypes Python derives from bpf/*.h equal the BTF clang emitted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import TEST_BPF_DIR, build_test_object
from memwatcher.cfi import header_path
from memwatcher.libbpf import BTF
from memwatcher.objects import header, object_path, objects_dir
from memwatcher.records import load_header

TOP = Path(__file__).resolve().parents[1]


def _report_headers() -> list[str]:
    """Headers of one report each: bpf/<name>.h next to bpf/<name>.bpf.c."""
    return sorted(p.stem for p in (TOP / "bpf").glob("*.h") if (TOP / "bpf" / f"{p.stem}.bpf.c").is_file())


def _assert_layout_matches(header_path: Path, object_file: Path) -> int:
    layouts = load_header(header_path)
    btf = BTF.from_file(object_file)
    structs = [name for name in vars(layouts) if name != "constants"]
    for name in structs:
        dtype: np.dtype = getattr(layouts, name)
        size = btf.size_of(name)
        assert size is not None, f"struct {name} of {header_path.name} is not in {object_file.name}'s BTF"
        assert dtype.itemsize == size, f"struct {name}: sizeof {dtype.itemsize} in Python, {size} in BPF"
        members = btf.members(name)
        for field in dtype.names:
            assert members[field] == dtype.fields[field][1] * 8, f"struct {name}.{field}: offset differs"
    return len(structs)


def test_test_record_layout_matches_btf() -> None:
    assert _assert_layout_matches(TEST_BPF_DIR / "trigger.h", build_test_object("trigger")) == 1


@pytest.mark.parametrize("name", _report_headers())
def test_report_record_layouts_match_btf(name: str) -> None:
    object_path(name)
    assert _assert_layout_matches(objects_dir() / f"{name}.h", object_path(name)) >= 1
    assert header(name) is not None


def test_unwind_row_layouts_match_the_memleak_object() -> None:
    """unwind.h is shared by the CFI compiler and memleak.bpf.c: its structs are the object's."""
    assert _assert_layout_matches(header_path(), object_path("memleak")) == 3


def test_header_parsing_keeps_constants_and_nested_arrays(tmp_path: Path) -> None:
    src = tmp_path / "demo.h"
    src.write_text(
        "#ifndef DEMO_H\n#define DEMO_H\n#define SLOTS 4\n#define MASK 0xff\n"
        "struct demo { __u32 a; __u64 b; __s16 c[SLOTS]; char name[6]; };\n#endif\n"
    )
    layout = load_header(src)
    assert layout.constants == {"SLOTS": 4, "MASK": 255}
    dt = layout.demo
    assert dt.itemsize == 32
    assert [dt.fields[f][1] for f in dt.names] == [0, 8, 16, 24]
    assert dt.fields["c"][0].shape == (4,)
    assert dt.fields["c"][0].base == np.int16
    assert dt.fields["name"][0] == np.dtype("S6")
