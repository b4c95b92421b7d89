"""Overhead of memleak on a malloc/free-heavy C workload, as ratios in one run.

Configurations, each timed by the workload itself (CLOCK_MONOTONIC around its
loop, so start-up and attach are excluded), median of ``--repeat`` runs taken
round-robin over the configurations:

* untraced;
* floor: a bare uprobe + uretprobe on malloc and a uprobe on free whose BPF
  program only increments a counter (the cost of the probes themselves);
* memleak with ``--unwind fp`` and ``--unwind dwarf``, ``--combined-only`` and
  ``--sample-rate 100``.

The workload is built three ways: plain ``-O2`` (no frame pointers, as
distributions build), ``-O2 -fno-omit-frame-pointer``, and ``-O2`` with every
allocation 30 frames deep. The DWARF rows say what the unwinder costs against
the kernel's frame-pointer walk on the same binary; the last table gives the
time to build the unwind tables of libc, libstdc++ and the workload.

Run as root: ``.venv/bin/python benchmarks/memleak_overhead.py [--pairs N]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from memwatcher.cfi import compile_cfi
from memwatcher.libbpf import BPFObject
from memwatcher.tools.memleak import MemleakOptions, UserMemleak, _find_mapped_library

TOP = Path(__file__).resolve().parents[1]

WORKLOAD_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#ifndef DEPTH
#define DEPTH 0
#endif

static void *keep[64];
static void *volatile sink;

/* DEPTH frames between the loop and malloc (not a tail call: the result is stored). */
__attribute__((noinline)) void *nest(int level, long i)
{
	void *p = level ? nest(level - 1, i) : malloc(16 + (i * 37) % 500);
	sink = p;
	return p;
}

int main(int argc, char **argv)
{
	long pairs = atol(argv[1]);
	struct timespec a, b;
	char line[8];
	printf("ready\n");
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < pairs; i++) {
		/* a small working set of live blocks of varied sizes */
		free(keep[i & 63]);
		keep[i & 63] = nest(DEPTH, i);
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	for (int i = 0; i < 64; i++)
		free(keep[i]);
	printf("%ld\n", (b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec));
	return 0;
}
"""


class _Floor:
    """The bare probes: trigger.bpf.o's counting uprobe on malloc (entry, return) and free."""

    def __init__(self, pid: int, obj_path: Path) -> None:
        self.obj = BPFObject.open(obj_path)
        for prog in self.obj.programs.values():
            prog.autoload = prog.name == "on_getpid"
        self.obj.load()
        libc = _find_mapped_library(pid, None)
        prog = self.obj.programs.on_getpid
        prog.attach_uprobe(libc, "malloc", pid=pid, retprobe=True)
        prog.attach_uprobe(libc, "malloc", pid=pid)
        prog.attach_uprobe(libc, "free", pid=pid)

    def __enter__(self) -> _Floor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.obj.close()


def _run_once(exe: Path, pairs: int, tracer: Callable[[int], AbstractContextManager]) -> int:
    proc = subprocess.Popen([str(exe), str(pairs)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        with tracer(proc.pid):
            proc.stdin.write("go\n")
            proc.stdin.flush()
            elapsed_ns = int(proc.stdout.readline())
        proc.wait(timeout=60)
        return elapsed_ns
    finally:
        proc.kill()
        proc.wait()


WORKLOADS = {
    "-O2": ["-O2"],
    "-O2 -fno-omit-frame-pointer": ["-O2", "-fno-omit-frame-pointer"],
    "-O2, 30 frames deep": ["-O2", "-DDEPTH=28"],
}


def _table_build_s(exe: Path) -> tuple[float, int]:
    """Seconds to compile the CFI of libc, libstdc++ and the workload (one cold pass), and their rows."""
    objects = [exe, Path("/lib/x86_64-linux-gnu/libc.so.6"), Path("/usr/lib/x86_64-linux-gnu/libstdc++.so.6")]
    started = time.perf_counter()
    rows = sum(len(compile_cfi(str(path)).rows) for path in objects if path.exists())
    return time.perf_counter() - started, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200_000, help="malloc/free pairs per run")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "work.c").write_text(WORKLOAD_C)
        subprocess.run(
            [str(TOP / "build.sh"), str(d), str(TOP / "tests" / "bpf" / "trigger.bpf.c")],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        for workload, flags in WORKLOADS.items():
            exe = d / f"work{len(results)}"
            subprocess.run(["gcc", *flags, "-o", str(exe), str(d / "work.c")], check=True)
            configs: dict[str, Callable[[int], AbstractContextManager]] = {
                "untraced": lambda pid: nullcontext(),
                "floor (bare uprobes)": lambda pid: _Floor(pid, d / "trigger.bpf.o"),
                "memleak --unwind fp": lambda pid: UserMemleak(pid, MemleakOptions(unwind="fp")),
                "memleak --unwind dwarf": lambda pid: UserMemleak(pid, MemleakOptions(unwind="dwarf")),
            }
            if not results:
                configs["memleak --combined-only"] = lambda pid: UserMemleak(pid, MemleakOptions(combined_only=True))
                configs["memleak --sample-rate 100"] = lambda pid: UserMemleak(pid, MemleakOptions(sample_rate=100))
            # Round-robin over the configurations: a load change on the machine hits them all alike.
            runs: dict[str, list[int]] = {name: [] for name in configs}
            for _ in range(args.repeat):
                for name, tracer in configs.items():
                    runs[name].append(_run_once(exe, args.pairs, tracer))
            results[workload] = {name: statistics.median(times) for name, times in runs.items()}
        build_s, rows = _table_build_s(d / "work0")
    print(f"{args.pairs} malloc/free pairs, median of {args.repeat} runs")
    for workload, timings in results.items():
        base, floor, fp = timings["untraced"], timings["floor (bare uprobes)"], timings["memleak --unwind fp"]
        print(f"\nworkload built with {workload}")
        print(f"{'configuration':28} {'ns/pair':>10} {'x untraced':>11} {'x floor':>8} {'x fp':>6}")
        for name, ns in timings.items():
            print(f"{name:28} {ns / args.pairs:10.0f} {ns / base:11.1f} {ns / floor:8.2f} {ns / fp:6.2f}")
    print(f"\nunwind tables of libc + libstdc++ + the workload: {rows} rows in {build_s * 1000:.1f} ms (cold)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
