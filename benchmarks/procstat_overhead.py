"""Cost of procstat to a context-switch-heavy workload.

Two processes bounce one byte over a pair of pipes (C, compiled here with
gcc), so every round trip is two context switches, each of which runs the
procstat sched_switch program when traced. Rounds alternate untraced and
traced (procstat loaded and attached, sampling every process) in the same
run; the figure is the ratio of median round-trip times, traced / untraced
(the ratio of the fastest rounds is printed too: it is the one least
disturbed by other load on a small shared machine). Target: <= 1.05.
By default both processes share CPU 0 (every switch is between them: the
worst case); --cpus 0,1 puts them on different CPUs.

    python benchmarks/procstat_overhead.py [--trips N] [--rounds R] [--cpus 0|0,1]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from pathlib import Path

from memwatcher.tools.procstat import ProcStat

PING_PONG = r"""
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof(set), &set);
}

int main(int argc, char **argv)
{
    long trips = atol(argv[1]);
    int cpu_a = atoi(argv[2]), cpu_b = atoi(argv[3]);
    int ab[2], ba[2];
    char c = 0;
    struct timespec t0, t1;

    if (pipe(ab) || pipe(ba))
        return 1;
    if (fork() == 0) {
        pin(cpu_b);
        for (long i = 0; i < trips; i++)
            if (read(ab[0], &c, 1) != 1 || write(ba[1], &c, 1) != 1)
                _exit(1);
        _exit(0);
    }
    pin(cpu_a);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < trips; i++)
        if (write(ab[1], &c, 1) != 1 || read(ba[0], &c, 1) != 1)
            return 1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    wait(NULL);
    printf("%lld\n", (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec));
    return 0;
}
"""


def build(workdir: Path) -> Path:
    src = workdir / "pingpong.c"
    src.write_text(PING_PONG)
    exe = workdir / "pingpong"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def trip_ns(exe: Path, trips: int, cpus: tuple[int, int]) -> float:
    """Mean round-trip time in nanoseconds."""
    out = subprocess.run([str(exe), str(trips), *map(str, cpus)], capture_output=True, text=True, check=True)
    return int(out.stdout) / trips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trips", type=int, default=200_000, help="round trips per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per mode (alternating)")
    parser.add_argument("--cpus", default="0", help="CPU of each process: '0' (shared) or '0,1'")
    args = parser.parse_args()
    cpu_list = [int(c) for c in args.cpus.split(",")]
    cpus = (cpu_list[0], cpu_list[-1])

    with tempfile.TemporaryDirectory() as tmp:
        exe = build(Path(tmp))
        trip_ns(exe, args.trips // 10, cpus)  # warm up
        untraced, traced = [], []
        for _ in range(args.rounds):
            untraced.append(trip_ns(exe, args.trips, cpus))
            with ProcStat():
                traced.append(trip_ns(exe, args.trips, cpus))

    base, with_bpf = statistics.median(untraced), statistics.median(traced)
    ratio = with_bpf / base
    print(f"cpus {cpus[0]},{cpus[1]}: {args.rounds} rounds x {args.trips} round trips (2 context switches each)")
    print(f"untraced  {base:8.0f} ns/round trip  (rounds: {', '.join(f'{x:.0f}' for x in untraced)})")
    print(f"traced    {with_bpf:8.0f} ns/round trip  (rounds: {', '.join(f'{x:.0f}' for x in traced)})")
    print(f"cost      {(with_bpf - base) / 2:8.0f} ns per context switch")
    # Minima are the rounds least disturbed by other load on the machine.
    print(f"ratio of fastest rounds = {min(traced) / min(untraced):.3f}")
    print(f"ratio traced/untraced = {ratio:.3f} (medians; target <= 1.05): {'ok' if ratio <= 1.05 else 'ABOVE TARGET'}")


if __name__ == "__main__":
    main()
