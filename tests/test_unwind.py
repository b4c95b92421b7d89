"""memleak's DWARF unwinder on programs built without frame pointers.

The oracle is the program's own DWARF unwinder: right after each leaking
allocation the program calls glibc's ``backtrace()`` (libgcc's CFI unwinder) and
prints the return addresses. memleak's stack for that allocation must hold the
same return addresses above the allocating function, with exact bytes and counts
per call site.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import requires_bpf
from memwatcher.tools.memleak import MemleakOptions, UserMemleak, report_json

MEMWATCHER = [sys.executable, "-m", "memwatcher.cli"]
NO_FP = ["-O2", "-g", "-fomit-frame-pointer"]
FP = ["-O2", "-g", "-fno-omit-frame-pointer"]

# report(site): the program's own backtrace after an allocation, one line per site.
REPORT_C = r"""
#include <execinfo.h>
#include <stdio.h>
__attribute__((noinline)) void report(const char *site)
{
	void *frames[128];
	int n = backtrace(frames, 128);
	printf("BT %s", site);
	for (int i = 1; i < n; i++) /* frames[0] is report itself */
		printf(" %lx", (unsigned long)frames[i]);
	printf("\n");
	fflush(stdout);
}
"""

C_SOURCE = r"""
#include <stdlib.h>
void report(const char *site);
static void *volatile sink;
static volatile int reps_a = 3, reps_b = 5, depth = 28;

__attribute__((noinline)) void *leaf_alloc(size_t size, const char *site)
{
	void *p = malloc(size);
	if (site)
		report(site);
	return p;
}
__attribute__((noinline)) void *middle(size_t size, const char *site)
{
	void *p = leaf_alloc(size, site);
	sink = p;
	return p;
}
__attribute__((noinline)) void outer_a(void)
{
	for (int i = 0; i < reps_a; i++)
		sink = middle(101, i ? NULL : "outer_a");
}
__attribute__((noinline)) void outer_b(void)
{
	for (int i = 0; i < reps_b; i++)
		sink = middle(201, i ? NULL : "outer_b");
}
__attribute__((noinline)) void *deep(int level)
{
	void *p = level ? deep(level - 1) : leaf_alloc(57, "deep");
	sink = p;
	return p;
}
__attribute__((noinline)) void churn(void)
{
	for (int i = 0; i < 1000; i++)
		free(middle(64, NULL));
}
int main(void)
{
	report("warmup"); /* backtrace() loads libgcc_s on its first call */
	outer_a();
	outer_b();
	deep(depth);
	churn();
	return 0;
}
"""

# site -> (bytes each, allocations); "deep" sits under 29 deep() frames.
C_LEAKS = {"outer_a": (101, 3), "outer_b": (201, 5), "deep": (57, 1)}

CXX_SOURCE = r"""
#include <cstdlib>
#include <vector>
extern "C" void report(const char *site);
static void *volatile sink;
static volatile int widgets = 2, vectors = 3;

namespace shop {
struct Widget {
	std::vector<char> buf;
	long id = 0;
	__attribute__((noinline)) explicit Widget(bool first) : buf(300)
	{
		if (first)
			report("ctor");
	}
};
}

__attribute__((noinline)) shop::Widget *make_widget(bool first)
{
	auto *w = new shop::Widget(first);
	if (first)
		report("make_widget");
	sink = w;
	return w;
}

__attribute__((noinline)) std::vector<int> *leak_vector(bool first)
{
	auto *v = new std::vector<int>();
	v->reserve(64);
	if (first)
		report("leak_vector");
	sink = v;
	return v;
}

int main()
{
	report("warmup");
	for (int i = 0; i < widgets; i++)
		make_widget(i == 0);
	for (int i = 0; i < vectors; i++)
		leak_vector(i == 0);
	return 0;
}
"""

PLUGIN_C = r"""
#include <stdlib.h>
void report(const char *site);
static void *volatile sink;
__attribute__((noinline)) static void *plug_leaf(size_t size, const char *site)
{
	void *p = malloc(size);
	if (site)
		report(site);
	return p;
}
__attribute__((noinline)) void plug_leak(int count)
{
	for (int i = 0; i < count; i++)
		sink = plug_leaf(77, i ? NULL : "plug_leak");
}
"""

HOST_C = r"""
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv)
{
	char line[64];
	void (*leak)(int) = NULL;
	report("warmup");
	printf("ready\n");
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) {
		if (!strcmp(line, "open\n")) {
			void *lib = dlopen(argv[1], RTLD_NOW);
			leak = lib ? (void (*)(int))dlsym(lib, "plug_leak") : NULL;
			printf(leak ? "opened\n" : "failed\n");
		} else if (!strcmp(line, "leak\n") && leak) {
			leak(4);
			printf("done\n");
		}
		fflush(stdout);
	}
	return 0;
}
"""


def _build(tmp: Path, name: str, source: str, flags: list[str], compiler: str = "gcc", extra=()) -> Path:
    suffix = ".cc" if compiler == "g++" else ".c"
    src = tmp / f"{name}{suffix}"
    src.write_text(source)
    report = tmp / "report.c"
    report.write_text(REPORT_C)
    exe = tmp / name
    subprocess.run(
        ["gcc", *flags, "-c", "-o", str(tmp / f"report-{name}.o"), str(report)],
        check=True,
    )
    subprocess.run(
        [compiler, *flags, "-o", str(exe), str(src), str(tmp / f"report-{name}.o"), *extra],
        check=True,
    )
    return exe


def _backtraces(stdout: str) -> dict[str, list[int]]:
    out = {}
    for line in stdout.splitlines():
        if line.startswith("BT "):
            site, *addresses = line.split()[1:]
            out[site] = [int(a, 16) for a in addresses]
    return out


def _run_command(exe: Path, tmp: Path, unwind: str) -> tuple[dict, dict[str, list[int]]]:
    out = tmp / f"{exe.name}-{unwind}.json"
    proc = subprocess.run(
        [*MEMWATCHER, "memleak", "--command", str(exe), "--unwind", unwind, "-f", "json", "--file", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    reports = [json.loads(line) for line in out.read_text().splitlines()]
    final = reports[-1]
    assert final["final"], final
    return final, _backtraces(proc.stdout)


def _dedupe_inlined(stack: dict) -> list[int]:
    """The stack's return addresses: one per group of inlined frames closed by a real one."""
    out: list[int] = []
    in_group = False
    for frame in stack["frames"]:
        if not in_group:
            out.append(frame["address"])
        in_group = frame["inlined"]
    return out


def _outer_function(stack: dict, address: int) -> str:
    """Name of the (non-inlined) function holding ``address`` in the stack's frames."""
    names = [f["symbol"] for f in stack["frames"] if f["address"] == address and not f["inlined"]]
    return names[-1] if names else ""


def _stack_of(report: dict, function: str, size_bytes: int, count: int) -> dict:
    rows = [s for s in report["stacks"] if any(function in (f["symbol"] or "") for f in s["frames"])]
    exact = [s for s in rows if (s["outstanding_bytes"], s["outstanding_allocs"]) == (size_bytes * count, count)]
    assert len(exact) == 1, (
        f"{function}: want one row of {count} x {size_bytes} B, got "
        f"{[(s['outstanding_bytes'], s['outstanding_allocs'], [f['symbol'] for f in s['frames']]) for s in rows]}"
    )
    return exact[0]


def _check_against_backtrace(stack: dict, oracle: list[int], skip: int) -> None:
    """Frames above the allocating function equal the program's own unwinder's.

    ``oracle[0]`` is in the function that called report(); ``skip`` says how many of
    our frames come before that function (allocator frames: operator new).
    """
    ours = _dedupe_inlined(stack)
    assert _outer_function(stack, ours[skip]) != "", ours
    names = [f["symbol"] for f in stack["frames"]]
    assert ours[skip + 1 :] == oracle[1:], (
        f"frames differ from backtrace():\n ours   {[hex(a) for a in ours]}\n oracle {[hex(a) for a in oracle]}\n"
        f" names  {names}"
    )


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("unwind")
    return {
        "nofp": _build(tmp, "leaks-nofp", C_SOURCE, NO_FP),
        "fp": _build(tmp, "leaks-fp", C_SOURCE, FP),
        "cxx": _build(tmp, "leaks-cxx", CXX_SOURCE, NO_FP, compiler="g++"),
        "tmp": tmp,
    }


@requires_bpf
def test_c_without_frame_pointers_matches_backtrace(programs: dict[str, Path]) -> None:
    report, oracle = _run_command(programs["nofp"], programs["tmp"], "dwarf")
    assert report["unwind"]["mode"] == "dwarf"
    for site, (size, count) in C_LEAKS.items():
        stack = _stack_of(report, site if site != "deep" else "deep", size, count)
        _check_against_backtrace(stack, oracle[site], skip=0)
        names = [f["symbol"] for f in stack["frames"]]
        assert names[:2] == ["leaf_alloc", "middle" if site != "deep" else "deep"], names
        assert "main" in names
    deep = _stack_of(report, "deep", 57, 1)
    assert [f["symbol"] for f in deep["frames"]].count("deep") == 29
    assert not any("churn" in (f["symbol"] or "") for s in report["stacks"] for f in s["frames"])
    assert report["unwind"]["truncated_stacks"] == 0
    assert report["unwind"]["objects"] >= 2 and report["unwind"]["rows"] > 0


@requires_bpf
def test_fp_mode_on_the_same_program_merges_call_paths(programs: dict[str, Path]) -> None:
    """The defect this unwinder fixes: without frame pointers the kernel's walk loses the callers."""
    report, _ = _run_command(programs["nofp"], programs["tmp"], "fp")
    rows = [s for s in report["stacks"] if any(f["symbol"] == "leaf_alloc" for f in s["frames"])]
    assert not any(any(f["symbol"] == "outer_a" for f in s["frames"]) for s in rows)


def _symbolic(stack: dict) -> list[tuple]:
    """Frames up to main as (function, file, line): comparable across runs (ASLR)."""
    out = []
    for f in stack["frames"]:
        out.append((f["symbol"], f["file"], f["line"]))
        if f["symbol"] == "main":
            break
    return out


@requires_bpf
def test_dwarf_and_fp_agree_on_a_frame_pointer_build(programs: dict[str, Path]) -> None:
    dwarf, _ = _run_command(programs["fp"], programs["tmp"], "dwarf")
    fp, _ = _run_command(programs["fp"], programs["tmp"], "fp")
    for site, (size, count) in C_LEAKS.items():
        assert _symbolic(_stack_of(dwarf, site, size, count)) == _symbolic(_stack_of(fp, site, size, count)), site


@requires_bpf
def test_cxx_operator_new_callers_are_kept(programs: dict[str, Path]) -> None:
    report, oracle = _run_command(programs["cxx"], programs["tmp"], "dwarf")
    ctor = _stack_of(report, "Widget::Widget", 300, 2)
    names = [f["symbol"] for f in ctor["frames"]]
    assert names[0].startswith("operator new"), names
    # The constructor that called operator new is in the stack (inlined vector code may sit between).
    assert any(n.startswith("shop::Widget::Widget") for n in names), names
    _check_against_backtrace(ctor, oracle["ctor"], skip=1)
    widget = _stack_of(report, "make_widget", 32, 2)
    _check_against_backtrace(widget, oracle["make_widget"], skip=1)
    vector = _stack_of(report, "leak_vector", 256, 3)
    assert any("leak_vector" in n for n in [f["symbol"] for f in vector["frames"]])
    linkage = {f["symbol"]: f.get("linkage_name") for f in ctor["frames"]}
    assert any(v and v.startswith("_ZN4shop6Widget") for v in linkage.values()), linkage


@requires_bpf
def test_library_dlopened_after_attach(programs: dict[str, Path]) -> None:
    tmp = programs["tmp"]
    plugin = tmp / "libplug.so"
    subprocess.run(["gcc", *NO_FP, "-shared", "-fPIC", "-o", str(plugin), "-x", "c", "-"], input=PLUGIN_C, text=True)
    host = _build(tmp, "host", HOST_C, NO_FP, extra=["-rdynamic", "-ldl"])
    proc = subprocess.Popen([str(host), str(plugin)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip().startswith("BT warmup")
        assert proc.stdout.readline().strip() == "ready"
        with UserMemleak(proc.pid, MemleakOptions(unwind="dwarf")) as leaks:
            proc.stdin.write("open\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "opened"
            # The loader's _dl_debug_state probe brings the plug-in's CFI in.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if any(path.endswith("libplug.so") for path in _loaded_objects(leaks)):
                    break
                time.sleep(0.01)
            proc.stdin.write("leak\n")
            proc.stdin.flush()
            bt = _backtraces(proc.stdout.readline())
            assert proc.stdout.readline().strip() == "done"
            report = report_json(leaks.read(top=None))
        stack = _stack_of(report, "plug_leak", 77, 4)
        _check_against_backtrace(stack, bt["plug_leak"], skip=0)
    finally:
        proc.kill()
        proc.wait()


def _loaded_objects(leaks: UserMemleak) -> list[str]:
    tables = leaks.unwind_tables
    return tables.loaded_paths() if tables is not None else []
