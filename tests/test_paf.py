"""paf: GFP decoding, page->flags layout search, and the real BPF report vs /proc/zoneinfo."""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import memory_limited_cgroup, requires_bpf
from memwatcher import kernel
from memwatcher.libbpf import BTF
from memwatcher.tools.paf import (
    FlagsLayout,
    GfpNames,
    PafOptions,
    PageAllocTracer,
    eval_c_constant,
    find_flags_layout,
)

# A made-up print fmt in the shape the kernel writes: compound entries first,
# values as C expressions with casts and shifts.
FORMAT_TEXT = """name: fake_alloc
format:
\tfield:unsigned long gfp_flags;\toffset:8;\tsize:8;\tsigned:0;

print fmt: "gfp_flags=%s", (REC->gfp_flags) ? __print_flags(REC->gfp_flags, "|", \
{( unsigned long)((( gfp_t)((((1UL))) << (1))) | (( gfp_t)0x4u)), "GFP_BOTH"}, \
{( unsigned long)(( gfp_t)((((1UL))) << (1))), "__GFP_A"}, \
{( unsigned long)(( gfp_t)0x4u), "__GFP_B"}, \
{( unsigned long)(( gfp_t)((((1UL))) << (4))), "__GFP_C"}, \
{ 0, ((void *)0) } ) : "none"
"""


def test_eval_c_constant() -> None:
    assert eval_c_constant("(( gfp_t)((((1UL))) << (10)))") == 1 << 10
    assert eval_c_constant("((( gfp_t)0x400u|0x800u)) & ~(( gfp_t)0x400u)") == 0x800
    assert eval_c_constant("( unsigned long)(1 | 2) ^ 3") == 0
    assert eval_c_constant("~0") == (1 << 64) - 1
    with pytest.raises(ValueError):
        eval_c_constant("SOME_MACRO | 1")


def test_gfp_names_from_format_text() -> None:
    names = GfpNames.from_format(FORMAT_TEXT)
    assert names is not None and names.source == "format"
    assert names.table == ((0x6, "GFP_BOTH"), (0x2, "__GFP_A"), (0x4, "__GFP_B"), (0x10, "__GFP_C"))
    # compound names are taken first, in table order, then single flags, then hex leftovers
    assert names.decode(0x6) == "GFP_BOTH"
    assert names.decode(0x16) == "GFP_BOTH|__GFP_C"
    assert names.decode(0x4) == "__GFP_B"
    assert names.decode(0x104) == "__GFP_B|0x100"
    assert names.decode(0) == "none"
    assert names.mask_of("__GFP_C") == 0x10 and names.mask_of("__GFP_X") == 0
    assert GfpNames.from_format('print fmt: "nothing"') is None


def test_flags_layout_search() -> None:
    # [node:10][zone:3] at the top of a 64-bit word, junk below
    def flags(node: int, zone: int) -> int:
        return node << 54 | zone << 51 | 0x7FFF800000008

    samples = [(0, 0, flags(0, 0)), (0, 1, flags(0, 1)), (1, 2, flags(1, 2))]
    assert find_flags_layout(samples, 5, 1024) == FlagsLayout(51, 3, 54, 10)
    # no node field (section bits on top instead): search finds the unique zone position
    shifted = [(0, z, z << 40 | 1) for z in (0, 1, 2)]
    layout = find_flags_layout(shifted, 5, 1024)
    assert layout is not None and layout.zone_shift == 40 and layout.node_bits == 0
    # one zone only and nothing derived fits: refuse to guess
    assert find_flags_layout([(0, 2, 2 << 40)], 5, 1024) is None
    assert find_flags_layout([], 5, 1024) is None


def test_btf_names_agree_with_format_single_flags() -> None:
    if not kernel.btf_available():
        pytest.skip("needs kernel BTF")
    btf_names = GfpNames.from_btf(BTF.vmlinux())
    text = kernel.tracepoint_format("kmem", "mm_page_alloc")
    if btf_names is None or text is None:
        pytest.skip("kernel lacks ___GFP_*_BIT or tracefs")
    fmt = GfpNames.from_format(text)
    singles = {name: mask for mask, name in fmt.table if name.startswith("__GFP_") and mask & (mask - 1) == 0}
    assert singles and all(btf_names.mask_of(name) == mask for name, mask in singles.items())


# ---------------------------------------------------------------- /proc/zoneinfo oracle


def read_zoneinfo() -> dict[tuple[int, str], dict[str, int]]:
    zones: dict[tuple[int, str], dict[str, int]] = {}
    current: dict[str, int] | None = None
    for line in Path("/proc/zoneinfo").read_text().splitlines():
        m = re.match(r"Node (\d+), zone\s+(\S+)", line)
        if m:
            current = zones.setdefault((int(m.group(1)), m.group(2)), {})
            continue
        m = re.match(r"\s+(pages free|boost|min|low|high|present|managed)\s+(\d+)$", line)
        if m and current is not None:
            current.setdefault(m.group(1).replace("pages ", ""), int(m.group(2)))
    return zones


STATIC_FIELDS = {
    "min": "min_pages",
    "low": "low_pages",
    "high": "high_pages",
    "boost": "boost_pages",
    "present": "present_pages",
    "managed": "managed_pages",
}


def _static_mismatches(rows: dict, oracle: dict) -> list:
    return [
        (key, name, getattr(rows[key], attr), fields[name])
        for key, fields in oracle.items()
        for name, attr in STATIC_FIELDS.items()
        if key in rows and name in fields and getattr(rows[key], attr) != fields[name]
    ]


@requires_bpf
def test_zones_equal_proc_zoneinfo() -> None:
    with PageAllocTracer() as paf:
        assert paf.layout is not None, "page->flags zone field not found"
        # Memory hotplug / ballooning moves managed pages and with them the
        # watermarks: accept the first sample taken while /proc/zoneinfo held still.
        for _attempt in range(20):
            before = read_zoneinfo()
            sample = paf.sample()
            after = read_zoneinfo()
            rows = {(z.node, z.zone): z for z in sample.zones if z.present_pages is not None}
            mismatches = _static_mismatches(rows, after)
            if not _static_mismatches(rows, before) and not mismatches:
                break
            time.sleep(0.1)
        assert set(rows) == set(after), (sorted(rows), sorted(after))
        assert not mismatches
        for key, oracle in after.items():
            row = rows[key]
            # free pages move all the time: within the range seen around the sample, plus slack
            lo = min(before[key]["free"], oracle["free"])
            hi = max(before[key]["free"], oracle["free"])
            slack = 4096 + oracle.get("managed", 0) // 50
            assert lo - slack <= row.free_pages <= hi + slack, (key, row.free_pages, lo, hi)


CHILD = r"""
import mmap, sys
n = int(sys.argv[1])
sys.stdin.readline()
buf = mmap.mmap(-1, n * mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for i in range(n):
    buf[i * mmap.PAGESIZE] = 1
print("done", flush=True)
sys.stdin.readline()
"""


@requires_bpf
def test_counts_child_allocations() -> None:
    n_pages = 3000
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(n_pages)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        with PageAllocTracer(PafOptions(pid=child.pid)) as paf:
            before = paf.sample()
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "done"
            since_start = paf.sample()
            sample = since_start - before
        pages = sum(c.pages for c in sample.counts)
        zones_pages = sum(z.allocs for z in sample.zones)
        assert pages >= n_pages, (pages, n_pages)
        assert zones_pages == sum(c.allocs for c in sample.counts)
        # every allocation of the child is attributed to a real zone with managed pages
        managed = {(z.node, z.zone) for z in sample.zones if z.managed_pages}
        assert {(c.node, c.zone) for c in sample.counts} <= managed
        assert any("GFP_HIGHUSER_MOVABLE" in c.gfp_names for c in sample.counts)
        # Counts since start are the counts before plus those between; the zone state is the later one's.
        for z, z0, d in zip(since_start.zones, before.zones, sample.zones):
            assert (z.node, z.zone) == (z0.node, z0.zone) == (d.node, d.zone)
            assert z.allocs == z0.allocs + d.allocs and z.failures == z0.failures + d.failures
            assert d.free_pages == z.free_pages
    finally:
        with contextlib.suppress(Exception):
            child.stdin.close()
        child.kill()
        child.wait()


# ---------------------------------------------------------------- decoder vs the tracepoint's own output


@contextlib.contextmanager
def trace_instance(name: str):
    base = kernel.tracefs_dir()
    if base is None:
        pytest.skip("tracefs not available")
    inst = base / "instances" / name
    inst.mkdir()
    try:
        yield inst
    finally:
        with contextlib.suppress(OSError):
            (inst / "events/kmem/mm_page_alloc/enable").write_text("0")
        for _ in range(20):
            try:
                inst.rmdir()
                break
            except OSError:
                time.sleep(0.05)


@requires_bpf
def test_decoder_matches_trace_output() -> None:
    names = GfpNames.for_kernel()
    with trace_instance(f"memwatcher_paf_{os.getpid()}") as inst:
        if not (inst / "options/fields").exists():
            pytest.skip("tracefs lacks the 'fields' option (Linux < 6.x): raw gfp masks not printable")
        (inst / "buffer_size_kb").write_text("256")
        (inst / "events/kmem/mm_page_alloc/enable").write_text("1")
        m = mmap.mmap(-1, 256 * mmap.PAGESIZE)
        for i in range(256):
            m[i * mmap.PAGESIZE] = 1
        m.close()
        subprocess.run(["true"], check=True)
        time.sleep(0.2)
        (inst / "events/kmem/mm_page_alloc/enable").write_text("0")
        pretty = [ln for ln in (inst / "trace").read_text().splitlines() if "mm_page_alloc:" in ln]
        (inst / "options/fields").write_text("1")
        raw = [ln for ln in (inst / "trace").read_text().splitlines() if "mm_page_alloc:" in ln]
    assert pretty and len(pretty) == len(raw)
    seen = set()
    for p, r in zip(pretty, raw):
        assert p.split("mm_page_alloc:")[0] == r.split("mm_page_alloc:")[0]  # same event
        printed = re.search(r"gfp_flags=(\S+)", p).group(1)
        mask = int(re.search(r"gfp_flags=(0x[0-9a-f]+)", r).group(1), 16)
        assert names.decode(mask) == printed, (hex(mask), printed)
        seen.add(mask)
    assert len(seen) >= 2  # several distinct masks were checked


# ---------------------------------------------------------------- CLI


@requires_bpf
def test_cli_json() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "memwatcher.cli", "paf", "--count", "2", "-i", "0.3", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    keys = {
        "time",
        "node",
        "zone",
        "min_pages",
        "low_pages",
        "high_pages",
        "boost_pages",
        "present_pages",
        "managed_pages",
        "free_pages",
        "allocs",
        "failures",
        "kswapd_wakeups",
    }
    assert rows and all(set(r) == keys for r in rows)
    assert {r["zone"] for r in rows} >= {z for _, z in read_zoneinfo()}


@requires_bpf
def test_cli_missing_pid() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "memwatcher.cli", "paf", "--pid", "999999999", "--count", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "999999999" in proc.stderr


# A child that joins a memory cgroup (argv: its cgroup.procs) and fills pipes until the
# cgroup's OOM killer ends it. Pipe pages are charged as kernel memory (__GFP_ACCOUNT):
# when that charge fails the page is freed again and mm_page_alloc reports the
# allocation with page NULL, a failure paf streams. Only the test's own cgroup is affected.
PIPE_FILLER = r"""
import fcntl, os, sys
with open(sys.argv[1], "w") as f:
    f.write(str(os.getpid()))
chunk = b"x" * 65536
pipes = []
while True:
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)
    pipes.append((r, w))
    for _ in range(16):
        os.write(w, chunk)
"""


def _bpf_links(pid: int) -> int:
    links = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            links += os.readlink(fd) == "anon_inode:bpf_link"
    return links


@requires_bpf
def test_cli_events_streams_a_failed_allocation() -> None:
    cli = subprocess.Popen(
        [sys.executable, "-m", "memwatcher.cli", "paf", "--events", "-i", "0.2", "--duration", "60", "-o", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        # Both programs attached: from then on every failure reaches the ring buffer.
        while _bpf_links(cli.pid) < 2:
            assert cli.poll() is None and time.monotonic() < deadline, "paf did not attach"
            time.sleep(0.05)
        with memory_limited_cgroup(f"mwtest-paf-{os.getpid()}", 32 << 20) as cg:
            cg.without_swap()
            child = subprocess.Popen([sys.executable, "-c", PIPE_FILLER, str(cg.procs)], stderr=subprocess.PIPE)
            _, child_err = child.communicate(timeout=60)
        assert child.returncode == -9, f"not killed by the cgroup's OOM killer: {child_err!r}"
        time.sleep(1.0)  # a few intervals: the event is read and printed
    finally:
        cli.send_signal(signal.SIGINT)
        out, err = cli.communicate(timeout=30)
    assert cli.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert all(e["kind"] in ("failure", "kswapd") for e in events), events
    failures = [e for e in events if e["kind"] == "failure" and e["pid"] == child.pid]
    assert failures, events
    assert "__GFP_ACCOUNT" in failures[0]["gfp_flags"], failures[0]
