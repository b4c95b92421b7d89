"""CO-RE check against a kernel BTF file (memwatcher.corecheck, `memwatcher doctor --btf`).

The oracle is the running kernel's verifier: for each program of a test
object, the check's verdict on /sys/kernel/btf/vmlinux must agree with
whether that program actually loads here. The shipped objects must pass
against this kernel's BTF and, when `make test-kernels` has extracted them,
against every matrix kernel's BTF.
"""

from __future__ import annotations

import json
import struct as struct_
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TOP, build_test_object, requires_bpf
from memwatcher import corecheck, libbpf
from memwatcher.libbpf import BTF, BPFObject, VerifierError

VMLINUX = Path("/sys/kernel/btf/vmlinux")
MATRIX_BTFS = sorted((TOP / "vm" / "cache" / "btf").glob("*.btf"))


def _loads_alone(path: Path, program: str) -> bool:
    with BPFObject.open(path) as obj:
        for prog in obj.programs.values():
            prog.autoload = prog.name == program
        try:
            obj.load()
        except VerifierError:
            return False
    return True


@requires_bpf
def test_verdicts_agree_with_the_verifier() -> None:
    path = build_test_object("core_layouts")
    check = corecheck.check_object(path, VMLINUX, BTF.vmlinux())
    verdicts = {a.program: a.verdict for a in check.absent}
    assert verdicts == {"unguarded": "unguarded", "guarded": "guarded", "alternative": "alternative"}
    assert not check.ok and not check.error
    for program, verdict in verdicts.items():
        assert _loads_alone(path, program) == (verdict != "unguarded"), program
    assert check.missing_hooks == ["fentry/memwatcher_no_such_function (no func memwatcher_no_such_function)"]


def _raw_btf(struct: str, members: list[str]) -> bytes:
    """A minimal raw BTF: ``int`` and ``struct`` with ``int`` members, 8 bytes apart."""
    strings = b"\0int\0" + b"".join(n.encode() + b"\0" for n in [struct, *members])
    offsets = [strings.index(b"\0" + n.encode() + b"\0") + 1 for n in ["int", struct, *members]]
    kind_int, kind_struct = 1, 4
    types = struct_.pack("<IIII", offsets[0], kind_int << 24, 4, 32)  # int: 32 bits, unsigned
    types += struct_.pack("<III", offsets[1], kind_struct << 24 | len(members), 8 * len(members))
    for i, off in enumerate(offsets[2:]):
        types += struct_.pack("<III", off, 1, 64 * i)
    header = struct_.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return header + types + strings


@requires_bpf
def test_relocations_come_from_the_target_btf(tmp_path: Path) -> None:
    # The same object against this kernel and against a made-up kernel whose
    # task_struct has tgid but no pid: only there is the pid access absent.
    path = build_test_object("core_layouts")
    made_up = tmp_path / "made-up.btf"
    made_up.write_bytes(_raw_btf("task_struct", ["tgid"]))

    def pid_reads(btf: Path) -> set[bool]:
        relocations = libbpf.core_relocations(path, btf)
        pid = [r for r in relocations if r.spec.startswith("struct task_struct.pid") and not r.existence_check]
        return {r.poisoned for r in pid}

    assert pid_reads(VMLINUX) == {False}
    assert pid_reads(made_up) == {True}
    check = corecheck.check_object(path, made_up, BTF.from_file(made_up))
    # No layout of pid resolves there: the existence check does not save the read.
    assert {a.program: a.verdict for a in check.absent}["alternative"] == "unguarded"
    with pytest.raises(libbpf.LibbpfError, match=r"missing\.btf"):
        libbpf.core_relocations(path, tmp_path / "missing.btf")


@requires_bpf
@pytest.mark.parametrize("btf", [VMLINUX, *MATRIX_BTFS], ids=lambda p: p.name)
def test_shipped_objects_relocate(btf: Path) -> None:
    checks = corecheck.check_btf(btf)
    assert {c.name for c in checks} >= {"procstat", "sysstat", "paf", "pr", "memleak"}
    for c in checks:
        assert c.ok, (c.name, c.error, [a for a in c.absent if a.verdict == "unguarded"])
    assert sum(c.relocations for c in checks) > 100


def _doctor(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "memwatcher.cli", "doctor", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@requires_bpf
def test_doctor_btf_json_and_bad_file(tmp_path: Path) -> None:
    proc = _doctor("--btf", str(VMLINUX), "--output", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["objects"]["procstat"]["ok"] and data["objects"]["procstat"]["relocations"] > 0
    junk = tmp_path / "junk.btf"
    junk.write_bytes(b"not BTF")
    for bad, code in ((junk, 1), (tmp_path / "absent.btf", 2)):
        proc = _doctor("--btf", str(bad))
        assert proc.returncode == code and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr
