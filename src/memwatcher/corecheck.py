"""Would the BPF objects work on another kernel? Checked against its BTF, without booting it.

Each shipped object is CO-RE relocated by libbpf against the other kernel's
BTF (a vmlinux ELF or raw BTF file, e.g. a copy of its
``/sys/kernel/btf/vmlinux``). A relocation with no target there is fine when
the program checks first (``bpf_core_field_exists`` and friends) on that
access or on another layout of the same field; otherwise the verifier would
refuse the program on that kernel. Hooks (tracepoints, functions) the kernel
lacks are listed too: reports have fallbacks, so these are information.
Used by ``memwatcher doctor --btf`` and by ``make test-kernels`` before any
guest boots.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import libbpf
from .libbpf import BTF, BPFObject, CoreRelocation
from .objects import object_path, objects_dir

__all__ = ["AbsentAccess", "ObjectCheck", "check_btf", "check_object"]


@dataclass(frozen=True)
class AbsentAccess:
    """A CO-RE relocation with no target in the checked kernel."""

    program: str
    spec: str
    #: "guarded" (existence-checked), "alternative" (another layout of the field resolved) or "unguarded"
    verdict: str


@dataclass
class ObjectCheck:
    """One object against one kernel BTF."""

    name: str
    relocations: int = 0
    absent: list[AbsentAccess] = field(default_factory=list)
    #: attach targets the kernel lacks, as "section (what is missing)"
    missing_hooks: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and all(a.verdict != "unguarded" for a in self.absent)

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "relocations": self.relocations,
            "absent": [asdict(a) for a in self.absent],
            "missing_hooks": self.missing_hooks,
            "error": self.error,
        }


# "struct zone___paf_ulong.managed_pages (0:0)" -> ("zone", "managed_pages")
_FIELD_SPEC = re.compile(r"^(?:struct|union) (?P<type>\w+?)(?:___\w+)?\.(?P<field>\w+)")


def _field_family(spec: str) -> tuple[str, str] | None:
    m = _FIELD_SPEC.match(spec)
    return (m["type"], m["field"]) if m else None


def _verdict(relo: CoreRelocation, program_relos: list[CoreRelocation]) -> str:
    checks = [r for r in program_relos if r.existence_check]
    if any(r.spec == relo.spec for r in checks):
        return "guarded"
    family = _field_family(relo.spec)
    if family is not None and any(_field_family(r.spec) == family for r in checks):
        resolved = [r for r in program_relos if not r.existence_check and not r.poisoned]
        if any(_field_family(r.spec) == family for r in resolved):
            return "alternative"
    return "unguarded"


def _hook_target(section: str) -> tuple[str, str] | None:
    """The BTF name and kind a program's attach point needs, or None (uprobes, bare sections)."""
    kind, _, target = section.partition("/")
    if not target:
        return None
    if kind in ("tp_btf", "raw_tp", "raw_tracepoint", "tp", "tracepoint"):
        return f"btf_trace_{target.rsplit('/', 1)[-1]}", "typedef"
    if kind in ("fentry", "fexit", "fmod_ret", "kprobe", "kretprobe"):
        return target.split("+", 1)[0], "func"
    return None


def check_object(path: str | os.PathLike[str], target_btf: str | os.PathLike[str], btf: BTF) -> ObjectCheck:
    """Check the object at ``path`` against ``target_btf`` (``btf``: the same file, parsed)."""
    name = Path(path).name.removesuffix(".bpf.o")
    result = ObjectCheck(name)
    try:
        relos = libbpf.core_relocations(path, target_btf)
        with BPFObject.open(path) as obj:
            sections = sorted({p.section for p in obj.programs.values()})
    except libbpf.LibbpfError as e:
        result.error = str(e)
        return result
    result.relocations = len(relos)
    by_program: dict[str, list[CoreRelocation]] = {}
    for r in relos:
        by_program.setdefault(r.program, []).append(r)
    seen: set[tuple[str, str]] = set()
    for r in relos:
        if r.poisoned and (r.program, r.spec) not in seen:
            seen.add((r.program, r.spec))
            result.absent.append(AbsentAccess(r.program, r.spec, _verdict(r, by_program[r.program])))
    for section in sections:
        target = _hook_target(section)
        if target is not None and btf.find(*target) is None:
            result.missing_hooks.append(f"{section} (no {target[1]} {target[0]})")
    return result


def check_btf(target_btf: str | os.PathLike[str]) -> list[ObjectCheck]:
    """Every shipped object against the kernel BTF in ``target_btf``."""
    btf = BTF.from_file(target_btf)
    try:
        names = sorted(p.name.removesuffix(".bpf.o") for p in objects_dir().glob("*.bpf.o"))
        return [check_object(object_path(name), target_btf, btf) for name in names]
    finally:
        btf.close()
