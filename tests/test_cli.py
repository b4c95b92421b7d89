"""The `memwatcher` command as users run it: doctor, versions, errors without tracebacks."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import requires_bpf
from memwatcher.tools import report_modules

MEMWATCHER = [sys.executable, "-m", "memwatcher.cli"]


def run(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, *MEMWATCHER, *args], capture_output=True, text=True, timeout=120)


def test_version_names_libbpf_and_objects() -> None:
    proc = run("--version")
    assert proc.returncode == 0
    assert "libbpf 1." in proc.stdout
    assert "BPF objects in" in proc.stdout


@requires_bpf
def test_doctor_json_reports_every_report_and_feature() -> None:
    proc = run("doctor", "--output", "json")
    data = json.loads(proc.stdout)
    assert data["checks"]["btf"]["ok"] and data["checks"]["privileges"]["ok"]
    for feature in ("tp_btf", "raw_tp", "kprobe", "fentry", "uprobe", "ringbuf"):
        assert feature in data["checks"]
    # The feature probes must agree with reality: tp_btf and ring buffers are what the test
    # suite itself uses, so they work wherever these tests run.
    assert data["checks"]["tp_btf"]["ok"] and data["checks"]["ringbuf"]["ok"]
    assert set(data["reports"]) == set(report_modules())
    everything_runs = all(r["runnable"] for r in data["reports"].values())
    assert proc.returncode == (0 if everything_runs else 1)
    assert "Traceback" not in proc.stderr


@requires_bpf
def test_doctor_table() -> None:
    proc = run("doctor")
    assert re.search(r"^privileges\s+ok\b", proc.stdout, re.M)
    for name in report_modules():
        assert f"report {name}" in proc.stdout


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
@requires_bpf
def test_without_privileges_one_line_and_nonzero_exit() -> None:
    # Keep uid 0 (the venv may live under /root) but drop every capability.
    drop = ("setpriv", "--inh-caps=-all", "--bounding-set=-all", "--")
    proc = run("doctor", prefix=drop)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert re.search(r"^privileges\s+MISSING\b", proc.stdout, re.M)
    for name, module in report_modules().items():
        command = [name, "--count", "1"] if name != "memleak" else [name, "--pid", "1", "--count", "1"]
        proc = run(*command, prefix=drop)
        if not getattr(module, "USES_BPF", True):  # cgroups reads the memory controller's files
            assert proc.returncode == 0, (name, proc.stderr)
            continue
        assert proc.returncode == 77, (name, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "CAP_BPF" in lines[0], (name, proc.stderr)


def test_each_short_flag_means_one_thing_in_every_command() -> None:
    """-n is always --top, -o always --output, ...: a short flag learned on one report holds on all."""
    from memwatcher.cli import root_command

    root = root_command(load_all=True)
    # Parameters that are one idea under two Python names.
    same = {"top_processes": "top", "fmt": "output"}
    meanings: dict[str, set[str]] = {}
    for sub in root.commands.values():
        for param in sub.params:
            names = [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]
            for short in (n for n in names if len(n) == 2):
                meanings.setdefault(short, set()).add(same.get(param.name, param.name))
    assert {short: uses for short, uses in meanings.items() if len(uses) > 1} == {}
    # BCC memleak's flags mean what they mean there.
    memleak = {n: p.name for p in root.commands["memleak"].params for n in p.opts}
    assert {f: memleak[f] for f in ("-p", "-c", "-a", "-T", "-z", "-Z", "-s", "-O", "--older")} == {
        "-p": "pid",
        "-c": "command",
        "-a": "show_allocs",
        "-T": "top",
        "-z": "min_size",
        "-Z": "max_size",
        "-s": "sample_rate",
        "-O": "obj",
        "--older": "older_ms",
    }


@pytest.mark.parametrize("command", ["memleak", "sysstat", "doctor", "export"])
def test_dash_h_is_help(command: str) -> None:
    proc = run(command, "-h")
    assert proc.returncode == 0 and "Usage: memwatcher " + command in " ".join(proc.stdout.split()), proc.stderr


def test_objects_are_shipped_inside_the_package() -> None:
    import memwatcher.objects as objects

    shipped = {p.name for p in Path(objects.objects_dir()).glob("*.bpf.o")}
    sources = {p.name.replace(".bpf.c", ".bpf.o") for p in (Path(__file__).parents[1] / "bpf").glob("*.bpf.c")}
    assert sources <= shipped


def test_man_page_is_generated_from_the_current_cli() -> None:
    top = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(top / "scripts" / "gen-man.py")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (top / "docs" / "memwatcher.1").read_text(), "run scripts/gen-man.py > docs/memwatcher.1"
    for command in ("doctor", "top", *report_modules()):
        assert f".SS {command}" in proc.stdout


STOP_ARGS = {"memleak": ["--kernel", "--interval", "0.5"], "oom": []}


@requires_bpf
@pytest.mark.parametrize("name", sorted(report_modules()))
def test_sigterm_ends_every_report_cleanly(name: str) -> None:
    args = STOP_ARGS.get(name, ["--interval", "0.5"])
    proc = subprocess.Popen([*MEMWATCHER, name, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # running: loaded, attached, sampling
    assert first, proc.communicate()[1]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert (first + out).strip(), "a sample is printed"
    assert "Traceback" not in err


@requires_bpf
def test_sigterm_while_loading_exits_without_traceback() -> None:
    proc = subprocess.Popen([*MEMWATCHER, "top"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.8)  # importing or loading the programs
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    # -SIGTERM: it arrived before main() ran (nothing loaded yet, nothing to close).
    assert proc.returncode in (0, 128 + signal.SIGTERM, -signal.SIGTERM), err
    assert "Traceback" not in err


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
@pytest.mark.parametrize("command", ["doctor", "top", "export", *sorted(report_modules())])
def test_help_needs_no_privileges(command: str) -> None:
    proc = run(command, "--help", prefix=("setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"))
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout and "--" in proc.stdout


def test_help_without_option_parsing_is_clicks_own_help(capsys: pytest.CaptureFixture[str]) -> None:
    """The fast path for -h/--help (no typer option processing) prints what click would."""
    from memwatcher.cli import _help_text, root_command

    root = root_command(load_all=True)
    for args in ([], *([name] for name in root.list_commands(None))):
        for flag in ("--help", "-h"):
            fast = _help_text(root, [*args, flag])
            with pytest.raises(SystemExit) as done:
                root.main(args=[*args, flag], prog_name="memwatcher")
            assert done.value.code == 0
            assert fast is not None and fast + "\n" == capsys.readouterr().out, args
