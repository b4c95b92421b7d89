"""Symbolization speed: cold and warm lookups in a large library with DWARF, per back end.

Cold: a new Symbolizer resolves N random .text addresses (opens the file and
its debug file, reads the symbol table, indexes the CUs it touches). Warm: the
same Symbolizer resolves N other random addresses (indexes partly built, no
repeated address). Cached: the warm addresses again. ``eu-addr2line -f -i``
resolving the cold addresses in one process is the baseline; ratios are
printed against it and between back ends.

    python benchmarks/symbolize.py [--library PATH] [--count N] [--backend NAME]...
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import time

from elftools.elf.elffile import ELFFile

from memwatcher.symbolize import Symbolizer, available_backends


def text_range(path: str) -> tuple[int, int]:
    with open(path, "rb") as f:
        text = ELFFile(f).get_section_by_name(".text")
        return text["sh_addr"], text["sh_addr"] + text["sh_size"]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--library", default="/lib/x86_64-linux-gnu/libc.so.6")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--backend", action="append", choices=available_backends(), help="default: all available")
    args = parser.parse_args()

    low, high = text_range(args.library)
    rng = random.Random(args.seed)
    cold = rng.sample(range(low, high), args.count)
    warm = rng.sample(range(low, high), args.count)
    print(f"{args.library}: {args.count} random .text addresses per run")

    results: dict[str, dict[str, float]] = {}
    eu_s = None
    if shutil.which("eu-addr2line"):
        argv = ["eu-addr2line", "-f", "-i", "-e", args.library, *(hex(a) for a in cold)]
        eu_s = timed(lambda: subprocess.run(argv, check=True, capture_output=True))
        print(f"  eu-addr2line        {eu_s * 1e3:9.1f} ms  (one process, cold)")
    for backend in args.backend or available_backends():
        with Symbolizer(backend=backend) as sym:
            cold_s = timed(lambda s=sym: s.symbolize_elf(args.library, cold))
            warm_s = timed(lambda s=sym: s.symbolize_elf(args.library, warm))
            cached_s = timed(lambda s=sym: s.symbolize_elf(args.library, warm))
        results[backend] = {"cold": cold_s, "warm": warm_s, "cached": cached_s}
        per = args.count
        print(
            f"  {backend:<12} cold {cold_s * 1e3:9.1f} ms   warm {warm_s * 1e6 / per:8.1f} us/addr"
            f"   cached {cached_s * 1e6 / per:6.2f} us/addr"
        )
    if eu_s:
        for backend, r in results.items():
            print(f"  {backend} cold / eu-addr2line: {r['cold'] / eu_s:.2f}x")
    if "libdw" in results and "pyelftools" in results:
        dw, pe = results["libdw"], results["pyelftools"]
        print(
            f"  pyelftools / libdw: cold {pe['cold'] / dw['cold']:.1f}x, warm {pe['warm'] / dw['warm']:.1f}x,"
            f" cached {pe['cached'] / dw['cached']:.1f}x"
        )


if __name__ == "__main__":
    main()
