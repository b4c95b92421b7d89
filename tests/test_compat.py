"""The original tool's command lines (`mem_watcher -r`, `-s`, `-a`, `-p`, `-l`, `-l -P PID`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import requires_bpf
from memwatcher.compat import translate
from memwatcher.tools import report_modules

MEM_WATCHER = [sys.executable, "-m", "memwatcher.compat"]


@pytest.mark.parametrize(
    ("seed", "mapped"),
    [
        ("-r", "procstat"),
        ("-r -R", "procstat --pages"),
        ("-r -P 42", "procstat --pid 42"),
        ("--procstat --Rss --choose_pid 42", "procstat --pages --pid 42"),
        ("-s", "sysstat"),
        ("-s -n", "sysstat --group part2"),
        ("-a", "paf"),
        ("-p", "pr"),
        ("-l", "memleak --kernel"),
        ("-l -P 2429", "memleak --pid 2429"),
        ("-p -t 5", "pr --duration 5.0"),
        ("-r -- --output json --top 3", "procstat --output json --top 3"),
    ],
)
def test_seed_command_lines_map_onto_reports(seed: str, mapped: str) -> None:
    assert translate(seed.split()) == mapped.split()


@pytest.mark.parametrize("bad", ["", "-r -s", "-a -n", "-s -R", "-p -P 1", "-x"])
def test_bad_seed_command_lines_are_usage_errors(bad: str) -> None:
    proc = subprocess.run([*MEM_WATCHER, *bad.split()], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "usage: mem_watcher" in proc.stderr and "Traceback" not in proc.stderr


# (seed flags, a column header of the mapped report's table)
SEED_RUNS = [
    ("-r", "RSS"),
    ("-r -R", "PTE"),
    ("-s", "ACTIVE"),
    ("-s -n", "SLAB"),
    ("-a", "ZONE"),
    ("-p", "RECLAIM"),
    ("-l", "(final):"),  # -t 1: the one report is the final one
    ("-l -P {child}", "pid"),
]


@requires_bpf
@pytest.mark.parametrize(("seed", "header"), SEED_RUNS)
def test_seed_command_lines_run(seed: str, header: str) -> None:
    report = translate(seed.format(child=1).split())[0]
    if report not in report_modules():
        pytest.skip(f"{report} is not in this build")
    with subprocess.Popen(["sleep", "30"]) as child:
        args = seed.format(child=child.pid).split()
        proc = subprocess.run([*MEM_WATCHER, *args, "-t", "1"], capture_output=True, text=True, timeout=60)
        child.kill()
    assert proc.returncode == 0, proc.stderr
    assert header in proc.stdout.split(), proc.stdout[:500]
