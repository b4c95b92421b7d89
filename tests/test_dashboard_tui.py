"""`memwatcher top` in a real terminal: tmux runs it, the tests type keys and read the screen.

Each test starts its own tmux server (a private socket) with one pane of a
given size running ``memwatcher top --interval 0.5``, followed by a shell
line that prints the exit status and ``stty -a`` (so a test can tell the
terminal was restored), then polls ``capture-pane`` until the screen shows
what it waits for.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import GUEST, MEMORY_HOLDER, memory_limited_cgroup, requires_bpf

pytestmark = [requires_bpf, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]

FOOTER_KEYS = ("q Quit", "h Help", "/ Filter", "c Cgroups", "p Pause", "Tab Focus")
# Under emulation (the kernel matrix's guests) everything is 10-50 times slower: on a
# loaded host, top took 230 s to load there, and 13 s to end after q.
START_TIMEOUT_S = 600 if GUEST else 90  # loading and attaching every report's programs
TIMEOUT_S = 120 if GUEST else 30


class Terminal:
    """A tmux pane of ``width`` x ``height`` running memwatcher with ``args``."""

    def __init__(self, socket: Path, width: int, height: int, args: list[str], job_control: bool = False) -> None:
        self.width, self.height = width, height
        self._tmux = ["tmux", "-S", str(socket), "-f", "/dev/null"]
        # No COLUMNS/LINES: the size must come from the terminal itself.
        self._env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TMUX")}
        command = [sys.executable, "-m", "memwatcher.cli", *args]
        epilogue = 'echo "memwatcher exited $?"; stty -a'
        if job_control:  # typed into an interactive shell, which can stop and continue it
            self._run("new-session", "-d", "-x", str(width), "-y", str(height), "bash --norc --noprofile -i")
            self.keys(shlex.join(command), "Enter")
            self.epilogue = epilogue
        else:
            shell = f"{shlex.join(command)}; {epilogue}; exec sleep 3600"
            self._run("new-session", "-d", "-x", str(width), "-y", str(height), shell)

    def _run(self, *args: str) -> str:
        proc = subprocess.run([*self._tmux, *args], env=self._env, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def screen(self) -> list[str]:
        return self._run("capture-pane", "-p").splitlines()

    def history(self) -> str:
        """Everything the pane showed on its normal screen, scrolled-off lines included."""
        return self._run("capture-pane", "-p", "-S", "-")

    def keys(self, *keys: str, literal: bool = False) -> None:
        self._run("send-keys", *(["-l"] if literal else []), *keys)

    def resize(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self._run("resize-window", "-x", str(width), "-y", str(height))

    def memwatcher_pid(self) -> int:
        shell = self._run("display-message", "-p", "#{pane_pid}").strip()
        return int(subprocess.run(["pgrep", "-P", shell], capture_output=True, text=True).stdout.split()[0])

    def wait_for(self, what: str, done: Callable[[list[str]], bool], timeout_s: float = TIMEOUT_S) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while True:
            lines = self.screen()
            if done(lines):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout_s} s for {what}; the screen:\n" + "\n".join(lines))
            time.sleep(0.1)

    def wait_for_text(self, text: str, timeout_s: float = TIMEOUT_S) -> list[str]:
        return self.wait_for(repr(text), lambda lines: any(text in line for line in lines), timeout_s)

    def started(self) -> list[str]:
        return self.wait_for("the footer", lambda lines: bool(lines) and "q Quit" in lines[-1], START_TIMEOUT_S)

    def assert_exited_and_restored(self) -> None:
        # The shell's line after memwatcher: its status, then stty's settings (ending with "icanon ...").
        self.wait_for("the exit status and the terminal settings", lambda lines: "icanon" in self.history())
        history = self.history()
        assert "memwatcher exited 0" in history, history[-3000:]
        settings = history.split("memwatcher exited 0", 1)[1]
        # The shell's terminal is back in canonical mode with echo: cbreak was undone.
        assert re.search(r"(?<![-\w])icanon\b", settings) and re.search(r"(?<![-\w])echo\b", settings), settings
        assert "final summary:" in history and "Traceback" not in history

    def close(self) -> None:
        subprocess.run([*self._tmux, "kill-server"], env=self._env, capture_output=True, timeout=30)


@contextmanager
def terminal(tmp_path: Path, width: int, height: int, *args: str) -> Iterator[Terminal]:
    term = Terminal(tmp_path / "tmux.sock", width, height, ["top", "--interval", "0.5", *args])
    try:
        yield term
    finally:
        term.close()


@contextmanager
def memory_holder(name: str, mib: int) -> Iterator[subprocess.Popen[str]]:
    """A sleeping python holding ``mib`` MiB in its own cgroup ``/name``; ``name`` is also on its command line."""
    with memory_limited_cgroup(name, 4 * mib << 20) as cg:
        holder = subprocess.Popen(
            [sys.executable, "-c", MEMORY_HOLDER, str(cg.procs), str(mib), name], stdout=subprocess.PIPE, text=True
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
            yield holder
        finally:
            holder.kill()
            holder.wait()


def _list_range(lines: list[str], heading: str) -> tuple[int, int, int]:
    """(first, last, count) from the list's title, e.g. "top processes by rss (procstat)  1-16 of 43"."""
    title = next(line for line in lines if heading in line)
    match = re.search(r"(\d+)-(\d+) of (\d+)", title)
    assert match, title
    first, last, count = map(int, match.groups())
    return first, last, count


@pytest.mark.parametrize("width,height", [(80, 24), (120, 40), (200, 50)])
def test_every_size_shows_header_panels_list_events_and_footer_and_q_quits(
    tmp_path: Path, width: int, height: int
) -> None:
    with terminal(tmp_path, width, height) as term:
        lines = term.started()
        assert len(lines) == height and all(len(line) <= width for line in lines)
        assert lines[0].startswith("memwatcher ") and "every 0.5s" in lines[0] and "sort: rss" in lines[0]
        for key in FOOTER_KEYS:
            assert key in lines[-1], key
        assert lines[-2].startswith("events ")
        text = "\n".join(lines)
        assert "top processes by rss (procstat)" in text and "RSS▼" in text
        if (width, height) == (80, 24):
            # Every side panel is one line: its summary.
            for heading in ("memory (sysstat) available", "reclaim (pr)", "zones (paf) failures"):
                assert any(line.startswith(heading) for line in lines), heading
        else:
            for heading in ("system memory (sysstat)", "reclaim, last ", "zones (paf): "):
                assert heading in text, heading
            assert "FREE" in text and "NODE" in text
        term.keys("q")
        term.assert_exited_and_restored()


def test_filter_finds_a_sleeping_process_the_test_started(tmp_path: Path) -> None:
    name = f"mwtest-top-{os.getpid()}"
    with memory_holder(name, 64) as holder, terminal(tmp_path, 120, 40) as term:
        term.started()
        term.keys("/")
        term.keys(name, literal=True)
        term.wait_for_text(f"filter: {name}█")  # being typed: the footer shows it
        term.keys("Enter")
        lines = term.wait_for_text("1-1 of 1")
        heading = next(i for i, line in enumerate(lines) if "top processes by rss" in line)
        assert f"filter: {name}" in lines[heading]
        row = lines[heading + 2].split()
        assert row[0] == str(holder.pid)
        rss_mib = float(row[2].removesuffix("M"))
        assert row[2].endswith("M") and 64 <= rss_mib < 96, row
        assert lines[heading + 3].strip() == ""  # nothing else matches
        term.keys("Escape")  # clears the filter
        term.wait_for("the whole list", lambda lines: not any("1-1 of 1" in line for line in lines))
        term.keys("q")
        term.assert_exited_and_restored()


def test_sort_keys_change_the_order_and_its_indicator(tmp_path: Path) -> None:
    with terminal(tmp_path, 120, 40) as term:
        term.started()
        for key, name, column in (("g", "growth", "GROWTH▼"), ("s", "swap", "SWAP▼"), ("P", "pss", "PSS▼")):
            term.keys(key)
            lines = term.wait_for_text(f"top processes by {name} (procstat)")
            assert f"sort: {name}▼" in lines[0]
            assert any(column in line for line in lines), column
        term.keys("M")
        lines = term.wait_for_text("top processes by rss (procstat)")
        heading = next(i for i, line in enumerate(lines) if "top processes by rss" in line)
        rows = [line.split() for line in lines[heading + 2 : heading + 7] if line.strip()]
        assert len(rows) >= 2
        sizes = [_bytes(row[2]) for row in rows]
        assert sizes == sorted(sizes, reverse=True)
        term.keys("q")
        term.assert_exited_and_restored()


def _bytes(text: str) -> float:
    units = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    return float(text[:-1]) * units[text[-1]]


def test_pause_freezes_the_frame_and_says_paused(tmp_path: Path) -> None:
    with terminal(tmp_path, 120, 40) as term:
        term.started()
        term.keys("p")
        paused = term.wait_for_text("PAUSED")[0]
        time.sleep(1.5)  # three refreshes at --interval 0.5: the frame must not change
        assert term.screen()[0] == paused
        term.keys("p")
        term.wait_for("the clock to move on", lambda lines: "PAUSED" not in lines[0] and lines[0] != paused)
        term.keys("q")
        term.assert_exited_and_restored()


def test_cgroup_view_shows_a_test_cgroup_with_its_process(tmp_path: Path) -> None:
    name = f"mwtest-top-cg-{os.getpid()}"
    with memory_holder(name, 64) as holder, terminal(tmp_path, 120, 40) as term:
        term.started()
        term.keys("c")
        lines = term.wait_for_text("CGROUP / PROCESS")
        assert re.search(r"cgroups \(v[12]\) by usage", "\n".join(lines)) and "grouped by cgroup" in lines[0]
        term.keys("/")
        term.keys(name, literal=True)
        term.keys("Enter")
        # Its row (not the footer echoing the filter being typed): the name first, indented. The
        # tree before Enter is applied holds every cgroup, where this one may be the last row shown.
        lines = term.wait_for(
            "the filtered tree with the test cgroup",
            lambda lines: (
                any(line.rstrip().endswith(f"filter: {name}") for line in lines)
                and any(line.split()[:1] == [name] for line in lines)
            ),
        )
        at = next(i for i, line in enumerate(lines) if line.split()[:1] == [name])
        screen = "\n".join(lines)
        assert "256.0M" in lines[at], screen  # its limit
        assert lines[at + 1].split()[:1] == [str(holder.pid)], screen  # its process, beneath it
        term.keys("c")
        term.wait_for_text("top processes by rss (procstat)")
        term.keys("q")
        term.assert_exited_and_restored()


def _prompt(lines: list[str]) -> bool:
    """The shell waits for a command: its prompt (bash's default, "bash-5.2#") is the last line."""
    text = [line.rstrip() for line in lines if line.strip()]
    return bool(text) and text[-1].endswith(("#", "$"))


def test_ctrl_z_gives_the_shell_its_terminal_and_fg_draws_again(tmp_path: Path) -> None:
    term = Terminal(tmp_path / "tmux.sock", 120, 40, ["top", "--interval", "0.5"], job_control=True)
    try:
        term.started()
        term.keys("C-z")
        # The shell's own screen, its prompt, and its settings (canonical, echo) while we are stopped.
        lines = term.wait_for("the job line", lambda lines: any("Stopped" in line for line in lines) and _prompt(lines))
        assert not any("q Quit" in line for line in lines), "\n".join(lines)  # the shell's screen, not ours
        term.keys("stty -a", "Enter")
        lines = term.wait_for_text("icanon")
        settings = "\n".join(lines)
        assert re.search(r"(?<![-\w])icanon\b", settings) and re.search(r"(?<![-\w])echo\b", settings), settings
        term.keys("fg", "Enter")
        lines = term.started()  # the whole frame again, footer included
        assert lines[0].startswith("memwatcher ") and not any("icanon" in line for line in lines)
        clock = lines[0]
        term.wait_for("a new sample after fg", lambda lines: lines[0] != clock)
        term.keys("q")
        term.wait_for("the prompt", lambda lines: "final summary:" in term.history() and _prompt(lines))
        term.keys(term.epilogue, "Enter")
        term.assert_exited_and_restored()
    finally:
        term.close()


def test_help_overlay_and_tab_focus(tmp_path: Path) -> None:
    with terminal(tmp_path, 80, 24) as term:
        term.started()
        term.keys("h")
        lines = term.wait_for_text("sort by swap")
        assert any("help" in line for line in lines) and any("group processes by cgroup" in line for line in lines)
        term.keys("x")  # any key closes it
        term.wait_for_text("top processes by rss")
        term.keys("Tab")  # focus the memory panel: drawn in full even at 80x24
        lines = term.wait_for_text("▶ system memory (sysstat)")
        assert any("PSI some 10s" in line for line in lines) or not Path("/proc/pressure/memory").exists()
        assert any("top processes by rss" in line for line in lines)  # the list keeps a few rows
        term.keys("q")
        term.assert_exited_and_restored()


def test_arrows_and_pages_scroll_the_list(tmp_path: Path) -> None:
    sleepers = [subprocess.Popen(["sleep", "600"]) for _ in range(40)]  # more processes than rows
    try:
        with terminal(tmp_path, 80, 24) as term:
            lines = term.wait_for("the sleepers", lambda lines: _has_range(lines, 41), START_TIMEOUT_S)
            first, last, _ = _list_range(lines, "top processes by rss")
            assert first == 1
            page = last - first + 1
            term.keys("Down")
            term.wait_for("one row down", lambda lines: _list_range(lines, "top processes")[0] == 2)
            term.keys("PageDown")
            term.wait_for("a page down", lambda lines: _list_range(lines, "top processes")[0] == 2 + page)
            term.keys("End")
            term.wait_for(
                "the end", lambda lines: _list_range(lines, "top processes")[1] == _list_range(lines, "top")[2]
            )
            term.keys("Home")
            term.wait_for("the top", lambda lines: _list_range(lines, "top processes")[0] == 1)
            term.keys("q")
            term.assert_exited_and_restored()
    finally:
        for s in sleepers:
            s.kill()
            s.wait()


def _has_range(lines: list[str], at_least: int) -> bool:
    try:
        return _list_range(lines, "top processes by rss")[2] >= at_least
    except StopIteration:
        return False


def test_a_resized_terminal_is_redrawn_to_its_new_size_at_once(tmp_path: Path) -> None:
    with terminal(tmp_path, 120, 40, "--interval", "60") as term:  # no refresh due: the resize must redraw
        term.wait_for_text("system memory (sysstat)", START_TIMEOUT_S)
        term.resize(80, 24)
        lines = term.wait_for("the 80x24 layout", lambda lines: lines[1].startswith("memory (sysstat) available"))
        assert len(lines) == 24 and "q Quit" in lines[-1]
        term.keys("q")
        term.assert_exited_and_restored()


def test_keys_work_when_sampling_falls_behind_the_interval(tmp_path: Path) -> None:
    # Each sample takes longer than 10 ms: no time is left between samples (as on a slow
    # machine or under emulation), and the keys must still be read.
    with terminal(tmp_path, 120, 40, "--interval", "0.01") as term:
        term.started()
        term.keys("p")
        term.wait_for_text("PAUSED")
        term.keys("q")
        term.assert_exited_and_restored()


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "duration"])
def test_other_endings_restore_the_terminal(tmp_path: Path, how: str) -> None:
    args = ["--duration", "3"] if how == "duration" else []
    with terminal(tmp_path, 100, 30, *args) as term:
        term.started()
        if how == "ctrl-c":
            term.keys("C-c")
        elif how == "sigterm":
            os.kill(term.memwatcher_pid(), signal.SIGTERM)
        term.assert_exited_and_restored()
