"""Binding to libbpf: BPF objects, programs, maps, links, ring buffers and BTF.

This is the only module that touches cffi. It knows nothing of memory
reports. The object model follows libbpf's own life cycle:

    with BPFObject.open(path) as obj:          # parsed ELF, editable
        obj.rodata.target_tgid = 42            # `const volatile` config
        obj.maps.events.max_entries = 1 << 20
        obj.programs.handle_exit.autoload = False
        obj.load()                             # verified and in the kernel
        with obj.programs.handle_switch.attach():
            ...

Closing an object destroys the links and ring buffers made from it, then the
object itself, in reverse order of creation; every close is idempotent.
Programs, maps and the BTF of an object live in its memory: after it is
closed, using them raises :class:`LibbpfError` (EBADF) instead of reading
freed memory.

Closing is also signal-safe. A Python signal handler (KeyboardInterrupt,
cli's SystemExit on SIGTERM) runs between bytecodes, in particular right
after a C call returns: had ``close()`` called ``bpf_link__destroy(p)`` and
only then cleared ``p``, the handler's exception would leave ``p`` set for
the next close to free again. Every close therefore takes the pointer out
of the object first and frees it second (no bytecode between them can run
a handler). Each pointer libbpf allocates for us is wrapped by ``ffi.gc``,
so one that is never closed is freed from C when collected, instead of by a
``__del__`` method: Python runs signal handlers inside ``__del__`` too, and
an exception raised there is printed and dropped.
Failures raise :class:`LibbpfError` (an ``OSError``) carrying errno, the
operation that failed and the lines libbpf logged while doing it. What the
kernel said decides the subclass, here and not in the callers' pre-checks:
EPERM and EACCES raise :class:`LibbpfPrivilegeError` (also a
``PrivilegeError``), EOPNOTSUPP and ENOTSUPP, and ENOENT from attaching to a
kernel hook, :class:`LibbpfNotSupportedError` (also a ``NotSupportedError``);
both make the CLI exit 77.
"""

from __future__ import annotations

import dataclasses
import errno as _errno
import functools
import os
import re
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._libbpf import ffi, lib
from .errors import MemwatcherError, NotSupportedError, PrivilegeError
from .procmaps import ProcessMaps

__all__ = [
    "BPF_NOEXIST",
    "BTF",
    "BPFObject",
    "CoreRelocation",
    "LibbpfError",
    "LibbpfNotSupportedError",
    "LibbpfPrivilegeError",
    "Link",
    "Map",
    "MemwatcherError",
    "NotSupportedError",
    "PrivilegeError",
    "Program",
    "RingBuffer",
    "VerifierError",
    "core_relocations",
    "libbpf_path",
    "libbpf_version",
    "possible_cpus",
    "probe_map_type",
    "probe_prog_type",
    "set_debug_log",
]

lib.mw_log_install()
_log_lock = threading.Lock()
# Kernel errno for "operation not supported" that has no Python name (ENOTSUPP).
_ENOTSUPP = 524


# ---------------------------------------------------------------- errors


class LibbpfError(MemwatcherError, OSError):
    """A libbpf or bpf(2) call failed.

    ``errno`` is the error number, ``operation`` names what was attempted
    (with the object, program or map involved) and ``log`` holds every line
    libbpf printed meanwhile, the verifier log included.
    """

    def __init__(self, err: int, operation: str, log: str = "") -> None:
        OSError.__init__(self, err, _strerror(err))
        self.operation = operation
        self.log = log

    def __str__(self) -> str:
        hint = _last_meaningful_line(self.log)
        text = f"{self.operation}: {self.strerror}"
        return f"{text} ({hint})" if hint else text


class VerifierError(LibbpfError):
    """The kernel verifier rejected a program; ``log`` has its full log."""

    def __str__(self) -> str:
        lines = [line.strip() for line in self.log.splitlines()]
        # The verifier states its verdict on the line before its statistics.
        verdict = next((lines[i - 1] for i in range(len(lines) - 1, 0, -1) if lines[i].startswith("processed ")), "")
        text = f"{self.operation}: rejected by the verifier"
        return f"{text}: {verdict} (full log in .log)" if verdict else f"{text}: {self.strerror}"


class LibbpfPrivilegeError(LibbpfError, PrivilegeError):
    """The kernel refused a call for lack of privileges (EPERM, EACCES): no CAP_BPF, CAP_PERFMON, ..."""


class LibbpfNotSupportedError(LibbpfError, NotSupportedError):
    """The kernel lacks what a call needed: the operation (EOPNOTSUPP, ENOTSUPP) or the hook attached to (ENOENT)."""

    def __init__(self, err: int, operation: str, log: str = "") -> None:
        super().__init__(err, operation, log)
        self.feature = operation
        self.minimum_kernel = None


def libbpf_error(err: int, operation: str, log: str = "", *, attaching: bool = False) -> LibbpfError:
    """The error for a call the kernel or libbpf failed with ``err``; its class says what that means.

    ``attaching``: the call attached to a kernel hook (tracepoint, kernel function),
    where ENOENT means this kernel has no such hook.
    """
    if err in (_errno.EPERM, _errno.EACCES):
        return LibbpfPrivilegeError(err, operation, log)
    if err in (_errno.EOPNOTSUPP, _ENOTSUPP) or (attaching and err == _errno.ENOENT):
        return LibbpfNotSupportedError(err, operation, log)
    return LibbpfError(err, operation, log)


def _strerror(err: int) -> str:
    buf = ffi.new("char[]", 256)
    lib.libbpf_strerror(err, buf, 256)
    return ffi.string(buf).decode(errors="replace")


def _last_meaningful_line(log: str) -> str:
    for line in reversed(log.splitlines()):
        line = line.strip()
        if line and not line.startswith(("--", "libbpf: failed to load object", "processed ")):
            return line.removeprefix("libbpf: ")
    return ""


def _take_log() -> str:
    buf = ffi.new("char[]", 256 * 1024)
    n = lib.mw_log_take(buf, 256 * 1024)
    return ffi.unpack(buf, n).decode(errors="replace")


def set_debug_log(on: bool) -> None:
    """Also collect libbpf's debug-level lines (very verbose)."""
    lib.mw_log_set_debug(1 if on else 0)


class _Call:
    """Runs one libbpf call with a clean log and turns failures into errors."""

    def __init__(self, operation: str, *, attaching: bool = False) -> None:
        self.operation = operation
        self.attaching = attaching

    def __enter__(self) -> _Call:
        _log_lock.acquire()
        _take_log()
        return self

    def __exit__(self, *exc: object) -> None:
        _log_lock.release()

    def check(self, ret: int) -> int:
        if ret < 0:
            raise self.error(-ret)
        return ret

    def check_ptr(self, ptr: Any) -> Any:
        if ptr == ffi.NULL:
            raise self.error(ffi.errno or _errno.EINVAL)
        return ptr

    def error(self, err: int) -> LibbpfError:
        """The error for this call failing with ``err``, with what libbpf logged meanwhile."""
        return libbpf_error(err, self.operation, _take_log(), attaching=self.attaching)


def libbpf_version() -> str:
    """Version of the libbpf actually loaded, e.g. ``"1.1"``."""
    return ffi.string(lib.libbpf_version_string()).decode().lstrip("v")


def libbpf_path() -> str:
    """File of the libbpf shared library this process actually mapped."""
    mapped = ProcessMaps.read(os.getpid()).first_module(re.compile(r"/libbpf[^/]*\.so"))
    return mapped.path if mapped is not None else "statically linked"


def possible_cpus() -> int:
    """Number of possible CPUs: the width of per-CPU map values."""
    n = lib.libbpf_num_possible_cpus()
    if n < 0:
        raise libbpf_error(-n, "count possible CPUs")
    return n


def probe_prog_type(name: str) -> bool:
    """Whether the kernel can load programs of type ``name`` (e.g. "tracing")."""
    value = getattr(lib, f"BPF_PROG_TYPE_{name.upper()}")
    return lib.libbpf_probe_bpf_prog_type(value, ffi.NULL) == 1


def probe_map_type(name: str) -> bool:
    """Whether the kernel can create maps of type ``name`` (e.g. "ringbuf")."""
    value = getattr(lib, f"BPF_MAP_TYPE_{name.upper()}")
    return lib.libbpf_probe_bpf_map_type(value, ffi.NULL) == 1


def _as_buffer(data: Any, size: int) -> bytes | memoryview:
    """Bytes of a key or value: bytes-like, numpy scalar/array, or an int."""
    if isinstance(data, int):
        return data.to_bytes(size, "little", signed=data < 0)
    if isinstance(data, np.generic):
        return memoryview(np.ascontiguousarray(data)).cast("B")
    if isinstance(data, np.ndarray):
        return memoryview(np.ascontiguousarray(data)).cast("B")
    return memoryview(data).cast("B")


class _Named(Mapping):
    """Programs or maps of an object by name, also as attributes."""

    def __init__(self, kind: str, owner: str, items: dict[str, Any]) -> None:
        self._kind = kind
        self._owner = owner
        self._items = items

    def __getitem__(self, name: str) -> Any:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise LibbpfError(
                _errno.ENOENT, f"find {self._kind} '{name}' in object '{self._owner}' (has: {known})"
            ) from None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


# ---------------------------------------------------------------- objects


class BPFObject:
    """A BPF ELF object: opened (editable) by :meth:`open`, then :meth:`load`-ed.

    Before load, set ``rodata`` variables, map ``max_entries`` and program
    ``autoload``. After load, attach programs and read maps. The object owns
    everything made from it and must be closed (it is a context manager).
    """

    def __init__(self, ptr: Any, path: Path) -> None:
        self._ptr: Any = ffi.gc(ptr, lib.bpf_object__close)
        self.path = path
        self.name = ffi.string(lib.bpf_object__name(ptr)).decode()
        self.loaded = False
        self._children: list[Link | RingBuffer] = []
        progs: dict[str, Program] = {}
        p = lib.bpf_object__next_program(ptr, ffi.NULL)
        while p != ffi.NULL:
            prog = Program(self, p)
            progs[prog.name] = prog
            p = lib.bpf_object__next_program(ptr, p)
        maps: dict[str, Map] = {}
        m = lib.bpf_object__next_map(ptr, ffi.NULL)
        while m != ffi.NULL:
            bpf_map = Map(self, m)
            maps[bpf_map.name] = bpf_map
            m = lib.bpf_object__next_map(ptr, m)
        self.programs: _Named = _Named("program", self.name, progs)
        self.maps: _Named = _Named("map", self.name, maps)
        btf = lib.bpf_object__btf(ptr)
        self.btf = BTF(btf, owner=self) if btf != ffi.NULL else None
        self.rodata = Variables(self, ".rodata")
        self.bss = Variables(self, ".bss")
        self.data = Variables(self, ".data")

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, btf_custom_path: str | os.PathLike[str] | None = None) -> BPFObject:
        """Open (parse) an object file; nothing reaches the kernel yet.

        ``btf_custom_path`` (a vmlinux ELF or raw BTF file) replaces the running
        kernel's BTF as the target of CO-RE relocations.
        """
        path = Path(path)
        opts = ffi.new("struct bpf_object_open_opts *")
        opts.sz = ffi.sizeof("struct bpf_object_open_opts")
        custom = ffi.new("char[]", os.fsencode(btf_custom_path)) if btf_custom_path is not None else ffi.NULL
        opts.btf_custom_path = custom
        with _Call(f"open BPF object {path}") as call:
            for required in (path, btf_custom_path):
                if required is not None and not Path(required).is_file():
                    raise LibbpfError(_errno.ENOENT, f"{call.operation}: {required}")
            ptr = call.check_ptr(lib.bpf_object__open_file(str(path).encode(), opts))
        return cls(ptr, path)

    def load(self) -> None:
        """Create the maps, relocate (CO-RE) and verify every autoload program."""
        self._require_open()
        with _Call(f"load BPF object '{self.name}'") as call:
            ret = lib.bpf_object__load(self._ptr)
            if ret < 0:
                log = _take_log()
                if _looks_like_verifier_log(log):
                    raise VerifierError(-ret, call.operation, log)
                raise libbpf_error(-ret, call.operation, log)
        self.loaded = True

    def attach(self) -> list[Link]:
        """Attach every loaded program by its section name; returns the links."""
        return [p.attach() for p in self.programs.values() if p.autoload]

    def _require_open(self, what: str = "") -> None:
        if self._ptr is None:
            raise LibbpfError(_errno.EBADF, f"use {what}BPF object '{self.name}' after close")

    def _adopt(self, child: Link | RingBuffer) -> None:
        self._children.append(child)

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def close(self) -> None:
        """Destroy links and ring buffers (newest first), then the object."""
        while self._children:
            # Forgotten only once closed: an exception in between leaves it for the next close.
            self._children[-1].close()
            self._children.pop()
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            ffi.release(ptr)  # bpf_object__close, now and never again

    def __enter__(self) -> BPFObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("loaded" if self.loaded else "opened")
        return f"<BPFObject {self.name} {state}>"


def _looks_like_verifier_log(log: str) -> bool:
    return "BEGIN PROG LOAD LOG" in log or "processed " in log or "R0 " in log


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


class Program:
    """One BPF program of an object."""

    def __init__(self, obj: BPFObject, ptr: Any) -> None:
        self._obj = obj
        self._raw = ptr
        self.name: str = ffi.string(lib.bpf_program__name(ptr)).decode()
        self.section: str = ffi.string(lib.bpf_program__section_name(ptr)).decode()

    @property
    def _ptr(self) -> Any:
        """libbpf's program, which lives in the object's memory: only while the object is open."""
        self._obj._require_open(f"program '{self.name}' of ")
        return self._raw

    @property
    def type_name(self) -> str:
        """libbpf's name of the program type, e.g. "tracing"."""
        s = lib.libbpf_bpf_prog_type_str(lib.bpf_program__type(self._ptr))
        return ffi.string(s).decode() if s != ffi.NULL else "unknown"

    @property
    def autoload(self) -> bool:
        return bool(lib.bpf_program__autoload(self._ptr))

    @autoload.setter
    def autoload(self, value: bool) -> None:
        with _Call(f"set autoload of program '{self.name}'") as call:
            call.check(lib.bpf_program__set_autoload(self._ptr, bool(value)))

    @property
    def fd(self) -> int:
        return lib.bpf_program__fd(self._ptr)

    def attach(self) -> Link:
        """Attach as the section name says (tp_btf/..., raw_tp/..., tracepoint/...).

        :class:`LibbpfNotSupportedError` when this kernel has no such hook.
        """
        with _Call(f"attach program '{self.name}' ({self.section})", attaching=True) as call:
            ptr = call.check_ptr(lib.bpf_program__attach(self._ptr))
        return self._link(ptr, self.section)

    def attach_uprobe(
        self,
        binary: str | os.PathLike[str],
        function: str | None = None,
        *,
        offset: int = 0,
        pid: int = -1,
        retprobe: bool = False,
        cookie: int = 0,
    ) -> Link:
        """Attach to ``function`` (or ``offset``) of an ELF binary or library.

        ``pid`` -1 traces every process mapping the binary; the program reads
        ``cookie`` with ``bpf_get_attach_cookie``.
        """
        kind = "uretprobe" if retprobe else "uprobe"
        where = f"{binary}:{function or hex(offset)}"
        opts = ffi.new("struct bpf_uprobe_opts *")
        opts.sz = ffi.sizeof("struct bpf_uprobe_opts")
        opts.retprobe = retprobe
        opts.bpf_cookie = cookie
        fname = ffi.new("char[]", function.encode()) if function else ffi.NULL
        opts.func_name = fname
        with _Call(f"attach {kind} '{self.name}' to {where}" + (f" pid {pid}" if pid >= 0 else "")) as call:
            ptr = call.check_ptr(
                lib.bpf_program__attach_uprobe_opts(self._ptr, pid, str(binary).encode(), offset, opts)
            )
        return self._link(ptr, f"{kind}:{where}")

    def set_expected_attach_type(self, attach_type: str) -> None:
        """Load the program for ``attach_type``, the kernel's ``BPF_<ATTACH_TYPE>`` (before :meth:`BPFObject.load`).

        The value is read from the running kernel's BTF, so libbpf need not know
        the type: :class:`NotSupportedError` when the kernel does not.
        """
        value = BTF.vmlinux().enum_values("bpf_attach_type").get(f"BPF_{attach_type.upper()}")
        if value is None:
            raise NotSupportedError(f"this kernel has no BPF attach type {attach_type}")
        with _Call(f"set attach type of program '{self.name}' to {attach_type}") as call:
            call.check(lib.bpf_program__set_expected_attach_type(self._ptr, value))

    def attach_uprobe_multi(
        self,
        binary: str | os.PathLike[str],
        offsets: Sequence[int],
        *,
        cookies: Sequence[int] | None = None,
        pid: int = -1,
        retprobe: bool = False,
    ) -> Link:
        """Attach to every file offset in ``offsets`` of one ELF file with one link (Linux >= 6.6).

        The program must be loaded for it (``set_expected_attach_type("trace_uprobe_multi")``);
        ``cookies[i]`` is what ``bpf_get_attach_cookie`` reads at ``offsets[i]``. Detaching
        such a link takes one grace period whatever the number of offsets, where
        perf-event uprobes take one each (docs/memleak.md). libbpf 1.1 has no call for
        it: the attributes are laid out from the kernel's BTF of ``union bpf_attr``.
        """
        kind = "uretprobe" if retprobe else "uprobe"
        target = f"{kind}_multi:{binary}:{len(offsets)} offsets"
        if cookies is not None and len(cookies) != len(offsets):
            raise ValueError("one cookie per offset")
        size, attach_type, fields = _uprobe_multi_layout()
        keep = {  # alive until the call returns: the kernel copies them
            "path": ffi.new("char[]", os.fsencode(binary)),
            "offsets": ffi.new("uint64_t[]", list(offsets)),
            "cookies": ffi.new("uint64_t[]", list(cookies)) if cookies else ffi.NULL,
        }
        values = {
            "prog_fd": self.fd,
            "attach_type": attach_type,
            "cnt": len(offsets),
            "flags": _BPF_F_UPROBE_MULTI_RETURN if retprobe else 0,
            "pid": max(pid, 0),
            **{name: int(ffi.cast("uintptr_t", ptr)) for name, ptr in keep.items()},
        }
        attr = bytearray(size)
        for name, value in values.items():
            offset, width = fields[name]
            attr[offset : offset + width] = value.to_bytes(width, sys.byteorder)
        fd = lib.mw_sys_bpf(lib.BPF_LINK_CREATE, ffi.from_buffer(attr), size)
        if fd < 0:
            raise libbpf_error(-fd, f"attach {target} '{self.name}'" + (f" pid {pid}" if pid >= 0 else ""))
        return self._link(ffi.new("int *", fd), target, destroy=_close_link_fd)

    def test_run(self, ctx: bytes = b"", repeat: int = 0) -> int:
        """Run the program in the kernel (BPF_PROG_TEST_RUN); returns its result.

        ``repeat`` must stay 0 for raw tracepoint programs (the kernel refuses it).
        """
        opts = ffi.new("struct bpf_test_run_opts *")
        opts.sz = ffi.sizeof("struct bpf_test_run_opts")
        ctx_buf = ffi.from_buffer(ctx) if ctx else ffi.NULL
        opts.ctx_in = ctx_buf
        opts.ctx_size_in = len(ctx)
        opts.repeat = repeat
        with _Call(f"test-run program '{self.name}'") as call:
            call.check(lib.bpf_prog_test_run_opts(self.fd, opts))
        return opts.retval

    def _link(self, ptr: Any, target: str, destroy: Any = lib.bpf_link__destroy) -> Link:
        link = Link(ptr, self.name, target, destroy)
        self._obj._adopt(link)
        return link

    def __repr__(self) -> str:
        return f"<Program {self.name} {self.section}>"


# Flag of link_create.uprobe_multi.flags (include/uapi/linux/bpf.h, stable ABI):
# an anonymous enum, which kernel BTF cannot find by name.
_BPF_F_UPROBE_MULTI_RETURN = 1
_UPROBE_MULTI_FIELDS = {
    "prog_fd": "link_create.prog_fd",
    "attach_type": "link_create.attach_type",
    "path": "link_create.uprobe_multi.path",
    "offsets": "link_create.uprobe_multi.offsets",
    "cookies": "link_create.uprobe_multi.cookies",
    "cnt": "link_create.uprobe_multi.cnt",
    "flags": "link_create.uprobe_multi.flags",
    "pid": "link_create.uprobe_multi.pid",
}


@functools.cache
def _uprobe_multi_layout() -> tuple[int, int, dict[str, tuple[int, int]]]:
    """From kernel BTF: the size of ``union bpf_attr``, the attach type's value and
    each attribute's (byte offset, size)."""
    btf = BTF.vmlinux()
    fields = {name: btf.member(f"bpf_attr.{path}") for name, path in _UPROBE_MULTI_FIELDS.items()}
    attach_type = btf.enum_values("bpf_attach_type").get("BPF_TRACE_UPROBE_MULTI")
    size = btf.size_of("bpf_attr", "union")
    if size is None or attach_type is None or any(f is None for f in fields.values()):
        raise NotSupportedError("uprobe_multi links need Linux >= 6.6")
    return size, attach_type, {name: f for name, f in fields.items() if f is not None}


def _close_link_fd(box: Any) -> None:
    os.close(box[0])


class Link:
    """An attachment of a program; detached by :meth:`close` (context manager).

    ``ptr`` is libbpf's link, freed by ``destroy``; a link libbpf does not know
    (uprobe_multi) is an ``int *`` holding its fd, with a destroy that closes it.
    """

    def __init__(self, ptr: Any, program: str, target: str, destroy: Any = lib.bpf_link__destroy) -> None:
        self._ptr: Any = ffi.gc(ptr, destroy)
        self.program = program
        self.target = target

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def close(self) -> None:
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            ffi.release(ptr)  # its destroy, now and never again

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Link {self.program} -> {self.target}{' closed' if self.closed else ''}>"


# ---------------------------------------------------------------- maps

# Map.update flags (include/uapi/linux/bpf.h, stable ABI): BPF_NOEXIST creates, never overwrites.
BPF_NOEXIST = 1

_PERCPU_TYPES = {"percpu_hash", "percpu_array", "lru_percpu_hash", "percpu_cgroup_storage"}


class Map:
    """One BPF map. Keys and values are bytes-like, numpy records or ints."""

    def __init__(self, obj: BPFObject, ptr: Any) -> None:
        self._obj = obj
        self._raw = ptr
        self.name: str = ffi.string(lib.bpf_map__name(ptr)).decode()
        self._batch_ok: bool | None = None

    @property
    def _ptr(self) -> Any:
        """libbpf's map, which lives in the object's memory: only while the object is open."""
        self._obj._require_open(f"map '{self.name}' of ")
        return self._raw

    @property
    def type_name(self) -> str:
        s = lib.libbpf_bpf_map_type_str(lib.bpf_map__type(self._ptr))
        return ffi.string(s).decode() if s != ffi.NULL else "unknown"

    @property
    def key_size(self) -> int:
        return lib.bpf_map__key_size(self._ptr)

    @property
    def value_size(self) -> int:
        return lib.bpf_map__value_size(self._ptr)

    @property
    def max_entries(self) -> int:
        return lib.bpf_map__max_entries(self._ptr)

    @max_entries.setter
    def max_entries(self, n: int) -> None:
        with _Call(f"set max_entries of map '{self.name}' to {n}") as call:
            call.check(lib.bpf_map__set_max_entries(self._ptr, n))

    @property
    def fd(self) -> int:
        return lib.bpf_map__fd(self._ptr)

    @property
    def percpu(self) -> bool:
        return self.type_name in _PERCPU_TYPES

    @property
    def _user_value_size(self) -> int:
        """Value bytes as user space sees them (per-CPU values are 8-aligned, one per CPU)."""
        if self.percpu:
            return ((self.value_size + 7) & ~7) * possible_cpus()
        return self.value_size

    def lookup(self, key: Any) -> bytes | None:
        """The value stored under ``key`` (per-CPU maps: all CPUs' values), or None."""
        k = _as_buffer(key, self.key_size)
        size = self._user_value_size
        value = ffi.new("char[]", size)
        with _Call(f"look up key in map '{self.name}'") as call:
            ret = lib.bpf_map__lookup_elem(self._ptr, ffi.from_buffer(k), len(k), value, size, 0)
            if ret == -_errno.ENOENT:
                return None
            call.check(ret)
        return ffi.unpack(value, size)

    def update(self, key: Any, value: Any, flags: int = 0) -> None:
        k = _as_buffer(key, self.key_size)
        v = _as_buffer(value, self.value_size)
        with _Call(f"update map '{self.name}'") as call:
            call.check(
                lib.bpf_map__update_elem(self._ptr, ffi.from_buffer(k), len(k), ffi.from_buffer(v), len(v), flags)
            )

    def update_batch(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Store ``values[i]`` under ``keys[i]`` for every i in one BPF_MAP_UPDATE_BATCH call (Linux 5.6+).

        Keys and values are C-contiguous numpy arrays whose items have the map's key and value sizes.
        """
        keys = np.ascontiguousarray(keys)
        values = np.ascontiguousarray(values)
        if keys.dtype.itemsize != self.key_size or values.dtype.itemsize != self.value_size or len(keys) != len(values):
            raise LibbpfError(
                _errno.EINVAL,
                f"batch-update map '{self.name}': {len(keys)} keys of {keys.dtype.itemsize} bytes and "
                f"{len(values)} values of {values.dtype.itemsize} bytes for a map of {self.key_size}/{self.value_size}",
            )
        opts = ffi.new("struct bpf_map_batch_opts *")
        opts.sz = ffi.sizeof("struct bpf_map_batch_opts")
        done = 0
        count = ffi.new("uint32_t *")
        kptr = ffi.cast("char *", ffi.from_buffer(keys))
        vptr = ffi.cast("char *", ffi.from_buffer(values))
        while done < len(keys):
            count[0] = len(keys) - done
            with _Call(f"batch-update map '{self.name}'") as call:
                ret = lib.bpf_map_update_batch(
                    self.fd, kptr + done * self.key_size, vptr + done * self.value_size, count, opts
                )
                if ret < 0:
                    raise call.error(ffi.errno)
            done += count[0]

    def delete(self, key: Any) -> bool:
        """Remove ``key``; False if it was not there."""
        k = _as_buffer(key, self.key_size)
        with _Call(f"delete from map '{self.name}'") as call:
            ret = lib.bpf_map__delete_elem(self._ptr, ffi.from_buffer(k), len(k), 0)
            if ret == -_errno.ENOENT:
                return False
            call.check(ret)
        return True

    def keys(self) -> Iterator[bytes]:
        """Iterate keys with get_next_key (prefer :meth:`read_all` for bulk)."""
        size = self.key_size
        cur = ffi.NULL
        nxt = ffi.new("char[]", size)
        while True:
            with _Call(f"iterate map '{self.name}'") as call:
                ret = lib.bpf_map__get_next_key(self._ptr, cur, nxt, size)
                if ret == -_errno.ENOENT:
                    return
                call.check(ret)
            key = ffi.unpack(nxt, size)
            yield key
            cur = ffi.new("char[]", key)

    def read_all(
        self, key_dtype: np.dtype | None = None, value_dtype: np.dtype | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every entry at once: ``(keys, values)`` numpy arrays.

        Uses BPF_MAP_LOOKUP_BATCH where the kernel supports it for this map
        type, else a get_next_key/lookup loop in C. Per-CPU maps give values
        of shape ``(n, possible_cpus)``.
        """
        key_dt = np.dtype(key_dtype) if key_dtype is not None else np.dtype(f"V{self.key_size}")
        if key_dt.itemsize != self.key_size:
            raise LibbpfError(
                _errno.EINVAL, f"read map '{self.name}': key dtype is {key_dt.itemsize} bytes, map has {self.key_size}"
            )
        stride = (self.value_size + 7) & ~7 if self.percpu else self.value_size
        ncpu = possible_cpus() if self.percpu else 1
        val_dt = np.dtype(value_dtype) if value_dtype is not None else np.dtype(f"V{self.value_size}")
        if val_dt.itemsize > stride:
            raise LibbpfError(
                _errno.EINVAL,
                f"read map '{self.name}': value dtype is {val_dt.itemsize} bytes, map has {self.value_size}",
            )
        capacity = max(self.max_entries, 1)
        keys = np.zeros(capacity, dtype=f"V{self.key_size}")
        values = np.zeros((capacity, ncpu * stride), dtype=np.uint8)
        n = self._read_into(keys, values, capacity, stride * ncpu)
        keys = keys[:n].view(key_dt)
        raw = values[:n]
        padded = _padded_dtype(val_dt, stride)
        vals = np.ascontiguousarray(raw).view(padded).reshape(n, ncpu) if n else np.zeros((0, ncpu), padded)
        vals = vals.astype(val_dt) if padded != val_dt else vals
        return keys, (vals if self.percpu else vals.reshape(n))

    def _read_into(self, keys: np.ndarray, values: np.ndarray, capacity: int, value_bytes: int) -> int:
        kptr = ffi.cast("char *", ffi.from_buffer(keys))
        vptr = ffi.cast("char *", ffi.from_buffer(values))
        if self._batch_ok is not False:
            n = self._read_batch(kptr, vptr, capacity, value_bytes)
            if n is not None:
                self._batch_ok = True
                return n
            self._batch_ok = False
        count = ffi.new("uint32_t *")
        with _Call(f"dump map '{self.name}'") as call:
            ret = lib.mw_map_dump(self.fd, self.key_size, value_bytes, ffi.NULL, kptr, vptr, capacity, count)
            if ret != -_errno.ENOSPC:
                call.check(ret)
        return count[0]

    def _read_batch(self, kptr: Any, vptr: Any, capacity: int, value_bytes: int) -> int | None:
        token_size = max(self.key_size, 8)
        in_batch = ffi.new("char[]", token_size)
        out_batch = ffi.new("char[]", token_size)
        opts = ffi.new("struct bpf_map_batch_opts *")
        opts.sz = ffi.sizeof("struct bpf_map_batch_opts")
        count = ffi.new("uint32_t *")
        got = 0
        first = True
        while got < capacity:
            count[0] = capacity - got
            with _Call(f"batch-read map '{self.name}'") as call:
                ret = lib.bpf_map_lookup_batch(
                    self.fd,
                    ffi.NULL if first else in_batch,
                    out_batch,
                    kptr + got * self.key_size,
                    vptr + got * value_bytes,
                    count,
                    opts,
                )
                err = ffi.errno if ret < 0 else 0
                if ret < 0 and err in (_errno.EINVAL, _errno.EOPNOTSUPP, _ENOTSUPP) and first:
                    return None
                got += count[0]
                if ret < 0 and err == _errno.ENOENT:
                    return got
                if ret < 0:
                    raise call.error(err)
            ffi.memmove(in_batch, out_batch, token_size)
            first = False
        return got

    def __repr__(self) -> str:
        if self._obj.closed:
            return f"<Map {self.name} closed>"
        return f"<Map {self.name} {self.type_name} max_entries={self.max_entries}>"


def _padded_dtype(dt: np.dtype, itemsize: int) -> np.dtype:
    if dt.itemsize == itemsize:
        return dt
    if dt.names:
        fields = {name: dt.fields[name] for name in dt.names}
        return np.dtype(
            {
                "names": list(fields),
                "formats": [f[0] for f in fields.values()],
                "offsets": [f[1] for f in fields.values()],
                "itemsize": itemsize,
            }
        )
    return np.dtype({"names": ["v"], "formats": [dt], "offsets": [0], "itemsize": itemsize})


class Variables:
    """Global variables of one data section (``.rodata``, ``.bss``, ``.data``).

    Names, sizes and types come from the object's BTF. ``.rodata`` (the
    ``const volatile`` configuration) can be written only before load; the
    others are read and written through their array map after load.
    """

    def __init__(self, obj: BPFObject, section: str) -> None:
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_section", section)
        object.__setattr__(self, "_map", next((m for m in obj.maps.values() if m.name.endswith(section)), None))
        object.__setattr__(self, "_vars", obj.btf.datasec_vars(section) if obj.btf is not None else {})

    def names(self) -> list[str]:
        return list(self._vars)

    def _bytes(self) -> bytearray:
        m: Map = self._map
        if not self._obj.loaded:
            size = ffi.new("size_t *")
            ptr = lib.bpf_map__initial_value(m._ptr, size)
            return bytearray(ffi.unpack(ffi.cast("char *", ptr), size[0]))
        value = m.lookup(0)
        return bytearray(value or b"")

    def _var(self, name: str) -> _Var:
        try:
            return self._vars[name]
        except KeyError:
            known = ", ".join(self._vars) or "none"
            raise LibbpfError(
                _errno.ENOENT, f"find variable '{name}' in {self._section} of '{self._obj.name}' (has: {known})"
            ) from None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        var = self._var(name)
        return var.decode(self._bytes()[var.offset : var.offset + var.size])

    def __setattr__(self, name: str, value: Any) -> None:
        var = self._var(name)
        self._obj._require_open()
        m: Map = self._map
        data = self._bytes()
        data[var.offset : var.offset + var.size] = var.encode(value)
        if not self._obj.loaded:
            with _Call(f"set {self._section} variable '{name}' of '{self._obj.name}'") as call:
                call.check(lib.bpf_map__set_initial_value(m._ptr, ffi.from_buffer(data), len(data)))
        elif self._section == ".rodata":
            raise LibbpfError(_errno.EPERM, f"set const variable '{name}' after load")
        else:
            m.update(0, bytes(data))

    __getitem__ = __getattr__
    __setitem__ = __setattr__


class _Var:
    """Layout of one global variable: byte offset, size and how to convert it."""

    def __init__(self, offset: int, size: int, kind: str, signed: bool = False) -> None:
        self.offset = offset
        self.size = size
        self.kind = kind  # "int", "bool", "chars" or "bytes"
        self.signed = signed

    def decode(self, raw: bytes) -> Any:
        if self.kind == "int":
            return int.from_bytes(raw, "little", signed=self.signed)
        if self.kind == "bool":
            return raw != bytes(self.size)
        if self.kind == "chars":
            return bytes(raw).split(b"\0", 1)[0].decode(errors="replace")
        return bytes(raw)

    def encode(self, value: Any) -> bytes:
        if self.kind == "int":
            return int(value).to_bytes(self.size, "little", signed=self.signed)
        if self.kind == "bool":
            return (1 if value else 0).to_bytes(self.size, "little")
        if self.kind == "chars":
            raw = value.encode() if isinstance(value, str) else bytes(value)
            if len(raw) >= self.size:
                raise ValueError(f"string of {len(raw)} bytes does not fit in char[{self.size}]")
            return raw.ljust(self.size, b"\0")
        raw = bytes(_as_buffer(value, self.size))
        if len(raw) != self.size:
            raise ValueError(f"value of {len(raw)} bytes for a {self.size}-byte variable")
        return raw


# ---------------------------------------------------------------- ring buffers


class RingBuffer:
    """Consumer of a BPF_MAP_TYPE_RINGBUF map that yields numpy record arrays.

    Records are copied in C into a buffer Python owns and decoded in bulk as
    ``dtype``: no Python code runs per record. The buffer starts with room
    for ``batch_records`` records and doubles when a drain needs more; it is
    reused, so an array returned by :meth:`consume` or :meth:`poll` is a
    read-only view valid until the next call (``.copy()`` it to keep it).
    Meant to be called on a timer (programs may submit with
    BPF_RB_NO_WAKEUP). Records longer than ``dtype`` are truncated and
    counted in ``oversized``.
    """

    def __init__(self, bpf_map: Map, dtype: np.dtype, batch_records: int = 65536) -> None:
        self._ptr = None
        self._counter = None
        if bpf_map.type_name != "ringbuf":
            raise LibbpfError(_errno.EINVAL, f"read map '{bpf_map.name}' as a ring buffer: it is a {bpf_map.type_name}")
        self.map = bpf_map
        self.dtype = np.dtype(dtype)
        self._sink = ffi.new("struct mw_sink *")
        self._sink.record_size = self.dtype.itemsize
        self._set_buffer(np.ones(self.dtype.itemsize * max(batch_records, 1), np.uint8))  # ones: pre-fault pages
        self._count_sink = ffi.new("struct mw_sink *")
        with _Call(f"open ring buffer '{bpf_map.name}'") as call:
            ptr = call.check_ptr(
                lib.ring_buffer__new(bpf_map.fd, ffi.addressof(lib, "mw_sink_copy"), self._sink, ffi.NULL)
            )
        self._ptr = ffi.gc(ptr, lib.ring_buffer__free)
        bpf_map._obj._adopt(self)

    def _set_buffer(self, buf: np.ndarray) -> None:
        self._buf = buf
        self._sink.buf = ffi.cast("char *", ffi.from_buffer(buf))
        self._sink.capacity = len(buf) // self.dtype.itemsize

    @property
    def oversized(self) -> int:
        return self._sink.oversized

    @property
    def epoll_fd(self) -> int:
        self._require_open()
        return lib.ring_buffer__epoll_fd(self._ptr)

    def _require_open(self) -> None:
        if self._ptr is None:
            raise LibbpfError(_errno.EBADF, f"read ring buffer '{self.map.name}' after close")

    def _run(self, fn: Any, *args: Any) -> np.ndarray:
        self._require_open()
        self._sink.count = 0
        while True:
            ret = fn(self._ptr, *args)
            if ret != -_errno.ENOSPC:
                break
            # Full: double the buffer, keep what was copied, drain the rest.
            bigger = np.empty(len(self._buf) * 2, np.uint8)
            bigger[: len(self._buf)] = self._buf
            self._set_buffer(bigger)
            fn, args = lib.ring_buffer__consume, ()
        if ret < 0 and ret != -_errno.EINTR:
            raise libbpf_error(-ret, f"consume ring buffer '{self.map.name}'", _take_log())
        view = np.frombuffer(self._buf, self.dtype, self._sink.count)
        view.flags.writeable = False
        return view

    def consume(self) -> np.ndarray:
        """Every record available now, oldest first (never blocks)."""
        return self._run(lib.ring_buffer__consume)

    def poll(self, timeout_ms: int) -> np.ndarray:
        """Wait up to ``timeout_ms`` for a wakeup, then return what is available."""
        return self._run(lib.ring_buffer__poll, timeout_ms)

    def discard(self) -> int:
        """Drop every available record without copying it; returns how many.

        Uses a second consumer whose C callback only counts (it shares the
        ring's consumer position), the cheapest possible drain.
        """
        self._require_open()
        if self._counter is None:
            with _Call(f"open ring buffer '{self.map.name}'") as call:
                counter = call.check_ptr(
                    lib.ring_buffer__new(self.map.fd, ffi.addressof(lib, "mw_sink_count"), self._count_sink, ffi.NULL)
                )
            self._counter = ffi.gc(counter, lib.ring_buffer__free)
        self._count_sink.count = 0
        ret = lib.ring_buffer__consume(self._counter)
        if ret < 0:
            raise libbpf_error(-ret, f"consume ring buffer '{self.map.name}'", _take_log())
        return self._count_sink.count

    def close(self) -> None:
        counter, self._counter = self._counter, None
        if counter is not None:
            ffi.release(counter)  # ring_buffer__free
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            ffi.release(ptr)  # ring_buffer__free

    def __enter__(self) -> RingBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- BTF


class BTF:
    """Type information of the kernel (:meth:`vmlinux`) or of an object file."""

    _vmlinux: BTF | None = None

    def __init__(self, ptr: Any, owner: BPFObject | None = None) -> None:
        # Parsed BTF is ours to free; an object's BTF is freed with the object.
        self._raw: Any = ffi.gc(ptr, lib.btf__free) if owner is None else ptr
        self._owner = owner

    @property
    def _ptr(self) -> Any:
        if self._raw is None:
            raise LibbpfError(_errno.EBADF, "use BTF after close")
        if self._owner is not None:
            self._owner._require_open("the BTF of ")
        return self._raw

    @classmethod
    def vmlinux(cls) -> BTF:
        """The running kernel's BTF (/sys/kernel/btf/vmlinux), loaded once."""
        if cls._vmlinux is None or cls._vmlinux._raw is None:
            with _Call("load kernel BTF") as call:
                cls._vmlinux = cls(call.check_ptr(lib.btf__load_vmlinux_btf()))
        return cls._vmlinux

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> BTF:
        """BTF of an ELF object or raw BTF file."""
        with _Call(f"parse BTF of {path}") as call:
            return cls(call.check_ptr(lib.btf__parse(str(path).encode(), ffi.NULL)))

    def close(self) -> None:
        """Free parsed BTF (an object's BTF goes with the object); idempotent."""
        ptr, self._raw = self._raw, None
        if ptr is not None and self._owner is None:
            ffi.release(ptr)  # btf__free

    # -- raw access
    _KINDS = {
        "int": lib.BTF_KIND_INT,
        "struct": lib.BTF_KIND_STRUCT,
        "union": lib.BTF_KIND_UNION,
        "enum": lib.BTF_KIND_ENUM,
        "enum64": lib.BTF_KIND_ENUM64,
        "typedef": lib.BTF_KIND_TYPEDEF,
        "func": lib.BTF_KIND_FUNC,
        "datasec": lib.BTF_KIND_DATASEC,
        "var": lib.BTF_KIND_VAR,
    }

    def _type(self, type_id: int) -> Any:
        return lib.btf__type_by_id(self._ptr, type_id)

    def _name(self, off: int) -> str:
        return ffi.string(lib.btf__name_by_offset(self._ptr, off)).decode()

    @staticmethod
    def _kind(t: Any) -> int:
        return (t.info >> 24) & 0x1F

    @staticmethod
    def _vlen(t: Any) -> int:
        return t.info & 0xFFFF

    def find(self, name: str, kind: str) -> int | None:
        """Type id of ``name`` of ``kind`` ("struct", "enum", "typedef", ...), or None."""
        tid = lib.btf__find_by_name_kind(self._ptr, name.encode(), self._KINDS[kind])
        return tid if tid > 0 else None

    def _skip_mods(self, type_id: int) -> int:
        mods = (lib.BTF_KIND_TYPEDEF, lib.BTF_KIND_VOLATILE, lib.BTF_KIND_CONST, lib.BTF_KIND_RESTRICT)
        while True:
            t = self._type(type_id)
            if t == ffi.NULL or self._kind(t) not in mods:
                return type_id
            type_id = t.type

    def members(self, struct: str) -> dict[str, int]:
        """Members of a struct or union and their bit offsets (anonymous members flattened)."""
        tid = self.find(struct, "struct") or self.find(struct, "union")
        return self._members_of(tid, 0) if tid else {}

    def _members_of(self, tid: int, base_bits: int) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, bits, type_id in self._member_list(tid):
            if name:
                out[name] = base_bits + bits
            else:
                out.update(self._members_of(type_id, base_bits + bits))
        return out

    def _member_list(self, tid: int) -> list[tuple[str, int, int]]:
        """(name, bit offset, type id) of each member of a struct or union, [] for other kinds.

        Type ids skip typedefs and qualifiers; anonymous members have the name ""
        and are only kept when they are a struct or union themselves.
        """
        t = self._type(tid)
        if self._kind(t) not in (lib.BTF_KIND_STRUCT, lib.BTF_KIND_UNION):
            return []
        kflag = t.info >> 31
        arr = ffi.cast("struct btf_member *", t + 1)
        out = []
        for i in range(self._vlen(t)):
            m = arr[i]
            name = self._name(m.name_off)
            type_id = self._skip_mods(m.type)
            if name or self._kind(self._type(type_id)) in (lib.BTF_KIND_STRUCT, lib.BTF_KIND_UNION):
                out.append((name, m.offset & 0xFFFFFF if kflag else m.offset, type_id))
        return out

    def member(self, path: str) -> tuple[int, int] | None:
        """Byte offset and size of a nested member, e.g. ``bpf_attr.link_create.uprobe_multi.pid``.

        The first name is a struct or union; anonymous members are looked
        through as C does. None when any part is missing (an older kernel).
        """
        root, *names = path.split(".")
        tid = self.find(root, "struct") or self.find(root, "union")
        bits = 0
        for name in names:
            if not tid:
                return None
            tid, bits = self._find_member(tid, name, bits)
        if not tid:
            return None
        return bits // 8, lib.btf__resolve_size(self._ptr, tid)

    def _find_member(self, tid: int, name: str, base_bits: int) -> tuple[int, int]:
        """(type id, bit offset) of member ``name`` of ``tid``, searching anonymous members; type id 0 if absent."""
        for member_name, bits, type_id in self._member_list(tid):
            if member_name == name:
                return type_id, base_bits + bits
            if not member_name:
                found, found_bits = self._find_member(type_id, name, base_bits + bits)
                if found:
                    return found, found_bits
        return 0, 0

    def size_of(self, name: str, kind: str = "struct") -> int | None:
        tid = self.find(name, kind)
        return lib.btf__resolve_size(self._ptr, tid) if tid else None

    def enum_values(self, name: str) -> dict[str, int]:
        """Enumerators of ``enum name`` (32- or 64-bit enums)."""
        tid = self.find(name, "enum") or self.find(name, "enum64")
        return self._enumerators(tid) if tid else {}

    def _enumerators(self, tid: int) -> dict[str, int]:
        t = self._type(tid)
        out = {}
        if self._kind(t) == lib.BTF_KIND_ENUM:
            arr = ffi.cast("struct btf_enum *", t + 1)
            for i in range(self._vlen(t)):
                out[self._name(arr[i].name_off)] = arr[i].val
        else:
            words = ffi.cast("uint32_t *", t + 1)
            for i in range(self._vlen(t)):
                out[self._name(words[3 * i])] = words[3 * i + 1] | (words[3 * i + 2] << 32)
        return out

    def enum_containing(self, enumerator: str) -> dict[str, int]:
        """All enumerators of the (possibly anonymous) enum that defines ``enumerator``."""
        for tid in range(1, lib.btf__type_cnt(self._ptr)):
            if self._kind(self._type(tid)) in (lib.BTF_KIND_ENUM, lib.BTF_KIND_ENUM64):
                values = self._enumerators(tid)
                if enumerator in values:
                    return values
        return {}

    def enumerator(self, name: str) -> int | None:
        """Value of an enumerator ``name`` in any enum of this BTF, or None."""
        return self.enum_containing(name).get(name)

    def func_proto_params(self, typedef: str) -> list[str] | None:
        """Parameter type names of a function-pointer typedef (e.g. ``btf_trace_sched_switch``)."""
        tid = self.find(typedef, "typedef")
        if not tid:
            return None
        ptr = self._type(self._type(tid).type)  # typedef -> pointer
        proto = self._type(ptr.type)  # pointer -> func_proto
        params = ffi.cast("struct btf_param *", proto + 1)
        return [self.type_name(params[i].type) for i in range(self._vlen(proto))]

    def type_name(self, type_id: int) -> str:
        """A C spelling of a type, e.g. "struct page *" or "gfp_t"."""
        if type_id == 0:
            return "void"
        t = self._type(type_id)
        kind = self._kind(t)
        name = self._name(t.name_off)
        if kind == lib.BTF_KIND_PTR:
            return self.type_name(t.type) + " *"
        if kind == lib.BTF_KIND_CONST:
            return "const " + self.type_name(t.type)
        if kind == lib.BTF_KIND_VOLATILE:
            return "volatile " + self.type_name(t.type)
        if kind == lib.BTF_KIND_STRUCT:
            return f"struct {name}"
        if kind == lib.BTF_KIND_UNION:
            return f"union {name}"
        if kind in (lib.BTF_KIND_ENUM, lib.BTF_KIND_ENUM64):
            return f"enum {name}"
        if kind == lib.BTF_KIND_ARRAY:
            arr = ffi.cast("struct btf_array *", t + 1)
            return f"{self.type_name(arr.type)}[{arr.nelems}]"
        return name or "?"

    def datasec_vars(self, section: str) -> dict[str, _Var]:
        """Variables of a data section (".rodata", ".bss", ...) with their layout."""
        tid = self.find(section, "datasec")
        if not tid:
            return {}
        t = self._type(tid)
        infos = ffi.cast("struct btf_var_secinfo *", t + 1)
        out: dict[str, _Var] = {}
        for i in range(self._vlen(t)):
            info = infos[i]
            var = self._type(info.type)
            name = self._name(var.name_off)
            out[name] = self._var_layout(var.type, info.offset, info.size)
        return out

    def _var_layout(self, type_id: int, offset: int, size: int) -> _Var:
        tid = self._skip_mods(type_id)
        t = self._type(tid)
        kind = self._kind(t)
        if kind == lib.BTF_KIND_INT:
            encoding = (ffi.cast("uint32_t *", t + 1)[0] >> 24) & 0xF
            if self._name(t.name_off) in ("bool", "_Bool"):
                return _Var(offset, size, "bool")
            return _Var(offset, size, "int", bool(encoding & lib.BTF_INT_SIGNED))
        if kind == lib.BTF_KIND_ENUM:
            return _Var(offset, size, "int", signed=True)
        if kind == lib.BTF_KIND_ARRAY:
            arr = ffi.cast("struct btf_array *", t + 1)
            elem = self._type(self._skip_mods(arr.type))
            if self._kind(elem) == lib.BTF_KIND_INT and self._name(elem.name_off) == "char":
                return _Var(offset, size, "chars")  # plain char[]: a string; __u8[] stays bytes
        return _Var(offset, size, "bytes")
