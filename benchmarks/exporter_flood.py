"""The exporter under a flood of idle or slow connections, on loopback.

Starts ``memwatcher export`` as its own process with the open-file limit a
systemd service gets by default (soft 1024), measures a quiet baseline, then
opens ``--connections`` sockets to it from this process and holds them for
``--duration`` seconds while a scraper fetches /metrics once a second
(5 s timeout). Flood modes:

* ``idle``: connect and send nothing;
* ``slowloris``: send a partial request head, then one more header byte per
  socket every second, never finishing;
* ``churn``: like slowloris, and every socket the exporter closes is opened
  again at once (at most ``--connections`` open at any time).

Printed per phase: scrape latency (median and worst) and failures, full
scrapes per second from one sequential client (new connections served), the
exporter's CPU share of one core (whole phase, and its second half, when
the flood is fully open), its threads and RSS at the end, and what the flood
saw (connects, closes). The flood's sockets are opened at ``--rate`` per second, so that a
server with a short listen backlog really accepts each of them. Only
127.0.0.1, bounded in count and time.

    python benchmarks/exporter_flood.py [--connections 900] [--duration 20] [--mode slowloris]
"""

from __future__ import annotations

import argparse
import collections
import errno
import multiprocessing
import os
import queue
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

# The export command as cli.main would run it.
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

PARTIAL_HEAD = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads_and_rss(pid: int) -> tuple[int, int]:
    """(threads, VmRSS bytes) of a process."""
    status = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            status[key] = value.strip()
    return int(status["Threads"]), int(status["VmRSS"].split()[0]) * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url: str, timeout_s: float = 5.0) -> float:
    """Seconds one full GET took; raises OSError on failure or timeout."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        r.read()
    return time.perf_counter() - started


class Flood:
    """Up to ``n`` non-blocking client sockets to ``addr``, kept by a child process until :meth:`close`.

    A process of its own, so that the flood's busy loop does not slow this
    process's scraper down (the GIL).
    """

    def __init__(self, addr: tuple[str, int], n: int, mode: str, rate: float) -> None:
        self.addr, self.n, self.mode, self.rate = addr, n, mode, rate
        ctx = multiprocessing.get_context("fork")
        self._stop = ctx.Event()
        self._results = ctx.Queue()
        self._proc = ctx.Process(target=self._run, daemon=True)
        self.summary = ""

    def start(self) -> None:
        self._proc.start()

    def close(self) -> str:
        """Stop the flood, close its sockets; returns a one-line summary."""
        self._stop.set()
        try:
            self.summary = self._results.get(timeout=10)
        except queue.Empty:
            self.summary = "no summary from the flood process"
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        return self.summary

    # ---- the child process

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        connected = closed_by_server = 0
        failed: collections.Counter[str] = collections.Counter()
        started = time.monotonic()
        connect_s = None

        def open_one() -> None:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            if s.connect_ex(self.addr) not in (0, errno.EINPROGRESS):
                s.close()
                return
            sel.register(s, selectors.EVENT_WRITE, "connecting")

        def closed(s: socket.socket) -> None:
            nonlocal closed_by_server
            sel.unregister(s)
            s.close()
            closed_by_server += 1
            if self.mode == "churn":
                open_one()

        to_open = self.n
        next_trickle = time.monotonic() + 1.0
        while not self._stop.is_set():
            # Open the first n sockets at the given rate: a server with a short
            # listen backlog must accept each (a burst of connects would mostly
            # wait in SYN retries, or, idle, never reach it at all).
            due = self.n if self.rate <= 0 else min(self.n, int((time.monotonic() - started) * self.rate) + 1)
            while to_open > self.n - due:
                open_one()
                to_open -= 1
            for key, _ in sel.select(timeout=0.01 if to_open else 0.1):
                s = key.fileobj
                if key.data == "connecting":
                    error = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if error not in (0, errno.ECONNRESET, errno.EPIPE):
                        failed[errno.errorcode.get(error, str(error))] += 1
                        sel.unregister(s)
                        s.close()
                        continue
                    connected += 1  # a reset means the exporter accepted it and closed it at once
                    if connected == self.n and connect_s is None:
                        connect_s = time.monotonic() - started
                    if error:
                        closed(s)
                        continue
                    if self.mode != "idle":
                        try:
                            s.send(PARTIAL_HEAD)
                        except OSError:
                            pass
                    sel.modify(s, selectors.EVENT_READ, "open")
                else:  # readable: the server answered or closed it
                    try:
                        data = s.recv(4096)
                    except OSError:
                        data = b""
                    if not data:
                        closed(s)
            now = time.monotonic()
            if self.mode != "idle" and now >= next_trickle:
                next_trickle = now + 1.0
                for key in list(sel.get_map().values()):
                    if key.data == "open":
                        try:
                            key.fileobj.send(b"a")
                        except OSError:
                            pass
        keys = list(sel.get_map().values())
        open_now = sum(1 for key in keys if key.data == "open")
        for key in keys:
            key.fileobj.close()
        took = f"{connect_s:.2f} s" if connect_s is not None else "never"
        self._results.put(
            f"{connected} connects completed (the first {self.n} after {took}), {open_now} open at the end, "
            f"{closed_by_server} closed by the exporter, failed connects {dict(failed)}"
        )


def phase(name: str, url: str, pid: int, duration_s: float, flood: Flood | None) -> None:
    """Scrape once a second for ``duration_s``, then sequential scrapes for 3 s; print the figures."""
    latencies: list[float] = []
    failures: list[str] = []
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    next_at = t0
    half: tuple[float, float] | None = None  # (CPU, time) at half time: the flood is fully open by then
    while time.monotonic() - t0 < duration_s:
        if half is None and time.monotonic() - t0 >= duration_s / 2:
            half = cpu_seconds(pid), time.monotonic()
        try:
            latencies.append(scrape(url))
        except OSError as e:
            failures.append(type(e).__name__ if not str(e) else str(e)[:60])
        next_at += 1.0
        time.sleep(max(0.0, next_at - time.monotonic()))
    cpu_end, t_end = cpu_seconds(pid), time.monotonic()
    cpu, elapsed = cpu_end - cpu0, t_end - t0
    cpu2, elapsed2 = (cpu_end - half[0], t_end - half[1]) if half else (cpu, elapsed)
    served, t1 = 0, time.monotonic()
    while time.monotonic() - t1 < 3.0:
        try:
            scrape(url, timeout_s=3.0)
            served += 1
        except OSError:
            pass
    rate = served / (time.monotonic() - t1)
    threads, rss = threads_and_rss(pid)
    lat = (
        f"median {1000 * statistics.median(latencies):.1f} ms, worst {1000 * max(latencies):.1f} ms"
        if latencies
        else "no scrape answered"
    )
    print(f"{name}:")
    print(f"  scrapes: {len(latencies)} answered ({lat}), {len(failures)} failed {sorted(set(failures))[:3]}")
    print(
        f"  exporter CPU {100 * cpu / elapsed:.1f}% of one core ({100 * cpu2 / elapsed2:.1f}% in the second half), "
        f"{threads} threads, RSS {rss / 2**20:.1f} MiB"
    )
    print(f"  sequential full scrapes: {rate:.1f}/s")
    if flood is not None:
        print(f"  flood: {flood.close()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=900, help="Flood sockets (at most 5000).")
    parser.add_argument("--duration", type=float, default=20.0, help="Seconds the flood is held (at most 120).")
    parser.add_argument("--mode", choices=("idle", "slowloris", "churn"), default="slowloris")
    parser.add_argument("--rate", type=float, default=200.0, help="Connects/s while opening the flood (0: at once).")
    parser.add_argument("--nofile", type=int, default=1024, help="The exporter's soft open-file limit.")
    parser.add_argument("export_args", nargs="*", help="Extra arguments for memwatcher export (after --).")
    args = parser.parse_args()
    n = min(args.connections, 5000)
    duration_s = min(args.duration, 120.0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 256), hard))

    def limit_files() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(args.nofile, hard), hard))

    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    cmd = [sys.executable, "-c", LAUNCHER, "export", "--listen", f"127.0.0.1:{port}", *args.export_args]
    proc = subprocess.Popen(cmd, preexec_fn=limit_files)
    flood = None
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                scrape(url)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit("the exporter did not start")
                time.sleep(0.2)
        print(f"exporter pid {proc.pid}, open-file limit {args.nofile}; flood: {n} {args.mode} sockets")
        phase("quiet", url, proc.pid, 5.0, None)
        flood = Flood(("127.0.0.1", port), n, args.mode, args.rate)
        flood.start()
        phase(f"flooded ({args.mode}, {duration_s:g} s)", url, proc.pid, duration_s, flood)
        flood = None
        time.sleep(1.0)
        phase("after the flood", url, proc.pid, 3.0, None)
    finally:
        if flood is not None:
            flood.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
