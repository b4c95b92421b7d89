"""Leak trends: the verdict rule on series whose truth is known, then on a program that
leaks at a steady rate, keeps a pool and frees what it held (memleak, real BPF)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import requires_bpf
from memwatcher.tools.memleak import MemleakOptions, UserMemleak, report_json
from memwatcher.trends import TrendTracker


def _feed(tracker: TrendTracker, series: dict[str, list[int]], step_s: float = 0.5) -> None:
    for i in range(max(len(v) for v in series.values())):
        tracker.observe(i * step_s, {k: v[i] for k, v in series.items() if i < len(v) and v[i]})


def test_verdicts_rates_and_durations() -> None:
    tracker = TrendTracker(window=20, recent=4)
    _feed(
        tracker,
        {
            "leak": [1000 * i for i in range(1, 11)],  # 1000 per 0.5 s
            "pool": [100, 200, 300, 400, 400, 400, 400, 400, 400, 400],
            "freed": [500, 900, 900, 900, 0, 0, 0, 0, 0, 0],
            "sawtooth": [100, 300, 100, 300, 100, 300, 100, 300, 100, 300],
            "noisy": [0, 0, 0, 0, 0, 0, 1000, 2100, 1900, 3000],  # rising, one dip among the recent
        },
    )
    leak, pool, freed, saw = (tracker.trend(k) for k in ("leak", "pool", "freed", "sawtooth"))
    noisy = tracker.trend("noisy")
    assert noisy.verdict == "growing" and noisy.growth_per_s == pytest.approx(1160.0)  # the fit of its last 4
    assert noisy.growing_for_s == pytest.approx(1.5)
    assert leak.verdict == "growing" and leak.growth_per_s == pytest.approx(2000.0)
    assert leak.growing_for_s == pytest.approx(4.5)
    assert (pool.verdict, pool.growth_per_s, pool.growing_for_s) == ("stable", 0.0, 0.0)
    assert freed.verdict == "freed" and freed.growth_per_s == 0.0
    assert saw.verdict == "stable"
    assert tracker.trend("never") is None
    # One block of 512 bytes more or less, read between a free and its malloc: not a leak.
    flicker = TrendTracker(window=20, recent=5)
    for i, level in enumerate([101_888, 101_888, 102_400, 102_400, 102_400]):
        flicker.observe(i * 0.5, {"pool": level})
    assert flicker.trend("pool").verdict == "growing"  # with no floor, a rise of 512 bytes is one
    assert flicker.trend("pool", min_rise=1024).verdict == "stable"


def test_one_sample_has_no_trend_and_an_empty_window_is_forgotten() -> None:
    tracker = TrendTracker(window=3, recent=2)
    tracker.observe(0.0, {"a": 10})
    assert tracker.trend("a") is None
    for t in (1.0, 2.0, 3.0):
        tracker.observe(t, {})
    assert tracker.keys() == []  # a whole window at zero: no memory kept for it
    with pytest.raises(ValueError):
        TrendTracker(window=3, recent=4)


# Leaks STEADY_RATE bytes/s from steady_leak (catching up with the clock, so the rate is
# exact whatever the scheduler does), keeps a pool of 200 x 512 B from pool_alloc
# (filled in 0.4 s, then one freed and one allocated per 2 ms), and holds 100 x 4096 B
# from temp_alloc until 1 s after "go".
STEADY_RATE = 100_000
PROGRAM_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
static void *volatile sink;
__attribute__((noinline)) void *steady_leak(size_t n) { return malloc(n); }
__attribute__((noinline)) void *pool_alloc(void) { return malloc(512); }
__attribute__((noinline)) void *temp_alloc(void) { return malloc(4096); }
static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}
int main(void)
{
	void *pool[200], *temp[100];
	int pool_n = 0, temp_held = 1;
	long leaked = 0;
	printf("ready\n");
	fflush(stdout);
	getchar();
	double start = now();
	for (int i = 0; i < 100; i++) temp[i] = temp_alloc();
	for (;;) {
		double t = now() - start;
		while (leaked < (long)(RATE * t)) {
			sink = steady_leak(1000);
			leaked += 1000;
		}
		void *p = pool_alloc(); /* one call site: one stack */
		if (pool_n < 200) {
			pool[pool_n++] = p;
		} else {
			int k = rand() % pool_n;
			free(pool[k]);
			pool[k] = p;
		}
		if (temp_held && t > 1.0) {
			for (int i = 0; i < 100; i++) free(temp[i]);
			temp_held = 0;
		}
		usleep(2000);
	}
}
"""


@requires_bpf
def test_a_steady_leak_a_pool_and_a_freed_stack(tmp_path: Path) -> None:
    src, exe = tmp_path / "trend.c", tmp_path / "trend"
    src.write_text(PROGRAM_C)
    subprocess.run(["gcc", "-O1", "-g", f"-DRATE={STEADY_RATE}", "-o", str(exe), str(src)], check=True)
    proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        with UserMemleak(proc.pid, MemleakOptions()) as leaks:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
            time.sleep(0.2)
            for _ in range(10):  # 3 s of reads, as the CLI makes them every interval
                time.sleep(0.3)
                report = report_json(leaks.read(top=None, sort="growth"))
            # The counts are checked on a stopped program: a read of the allocation map while
            # the pool churns may miss a re-inserted entry or see one twice (more so under
            # emulation, where one read spans several churn steps).
            proc.send_signal(signal.SIGSTOP)
            time.sleep(0.1)
            held = report_json(leaks.read(top=None, sort="growth"))
    finally:
        proc.kill()
        proc.wait()
    by_function = {}
    for stack in report["stacks"]:
        names = [f["symbol"] for f in stack["frames"]]
        for name in ("steady_leak", "pool_alloc", "temp_alloc"):
            if name in names:
                by_function[name] = stack
    steady, pool, temp = by_function["steady_leak"], by_function["pool_alloc"], by_function["temp_alloc"]
    assert report["stacks"][0] is steady  # --sort growth: the leak first
    assert steady["verdict"] == "growing"
    assert steady["growth_bytes_per_s"] == pytest.approx(STEADY_RATE, rel=0.10)
    assert steady["growing_for_s"] >= 2.5
    assert (pool["verdict"], pool["growth_bytes_per_s"]) == ("stable", 0.0)
    # Stopped between a pool_alloc and the free after it, the program holds one block more.
    held_pool = next(s for s in held["stacks"] if "pool_alloc" in [f["symbol"] for f in s["frames"]])
    assert held_pool["outstanding_allocs"] in (200, 201)
    assert held_pool["outstanding_bytes"] == 512 * held_pool["outstanding_allocs"]
    assert (temp["verdict"], temp["outstanding_bytes"]) == ("freed", 0)
    # Totals since tracing began, from BPF's counters: the program's own counts.
    since_start = ("allocations", "frees", "allocated_bytes", "freed_bytes")
    assert [temp[k] for k in since_start] == [100, 100, 409_600, 409_600]
    held_steady = next(s for s in held["stacks"] if s["stack_id"] == steady["stack_id"])
    assert held_steady["frees"] == 0 and held_steady["allocated_bytes"] == held_steady["outstanding_bytes"]
    assert held_steady["allocations"] * 1000 == held_steady["allocated_bytes"]
    # The pool: every block past the 200 held was freed, the churn's bytes all accounted.
    assert held_pool["allocations"] - held_pool["frees"] == held_pool["outstanding_allocs"]
    assert held_pool["allocated_bytes"] - held_pool["freed_bytes"] == held_pool["outstanding_bytes"]
    assert held_pool["frees"] > 0 and held_pool["freed_bytes"] == 512 * held_pool["frees"]
