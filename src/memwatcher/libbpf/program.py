"""Programs of an object: autoload, attach type, attaching (tracepoints, uprobes, uprobe_multi), test runs."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._libbpf import ffi, lib
from ..errors import NotSupportedError
from ._errors import _Call, libbpf_error
from .btf import BTF
from .link import Link

if TYPE_CHECKING:
    from .object import BPFObject


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
