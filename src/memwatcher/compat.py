"""`mem_watcher`: the original tool's command line, mapped onto memwatcher's reports.

The seed's documented invocations keep working:

    mem_watcher -r           per-process memory        -> memwatcher procstat
    mem_watcher -r -R        its page-table/stack view  -> memwatcher procstat --pages
    mem_watcher -r -P PID    one process               -> memwatcher procstat --pid PID
    mem_watcher -s [-n]      system memory [part 2]    -> memwatcher sysstat [--group part2]
    mem_watcher -a           page allocation           -> memwatcher paf
    mem_watcher -p           page reclaim              -> memwatcher pr
    mem_watcher -l           kernel leaks              -> memwatcher memleak --kernel
    mem_watcher -l -P PID    leaks of a process        -> memwatcher memleak --pid PID

`-t/--time SEC` becomes `--duration SEC`; anything after `--` is passed to
the report unchanged (e.g. `mem_watcher -r -- --output json`).
"""

from __future__ import annotations

import argparse
import sys

from . import cli

__all__ = ["main", "translate"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mem_watcher",
        description="The original mem_watcher interface; runs the matching memwatcher report.",
        epilog="Options after -- go to the report unchanged. See `memwatcher --help` for the full tool.",
    )
    reports = p.add_mutually_exclusive_group(required=True)
    reports.add_argument("-a", "--paf", action="store_true", help="page allocation and zone watermarks (paf)")
    reports.add_argument("-p", "--pr", action="store_true", help="page reclaim (pr)")
    reports.add_argument("-r", "--procstat", action="store_true", help="per-process memory (procstat)")
    reports.add_argument("-s", "--sysstat", action="store_true", help="system memory (sysstat)")
    reports.add_argument("-l", "--memleak", action="store_true", help="leaked memory by stack (memleak)")
    p.add_argument("-n", "--part2", action="store_true", help="with -s: the second group of counters")
    p.add_argument("-P", "--choose_pid", type=int, metavar="PID", help="with -r or -l: only this process")
    p.add_argument("-R", "--Rss", action="store_true", help="with -r: vsize, data, stack, page tables, swap")
    p.add_argument("-t", "--time", type=float, metavar="SEC", help="stop after SEC seconds")
    return p


def translate(argv: list[str]) -> list[str]:
    """The memwatcher argument list equivalent to an original mem_watcher one."""
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = _parser()
    args = parser.parse_args(argv)
    if args.part2 and not args.sysstat:
        parser.error("-n/--part2 goes with -s/--sysstat")
    if args.Rss and not args.procstat:
        parser.error("-R/--Rss goes with -r/--procstat")
    if args.choose_pid is not None and not (args.procstat or args.memleak):
        parser.error("-P/--choose_pid goes with -r/--procstat or -l/--memleak")
    out: list[str]
    if args.procstat:
        out = ["procstat"] + (["--pages"] if args.Rss else [])
        out += ["--pid", str(args.choose_pid)] if args.choose_pid is not None else []
    elif args.sysstat:
        out = ["sysstat"] + (["--group", "part2"] if args.part2 else [])
    elif args.paf:
        out = ["paf"]
    elif args.pr:
        out = ["pr"]
    else:
        out = ["memleak"] + (["--pid", str(args.choose_pid)] if args.choose_pid is not None else ["--kernel"])
    if args.time is not None:
        out += ["--duration", str(args.time)]
    return out + extra


def main() -> None:
    """Console entry point of `mem_watcher`."""
    sys.argv = ["memwatcher", *translate(sys.argv[1:])]
    cli.main()


if __name__ == "__main__":
    main()
