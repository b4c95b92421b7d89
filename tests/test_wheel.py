"""The binary wheel runs on its own: no compiler, no system libbpf or libelf.

Builds the wheel (auditwheel vendors libbpf and libelf), installs it into a
fresh virtualenv, then runs it in a private mount namespace where the system
libbpf and libelf are replaced by empty files and clang/bpftool are off PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import requires_bpf
from memwatcher.tools import report_modules

TOP = Path(__file__).resolve().parents[1]

# One short run of each report.
SHORT_RUN = {
    "memleak": ["--command", "sleep 0.5", "--output", "json", "--html", "leaks.html"],  # the page's assets too
    "oom": ["--duration", "0.5", "--output", "json"],  # prints a record per kill only: none here
}
DEFAULT_SHORT_RUN = ["--count", "1", "--interval", "0.3", "--output", "json"]


def _system_lib(name: str) -> Path | None:
    out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.strip().startswith(name + " ") and "x86-64" in line:
            return Path(line.split("=>")[-1].strip()).resolve()
    return None


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([str(TOP / "scripts" / "build-wheel.sh"), str(work / "wheelhouse")], check=True)
    wheels = list((work / "wheelhouse").glob("memwatcher-*manylinux*.whl"))
    assert len(wheels) == 1, wheels
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheels[0])], check=True)
    return venv


def run_isolated(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed memwatcher with system libbpf/libelf hidden and no toolchain on PATH."""
    hide = [p for p in (_system_lib("libbpf.so.1"), _system_lib("libelf.so.1")) if p]
    mounts = "".join(f"mount --bind /dev/null {p} && " for p in hide)
    command = " ".join(["exec", str(venv / "bin" / "memwatcher"), *(f"'{a}'" for a in args)])
    env = {"PATH": "/usr/bin:/bin", "HOME": str(venv)}
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", mounts + command],
        capture_output=True,
        text=True,
        env=env,
        cwd=venv,
        timeout=120,
    )


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
@requires_bpf
def test_wheel_runs_without_system_libbpf(wheel_venv: Path) -> None:
    assert os.geteuid() == 0
    version = run_isolated(wheel_venv, "--version")
    assert version.returncode == 0, version.stderr
    assert "memwatcher.libs/libbpf" in version.stdout  # the vendored copy, not the system one
    assert str(wheel_venv) in version.stdout.split("BPF objects in")[-1]

    doctor = run_isolated(wheel_venv, "doctor", "--output", "json")
    assert doctor.returncode in (0, 1) and "Traceback" not in doctor.stderr, doctor.stderr
    assert '"tp_btf"' in doctor.stdout

    for name in report_modules():
        proc = run_isolated(wheel_venv, name, *SHORT_RUN.get(name, DEFAULT_SHORT_RUN))
        assert proc.returncode == 0, (name, proc.stderr)
        assert proc.stdout.strip() or (name == "oom" and "watching for OOM kills" in proc.stderr), name
    assert "memleak-data" in (wheel_venv / "leaks.html").read_text()


def test_wheel_carries_the_license_and_the_man_page(wheel_venv: Path) -> None:
    licenses = list(wheel_venv.glob("lib/python*/site-packages/memwatcher-*.dist-info/licenses/LICENSE"))
    assert len(licenses) == 1 and "GNU GENERAL PUBLIC LICENSE" in licenses[0].read_text()
    if shutil.which("man") is None:
        pytest.skip("needs man (Debian package man-db)")
    # man looks beside each bin/ directory on PATH: the venv's share/man.
    env = {"PATH": f"{wheel_venv / 'bin'}:/usr/bin:/bin", "MANPAGER": "cat", "MANWIDTH": "100"}
    where = subprocess.run(["man", "-w", "memwatcher"], capture_output=True, text=True, env=env)
    assert where.stdout.strip() == str(wheel_venv / "share" / "man" / "man1" / "memwatcher.1"), where.stderr
    page = subprocess.run(["man", "memwatcher"], capture_output=True, text=True, env=env)
    assert page.returncode == 0 and "memwatcher export" in page.stdout, page.stderr


def test_unit_verifies_against_the_installed_package(wheel_venv: Path, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("needs systemd-analyze (Debian package systemd)")
    # The unit as installed next to this package: verify checks ExecStart and the man page.
    unit = tmp_path / "memwatcher.service"
    text = (TOP / "docs" / "memwatcher.service").read_text()
    unit.write_text(text.replace("/usr/local/bin/memwatcher", str(wheel_venv / "bin" / "memwatcher")))
    env = {"PATH": f"{wheel_venv / 'bin'}:/usr/bin:/bin"}
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
