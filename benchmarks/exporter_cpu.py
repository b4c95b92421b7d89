"""The exporter's own CPU time per scrape, at Prometheus-like scrape intervals.

Starts ``memwatcher export`` as its own process (procstat, sysstat, paf and pr
loaded and attached, per-process metrics for the top N), scrapes /metrics
every ``interval`` seconds for ``duration`` seconds, and reads the exporter's
user + system CPU time from /proc/PID/stat before the first timed scrape and
after the last one (the loading cost is left out). The same window without
any scrape is the baseline: the idle exporter's own cost. Printed: CPU
seconds per scrape, mean wall time per scrape, and the exporter's share of
one core at each interval. (The BPF programs' cost lands on the traced tasks,
not here: see procstat_overhead.py for that.)

    python benchmarks/exporter_cpu.py [--duration 60] [--intervals 15,1] [--top-processes 20]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

# The export command as cli.main would run it (works before cli.py registers it).
LAUNCHER = """
import sys, typer
from memwatcher import exporter
from memwatcher.errors import MemwatcherError
app = typer.Typer()
@app.callback()
def _root() -> None:
    pass
exporter.register(app)
try:
    app(args=sys.argv[1:])
except MemwatcherError as e:
    print(f"memwatcher: {e}", file=sys.stderr)
    sys.exit(1)
"""


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as r:
        return len(r.read())


def measure(url: str, pid: int, interval_s: float | None, duration_s: float) -> tuple[int, float, float]:
    """(scrapes, exporter CPU seconds, mean scrape wall seconds) over ``duration_s``."""
    cpu0 = cpu_seconds(pid)
    start = time.monotonic()
    scrapes, wall = 0, 0.0
    next_at = start
    while True:
        now = time.monotonic()
        if now - start >= duration_s:
            break
        if interval_s is None:
            time.sleep(duration_s - (now - start))
            continue
        if now >= next_at:
            t = time.perf_counter()
            scrape(url)
            wall += time.perf_counter() - t
            scrapes += 1
            next_at += interval_s
        time.sleep(max(0.0, min(next_at, start + duration_s) - time.monotonic()))
    return scrapes, cpu_seconds(pid) - cpu0, wall / scrapes if scrapes else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="Seconds per measurement.")
    parser.add_argument("--intervals", default="15,1", help="Scrape intervals (seconds), comma-separated.")
    parser.add_argument("--top-processes", type=int, default=20)
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    cmd = [sys.executable, "-c", LAUNCHER, "export", "--listen", f"127.0.0.1:{port}"]
    proc = subprocess.Popen([*cmd, "--top-processes", str(args.top_processes)])
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                size = scrape(url)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit("the exporter did not start")
                time.sleep(0.2)
        print(f"exporter pid {proc.pid}, /metrics {size} bytes, {args.duration:.0f} s per measurement")
        _, idle_cpu, _ = measure(url, proc.pid, None, args.duration)
        print(f"idle (no scrapes): {idle_cpu:.3f} CPU-s = {100 * idle_cpu / args.duration:.3f}% of one core")
        for interval_s in (float(x) for x in args.intervals.split(",")):
            n, cpu, wall = measure(url, proc.pid, interval_s, args.duration)
            per_scrape = (cpu - idle_cpu) / n if n else float("nan")
            print(
                f"every {interval_s:g} s: {n} scrapes, {cpu:.3f} CPU-s = {100 * cpu / args.duration:.3f}% of one core; "
                f"{1000 * per_scrape:.2f} CPU-ms per scrape above idle, {1000 * wall:.2f} ms wall per scrape"
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
