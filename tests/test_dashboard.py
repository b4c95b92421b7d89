"""The dashboard (`memwatcher` / `memwatcher top`) and BCC-style positional arguments."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from rich.console import Console

from conftest import OOM_HOG, memory_limited_cgroup, requires_bpf
from memwatcher import dashboard
from memwatcher.dashboard import Dashboard, DashboardEvent, DashboardState, ProcessRow, render_text
from memwatcher.output import human_bytes
from memwatcher.pressure import Pressure
from memwatcher.processes import SharedMemory
from memwatcher.terminal import KeyDecoder, cbreak
from memwatcher.tools import oom, paf, pr, sysstat
from memwatcher.tools.cgroups import CgroupMemory
from memwatcher.tui import View, grouped_rows, handle_key, render_screen, sorted_processes, sparkline
from memwatcher.vmevents import SwapSpace

MEMWATCHER = [sys.executable, "-m", "memwatcher.cli"]


def run_in_pty(args: list[str], timeout_s: float = 90) -> tuple[int, str]:
    """Run memwatcher on a pseudo-terminal; returns (exit status, everything it drew)."""
    controller, terminal = pty.openpty()
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="160", LINES="60")
    proc = subprocess.Popen([*MEMWATCHER, *args], stdin=terminal, stdout=terminal, stderr=terminal, env=env)
    os.close(terminal)
    chunks, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.5)
        if ready:
            try:
                data = os.read(controller, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(controller)
    status = proc.wait(timeout=10)
    return status, b"".join(chunks).decode(errors="replace")


@requires_bpf
def test_dashboard_on_a_terminal_refreshes_and_ends_with_a_summary() -> None:
    status, screen = run_in_pty(["top", "--count", "2", "--interval", "1"])
    assert status == 0, screen[-2000:]
    assert "\x1b[" in screen  # drawn with terminal control sequences (rich Live)
    for title in ("system memory (sysstat)", "top processes by rss (procstat)", "(pr)", "zones (paf)"):
        assert title in screen, title
    summary = screen.split("final summary:")[-1]
    assert "memory:" in summary and "PID" in summary
    assert "Traceback" not in screen


@requires_bpf
def test_bare_command_is_the_dashboard_in_plain_text_and_sigterm_ends_it() -> None:
    proc = subprocess.Popen(MEMWATCHER, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # the first refresh: everything is loaded
    time.sleep(2.5)  # default interval 2 s: a second refresh
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    out = first + out
    assert proc.returncode == 0, err
    assert "\x1b[" not in out
    assert out.count("memwatcher  ") >= 3  # two refreshes plus the final one on SIGTERM
    assert "memory:  total" in out and " available " in out and "PID" in out
    assert ("pressure:  some " in out) == Path("/proc/pressure/memory").exists()
    # Swap as /proc/swaps sizes it (none: "0B of 0B"), and this refresh's fault rate.
    swap_kib = sum(int(line.split()[2]) for line in Path("/proc/swaps").read_text().splitlines()[1:])
    assert re.search(rf"swap, faults:  swap \S+ of {re.escape(human_bytes(swap_kib * 1024))} .* faults [\d,]+/s", out)
    assert "Traceback" not in err


@requires_bpf
def test_positional_interval_and_count() -> None:
    proc = subprocess.run(
        [*MEMWATCHER, "pr", "0.2", "3", "--output", "json"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    times = [json.loads(line)["time"] for line in proc.stdout.splitlines()]
    assert len(times) == 3 and len(set(times)) == 3


def test_too_many_positionals_is_a_usage_error() -> None:
    proc = subprocess.run([*MEMWATCHER, "pr", "1", "2", "3"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


@requires_bpf
def test_an_oom_kill_is_counted_and_named() -> None:
    with memory_limited_cgroup(f"mwtest-dash-{os.getpid()}", 32 << 20) as cg, Dashboard(top=3) as board:
        cg.without_swap()
        assert board.sample().oom_kills_total == 0
        hog = subprocess.Popen([sys.executable, "-c", OOM_HOG, str(cg.procs)])
        assert hog.wait(timeout=60) == -signal.SIGKILL
        deadline = time.monotonic() + 10
        state = board.sample()
        while state.oom_kills_total == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
            state = board.sample()
    assert state.oom_kills_total == 1
    assert state.last_oom_kill is not None and state.last_oom_kill.victim_pid == hog.pid
    assert f"OOM kills: 1 since start; last: {hog.pid} python" in render_text(state)


# ---------------------------------------------------------------- keys (no BPF)


def test_key_decoder_names_the_keys_a_terminal_sends() -> None:
    decoder = KeyDecoder()
    keys = decoder.feed(b"q\x1b[A\x1b[B\x1bOA\x1b[5~\x1b[6~\x1b[H\x1b[4~\t\r\x7f/")
    assert keys == ["q", "up", "down", "up", "pgup", "pgdn", "home", "end", "tab", "enter", "backspace", "/"]
    assert not decoder.waiting


def test_key_decoder_waits_for_split_sequences_and_a_lone_escape() -> None:
    decoder = KeyDecoder()
    assert decoder.feed(b"\x1b[") == [] and decoder.waiting
    assert decoder.feed(b"6~") == ["pgdn"]
    assert decoder.feed(b"\x1b") == [] and decoder.waiting
    assert decoder.flush() == ["esc"] and not decoder.waiting
    assert decoder.feed(b"\x1bx") == ["esc", "x"]  # Escape, then a key
    assert decoder.feed(b"\x1b[99;5Z") == []  # unknown: dropped whole
    assert decoder.feed("é".encode()[:1]) == [] and decoder.feed("é".encode()[1:]) == ["é"]


def test_cbreak_restores_the_terminal_after_an_exception() -> None:
    controller, terminal = pty.openpty()
    try:
        before = termios.tcgetattr(terminal)
        try:
            with cbreak(terminal):
                inside = termios.tcgetattr(terminal)
                assert not inside[3] & (termios.ICANON | termios.ECHO)
                assert inside[3] & termios.ISIG  # Ctrl-C still interrupts
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        assert termios.tcgetattr(terminal) == before
    finally:
        os.close(controller)
        os.close(terminal)


# ---------------------------------------------------------------- the terminal view (no BPF)


def _state(processes: int = 60) -> DashboardState:
    """A state as a loaded Dashboard gives it: 1 GiB everywhere, three zones, a cgroup tree."""
    memory = sysstat.SysSample(
        **{f.name: None if f.name == "node" else 1 << 30 for f in dataclasses.fields(sysstat.SysSample)}
    )
    zones = [paf.ZoneStats(0, name, 100, 200, 300, 0, 1000, 900, 5000, 10, 0, 0) for name in ("DMA", "DMA32", "Normal")]
    reclaim = pr.ReclaimSample(**{name: None if name == "node" else 0 for name in pr.ReclaimSample._fields})
    rows = [
        ProcessRow(
            pid=100 + i,
            comm=f"proc{i}",
            rss_bytes=(i + 1) << 20,
            rss_peak_bytes=(i + 1) << 20,
            growth_bytes=(processes - i) << 10,  # the smallest grew most
            swap_bytes=(i % 7) << 20,
            user="root",
            cmdline=f"/usr/bin/proc{i} --option value",
            cgroup="/system.slice/a.service" if i % 2 else "/user.slice/user-0.slice/session-1.scope",
            pss_bytes=((i * 37) % processes) << 20 if i >= processes - 20 else None,
            rss_history_bytes=tuple(range(i, i + 40)),
        )
        for i in range(processes)
    ]

    def cgroup(path: str, current_bytes: int) -> CgroupMemory:
        depth = 0 if path == "/" else path.count("/")
        return CgroupMemory(
            path,
            depth,
            current_bytes,
            None,
            1,
            1,
            1,
            0,
            0,
            0.5,
            0.0,
            3,
            None,
            limit_hits=7,
            reclaim_reclaimed_bytes=1 << 20,
            direct_reclaim_stalls=2,
            direct_reclaim_stall_ns=1_000_000,
            memcg_reclaim_stalls=9,
            memcg_reclaim_stall_ns=5_000_000,
        )

    cgroups = [cgroup("/", 5 << 30), cgroup("/system.slice", 3 << 30), cgroup("/system.slice/a.service", 3 << 30)]
    cgroups += [cgroup("/user.slice", 2 << 30)]
    return DashboardState(
        "2026-12-03T07:30:00.000+00:00",
        2.0,
        memory=memory,
        pressure=Pressure(1.5, 0.5, 0.1, 10, 0.0, 0.0, 0.0, 0),
        processes=rows,
        reclaim=reclaim,
        zones=zones,
        available_history_bytes=tuple(range(1 << 30, (1 << 30) + 100)),
        pressure_history_pct=(0.0, 0.5, 1.5),
        cgroups=cgroups,
        cgroup_version=2,
        swap=SwapSpace(2 << 30, 1 << 30),
        vm_rates={
            "page_faults_per_s": 1234.0,
            "major_faults_per_s": 5.0,
            "swap_in_bytes_per_s": 0.0,
            "swap_out_bytes_per_s": 4096.0,
        },
    )


def _screen(state: DashboardState, view: View, width: int, height: int) -> list[str]:
    console = Console(width=width, height=height, file=io.StringIO(), color_system=None)
    console.print(render_screen(state, view, width, height).renderable)
    return console.file.getvalue().splitlines()


def test_small_terminal_shows_one_line_summaries_and_the_whole_footer() -> None:
    lines = _screen(_state(), View(), 80, 24)
    assert len(lines) == 24 and all(len(line) <= 80 for line in lines)
    assert lines[1].startswith("memory (sysstat) available 1.0G of 1.0G") and "PSI some 1.50%" in lines[1]
    assert lines[2].startswith("reclaim (pr)") and lines[3].startswith("zones (paf) failures 0")
    assert "top processes by rss (procstat)  1-16 of 60" in lines[4]
    assert lines[-2].startswith("events no OOM kill")
    for key in ("q Quit", "h Help", "M/g/s/P Sort", "/ Filter", "c Cgroups", "p Pause", "Tab Focus"):
        assert key in lines[-1], key


def test_large_terminal_shows_full_panels_with_zones_in_bytes() -> None:
    lines = _screen(_state(), View(), 120, 40)
    text = "\n".join(lines)
    assert len(lines) == 40
    for heading in ("system memory (sysstat)", "reclaim, last 2.0s (pr)", "zones (paf): 0 allocation failures"):
        assert heading in text, heading
    assert "RSS TREND" in text and "▁" in text
    paging = next(line for line in lines if "paging" in line)
    assert "swap 1.0G of 2.0G" in paging and "out 4.0K/s" in paging and "faults 1,234/s (major 5/s)" in paging
    assert "swap, faults:  swap 1.0G of 2.0G" in render_text(_state())
    normal = next(line for line in lines if " Normal " in line)
    assert "19.5M" in normal and "400.0K" in normal  # 5000 free pages, min 100 pages of 4 KiB


def test_tab_expands_the_focused_panel_on_a_small_terminal() -> None:
    view = View()
    handle_key(view, "tab")  # the memory panel: every label and line kept at 80 columns
    lines = _screen(_state(), view, 80, 24)
    for label in ("▶ system memory (sysstat)", "│ available    ▁", "│ PSI some 10s ", "│ paging swap 1.0G of 2.0G"):
        assert any(label in line for line in lines), label
    view = View()
    for _ in range(3):
        handle_key(view, "tab")
    lines = _screen(_state(), view, 80, 24)
    assert len(lines) == 24
    assert any("▶ zones (paf)" in line for line in lines) and any(" Normal " in line for line in lines)
    assert any("top processes by rss" in line for line in lines)  # the list keeps a few rows


def test_sort_filter_pause_and_scroll_keys() -> None:
    state, view = _state(), View()
    handle_key(view, "g")
    lines = _screen(state, view, 100, 30)
    heading = next(i for i, line in enumerate(lines) if "top processes by growth" in line)
    assert "GROWTH▼" in lines[heading + 1] and lines[heading + 2].split()[0] == "100"
    handle_key(view, "P")
    assert sorted_processes(state, view)[0].pss_bytes == max(r.pss_bytes or 0 for r in state.processes)
    for key in ["/", *"proc4", "backspace", *"42", "enter"]:
        handle_key(view, key)
    assert view.filter == "proc42" and view.editing is None
    assert [r.comm for r in sorted_processes(state, view)] == ["proc42"]
    handle_key(view, "/")
    handle_key(view, "x")
    assert "filter: proc42x" in _screen(state, view, 100, 30)[-1]
    handle_key(view, "esc")  # cancels the edit, keeps the filter
    assert view.filter == "proc42" and view.editing is None
    handle_key(view, "esc")  # clears the filter
    handle_key(view, "p")
    assert "PAUSED" in _screen(state, view, 100, 30)[0]
    handle_key(view, "end")
    screen = render_screen(state, view, 100, 30)
    assert screen.scroll == len(state.processes) - screen.page_rows  # the last page, not past it
    handle_key(view, "q")
    assert view.quit


def test_cgroup_view_groups_processes_under_their_nearest_cgroup() -> None:
    state, view = _state(6), View()
    handle_key(view, "c")
    names = [r.cgroup.path if r.cgroup else r.process.comm for r in grouped_rows(state, view)]
    # Largest cgroups first, each followed by its processes by rss; session-1.scope was not
    # read (deeper than the cgroups read): its processes are listed under /user.slice.
    assert names == [
        "/",
        "/system.slice",
        "/system.slice/a.service",
        "proc5",
        "proc3",
        "proc1",
        "/user.slice",
        "proc4",
        "proc2",
        "proc0",
    ]
    lines = _screen(state, view, 120, 40)
    assert any("cgroups (v2) by usage" in line for line in lines)
    assert any("a.service" in line and "3.0G" in line and "0.50%" in line for line in lines)
    wide = _screen(state, view, 200, 40)
    headings = next(line for line in wide if "CGROUP / PROCESS" in line).split()
    assert headings[-6:] == ["OOM", "HITS", "RECLAIMED", "PSI10", "STALLS", "PROCS"] and "KERNEL" in headings
    assert next(line for line in wide if "a.service" in line).split()[-6:] == ["0", "7", "1.0M", "0.50%", "11", "3"]
    handle_key(view, "/")
    for key in [*"proc4", "enter"]:
        handle_key(view, key)
    filtered = [r.cgroup.path if r.cgroup else r.process.comm for r in grouped_rows(state, view)]
    assert filtered == ["/", "/user.slice", "proc4"]


def test_help_overlay_lists_every_key() -> None:
    view = View()
    handle_key(view, "h")
    text = "\n".join(_screen(_state(), view, 120, 40))
    for key in ("quit", "sort by resident memory", "sort by growth", "sort by swap", "PSS", "filter", "cgroup"):
        assert key in text, key
    handle_key(view, "x")  # any key closes it
    assert not view.help


def test_sparkline_scales_to_the_window() -> None:
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8], 8) == "▁▂▃▄▅▆▇█"
    assert sparkline([5, 5, 5], 10) == "▁▁▁"
    assert sparkline([5.0, 1.0, 7.0], 2, low=0.0) == "▂█"  # the last two, from 0
    assert sparkline([], 5) == ""


def test_pss_is_read_for_the_largest_by_pss_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # PSS never exceeds rss: once the next row's rss is below the smallest of the
    # largest PSS found, no later row can enter them.
    read = []

    def shared(pid: int) -> SharedMemory:
        read.append(pid)
        return SharedMemory(pss_bytes=pss[pid], uss_bytes=0)

    pss = {1: 10, 2: 80, 3: 70, 4: 50, 5: 40}
    rows = [ProcessRow(pid, "x", rss, rss, 0, 0) for pid, rss in ((1, 100), (2, 90), (3, 80), (4, 60), (5, 45))]
    monkeypatch.setattr(dashboard, "shared_memory", shared)
    board = Dashboard(pss_rows=2)
    board._read_pss(rows)
    assert read == [1, 2, 3]  # pid 4's rss (60) < the second largest PSS (70)
    assert [r.pss_bytes for r in rows] == [10, 80, 70, None, None]


def test_command_lines_show_on_one_line_and_as_they_are() -> None:
    state = _state(3)
    state.processes[2].cmdline = "python3 -c\nimport time\ttime.sleep(9) [bold]x[/bold]"
    lines = _screen(state, View(), 200, 30)
    row = next(line for line in lines if line.lstrip().startswith("102 "))
    assert "python3 -c import time time.sleep(9) [bold]x[/bold]" in row


def test_event_line_puts_totals_first_then_the_newest_event() -> None:
    kill = oom.OomKill(**{name: None for name in oom.OomKill._fields})._replace(
        victim_pid=4242, victim_comm="hog", rss_bytes=40 << 20, kind="memcg", cgroup="/mwtest"
    )
    state = _state(3)
    state.oom_kills_total, state.alloc_failures_total = 1, 3
    state.events = [
        DashboardEvent("2026-12-03T07:29:58.000+00:00", alloc_failures=3),
        DashboardEvent("2026-12-03T07:29:59.000+00:00", oom_kill=kill),
    ]
    line = _screen(state, View(), 80, 24)[-2]
    assert line.startswith("events OOM kills 1, allocation failures 3 since start · last: 07:29:59 OOM kill")
    wide = _screen(state, View(), 200, 50)[-2]
    assert wide.endswith("OOM kill: 4242 hog, rss 40.0M, memcg OOM in /mwtest")
