"""Start-up and exit of memleak, phase by phase, against the interpreter's own start-up.

Two views, each the median of ``--repeat`` runs:

* the command users run: ``memwatcher --help``, ``memwatcher memleak --help``
  and ``memwatcher memleak --pid P --interval 1 --count 1`` (wall time to its
  exit, and to its first report less the 1 s interval), each also as a ratio
  to ``python -c pass``;
* in process, with ``--unwind dwarf`` and ``fp``: importing the report,
  loading the BPF object (the verifier), attaching the probes, the first read
  with symbolization, and closing (detaching every probe: the exit time);
  once more with a target calling malloc and free as fast as it can.

Run as root: ``.venv/bin/python benchmarks/startup.py [--repeat N]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

MEMWATCHER = [str(Path(sys.executable).with_name("memwatcher"))]
# A target that allocates now and then, so the first report has stacks to symbolize.
TARGET = "import time\nkeep = []\nwhile True:\n    keep.append(bytearray(4096)); time.sleep(0.01)\n"
# One that calls malloc and free as fast as it can: probes fire while they are detached.
BUSY_TARGET = "while True:\n    bytearray(4096)\n"


def _wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def _first_report_s(pid: int) -> tuple[float, float]:
    """(seconds to the first report less the interval, seconds to exit) of one memleak run."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [*MEMWATCHER, "memleak", "--pid", str(pid), "--interval", "1", "--count", "1", "--output", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    first = time.perf_counter() - start - 1.0
    proc.wait()
    return first, time.perf_counter() - start


def _in_process(pid: int, unwind: str) -> dict[str, float]:
    """Phases of one UserMemleak life, timed in a fresh interpreter (imports included)."""
    code = f"""
import json, time
t0 = time.perf_counter()
from memwatcher import libbpf
from memwatcher.tools.memleak import MemleakOptions, UserMemleak
t1 = time.perf_counter()
spent = {{"load": 0.0, "attach": 0.0}}
def timed(name, fn):
    def wrapper(*a, **k):
        s = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[name] += time.perf_counter() - s
    return wrapper
libbpf.BPFObject.load = timed("load", libbpf.BPFObject.load)
libbpf.Program.attach_uprobe = timed("attach", libbpf.Program.attach_uprobe)
libbpf.Program.attach = timed("attach", libbpf.Program.attach)
libbpf.Program.attach_uprobe_multi = timed("attach", libbpf.Program.attach_uprobe_multi)
t2 = time.perf_counter()
with UserMemleak({pid}, MemleakOptions(unwind="{unwind}")) as leaks:
    t3 = time.perf_counter()
    time.sleep(0.2)
    t4 = time.perf_counter()
    leaks.read(top=10)
    t5 = time.perf_counter()
t6 = time.perf_counter()
print(json.dumps({{"import": t1 - t0, "load (verifier)": spent["load"], "attach": spent["attach"],
    "other set-up": (t3 - t2) - spent["load"] - spent["attach"], "first read + symbolize": t5 - t4,
    "close (detach)": t6 - t5}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    target = subprocess.Popen([sys.executable, "-c", TARGET])
    busy = subprocess.Popen([sys.executable, "-c", BUSY_TARGET])
    try:
        time.sleep(0.5)
        commands = {
            "python -c pass (baseline)": [sys.executable, "-c", "pass"],
            "memwatcher --help": [*MEMWATCHER, "--help"],
            "memwatcher memleak --help": [*MEMWATCHER, "memleak", "--help"],
        }
        walls: dict[str, list[float]] = defaultdict(list)
        # (unwind mode, target pid) by label
        configs = {
            "--unwind dwarf": ("dwarf", target.pid),
            "--unwind fp": ("fp", target.pid),
            "--unwind dwarf, target calling malloc/free flat out": ("dwarf", busy.pid),
        }
        phases: dict[str, dict[str, list[float]]] = {label: defaultdict(list) for label in configs}
        for _ in range(args.repeat):  # round-robin: load drifts hit every configuration alike
            for name, argv in commands.items():
                walls[name].append(_wall(argv))
            first, total = _first_report_s(target.pid)
            walls["memleak --pid: first report (less the 1 s interval)"].append(first)
            walls["memleak --pid: to exit (1 report)"].append(total)
            for label, (unwind, pid) in configs.items():
                for phase, seconds in _in_process(pid, unwind).items():
                    phases[label][phase].append(seconds)
    finally:
        for proc in (target, busy):
            proc.kill()
            proc.wait()
    base = statistics.median(walls["python -c pass (baseline)"])
    print(f"median of {args.repeat} runs\n")
    print(f"{'command':58} {'seconds':>8} {'x python':>9}")
    for name, values in walls.items():
        median = statistics.median(values)
        print(f"{name:58} {median:8.3f} {median / base:9.1f}")
    for label, table in phases.items():
        print(f"\nin process, {label}")
        for phase, values in table.items():
            print(f"  {phase:56} {statistics.median(values):8.3f}")


if __name__ == "__main__":
    main()
