"""memwatcher export: scraped by a real Prometheus, checked against /proc.

The kernel tests run the exporter as its own process (the CLI command, built
by a small launcher that calls ``exporter.register``), start a real
Prometheus server (Debian package ``prometheus``; installed here when
missing) on loopback scraping it every second, and compare the per-process
metrics of a child the test controls with /proc/PID/status. The child is
frozen with SIGSTOP (stopping switches it out, so procstat's last sample is
taken after its last change) and only samples Prometheus scraped after the
stop count; the values must then be equal to the byte, procstat's own
tolerance. Fast tests cover parsing, bucket conversion, counter
accumulation and the naming lint on fake report data.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from conftest import (
    GUEST,
    MEMORY_HOLDER,
    OOM_HOG,
    PAGE_CACHE_WORKLOAD,
    Cgroup,
    free_port,
    fs_type,
    kib,
    meminfo_bytes,
    memory_limited_cgroup,
    proc_status,
    requires_bpf,
    vmstat,
)
from memwatcher import exporter, kernel, processes
from memwatcher.pressure import read_pressure
from memwatcher.tools import paf, pr, procstat, sysstat

# Runs the export command the way cli.main would, then reports BPF fds still open.
LAUNCHER = """
import os, sys, typer
from memwatcher import exporter, kernel
from memwatcher.errors import MemwatcherError
app = typer.Typer()
@app.callback()
def _root() -> None:
    pass
exporter.register(app)
code = 0
try:
    app(args=sys.argv[1:])
except SystemExit as e:
    code = e.code or 0
except MemwatcherError as e:
    print(f"memwatcher: {e}", file=sys.stderr)
    code = 1
left = []
for fd in os.listdir("/proc/self/fd"):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        continue
    if target.startswith(("anon_inode:bpf", "anon_inode:btf")):
        left.append(target)
print(f"bpf fds left: {len(left)} {sorted(left)}", file=sys.stderr)
sys.exit(code)
"""

CHILD = """
import mmap, sys, time
page = mmap.PAGESIZE
anon = bytearray({anon})
for i in range(0, len(anon), page):
    anon[i] = 1
shm = mmap.mmap(-1, {shmem})
for i in range(0, len(shm), page):
    shm[i] = 1
print("ready", flush=True)
while True:
    time.sleep(0.002)
"""
DOCS = Path(__file__).resolve().parents[1] / "docs"
ANON_BYTES = 48 << 20
SHMEM_BYTES = 8 << 20

ALLOWED_LABELS = {
    "pid", "comm", "node", "zone", "lru", "kind", "report", "reason", "trigger", "le", "code", "window", "cgroup",
    "container",
}  # fmt: skip


# ---------------------------------------------------------------- the lint


def promtool_problems(text: str) -> list[str]:
    """What Prometheus' own linter says of an exposition (empty: clean): names, units, suffixes, HELP."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: scripts/install.sh installs it (Debian package prometheus)"
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return problems or ([f"promtool exited {done.returncode}"] if done.returncode else [])


def label_problems(text: str, top_processes: int) -> list[str]:
    """What promtool does not judge (empty: clean): our prefix, bounded labels, pid and comm only
    on the per-process metrics and no more per-process series than asked for."""
    problems = []
    series = set()
    for family in text_string_to_metric_families(text):
        name = family.name
        if not name.startswith("memwatcher_"):
            problems.append(f"{name}: no memwatcher_ prefix")
        for s in family.samples:
            for label in s.labels:
                if label not in ALLOWED_LABELS:
                    problems.append(f"{name}: label {label} may have unbounded cardinality")
            if ("pid" in s.labels or "comm" in s.labels) and not name.startswith("memwatcher_process_"):
                problems.append(f"{name}: pid/comm outside the per-process metrics")
            if name.startswith("memwatcher_process_"):
                series.add(tuple(sorted(s.labels.items())))
    if len(series) > top_processes:
        problems.append(f"{len(series)} per-process series exported, more than the top {top_processes}")
    return problems


def lint_exposition(text: str, top_processes: int) -> list[str]:
    return promtool_problems(text) + label_problems(text, top_processes)


# ---------------------------------------------------------------- fast tests


def test_parse_listen() -> None:
    assert exporter.parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert exporter.parse_listen("[::1]:9100") == ("::1", 9100)
    assert exporter.parse_listen("0.0.0.0:1") == ("0.0.0.0", 1)
    assert exporter.parse_listen("localhost:80") == ("localhost", 80)
    for bad in (":9464", "9464", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "::1:9464", "[::1]"):
        with pytest.raises(ValueError):
            exporter.parse_listen(bad)


def test_latency_buckets_are_cumulative_seconds() -> None:
    slots = [0] * 40
    slots[3] = 5  # [8, 16) ns: below the first kept bound, counted in every bucket
    slots[20] = 2  # [1.05, 2.10) ms
    slots[39] = 1  # open last slot: only in +Inf
    buckets = exporter.latency_buckets(slots)
    les = [le for le, _ in buckets]
    assert les[-1] == "+Inf" and buckets[-1][1] == 8
    bounds = [float(le) for le in les[:-1]]
    assert bounds == sorted(bounds)
    assert bounds[0] == pytest.approx(2**10 / 1e9) and bounds[-1] == pytest.approx(2**36 / 1e9)
    counts = dict(buckets)
    below = [c for le, c in buckets[:-1] if float(le) < 2**21 / 1e9]
    assert set(below) == {5}  # the 8-16 ns reclaims everywhere, the 1 ms ones not yet
    assert counts[floatToGoString(2**21 / 1e9)] == 7
    assert buckets[-2][1] == 7  # le = 2^36 ns: everything but the open slot
    assert [c for _, c in buckets] == sorted(c for _, c in buckets)


def _proc(pid: int, rss: int) -> procstat.ProcessMemory:
    return procstat.ProcessMemory(
        pid, f"p{pid}", 10 * rss, rss, rss, rss, rss, rss // 2, rss // 4, rss // 4, 0, 0, 0, 0, 1, 0.0, True
    )


def _member(pid: int, comm: str, rss: int) -> procstat.ProcessMemory:
    return _proc(pid, rss)._replace(comm=comm)


def test_process_series_sum_alike_processes_and_rank_by_rss() -> None:
    procs = [_member(1, "php", 10), _member(2, "php", 20), _member(3, "php", 25), _member(4, "db", 40)]
    cgroups = {1: "/a", 2: "/a", 3: "/b", 4: "/a"}

    def series(n: int, key: str) -> list[tuple[tuple[str, ...], int, int]]:
        found = exporter.process_series(procs, n, key, lambda p: cgroups[p.pid])
        return [(s.labels, s.processes, s.sizes["rss_bytes"]) for s in found]

    assert series(2, "name") == [(("db", "/a"), 1, 40), (("php", "/a"), 2, 30)]
    assert series(3, "name")[2] == (("php", "/b"), 1, 25)
    assert series(2, "pid") == [(("4", "db", "/a"), 1, 40), (("3", "php", "/b"), 1, 25)]
    assert series(0, "name") == []
    with pytest.raises(ValueError):
        series(1, "user")


def test_top_by_rss_keeps_the_largest() -> None:
    procs = [_proc(pid, rss) for pid, rss in ((1, 10), (2, 30), (3, 20), (4, 30))]
    assert [p.pid for p in exporter.top_by_rss(procs, 3)] == [2, 4, 3]
    assert exporter.top_by_rss(procs, 0) == []


class _FakePaf:
    """paf's counts are since the tracer started: 7 allocations a sample, 1 then 2 failures, 1 wakeup."""

    def __init__(self) -> None:
        self.calls = 0

    def sample(self) -> paf.PafSample:
        self.calls += 1
        failures = self.calls * (self.calls + 1) // 2
        zones = [
            paf.ZoneStats(0, "Normal", 10, 12, 14, 0, 1000, 900, 500, 7 * self.calls, failures, self.calls),
            paf.ZoneStats(0, "Movable", None, None, None, None, 0, 0, None, 0, 0, 0),
        ]
        return paf.PafSample(zones, [], [], 0, 0)


# Above any pid the kernel hands out (PID_MAX_LIMIT): no /proc entry, so no cgroup.
_FAKE_PID_BASE = 1 << 23


class _FakeProcStat:
    dropped = 3

    def read(self) -> list[procstat.ProcessMemory]:
        return [_proc(_FAKE_PID_BASE + i, i * 4096) for i in range(1, 50)]


def _fake_collector(top: int, process_key: str = "name") -> tuple[exporter.MemwatcherCollector, CollectorRegistry]:
    reports = SimpleNamespace(procstat=_FakeProcStat(), sysstat=None, paf=_FakePaf(), pr=None, oom=None)
    collector = exporter.MemwatcherCollector(reports, top_processes=top, process_key=process_key)  # type: ignore[arg-type]
    registry = CollectorRegistry()
    registry.register(collector)
    return collector, registry


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_fake_reports_export_counts_since_start_and_pass_the_lint() -> None:
    _, registry = _fake_collector(top=5)
    first = _samples(generate_latest(registry).decode())
    text = generate_latest(registry).decode()
    second = _samples(text)
    zone = (("node", "0"), ("zone", "Normal"))
    assert first[("memwatcher_page_allocations_total", zone)] == 7
    assert second[("memwatcher_page_allocations_total", zone)] == 14
    assert first[("memwatcher_page_allocation_failures_total", zone)] == 1  # 1 failure, then 2 more
    assert second[("memwatcher_page_allocation_failures_total", zone)] == 3
    assert second[("memwatcher_kswapd_wakeup_requests_total", zone)] == 2
    page = kernel.page_size()
    assert second[("memwatcher_zone_free_bytes", zone)] == 500 * page
    # The empty zone has counters but no gauges.
    assert not any(k[0] == "memwatcher_zone_free_bytes" and ("zone", "Movable") in k[1] for k in second)
    names = {dict(k[1])["comm"] for k in second if k[0] == "memwatcher_process_rss_bytes"}
    assert names == {f"p{_FAKE_PID_BASE + i}" for i in range(45, 50)}
    series = (("cgroup", ""), ("comm", f"p{_FAKE_PID_BASE + 49}"))
    assert second[("memwatcher_process_rss_bytes", series)] == 49 * 4096
    assert second[("memwatcher_process_instances", series)] == 1
    assert second[("memwatcher_processes_untracked_total", ())] == 3
    assert second[("memwatcher_exporter_scrapes_total", ())] == 2
    assert second[("memwatcher_exporter_report_loaded", (("report", "sysstat"),))] == 0
    assert lint_exposition(text, top_processes=5) == []


def test_lint_catches_bad_names() -> None:
    bad = (
        "# HELP memwatcher_size_kb x\n# TYPE memwatcher_size_kb gauge\nmemwatcher_size_kb 1\n"
        "# HELP memwatcher_allocs x\n# TYPE memwatcher_allocs counter\nmemwatcher_allocs 1\n"
        '# HELP memwatcher_x_bytes x\n# TYPE memwatcher_x_bytes gauge\nmemwatcher_x_bytes{addr="1"} 1\n'
        "# HELP node_thing x\n# TYPE node_thing gauge\nnode_thing 1\n"
    )
    problems = "\n".join(lint_exposition(bad, 20))
    assert "abbreviated units" in problems
    assert 'should have "_total" suffix' in problems
    assert "label addr" in problems
    assert "no memwatcher_ prefix" in problems


def test_closed_collector_yields_nothing() -> None:
    collector, registry = _fake_collector(top=5)
    collector.close()
    assert generate_latest(registry) == b""


# ---------------------------------------------------------------- kernel tests


def http_get(url: str, timeout_s: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        return r.read().decode()


def wait_until(check, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class Exporter:
    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, "export", "--listen", f"127.0.0.1:{self.port}", *args],
            stderr=subprocess.PIPE,
            text=True,
        )
        # It loads every report's programs first: minutes under emulation beside other work.
        start_s = 300 if GUEST else 30
        wait_until(lambda: self.proc.poll() is not None or http_get(self.url), start_s, "the exporter to serve")
        assert self.proc.poll() is None, self.proc.stderr.read()

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        return self.proc.returncode, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def child() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(anon=ANON_BYTES, shmem=SHMEM_BYTES)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def freeze(pid: int) -> None:
    os.kill(pid, signal.SIGSTOP)
    wait_until(lambda: proc_status(pid)["State"].startswith("T"), 5, "the child to stop")


@pytest.fixture(scope="module")
def prometheus_binary(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The prometheus server binary: the installed one, else Debian's unpacked in a temporary directory.

    Unpacked, not installed: installing the package would start its own service,
    and the host's services are not the tests' to start or stop.
    """
    found = shutil.which("prometheus")
    if found:
        return found
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("needs the prometheus server (Debian package prometheus) and apt-get is unavailable")
    where = tmp_path_factory.mktemp("prometheus")
    done = subprocess.run(["apt-get", "download", "prometheus"], cwd=where, capture_output=True, text=True, timeout=600)
    debs = list(where.glob("prometheus_*.deb"))
    if done.returncode != 0 or not debs:
        pytest.skip(f"could not download the prometheus package: {done.stderr.strip()[-300:]}")
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(where / "root")], check=True, timeout=120)
    return str(where / "root/usr/bin/prometheus")


class Prometheus:
    def __init__(self, binary: str, target_port: int, workdir: Path) -> None:
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api/v1"
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: memwatcher\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n"
        )
        self.log = (workdir / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(
            lambda: self.proc.poll() is not None or http_get(f"http://127.0.0.1:{self.port}/-/ready"), 30, "prometheus"
        )
        assert self.proc.poll() is None, (workdir / "prometheus.log").read_text()[-2000:]

    def query(self, expr: str) -> list[dict]:
        reply = json.loads(http_get(f"{self.api}/query?" + urllib.parse.urlencode({"query": expr})))
        assert reply["status"] == "success", reply
        return reply["data"]["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@requires_bpf
def test_prometheus_scrapes_process_and_system_metrics(
    prometheus_binary: str, child: subprocess.Popen[str], memcg: Cgroup, tmp_path: Path
) -> None:
    """Every dashboard panel's metrics must be in the scrape: ``memcg`` is a cgroup below the root
    for the per-cgroup series (a fresh guest has none of its own)."""
    pid = child.pid
    exp = Exporter("--top-processes", "100000", "--process-key", "pid")
    prom = None
    try:
        # Before freezing: procstat has seen the child switch out.
        wait_until(lambda: f'pid="{pid}"' in http_get(exp.url), 10, "the child in /metrics")
        prom = Prometheus(prometheus_binary, exp.port, tmp_path)
        freeze(pid)
        stopped_at = time.time()
        status = proc_status(pid)
        selector = f'{{pid="{pid}"}}'
        # A scrape that started after the stop (Prometheus stamps samples with the scrape start).
        wait_until(
            lambda: (prom.value(f"timestamp(memwatcher_process_rss_bytes{selector})") or 0) > stopped_at + 0.01,
            20,
            "a scrape after the child stopped",
        )
        expected = {
            "memwatcher_process_rss_bytes": kib(status, "VmRSS"),
            "memwatcher_process_rss_anon_bytes": kib(status, "RssAnon"),
            "memwatcher_process_rss_file_bytes": kib(status, "RssFile"),
            "memwatcher_process_rss_shmem_bytes": kib(status, "RssShmem"),
            "memwatcher_process_swap_bytes": kib(status, "VmSwap"),
            "memwatcher_process_virtual_memory_bytes": kib(status, "VmSize"),
        }
        got = {name: prom.value(name + selector) for name in expected}
        assert got == expected
        lag = 64 * os.sysconf("SC_PAGE_SIZE")  # per-thread rss caching before 6.2 (SPLIT_RSS_COUNTING)
        assert got["memwatcher_process_rss_anon_bytes"] >= ANON_BYTES - lag
        assert got["memwatcher_process_rss_shmem_bytes"] >= SHMEM_BYTES - lag
        comm = prom.query("memwatcher_process_rss_bytes" + selector)[0]["metric"]["comm"]
        assert comm == status["Name"]

        assert prom.value('up{job="memwatcher"}') == 1
        assert prom.value("memwatcher_exporter_scrapes_total") >= 3
        names = set(json.loads(http_get(f"{prom.api}/label/__name__/values"))["data"])
        for c in sysstat.COUNTERS:
            if c.key in ("bounce_bytes", "cma_free_bytes", "sec_page_tables_bytes", "writeback_tmp_bytes"):
                continue  # counters some kernels lack
            assert f"memwatcher_memory_{exporter._MEMORY_NAMES.get(c.key, c.key)}" in names
        for name in (
            "memwatcher_zone_free_bytes",
            "memwatcher_zone_watermark_min_bytes",
            "memwatcher_page_allocation_failures_total",
            "memwatcher_kswapd_wakeup_requests_total",
            "memwatcher_reclaim_scanned_bytes_total",
            "memwatcher_reclaim_stall_seconds_bucket",
            "memwatcher_page_faults_total",
            "memwatcher_major_page_faults_total",
            "memwatcher_swap_out_bytes_total",
            "memwatcher_memory_swap_size_bytes",
            "memwatcher_process_instances",
        ):
            assert name in names
        meminfo = meminfo_bytes()
        free = prom.value("sum(memwatcher_memory_free_bytes)")
        assert 0 < free <= meminfo["MemTotal"]
        assert (
            prom.value("sum(memwatcher_memory_active_bytes) + sum(memwatcher_memory_inactive_bytes)")
            <= (meminfo["MemTotal"])
        )
        # Every query of the Grafana dashboard is valid PromQL over existing metrics.
        dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for var, value in (
                    ("$instance", ".*"),
                    ("$topk", "10"),
                    ("$__rate_interval", "5s"),
                    ("$__range", "1m"),
                ):
                    expr = expr.replace(var, value)
                used = set(re.findall(r"memwatcher_[a-z_]+", expr))
                assert used <= names, f"{panel['title']}: {used - names}"
                prom.query(expr)

        # The per-zone watermarks are ordered as the allocator needs them. One query, so all three
        # come from one evaluation; under emulation a scrape that timed out leaves every series stale
        # for a while (6.1 and 6.12 guests, once each): asked again until they are back.
        def watermarks() -> dict[tuple[str, str], dict[str, float]]:
            marks: dict[tuple[str, str], dict[str, float]] = {}
            for r in prom.query('{__name__=~"memwatcher_zone_watermark_(min|low|high)_bytes"}'):
                level = r["metric"]["__name__"].split("_")[-2]
                marks.setdefault((r["metric"]["node"], r["metric"]["zone"]), {})[level] = float(r["value"][1])
            return marks if marks and all(len(m) == 3 for m in marks.values()) else {}

        for zone, m in wait_until(watermarks, 120 if GUEST else 30, "the zone watermarks in Prometheus").items():
            assert m["min"] <= m["low"] <= m["high"], (zone, m)
    finally:
        if prom is not None:
            prom.close()
        exp.kill()


@requires_bpf
def test_exposition_parses_and_follows_conventions(child: subprocess.Popen[str]) -> None:
    exp = Exporter("--top-processes", "3")
    try:
        wait_until(lambda: http_get(exp.url).count("memwatcher_process_rss_bytes{") == 3, 10, "three processes")
        before, faults_before = read_pressure(), vmstat()
        text = http_get(exp.url)
        after, faults_after = read_pressure(), vmstat()
    finally:
        exp.kill()
    assert lint_exposition(text, top_processes=3) == []
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # Faults since boot lie between two reads of /proc/vmstat; swap space is /proc/meminfo's.
    for metric, line in (("memwatcher_page_faults", "pgfault"), ("memwatcher_major_page_faults", "pgmajfault")):
        assert faults_before[line] <= families[metric].samples[0].value <= faults_after[line], metric
    assert families["memwatcher_memory_swap_size_bytes"].samples[0].value == meminfo_bytes()["SwapTotal"]
    assert "memwatcher_swap_out_bytes" in families and "memwatcher_swap_in_bytes" in families
    if before is not None:  # PSI: stall totals only grow, so the scrape's lie between two reads
        stalled = {s.labels["kind"]: s.value for s in families["memwatcher_memory_pressure_stalled_seconds"].samples}
        for kind in ("some", "full"):
            low, high = getattr(before, f"{kind}_total_us") / 1e6, getattr(after, f"{kind}_total_us") / 1e6
            assert low <= stalled[kind] <= high, kind
        ratios = families["memwatcher_memory_pressure_ratio"].samples
        assert len(ratios) == 6 and all(0.0 <= s.value <= 1.0 for s in ratios)
    hist = families["memwatcher_reclaim_stall_seconds"]
    assert hist.type == "histogram"
    for kind in pr.KINDS:
        buckets = [s for s in hist.samples if s.name.endswith("_bucket") and s.labels["kind"] == kind]
        counts = [s.value for s in buckets]
        assert counts == sorted(counts) and buckets[-1].labels["le"] == "+Inf"
        count = next(s.value for s in hist.samples if s.name.endswith("_count") and s.labels["kind"] == kind)
        assert counts[-1] == count
    loaded = {s.labels["report"]: s.value for s in families["memwatcher_exporter_report_loaded"].samples}
    assert loaded == {"procstat": 1, "sysstat": 1, "paf": 1, "pr": 1, "oom": 1}
    rss = [s for s in families["memwatcher_process_rss_bytes"].samples]
    assert len(rss) == 3 and all(s.value > 0 for s in rss)


@requires_bpf
def test_sigterm_stops_cleanly_and_closes_every_bpf_object() -> None:
    exp = Exporter()
    try:
        fds = []
        for fd in os.listdir(f"/proc/{exp.proc.pid}/fd"):
            try:
                fds.append(os.readlink(f"/proc/{exp.proc.pid}/fd/{fd}"))
            except OSError:
                continue
        assert sum(f == "anon_inode:bpf-prog" for f in fds) >= 4
        assert sum(f == "anon_inode:bpf_link" for f in fds) >= 4
        http_get(exp.url)
        rc, err = exp.stop()
    finally:
        exp.kill()
    assert rc == 0, err
    assert "bpf fds left: 0 []" in err, err
    assert "Traceback" not in err
    with pytest.raises(OSError):
        http_get(exp.url, timeout_s=1)


LIMIT_BYTES = 32 << 20
WORKLOAD_MIB = 128


@pytest.fixture
def memcg() -> Iterator[Cgroup]:
    with memory_limited_cgroup(f"mwtest-export-{os.getpid()}", LIMIT_BYTES) as cg:
        yield cg


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return _samples(http_get(url))


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    """Sum of the increase of every series of ``name`` matching ``labels``."""
    return sum(
        v - before.get(k, 0.0) for k, v in after.items() if k[0] == name and labels.items() <= dict(k[1]).items()
    )


@requires_bpf
def test_memcg_reclaim_counters_and_stall_histogram(memcg: Cgroup) -> None:
    if fs_type(Path("/var/tmp")) in ("tmpfs", "ramfs"):
        pytest.skip("/var/tmp is in memory: page cache reclaim needs a disk-backed file")
    data = Path("/var/tmp") / f"mwtest-export-{os.getpid()}.dat"
    exp = Exporter("--top-processes", "1", "--top-cgroups", "10000")
    try:
        before, vm0, hits0 = scrape(exp.url), vmstat(), memcg.limited()
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", PAGE_CACHE_WORKLOAD, str(memcg.procs), str(data), str(WORKLOAD_MIB)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        elapsed_s = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        vm1, after, hits = vmstat(), scrape(exp.url), memcg.limited() - hits0
    finally:
        exp.kill()
        data.unlink(missing_ok=True)
    assert hits > 0, "the cgroup limit was never hit"
    page = kernel.page_size()
    # Reclaimed memory: the kernel's own counters are the oracle (system-wide, like ours).
    reclaimed = delta(before, after, "memwatcher_reclaim_reclaimed_bytes_total")
    steal = (vm1["pgsteal_anon"] + vm1["pgsteal_file"] - vm0["pgsteal_anon"] - vm0["pgsteal_file"]) * page
    print(f"\nexporter reclaimed {reclaimed / 2**20:.1f} MiB, /proc/vmstat pgsteal {steal / 2**20:.1f} MiB")
    assert reclaimed >= (WORKLOAD_MIB << 20) - 2 * LIMIT_BYTES
    assert abs(reclaimed - steal) <= max(0.05 * steal, 2048 * page)
    scanned = delta(before, after, "memwatcher_reclaim_scanned_bytes_total")
    assert scanned >= reclaimed
    # The stall histogram: each memcg reclaim followed a failed charge (a limit hit).
    count = delta(before, after, "memwatcher_reclaim_stall_seconds_count", kind="memcg")
    assert 1 <= count <= hits
    assert 0 < delta(before, after, "memwatcher_reclaim_stall_seconds_sum", kind="memcg") <= elapsed_s
    buckets = sorted(
        (float(dict(k[1])["le"]), v - before.get(k, 0.0))
        for k, v in after.items()
        if k[0] == "memwatcher_reclaim_stall_seconds_bucket" and dict(k[1])["kind"] == "memcg"
    )
    assert buckets[-1] == (float("inf"), count)
    assert [n for _, n in buckets] == sorted(n for _, n in buckets)
    # The same stalls booked to the cgroup whose task waited: all of them, if nothing else on
    # the machine met a limit meanwhile.
    cgroup = "/" + memcg.path.name
    assert 1 <= delta(before, after, "memwatcher_cgroup_reclaim_stalls_total", cgroup=cgroup, kind="memcg") <= count
    stalled_s = delta(before, after, "memwatcher_cgroup_reclaim_stall_seconds_total", cgroup=cgroup, kind="memcg")
    assert 0 < stalled_s <= delta(before, after, "memwatcher_reclaim_stall_seconds_sum", kind="memcg") + 1e-9
    stall_reclaimed = delta(before, after, "memwatcher_reclaim_stall_reclaimed_bytes_total", kind="memcg")
    # The end-of-reclaim count also includes slab pages the shrinkers freed, which the kernel
    # credits to the reclaim (5 pages in a 6.1 guest, none on the host): 1% over the LRU's count.
    assert (WORKLOAD_MIB << 20) - 2 * LIMIT_BYTES <= stall_reclaimed <= 1.01 * reclaimed


@requires_bpf
def test_cgroup_series_follow_the_cgroup_files(memcg: Cgroup) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", MEMORY_HOLDER, str(memcg.procs), "16"], stdout=subprocess.PIPE, text=True
    )
    exp = Exporter("--top-processes", "0", "--top-cgroups", "10000")
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        usage = memcg.path / ("memory.current" if memcg.version == 2 else "memory.usage_in_bytes")
        before = int(usage.read_text())
        got = scrape(exp.url)
        after = int(usage.read_text())
    finally:
        exp.kill()
        holder.kill()
        holder.wait()
    series = (("cgroup", "/" + memcg.path.name), ("container", ""))
    slack = 1 << 20
    assert min(before, after) - slack <= got[("memwatcher_cgroup_memory_bytes", series)] <= max(before, after) + slack
    assert got[("memwatcher_cgroup_memory_limit_bytes", series)] == LIMIT_BYTES
    assert got[("memwatcher_cgroup_oom_kills_total", series)] == 0
    assert got[("memwatcher_cgroup_memory_limit_hits_total", series)] == memcg.limited()
    if memcg.version == 2:  # v1 keeps no reclaim or pressure figures per cgroup
        assert ("memwatcher_cgroup_reclaim_reclaimed_bytes_total", series) in got
        assert ("memwatcher_cgroup_memory_pressure_stalled_seconds_total", (*series, ("kind", "full"))) in got
    assert ("memwatcher_cgroup_memory_bytes", (("cgroup", "/"), ("container", ""))) not in got  # the root: sysstat's


@requires_bpf
def test_oom_kill_in_a_limited_cgroup_is_counted(memcg: Cgroup) -> None:
    memcg.without_swap()
    exp = Exporter("--top-processes", "0")
    try:
        before = scrape(exp.url)
        hog = subprocess.run([sys.executable, "-c", OOM_HOG, str(memcg.procs)], capture_output=True, timeout=60)
        assert hog.returncode == -signal.SIGKILL, hog.stderr
        wait_until(lambda: delta(before, scrape(exp.url), "memwatcher_oom_kills_total") >= 1, 10, "the kill counted")
        after = scrape(exp.url)
    finally:
        exp.kill()
    assert delta(before, after, "memwatcher_oom_kills_total", kind="memcg") == 1
    assert delta(before, after, "memwatcher_oom_kills_total", kind="global") == 0
    assert after[("memwatcher_oom_kill_records_dropped_total", ())] == 0


def test_bad_listen_is_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, "export", "--listen", ":9464"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "--listen" in done.stderr and "0.0.0.0" in done.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--max-connections", "0"], 2, "--max-connections"),
        (["--client-timeout", "0"], 2, "--client-timeout"),
        (["--client-timeout", "nan"], 2, "--client-timeout"),
        (["--client-timeout", "1e300"], 2, "--client-timeout"),
        (["--max-connections", "60000"], 1, "--max-connections 60000 needs about"),
    ],
)
def test_bad_server_limits_are_one_line_errors(args: list[str], code: int, message: str) -> None:
    def hard_limit_4096() -> None:  # the open-file limit cannot fit 60000 connections
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 4096), min(hard, 4096)))

    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, "export", "--listen", "127.0.0.1:1", *args],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=hard_limit_4096,
    )
    assert done.returncode == code, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


@requires_bpf
def test_port_in_use_is_one_line_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-c", LAUNCHER, "export", "--listen", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "Traceback" not in done.stderr
    assert "bpf fds left: 0 []" in done.stderr  # the error path closed every object too


# ---------------------------------------------------------------- hostile clients

# Holds N sockets to the exporter for D seconds: half idle, half slowloris (a
# partial request head, then one more header byte per socket every 0.5 s).
# Sockets the exporter closes are opened again, at most RATE per second. Prints
# JSON counts at the end. Loopback only, bounded in count, rate and time.
SLOW_CLIENTS = """
import errno, json, selectors, socket, sys, time
port, n, duration_s, rate = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
sel = selectors.DefaultSelector()
stats = {"connects": 0, "closed_by_exporter": 0, "refused": 0}
def open_one(slow):
    s = socket.socket()
    s.setblocking(False)
    if s.connect_ex(("127.0.0.1", port)) not in (0, errno.EINPROGRESS):
        s.close(); stats["refused"] += 1; return
    sel.register(s, selectors.EVENT_WRITE, slow)
for i in range(n):
    open_one(i % 2 == 1)
start = time.monotonic(); next_trickle = start + 0.5; owed = 0; budget = 0.0; last = start
print("open", flush=True)
while (now := time.monotonic()) < start + duration_s:
    budget = min(rate, budget + (now - last) * rate); last = now
    while owed and budget >= 1:
        open_one(owed % 2 == 1); owed -= 1; budget -= 1
    for key, _ in sel.select(0.05):
        s, slow = key.fileobj, key.data
        if key.events == selectors.EVENT_WRITE:
            stats["connects"] += 1
            try:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 and slow:
                    s.send(b"GET /metrics HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nX-Slow: ")
            except OSError:
                pass
            sel.modify(s, selectors.EVENT_READ, slow)
            continue
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if not data:
            sel.unregister(s); s.close(); stats["closed_by_exporter"] += 1; owed += 1
    if now >= next_trickle:
        next_trickle = now + 0.5
        for key in list(sel.get_map().values()):
            if key.data and key.events == selectors.EVENT_READ:
                try:
                    key.fileobj.send(b"a")
                except OSError:
                    pass
stats["open_at_end"] = len(sel.get_map())
print(json.dumps(stats), flush=True)
"""


def raw_request(port: int, data: bytes, timeout_s: float = 1.0) -> bytes:
    """Send raw bytes, return everything the exporter answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def runqueue_waits(pid: int) -> dict[str, float]:
    """Seconds each thread of ``pid`` has spent runnable but not running, by thread id.

    From /proc/PID/task/TID/schedstat (empty where the kernel lacks it): time
    the host gave the thread no CPU although it was ready to run.
    """
    waits = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            waits[tid] = int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            pass
    return waits


def timed_scrape(exp: Exporter, accept: str | None = None, timeout_s: float = 5.0) -> tuple[float, float, str]:
    """(seconds a GET /metrics took, of them the host kept the exporter or us from running, body).

    The second figure is the longest runqueue wait of any one thread of the
    exporter or of this process during the scrape (a lower bound of the
    time lost to the host's other work). Fails past ``timeout_s`` or on a
    status other than 200.
    """
    head = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if accept is not None:
        head += f"Accept: {accept}\r\n".encode()
    before = {pid: runqueue_waits(pid) for pid in (exp.proc.pid, os.getpid())}
    started = time.monotonic()
    reply = raw_request(exp.port, head + b"\r\n", timeout_s)
    took = time.monotonic() - started
    starved = max(
        (w - before[pid].get(tid, w) for pid in before for tid, w in runqueue_waits(pid).items()), default=0.0
    )
    status, _, rest = reply.partition(b"\r\n")
    assert status == b"HTTP/1.1 200 OK", reply[:200]
    return took, starved, rest.partition(b"\r\n\r\n")[2].decode()


def threads_and_rss(pid: int) -> tuple[int, int]:
    status = proc_status(pid)
    return int(status["Threads"]), kib(status, "VmRSS")


@requires_bpf
def test_slow_clients_do_not_stall_scrapes() -> None:
    """Hundreds of idle and slowloris sockets, beyond the connection limit: scrapes answer within 1 s.

    Every scrape must be answered within 1 s plus the time the host kept the
    exporter or this test from running (runqueue wait, /proc schedstat). On
    a quiet host that is 1 s flat; on a host shared with busy VMs a process
    is sometimes not scheduled for a second or more with no client at all
    (measured at load 10 on 2 cores: a 10 ms sleep overshooting by 784 ms,
    and every slow scrape explained by runqueue wait to within 0.1 s).
    """
    limit, timeout_s, sockets, flood_s = 256, 2.0, 400, 8.0
    exp = Exporter("--top-processes", "5", "--max-connections", str(limit), "--client-timeout", str(timeout_s))
    flood = None
    try:
        threads0, rss0 = threads_and_rss(exp.proc.pid)
        flood = subprocess.Popen(
            [sys.executable, "-c", SLOW_CLIENTS, str(exp.port), str(sockets), str(flood_s), "100"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert flood.stdout.readline().strip() == "open"
        took: list[float] = []
        unexplained: list[float] = []  # took minus the runqueue wait
        peak_threads, peak_rss = threads0, rss0
        bad_accept_bodies = []
        malformed = []
        deadline = time.monotonic() + flood_s - 0.5
        while time.monotonic() < deadline:
            for accept in (None, "text/plain; version=a"):
                # A client's odd Accept header gets a valid exposition too.
                seconds, starved, body = timed_scrape(exp, accept)
                took.append(seconds)
                unexplained.append(seconds - starved)
            bad_accept_bodies.append(body)
            malformed.append(raw_request(exp.port, b"GET /metrics HTTP/1.1 extra\r\n\r\n", timeout_s=5.0))
            threads, rss = threads_and_rss(exp.proc.pid)
            peak_threads, peak_rss = max(peak_threads, threads), max(peak_rss, rss)
            time.sleep(0.2)
        stats = json.loads(flood.communicate(timeout=30)[0].splitlines()[-1])
        after = _samples(http_get(exp.url))
        rc, err = exp.stop()
    finally:
        if flood is not None and flood.poll() is None:
            flood.kill()
            flood.wait()
        exp.kill()
    took.sort()
    print(
        f"\n{len(took)} scrapes under {sockets} slow sockets: median {1000 * took[len(took) // 2]:.0f} ms, "
        f"worst {1000 * took[-1]:.0f} ms ({1000 * max(unexplained):.0f} ms beyond the host's runqueue wait); "
        f"flood {stats}; threads {threads0} -> {peak_threads}, RSS {rss0 >> 20} -> {peak_rss >> 20} MiB"
    )
    assert len(took) >= 6
    assert max(unexplained) < 1.0, sorted(zip(took, unexplained))
    # The flood really pressed on both limits: evicted at the cap, and timed out.
    assert stats["connects"] >= sockets and stats["closed_by_exporter"] >= sockets - limit
    dropped = {
        dict(k[1])["reason"]: v
        for k, v in after.items()
        if k[0] == "memwatcher_exporter_http_connections_dropped_total"
    }
    assert dropped["evicted"] > 0 and dropped["timeout"] > 0, dropped
    assert after[("memwatcher_exporter_http_connections_max", ())] == limit
    assert after[("memwatcher_exporter_http_responses_total", (("code", "400"),))] == len(malformed)
    # Bounded: no thread per connection, no memory per connection beyond the cap.
    assert peak_threads == threads0
    assert peak_rss - rss0 < 32 << 20
    for body in bad_accept_bodies:
        assert lint_exposition(body, top_processes=5) == []  # parses, in the default text format
    for reply in malformed:
        assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"Connection: close\r\n" in reply
    assert rc == 0, err
    assert "Traceback" not in err, err
    # One line per kind of client trouble per minute, however many clients misbehave.
    assert err.count("bad request from") == 1, err
    assert err.count("connections open: closing the oldest") == 1, err
    assert "bpf fds left: 0 []" in err, err


# A child that holds argv[1] MiB, says "ready" and sleeps.
HOLDER = r"""
import sys, time
held = bytearray(int(sys.argv[1]) << 20)
for i in range(0, len(held), 4096):
    held[i] = 1
print("ready", flush=True)
time.sleep(600)
"""


@requires_bpf
def test_per_process_series_keep_one_identity_across_pids(tmp_path: Path) -> None:
    """Five processes of one name in one cgroup, two at a time then one by one: one series."""
    name = f"mwchurn{os.getpid() % 1000}"
    named_python = tmp_path / name  # exec'd by this name, so it is the comm
    named_python.symlink_to(sys.executable)
    own_cgroup = processes.process_cgroup(os.getpid()) or ""
    series_seen: set[tuple[tuple[str, str], ...]] = set()
    exp = Exporter("--top-processes", "100000")

    def start() -> subprocess.Popen[str]:
        proc = subprocess.Popen([named_python, "-c", HOLDER, "24"], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        return proc

    def ours(held: list[subprocess.Popen[str]]) -> bool:
        """Whether a scrape shows exactly the held processes under our name, summed."""
        samples = scrape(exp.url)
        rss = {k[1]: v for k, v in samples.items() if k[0] == "memwatcher_process_rss_bytes" and ("comm", name) in k[1]}
        series_seen.update(rss)
        want = sum(kib(proc_status(p.pid), "VmRSS") for p in held)
        if len(rss) != 1:
            return False
        labels, value = next(iter(rss.items()))
        return value == want and samples[("memwatcher_process_instances", labels)] == len(held)

    started: list[subprocess.Popen[str]] = []
    try:
        started += [start(), start()]
        wait_until(lambda: ours(started), 10, "both processes in one series")
        for _ in range(3):
            for p in started:
                p.kill()
                p.wait()
            started.append(start())
            wait_until(lambda: ours(started[-1:]), 10, "the next process in the same series")
    finally:
        exp.kill()
        for p in started:
            p.kill()
            p.wait()
    pids = {p.pid for p in started}
    assert len(pids) == 5
    assert series_seen == {(("cgroup", own_cgroup), ("comm", name))}
