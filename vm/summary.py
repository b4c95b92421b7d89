"""Summarize a cross-kernel test run (vm/matrix.sh): one table per kernel, then the matrix.

Usage: summary.py RESULTS_DIR KERNEL_PKG...

Each RESULTS_DIR/<KERNEL_PKG>/ holds what vm/guest-tests.sh and vm/boot.sh left:
junit.xml, doctor.json, doctor.rc, pytest.rc, pytest.seconds, kernel_release, and
what matrix.sh wrote: corecheck.json (`memwatcher doctor --btf` on the host),
boot.rc, wall.seconds. A kernel passes when every object relocated against its
BTF, the guest ran, doctor succeeded with kprobe and fentry available (the
guests exist to test the richer variants), and no test failed. Exit status 0
only if every kernel passed.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

# Features the guest kernels must offer: the host lacks them, the guests are where their variants get tested.
REQUIRED_FEATURES = ("kprobe", "fentry")


@dataclass
class FileResult:
    passed: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def status(self) -> str:
        if self.failed:
            return f"FAIL {self.failed}/{self.passed + self.failed + self.skipped}"
        return "pass" if self.passed else "skip"


@dataclass
class KernelResult:
    package: str
    release: str = "?"
    problems: list[str] = field(default_factory=list)
    features: dict[str, bool] = field(default_factory=dict)
    variants: dict[str, str] = field(default_factory=dict)
    files: dict[str, FileResult] = field(default_factory=dict)
    doctor_ok: bool = False
    core_ok: bool = False
    relocations: int = 0
    wall_s: str = "?"
    pytest_s: str = "?"

    @property
    def ok(self) -> bool:
        return not self.problems and not any(f.failed for f in self.files.values())


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _test_file(case: ET.Element) -> str:
    """tests/test_pr.py -> "pr", from a testcase's classname (or its name, for collection errors)."""
    dotted = case.get("classname") or case.get("name", "")
    for part in dotted.split("."):
        if part.startswith("test_"):
            return part.removeprefix("test_")
    return dotted or "?"


def load(results: Path, package: str) -> KernelResult:
    run = results / package
    result = KernelResult(package, release=_read(run / "kernel_release") or "?")
    result.wall_s = _read(run / "wall.seconds") or "?"
    result.pytest_s = _read(run / "pytest.seconds") or "?"
    boot_rc = _read(run / "boot.rc")
    if boot_rc in ("124", "125", None):
        result.problems.append({"124": "guest timed out", "125": "guest did not run the tests"}.get(boot_rc, "no run"))

    core_text = _read(run / "corecheck.json") or ""
    try:
        objects = json.loads(core_text)["objects"]
    except ValueError:
        result.problems.append(f"CO-RE check: {(core_text.splitlines() or ['no output'])[-1]}")
    else:
        result.relocations = sum(o["relocations"] for o in objects.values())
        failing = [name for name, o in objects.items() if not o["ok"]]
        result.core_ok = not failing
        if failing:
            result.problems.append(f"CO-RE check failed for {', '.join(failing)} (memwatcher doctor --btf)")

    doctor_text = _read(run / "doctor.json")
    if doctor_text:
        doctor = json.loads(doctor_text)
        result.features = {name: check["ok"] for name, check in doctor["checks"].items()}
        for report, plan in doctor["reports"].items():
            result.variants[report] = plan["variant"] if plan["runnable"] else "NOT RUNNABLE"
        missing = [name for name in REQUIRED_FEATURES if not result.features.get(name)]
        if missing:
            result.problems.append(f"doctor: {', '.join(missing)} missing")
    elif boot_rc not in ("124", "125", None):
        result.problems.append("no doctor output")
    doctor_rc = _read(run / "doctor.rc")
    result.doctor_ok = doctor_rc == "0"
    if doctor_rc not in ("0", None):
        result.problems.append(f"doctor exit status {doctor_rc}")

    junit = run / "junit.xml"
    if junit.is_file():
        for case in ET.parse(junit).iter("testcase"):
            counts = result.files.setdefault(_test_file(case), FileResult())
            if case.find("failure") is not None or case.find("error") is not None:
                counts.failed += 1
            elif case.find("skipped") is not None:
                counts.skipped += 1
            else:
                counts.passed += 1
        if _read(run / "pytest.rc") not in ("0", None) and not any(f.failed for f in result.files.values()):
            result.problems.append(f"pytest exit status {_read(run / 'pytest.rc')}")
    elif boot_rc not in ("124", "125", None):
        result.problems.append("no junit.xml")
    return result


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [header, *rows]]
    return "\n".join(lines)


def render(kernels: list[KernelResult]) -> str:
    out: list[str] = []
    for k in kernels:
        verdict = "PASS" if k.ok else "FAIL"
        out.append(f"== {k.release} ({k.package}): {verdict}, guest {k.wall_s} s, pytest {k.pytest_s} s")
        out.append(f"CO-RE check on the host: {'ok' if k.core_ok else 'FAIL'}, {k.relocations} relocations")
        if k.features:
            out.append("features: " + ", ".join(f"{n} {'ok' if ok else 'MISSING'}" for n, ok in k.features.items()))
        if k.variants:
            out.append("variants: " + "; ".join(f"{r}: {v}" for r, v in k.variants.items()))
        out.extend(f"problem: {p}" for p in k.problems)
        rows = [[name, str(f.passed), str(f.failed), str(f.skipped), f.status] for name, f in sorted(k.files.items())]
        if rows:
            out.append(_table(["TESTS", "PASSED", "FAILED", "SKIPPED", "RESULT"], rows))
        out.append("")

    names = sorted({name for k in kernels for name in k.files})
    header = ["TESTS", *(k.release if k.release != "?" else k.package for k in kernels)]
    rows = [["CO-RE", *("ok" if k.core_ok else "FAIL" for k in kernels)]]
    rows += [["doctor", *("ok" if k.doctor_ok else "FAIL" for k in kernels)]]
    rows += [[f, *("ok" if k.features.get(f) else "MISSING" for k in kernels)] for f in REQUIRED_FEATURES]
    rows += [[n, *(k.files[n].status if n in k.files else "-" for k in kernels)] for n in names]
    rows.append(["KERNEL", *("PASS" if k.ok else "FAIL" for k in kernels)])
    out.append(_table(header, rows))
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.splitlines()[2], file=sys.stderr)
        return 2
    results = Path(argv[0])
    kernels = [load(results, package) for package in argv[1:]]
    print(render(kernels))
    return 0 if all(k.ok for k in kernels) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
