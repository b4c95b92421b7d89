"""The dashboard (`memwatcher` / `memwatcher top`) and BCC-style positional arguments."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

from conftest import OOM_HOG, memory_limited_cgroup, requires_bpf
from memwatcher.dashboard import Dashboard, render_text
from memwatcher.terminal import KeyDecoder, cbreak

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
