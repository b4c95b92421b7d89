"""The interactive terminal view of `memwatcher top`: keys, a layout that fits the terminal, sparklines.

:class:`View` is what the user chose (sort, filter, grouping, focus,
scrolling); :func:`handle_key` changes it; :func:`render_screen` draws a
:class:`~memwatcher.dashboard.DashboardState` under a view into exactly the
terminal's lines, with rich; :func:`run` ties them to the keyboard and the
sampling schedule.

Layout: a header line, the side panels (system memory, reclaim, zones), the
process list (or the cgroup tree) taking the remaining lines, the live event
line and a footer of keys. Every side panel has a one-line summary; a panel
is drawn in full only while the process list keeps :data:`LIST_MIN_LINES`
lines, so a small terminal (80x24) shows summaries and a large one full
panels. The focused panel (Tab) is drawn in full whenever the list keeps a
few lines, so any panel can be read on any terminal.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import NamedTuple

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from . import terminal
from .dashboard import (
    MEMORY_ROWS,
    Dashboard,
    DashboardEvent,
    DashboardState,
    ProcessRow,
    reclaim_lines,
    signed_bytes,
    swap_faults_line,
)
from .output import human_bytes
from .runner import Schedule, Stop, run_periodic
from .tools.cgroups import CgroupMemory, parent_path

__all__ = ["SORTS", "Screen", "View", "handle_key", "render_screen", "run", "sparkline"]

BLOCKS = "▁▂▃▄▅▆▇█"
# The process list keeps this many lines (title, header, rows) before side panels expand.
LIST_MIN_LINES = 14
# ... and this many when the focused panel expands.
LIST_FOCUS_MIN_LINES = 4
# Terminals at least this wide show the RSS trend column and the cgroups' anon/file columns,
# and at least the second width the cgroups' kernel memory, limit hits and reclaimed bytes.
WIDE_COLUMNS = 100
VERY_WIDE_COLUMNS = 150
# After a lone ESC, how long to wait for the rest of a key's sequence.
ESC_WAIT_S = 0.05
PANELS = ("processes", "memory", "reclaim", "zones")


class Sort(NamedTuple):
    """A sort order of the process list: its name, the column it sorts and the value (largest first)."""

    name: str
    column: str
    value: Callable[[ProcessRow], tuple[int, int]]


# Key -> sort. PSS is read for the largest processes only: the others sort last, by rss.
SORTS = {
    "M": Sort("rss", "RSS", lambda r: (r.rss_bytes, 0)),
    "g": Sort("growth", "GROWTH", lambda r: (r.growth_bytes, r.rss_bytes)),
    "s": Sort("swap", "SWAP", lambda r: (r.swap_bytes, r.rss_bytes)),
    "P": Sort("pss", "PSS", lambda r: (-1 if r.pss_bytes is None else r.pss_bytes, r.rss_bytes)),
}

KEYS_HELP = (
    ("q", "quit"),
    ("h ?", "this help (any key closes it)"),
    ("M", "sort by resident memory (RSS)"),
    ("g", "sort by growth since the dashboard started"),
    ("s", "sort by swap"),
    ("P", "sort by proportional set size (PSS, read for the largest processes)"),
    ("/", "filter by name or command line: type, Enter applies, Esc cancels"),
    ("Esc", "clear the filter"),
    ("c", "group processes by cgroup (the cgroup tree, by usage)"),
    ("p", "pause: keep showing this frame (sampling goes on)"),
    ("↑ ↓ PgUp PgDn Home End", "scroll the process list"),
    ("Tab", "focus the next panel: it is drawn in full"),
    ("Ctrl-Z", "stop (the shell's fg brings the dashboard back)"),
)
_FOOTER = (
    ("q", "Quit"),
    ("h", "Help"),
    ("M", "RSS"),
    ("g", "Growth"),
    ("s", "Swap"),
    ("P", "PSS"),
    ("/", "Filter"),
    ("c", "Cgroups"),
    ("p", "Pause"),
    ("Tab", "Focus"),
    ("↑↓PgUp/Dn", "Scroll"),
)
_FOOTER_NARROW = (
    ("q", "Quit"),
    ("h", "Help"),
    ("M/g/s/P", "Sort"),
    ("/", "Filter"),
    ("c", "Cgroups"),
    ("p", "Pause"),
    ("Tab", "Focus"),
    ("↑↓", "Scroll"),
)


@dataclass
class View:
    """What the user chose to see. ``filter``: a case-insensitive part of the name or command line ("" for all)."""

    sort: str = "M"  # a key of SORTS
    filter: str = ""
    editing: str | None = None  # the filter being typed after "/"; None when not typing
    grouped: bool = False  # the cgroup tree instead of the process list
    paused: bool = False
    help: bool = False
    focus: int = 0  # index into PANELS
    scroll: int = 0  # first list row shown
    page_rows: int = 10  # list rows the last frame showed: the PgUp/PgDn step
    quit: bool = False
    refresh_s: float = 2.0  # the sampling interval, for the header


def handle_key(view: View, key: str) -> None:
    """Apply one key (a character or a :mod:`memwatcher.terminal` key name) to the view."""
    if view.editing is not None:
        if key == terminal.ENTER:
            view.filter, view.editing, view.scroll = view.editing.strip(), None, 0
        elif key == terminal.ESCAPE:
            view.editing = None
        elif key == terminal.BACKSPACE:
            view.editing = view.editing[:-1]
        elif len(key) == 1 and key.isprintable():
            view.editing += key
        return
    if key == "q":
        view.quit = True
    elif view.help:
        view.help = False
    elif key in ("h", "?"):
        view.help = True
    elif key in SORTS:
        view.sort, view.scroll = key, 0
    elif key == "/":
        view.editing = view.filter
    elif key == terminal.ESCAPE:
        view.filter, view.scroll = "", 0
    elif key == "c":
        view.grouped, view.scroll = not view.grouped, 0
    elif key == "p":
        view.paused = not view.paused
    elif key == terminal.TAB:
        view.focus = (view.focus + 1) % len(PANELS)
    else:
        step = {
            terminal.UP: -1,
            terminal.DOWN: 1,
            terminal.PAGE_UP: -view.page_rows,
            terminal.PAGE_DOWN: view.page_rows,
            terminal.HOME: -(1 << 30),
            terminal.END: 1 << 30,
        }.get(key)
        if step is not None:
            view.scroll = max(0, view.scroll + step)  # the upper bound is the list's length: render_screen's


def sparkline(values: tuple[float, ...] | list[float], width: int, low: float | None = None) -> str:
    """The last ``width`` values as block characters, scaled from ``low`` (default: their minimum) to their maximum."""
    shown = list(values)[-width:] if width > 0 else []
    if not shown:
        return ""
    lo = min(shown) if low is None else low
    span = max(shown) - lo
    top = len(BLOCKS) - 1
    return "".join(BLOCKS[0 if span <= 0 else min(top, round((v - lo) / span * top))] for v in shown)


def _b(value: int | None) -> str:
    return "-" if value is None else human_bytes(value)


def _plain(text: str) -> Text:
    """A cell shown as it is (no rich markup) on one line: command lines may hold newlines and tabs."""
    return Text("".join(ch if ch.isprintable() else " " for ch in text))


def _matches(row: ProcessRow, needle: str) -> bool:
    return not needle or needle.lower() in row.comm.lower() or needle.lower() in row.cmdline.lower()


def sorted_processes(state: DashboardState, view: View) -> list[ProcessRow]:
    """The process list under the view: filtered, largest first by the view's sort."""
    sort = SORTS[view.sort]
    rows = [r for r in state.processes if _matches(r, view.filter)]
    return sorted(rows, key=sort.value, reverse=True)


class _ListRow(NamedTuple):
    """A row of the cgroup tree: a cgroup, or a process under its cgroup."""

    depth: int
    cgroup: CgroupMemory | None
    process: ProcessRow | None


def grouped_rows(state: DashboardState, view: View) -> list[_ListRow]:
    """The cgroup tree, each cgroup followed by its processes (sorted by the view's sort).

    A process in a cgroup deeper than those read is listed under its nearest
    ancestor that was. With a filter, only cgroups holding a matching process
    (or whose path matches) are shown, with their ancestors.
    """
    paths = {c.path for c in state.cgroups}
    members: dict[str | None, list[ProcessRow]] = {}
    for row in sorted_processes(state, view):
        path = row.cgroup
        while path is not None and path not in paths:
            path = parent_path(path)
        members.setdefault(path, []).append(row)
    shown = {c.path for c in state.cgroups if members.get(c.path) or view.filter.lower() in c.path.lower()}
    for shown_path in list(shown):  # and their ancestors, so that the tree stays a tree
        parent = parent_path(shown_path)
        while parent is not None:
            shown.add(parent)
            parent = parent_path(parent)
    out = []
    for c in state.cgroups:
        if c.path in shown:
            out.append(_ListRow(c.depth, c, None))
            out += [_ListRow(c.depth + 1, None, p) for p in members.get(c.path, [])]
    return out + [_ListRow(1, None, p) for p in members.get(None, [])]


# ---------------------------------------------------------------- panels


def _focus_style(focused: bool) -> str:
    return "bold cyan" if focused else "blue"


def _memory_summary(state: DashboardState, width: int) -> Text:
    m = state.memory
    spark_width = min(20, width // 8)
    line = Text("memory (sysstat) ", style="bold")
    if m is not None:
        line.append(f"available {_b(m.available_bytes)} of {_b(m.total_bytes)} ")
        line.append(sparkline(state.available_history_bytes, spark_width), style="green")
    if state.pressure is not None:
        line.append(f"  PSI some {state.pressure.some_avg10_pct:.2f}% ")
        line.append(sparkline(state.pressure_history_pct, spark_width, low=0.0), style="yellow")
    if m is not None:
        line.append(f"  free {_b(m.free_bytes)}  anon {_b(m.anon_pages_bytes)}  file {_b(m.file_pages_bytes)}")
    return line


def _memory_panel(state: DashboardState, width: int, focused: bool) -> Panel:
    m = state.memory
    pairs_per_row = 4 if width >= 120 else 2
    grid = Table.grid(padding=(0, 2))
    for _ in range(pairs_per_row):
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(justify="right", no_wrap=True)
    if m is not None:
        cells = [(label, _b(getattr(m, key))) for label, key in MEMORY_ROWS]
        for i in range(0, len(cells), pairs_per_row):
            grid.add_row(*[x for pair in cells[i : i + pairs_per_row] for x in pair])
    spark_width = max(10, width - 70)  # the rest: borders, labels and the figures after the sparkline
    lines = Table.grid(padding=(0, 1))
    lines.add_column(style="dim", no_wrap=True)
    lines.add_column(no_wrap=True)
    lines.add_column(no_wrap=True)
    history = state.available_history_bytes
    if history:
        lines.add_row(
            "available",
            Text(sparkline(history, spark_width), style="green"),
            f"{_b(min(history))}..{_b(max(history))}",
        )
    if state.pressure is not None:
        p = state.pressure
        lines.add_row(
            "PSI some 10s",
            Text(sparkline(state.pressure_history_pct, spark_width, low=0.0), style="yellow"),
            f"{p.some_avg10_pct:.2f}% (full {p.full_avg10_pct:.2f}%, some 60s {p.some_avg60_pct:.2f}%)",
        )
    parts = [grid, lines]
    if state.swap is not None or state.vm_rates:
        # Its own line, not a row of the sparkline grid: its length would squeeze the labels out.
        paging = Text("paging ", style="dim", no_wrap=True, overflow="ellipsis")
        paging.append(swap_faults_line(state), style="")
        parts.append(paging)
    title = ("▶ " if focused else "") + "system memory (sysstat)"
    return Panel(Group(*parts), title=title, title_align="left", border_style=_focus_style(focused))


def _reclaim_summary(state: DashboardState) -> Text:
    r = state.reclaim
    line = Text("reclaim (pr) ", style="bold")
    if r is not None:
        cells = dict(reclaim_lines(r))
        line.append(
            f"{state.interval_s:.1f}s: scanned/reclaimed {cells['scanned / reclaimed pages']} pages, "
            f"direct {cells['direct reclaims (avg stall)']}, memcg {cells['memcg reclaims']}, "
            f"kswapd {cells['kswapd wakeups']}"
        )
    return line


def _reclaim_panel(state: DashboardState, width: int, focused: bool) -> Panel:
    pairs_per_row = 2 if width >= WIDE_COLUMNS else 1
    grid = Table.grid(padding=(0, 2))
    for _ in range(pairs_per_row):
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(no_wrap=True)
    if state.reclaim is not None:
        cells = reclaim_lines(state.reclaim)
        for i in range(0, len(cells), pairs_per_row):
            grid.add_row(*[x for pair in cells[i : i + pairs_per_row] for x in pair])
    title = ("▶ " if focused else "") + f"reclaim, last {state.interval_s:.1f}s (pr)"
    return Panel(grid, title=title, title_align="left", border_style=_focus_style(focused))


def _zone_bytes(state: DashboardState, pages: int | None) -> str:
    return _b(None if pages is None else pages * state.page_size_bytes)


def _zones_totals(state: DashboardState) -> str:
    return f"{state.alloc_failures_total} allocation failures, {state.kswapd_wakeups_total} kswapd wakeups since start"


def _zones_summary(state: DashboardState) -> Text:
    line = Text("zones (paf) ", style="bold")
    line.append(f"failures {state.alloc_failures_total}, kswapd wakeups {state.kswapd_wakeups_total} since start")
    for z in sorted(state.zones, key=lambda z: -(z.managed_pages or 0)):  # the largest zone first
        line.append(f" · {z.zone} free {_zone_bytes(state, z.free_pages)} (min {_zone_bytes(state, z.min_pages)})")
    return line


def _zones_panel(state: DashboardState, focused: bool) -> Table:
    title = ("▶ " if focused else "") + f"zones (paf): {_zones_totals(state)}"
    table = Table(title=title, title_justify="left", border_style=_focus_style(focused), expand=False)
    for name in ("NODE", "ZONE", "FREE", "MIN", "LOW", "HIGH", "ALLOCS", "FAILURES"):
        table.add_column(name, justify="left" if name == "ZONE" else "right", no_wrap=True)
    for z in state.zones:
        table.add_row(
            str(z.node),
            z.zone,
            *(_zone_bytes(state, v) for v in (z.free_pages, z.min_pages, z.low_pages, z.high_pages)),
            str(z.allocs),
            str(z.failures),
        )
    return table


# ---------------------------------------------------------------- the list


def _list_title(text: str, count: int, scroll: int, shown: int, view: View, focused: bool) -> Text:
    title = Text(("▶ " if focused else "") + text, style="bold reverse" if focused else "bold")
    title.append(f"  {scroll + 1}-{scroll + shown} of {count}" if shown else f"  none of {count}")
    if view.filter:
        title.append(f"  filter: {view.filter}", style="bold yellow")
    return title


def _process_table(rows: list[ProcessRow], view: View, width: int) -> Table:
    sort = SORTS[view.sort]
    table = Table(box=None, padding=(0, 1), expand=True, header_style="reverse", show_edge=False)
    wide = width >= WIDE_COLUMNS
    columns = ["PID", "USER", "RSS", "PSS", "SWAP", "GROWTH", *(["RSS TREND"] if wide else []), "COMMAND"]
    for name in columns:
        header = name + ("▼" if name == sort.column else "")
        if name == "COMMAND":
            table.add_column(header, ratio=1, no_wrap=True, overflow="ellipsis")
        elif name == "USER":
            table.add_column(header, max_width=9, no_wrap=True, overflow="ellipsis")
        else:
            table.add_column(header, justify="left" if name == "RSS TREND" else "right", no_wrap=True)
    for r in rows:
        growth = Text(signed_bytes(r.growth_bytes), style="red" if r.growth_bytes > 0 else "")
        trend = [Text(sparkline(r.rss_history_bytes, 12), style="green")] if wide else []
        table.add_row(
            str(r.pid),
            _plain(r.user),
            human_bytes(r.rss_bytes),
            _b(r.pss_bytes),
            human_bytes(r.swap_bytes),
            growth,
            *trend,
            _plain(r.cmdline),
        )
    return table


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}%"


# The cgroup tree's figures: (heading, the narrowest terminal showing it, a cgroup's cell,
# a process's cell or None). Counts (OOM kills, limit HITS, RECLAIMED) are since the cgroup was made;
# STALLS (direct and limit reclaims its tasks waited in, the cgroup and below) since the dashboard began.
_CGROUP_COLUMNS: tuple[tuple[str, int, Callable[[CgroupMemory], str], Callable[[ProcessRow], str] | None], ...] = (
    ("CURRENT", 0, lambda c: human_bytes(c.current_bytes), lambda p: human_bytes(p.rss_bytes)),
    ("LIMIT", 0, lambda c: "max" if c.limit_bytes is None else human_bytes(c.limit_bytes), None),
    ("ANON", WIDE_COLUMNS, lambda c: _b(c.anon_bytes), None),
    ("FILE", WIDE_COLUMNS, lambda c: _b(c.file_bytes), None),
    ("KERNEL", VERY_WIDE_COLUMNS, lambda c: _b(c.kernel_bytes), None),
    ("SWAP", 0, lambda c: _b(c.swap_bytes), lambda p: human_bytes(p.swap_bytes)),
    ("OOM", 0, lambda c: _n(c.oom_kills), None),
    ("HITS", VERY_WIDE_COLUMNS, lambda c: _n(c.limit_hits), None),
    ("RECLAIMED", VERY_WIDE_COLUMNS, lambda c: _b(c.reclaim_reclaimed_bytes), None),
    ("PSI10", 0, lambda c: _pct(c.pressure_some_avg10_pct), None),
    ("STALLS", WIDE_COLUMNS, lambda c: _n(c.reclaim_stalls), None),
    ("PROCS", 0, lambda c: str(c.processes), None),
)


def _cgroup_table(rows: list[_ListRow], width: int) -> Table:
    columns = [col for col in _CGROUP_COLUMNS if width >= col[1]]
    table = Table(box=None, padding=(0, 1), expand=True, header_style="reverse", show_edge=False)
    table.add_column("CGROUP / PROCESS", ratio=1, no_wrap=True, overflow="ellipsis")
    for heading, *_ in columns:
        table.add_column(heading, justify="right", no_wrap=True)
    for row in rows:
        indent = "  " * row.depth
        c, p = row.cgroup, row.process
        if c is not None:
            name = c.path if c.depth == 0 else c.path.rsplit("/", 1)[1]
            name += f" [{c.container}]" if c.container else ""
            cells = [cell(c) for _, _, cell, _ in columns]
            table.add_row(Text.assemble(indent, _plain(name), style="bold"), *cells)
        elif p is not None:
            cells = [cell(p) if cell else "" for _, _, _, cell in columns]
            table.add_row(Text.assemble(f"{indent}{p.pid} ", _plain(p.cmdline), style="dim"), *cells)
    return table


def _help_panel(height: int) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold cyan", no_wrap=True)
    grid.add_column()
    for key, what in KEYS_HELP:
        grid.add_row(key, what)
    grid.add_row("", "")
    grid.add_row("layout", "panels are drawn in full when the terminal has room, else as one-line summaries")
    grid.add_row("units", "bytes (K, M, G: powers of 1024); PSI in percent of time stalled")
    return Panel(grid, title="help", title_align="left", border_style="bold cyan", height=height)


# ---------------------------------------------------------------- the frame


def _header(state: DashboardState, view: View) -> Text:
    line = Text("memwatcher ", style="bold")
    line.append(f"{state.time[11:19]}  every {view.refresh_s:g}s  {len(state.processes)} processes  ")
    line.append(f"sort: {SORTS[view.sort].name}▼")
    if view.grouped:
        line.append("  grouped by cgroup", style="bold")
    if view.paused:
        line.append("  PAUSED", style="bold reverse red")
    return line


def _event_text(event: DashboardEvent) -> str:
    k = event.oom_kill
    if k is None:
        return f"{event.time[11:19]} {event.alloc_failures} allocation failures"
    where = f"{k.kind or '?'} OOM" + (f" in {k.cgroup}" if k.cgroup else "")
    return f"{event.time[11:19]} OOM kill: {k.victim_pid} {k.victim_comm}, rss {human_bytes(k.rss_bytes)}, {where}"


def _event_line(state: DashboardState) -> Text:
    """The totals first (they must survive a narrow terminal), then the newest event."""
    line = Text("events ", style="bold")
    if not (state.oom_kills_total or state.alloc_failures_total or state.events):
        line.append("no OOM kill or allocation failure since start")
        return line
    line.append(
        f"OOM kills {state.oom_kills_total}, allocation failures {state.alloc_failures_total} since start",
        style="bold red",
    )
    if state.events:
        line.append(" · last: ")
        line.append(_event_text(state.events[-1]), style="red")
    return line


def _footer(view: View, width: int) -> Text:
    if view.editing is not None:
        line = Text("filter: ", style="bold")
        line.append(view.editing + "█")
        line.append("   Enter apply  Esc cancel", style="dim")
        return line
    for keys in (_FOOTER, _FOOTER_NARROW):
        line = Text()
        for key, label in keys:
            line.append(key + " ", style="bold")
            line.append(label, style="black on cyan")
            line.append(" ")
        if line.cell_len <= width:
            break
    return line


class Screen(NamedTuple):
    """A frame: what to draw, and the list's scroll position and rows (for the view to keep)."""

    renderable: RenderableType
    scroll: int
    page_rows: int


def _height(console: Console, renderable: RenderableType, width: int) -> int:
    return len(console.render_lines(renderable, console.options.update_width(width), pad=False))


def render_screen(state: DashboardState, view: View, width: int, height: int) -> Screen:
    """The whole frame for a terminal of ``width`` x ``height``, in at most ``height`` lines."""
    measure = Console(width=width, height=height, file=io.StringIO(), color_system=None)
    side: list[tuple[str, Text, Callable[[], RenderableType]]] = []
    if state.memory is not None or state.pressure is not None:
        side.append(("memory", _memory_summary(state, width), lambda: _memory_panel(state, width, view.focus == 1)))
    if state.reclaim is not None:
        side.append(("reclaim", _reclaim_summary(state), lambda: _reclaim_panel(state, width, view.focus == 2)))
    if state.zones:
        side.append(("zones", _zones_summary(state), lambda: _zones_panel(state, view.focus == 3)))
    notes = [Text(f"{name} unavailable: {reason}", style="yellow") for name, reason in state.unavailable.items()]
    fixed = 3 + len(notes)  # header, event line, footer
    chosen: dict[str, RenderableType] = {}
    heights = {name: 1 for name, _, _ in side}
    focused = PANELS[view.focus]
    # The focused panel first, then the others in screen order, while the list keeps its lines.
    for name, _, full in sorted(side, key=lambda s: s[0] != focused):
        panel = full()
        panel_height = _height(measure, panel, width)
        room = height - fixed - sum(heights.values()) - panel_height + 1
        if room >= (LIST_FOCUS_MIN_LINES if name == focused else LIST_MIN_LINES):
            chosen[name], heights[name] = panel, panel_height
    list_lines = max(0, height - fixed - sum(heights.values()))
    parts: list[RenderableType] = [_header(state, view)]
    for name, summary, _ in side:
        if name in chosen:
            parts.append(chosen[name])
        else:
            parts.append(summary if name != focused else Text.assemble(summary, style="reverse"))
    rows_shown = max(0, list_lines - 2)  # its title and column headings
    scroll = view.scroll
    if view.help and list_lines > 0:
        parts.append(_help_panel(list_lines))
    elif list_lines > 0:
        on_list = focused == "processes"
        if view.grouped:
            tree = grouped_rows(state, view)
            scroll = min(scroll, max(0, len(tree) - rows_shown))
            shown_tree = tree[scroll : scroll + rows_shown]
            version = f"v{state.cgroup_version}" if state.cgroup_version else "not mounted"
            text = f"cgroups ({version}) by usage, processes by {SORTS[view.sort].name}"
            parts.append(_list_title(text, len(tree), scroll, len(shown_tree), view, on_list))
            parts.append(_cgroup_table(shown_tree, width))
            shown = len(shown_tree)
        else:
            procs = sorted_processes(state, view)
            scroll = min(scroll, max(0, len(procs) - rows_shown))
            shown_procs = procs[scroll : scroll + rows_shown]
            text = f"top processes by {SORTS[view.sort].name} (procstat)"
            parts.append(_list_title(text, len(procs), scroll, len(shown_procs), view, on_list))
            parts.append(_process_table(shown_procs, view, width))
            shown = len(shown_procs)
        if rows_shown > shown:  # keep the event line and the footer at the bottom
            parts.append(Text("\n" * (rows_shown - shown - 1)))
    parts.append(_event_line(state))
    parts += notes
    parts.append(_footer(view, width))
    for part in parts:
        if isinstance(part, Text):
            part.no_wrap, part.overflow = True, "ellipsis"
    return Screen(Group(*parts), scroll, max(1, rows_shown))


# ---------------------------------------------------------------- running it


@contextmanager
def _on_resize() -> Iterator[list[bool]]:
    """A flag raised by SIGWINCH while the block runs (the sampling loop's wakeup pipe ends its wait)."""
    resized = [False]

    def handler(signum: int, frame: object) -> None:
        resized[0] = True

    previous = signal.signal(signal.SIGWINCH, handler)
    try:
        yield resized
    finally:
        signal.signal(signal.SIGWINCH, previous)


def run(board: Dashboard, schedule: Schedule, stop: Stop, console: Console | None = None) -> DashboardState:
    """Draw the dashboard on the terminal until ``q``, a signal (``stop``) or the schedule ends.

    Keys are read from stdin when it is a terminal. The terminal's settings
    and screen are restored on every way out, exceptions included. Returns
    the last state sampled (for a final summary).
    """
    console = console or Console()
    view = View(refresh_s=schedule.interval_s)
    latest = shown = board.sample()
    keys_fd: int | None = sys.stdin.fileno() if sys.stdin.isatty() else None
    decoder = terminal.KeyDecoder()
    with ExitStack() as stack:
        mode = stack.enter_context(terminal.cbreak(keys_fd)) if keys_fd is not None else None
        live = stack.enter_context(
            Live(console=console, screen=True, auto_refresh=False, redirect_stdout=False, redirect_stderr=False)
        )
        resized = stack.enter_context(_on_resize())
        if mode is not None:

            def give_back() -> None:  # the shell's screen and settings while we are stopped
                console.set_alt_screen(False)
                console.show_cursor(True)
                mode.suspend()

            def take_again() -> None:
                mode.resume()
                console.set_alt_screen(True)
                console.show_cursor(False)
                resized[0] = True  # drawn again whole at once

            stack.enter_context(terminal.stops_on_ctrl_z(give_back, take_again))

        def draw() -> None:
            size = console.size
            screen = render_screen(shown, view, size.width, size.height)
            view.scroll, view.page_rows = screen.scroll, screen.page_rows
            live.update(screen.renderable, refresh=True)

        def sample() -> None:
            nonlocal latest, shown
            latest = board.sample()
            if not view.paused:
                shown = latest
            draw()

        def wait(seconds: float) -> None:
            nonlocal keys_fd, shown
            deadline = time.monotonic() + seconds
            # At least one look at the keys, also when sampling falls behind the interval
            # (seconds == 0: a slow machine, a short --interval): q must always work.
            while not stop.is_set():
                left = max(0.0, deadline - time.monotonic())
                fds = [keys_fd] if keys_fd is not None else []
                ready = stop.wait_readable(fds, min(left, ESC_WAIT_S) if decoder.waiting else left)
                keys: list[str] = []
                if keys_fd is not None and keys_fd in ready:
                    data = os.read(keys_fd, 1024)
                    if data:
                        keys = decoder.feed(data)
                    else:
                        keys_fd = None  # end of input: the view keeps running until a signal or the schedule
                elif decoder.waiting:
                    keys = decoder.flush()
                for key in keys:
                    handle_key(view, key)
                if view.quit:
                    stop.set()
                    return
                if not view.paused:
                    shown = latest
                if keys or resized[0]:
                    resized[0] = False
                    draw()
                if time.monotonic() >= deadline and not decoder.waiting:
                    return

        draw()
        run_periodic(schedule, sample, stop, wait)
    return latest
