"""CO-RE relocations of an object against another kernel's BTF, as libbpf resolves them (doctor --btf)."""

from __future__ import annotations

import dataclasses
import errno as _errno
import os
import re
from dataclasses import dataclass

from .._libbpf import lib
from ._errors import _Call, _take_log, libbpf_error
from .object import BPFObject


@dataclass(frozen=True)
class CoreRelocation:
    """One CO-RE relocation of a program, as libbpf resolved it (:func:`core_relocations`)."""

    program: str
    index: int
    #: libbpf's name of the kind: byte_off, byte_sz, field_exists, type_size, type_exists, enumval_value, ...
    kind: str
    #: the local type and access path, e.g. "struct mm_struct.rss_stat (0:35)"
    spec: str
    #: no target matched: libbpf replaced the instruction by one the verifier rejects if it is reachable
    poisoned: bool

    @property
    def existence_check(self) -> bool:
        """An ``bpf_core_*_exists`` query: answering "no" is a valid result, not a failure."""
        return self.kind.endswith("_exists")


# libbpf 1.x debug lines: "prog 'P': relo #N: <kind> [local id] spec" then, when nothing
# matched, "prog 'P': relo #N: substituting insn #M w/ invalid insn".
_RELO_LINE = re.compile(r"prog '(?P<prog>[^']+)': relo #(?P<index>\d+): <(?P<kind>\w+)> \[\d+\] (?P<spec>.*)$")
_RELO_POISON = re.compile(r"prog '(?P<prog>[^']+)': relo #(?P<index>\d+): substituting insn")


def core_relocations(path: str | os.PathLike[str], target_btf: str | os.PathLike[str]) -> list[CoreRelocation]:
    """Relocate every program of the object at ``path`` against the kernel BTF in ``target_btf``.

    This is libbpf's own CO-RE resolution (``btf_custom_path``), read back from
    its debug log. No program reaches the kernel: each is made typeless, which
    libbpf refuses right after relocating; the object's maps are created in
    the running kernel and destroyed again (needs CAP_BPF).
    """
    with BPFObject.open(path, btf_custom_path=target_btf) as obj:
        for prog in obj.programs.values():
            prog.autoload = True
            lib.bpf_program__set_type(prog._ptr, lib.BPF_PROG_TYPE_UNSPEC)
        with _Call(f"relocate BPF object '{obj.name}' against {target_btf}") as call:
            was_debug = lib.mw_log_set_debug(1)
            try:
                ret = lib.bpf_object__load(obj._ptr)
            finally:
                lib.mw_log_set_debug(was_debug)
            log = _take_log()
            # libbpf itself refuses the first typeless program: the expected stop.
            if "failed to perform CO-RE relocations" in log or (ret < 0 and "missing BPF prog type" not in log):
                raise libbpf_error(-ret if ret < 0 else _errno.EINVAL, call.operation, log)
    relocations: dict[tuple[str, int], CoreRelocation] = {}
    for line in log.splitlines():
        if m := _RELO_LINE.search(line):
            spec = re.sub(r" @ offset \d+\)$", ")", m["spec"])
            key = (m["prog"], int(m["index"]))
            relocations[key] = CoreRelocation(m["prog"], key[1], m["kind"], spec, poisoned=False)
        elif (m := _RELO_POISON.search(line)) and (key := (m["prog"], int(m["index"]))) in relocations:
            relocations[key] = dataclasses.replace(relocations[key], poisoned=True)
    return list(relocations.values())
