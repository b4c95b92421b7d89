"""cffi (API mode) build script for memwatcher's DWARF CFI compiler.

The C code is ``_cfi_compiler.c`` next to this file; it includes ``bpf/unwind.h``, the
row format shared with the BPF unwinder. The cdef below repeats only the entry
points; the row struct and its constants are taken from the header itself, with
the constants' values left to the C compiler (``#define NAME ...``), so the
Python side never holds a second copy of the format.
"""

import re
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
BPF_DIR = HERE.parents[1] / "bpf"
HEADER = BPF_DIR / "unwind.h"


def _header_cdef(path: Path) -> str:
    """unwind.h as cdef text: integer #defines checked by the compiler, other directives dropped."""
    out = []
    for line in path.read_text().splitlines():
        m = re.match(r"\s*#\s*define\s+(\w+)\s+-?(?:0x[0-9a-fA-F]+|\d+)\b", line)
        if m:
            out.append(f"#define {m.group(1)} ...")
        elif not line.lstrip().startswith("#"):
            out.append(line)
    return "\n".join(out)


CDEF = (
    """
typedef uint8_t __u8;
typedef int16_t __s16;
typedef int32_t __s32;
typedef uint32_t __u32;
typedef uint64_t __u64;
"""
    + _header_cdef(HEADER)
    + """
#define CFI_SECTION_EH_FRAME ...
#define CFI_SECTION_DEBUG_FRAME ...

struct cfi_result {
    struct unwind_row *rows;
    size_t nrows;
    uint64_t low_pc;
    uint64_t high_pc;
    uint32_t fde_count;
    uint32_t skipped_fdes;
    uint32_t sections;
    char error[256];
};

int cfi_compile_fd(int fd, struct cfi_result *res);
int cfi_compile_path(const char *path, struct cfi_result *res);
void cfi_result_free(struct cfi_result *res);
"""
)

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "memwatcher._cfi",
    '#include "_cfi_compiler.c"',
    include_dirs=[str(HERE), str(BPF_DIR)],
    depends=[str(HERE / "_cfi_compiler.c"), str(HEADER)],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
    py_limited_api=True,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
