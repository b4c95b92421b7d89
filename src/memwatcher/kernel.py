"""What the running kernel offers: privileges, BTF, tracefs, hooks, symbols.

Everything here is read from the running system (capability bits, BTF,
tracefs format files, kallsyms) or found by trying; nothing is assumed from
a kernel version number.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from .elf import function_offsets
from .errors import NotSupportedError, PrivilegeError
from .libbpf import BTF, BPFObject, LibbpfError, probe_map_type
from .objects import object_path
from .procmaps import LIBC_PATH, ProcessMaps

__all__ = [
    "BTF_PATH",
    "Hook",
    "Plan",
    "PrivilegeError",
    "Privileges",
    "btf_available",
    "kallsyms_has",
    "kernel_release",
    "page_size",
    "privileges",
    "probe_feature",
    "probe_features",
    "require_bpf",
    "tracefs_dir",
    "tracepoint_format",
    "tracepoint_hook",
    "tracepoint_params",
    "zone_names",
]

BTF_PATH = Path("/sys/kernel/btf/vmlinux")

# Capability numbers from linux/capability.h (stable ABI).
_CAP_SYS_ADMIN = 21
_CAP_PERFMON = 38
_CAP_BPF = 39


def kernel_release() -> str:
    return os.uname().release


def page_size() -> int:
    """Bytes per page on this machine (never assumed to be 4096)."""
    return os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Privileges:
    """Effective privileges relevant to BPF."""

    root: bool
    cap_bpf: bool
    cap_perfmon: bool
    cap_sys_admin: bool

    @property
    def can_trace(self) -> bool:
        """Whether tracing programs can be loaded and attached."""
        return self.cap_sys_admin or (self.cap_bpf and self.cap_perfmon)


def privileges() -> Privileges:
    cap_eff = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            cap_eff = int(line.split()[1], 16)

    def has(bit: int) -> bool:
        return bool(cap_eff >> bit & 1)

    return Privileges(os.geteuid() == 0, has(_CAP_BPF), has(_CAP_PERFMON), has(_CAP_SYS_ADMIN))


def btf_available() -> bool:
    return BTF_PATH.is_file()


def require_bpf() -> None:
    """Raise a one-line error unless BPF tracing can work here at all."""
    if not privileges().can_trace:
        raise PrivilegeError("memwatcher needs root, or CAP_BPF and CAP_PERFMON, to load BPF programs")
    if not btf_available():
        raise NotSupportedError(f"kernel BTF ({BTF_PATH})", "5.4 built with CONFIG_DEBUG_INFO_BTF=y")


@cache
def tracepoint_params(name: str) -> list[str] | None:
    """Argument types of raw tracepoint ``name`` from kernel BTF, or None if absent.

    These are what ``tp_btf/<name>`` programs receive (the ``void *`` context
    first), so the loader can pick the program variant that matches.
    """
    params = BTF.vmlinux().func_proto_params(f"btf_trace_{name}")
    return params[1:] if params else None


def _is_dir(path: Path) -> bool:
    """``path.is_dir()``, False where we may not look (tracefs is root-only: mode 0700)."""
    try:
        return path.is_dir()
    except PermissionError:
        return False


def tracefs_dir(mount: bool = True) -> Path | None:
    """Path of a tracefs we can read, mounting it at /sys/kernel/tracing when absent and allowed.

    None without root: nothing memwatcher attaches needs tracefs (tp_btf and raw
    tracepoints attach by name); it only reads format files, which BTF replaces.
    """
    for candidate in (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing")):
        if _is_dir(candidate / "events"):
            return candidate
    target = Path("/sys/kernel/tracing")
    if not mount or not _is_dir(target) or not os.access(target, os.R_OK | os.X_OK):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"nodev", str(target).encode(), b"tracefs", 0, None) != 0:
        return None
    return target if (target / "events").is_dir() else None


@cache
def tracepoint_format(category: str, name: str) -> str | None:
    """The ``format`` file of a classic tracepoint (field layout, print format)."""
    base = tracefs_dir()
    if base is None:
        return None
    path = base / "events" / category / name / "format"
    try:
        return path.read_text()
    except OSError:
        return None


@cache
def _kallsyms_names() -> frozenset[str]:
    names = set()
    with open("/proc/kallsyms") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                names.add(parts[2])
    return frozenset(names)


def kallsyms_has(symbol: str) -> bool:
    return symbol in _kallsyms_names()


# ---------------------------------------------------------------- feature probes

# Program name in bpf/features.bpf.c -> feature it demonstrates.
_FEATURE_PROGRAMS = {
    "tp_btf": "probe_tp_btf",
    "raw_tp": "probe_raw_tp",
    "kprobe": "probe_kprobe",
    "fentry": "probe_fentry",
    "uprobe": "probe_uprobe",
    "uprobe_multi": "probe_uprobe",
}


@dataclass(frozen=True)
class FeatureResult:
    available: bool
    detail: str = ""


def _libc_path() -> str:
    libc = ProcessMaps.read(os.getpid()).first_module(LIBC_PATH)
    if libc is None:
        raise FileNotFoundError("libc not mapped")
    return libc.path


def _try_program(feature: str) -> FeatureResult:
    prog_name = _FEATURE_PROGRAMS[feature]
    try:
        with BPFObject.open(object_path("features")) as obj:
            for prog in obj.programs.values():
                prog.autoload = prog.name == prog_name
            prog = obj.programs[prog_name]
            if feature == "uprobe_multi":
                prog.set_expected_attach_type("trace_uprobe_multi")
            obj.load()
            if feature == "uprobe":
                link = prog.attach_uprobe(_libc_path(), "getpid", pid=os.getpid())
            elif feature == "uprobe_multi":
                libc = _libc_path()
                with open(libc, "rb") as f:
                    getpid = function_offsets(f.fileno(), ["getpid"])["getpid"]
                link = prog.attach_uprobe_multi(libc, [getpid], pid=os.getpid())
            else:
                link = prog.attach()
            link.close()
        return FeatureResult(True)
    except (LibbpfError, NotSupportedError) as e:
        return FeatureResult(False, str(e))
    except OSError as e:
        return FeatureResult(False, f"{e.strerror or e}")


@cache
def probe_feature(name: str) -> FeatureResult:
    """Whether one BPF hook type (a key of :func:`probe_features`) loads and attaches here."""
    if name == "ringbuf":
        ringbuf = probe_map_type("ringbuf")
        return FeatureResult(ringbuf, "" if ringbuf else "BPF_MAP_TYPE_RINGBUF unavailable (Linux >= 5.8)")
    return _try_program(name)


def probe_features() -> dict[str, FeatureResult]:
    """Which BPF hook types load and attach here, found by trying each."""
    return {name: probe_feature(name) for name in (*_FEATURE_PROGRAMS, "ringbuf")}


# ---------------------------------------------------------------- report plans


@dataclass(frozen=True)
class Hook:
    """One kernel hook a report uses and whether this kernel has it."""

    name: str
    available: bool
    required: bool = True
    detail: str = ""


@dataclass
class Plan:
    """How a report would run on this kernel: its hooks and the chosen variant.

    Reports build one with their ``plan()`` function; ``memwatcher doctor``
    shows them and the report itself uses the same choice when loading.
    """

    report: str
    hooks: list[Hook] = field(default_factory=list)
    variant: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def runnable(self) -> bool:
        return not self.problems and all(h.available for h in self.hooks if h.required)

    def without(self) -> list[str]:
        """Optional hooks this kernel (or our privileges) lacks: what the report runs without."""
        return [h.name for h in self.hooks if not h.required and not h.available]

    def reasons(self) -> list[str]:
        missing = [h for h in self.hooks if h.required and not h.available]
        return [f"missing {h.name}" + (f" ({h.detail})" if h.detail else "") for h in missing] + self.problems


def tracepoint_hook(name: str, required: bool = True) -> Hook:
    """A raw/BTF tracepoint hook, checked against kernel BTF."""
    params = tracepoint_params(name)
    return Hook(f"tracepoint {name}", params is not None, required, "" if params else "not in kernel BTF")


# /proc/zoneinfo's spelling of the zone_type enumerators.
_ZONE_NAMES = {
    "ZONE_DMA": "DMA",
    "ZONE_DMA32": "DMA32",
    "ZONE_NORMAL": "Normal",
    "ZONE_HIGHMEM": "HighMem",
    "ZONE_MOVABLE": "Movable",
    "ZONE_DEVICE": "Device",
}


def zone_names(btf: BTF) -> dict[int, str]:
    """Zone index -> name as /proc/zoneinfo spells it, from the kernel's ``enum zone_type``."""
    return {
        v: _ZONE_NAMES.get(k, k.removeprefix("ZONE_"))
        for k, v in btf.enum_values("zone_type").items()
        if k.startswith("ZONE_")
    }
