"""Binding to libbpf: BPF objects, programs, maps, links, ring buffers and BTF.

This is the only package that touches cffi. It knows nothing of memory
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

One module per concern; import the names from here:

    _errors     errors, and the wrapper that runs a call and collects libbpf's log
    features    libbpf version, possible CPUs, program and map type probes
    object      BPFObject: open, load, attach all, close (owns everything below)
    program     Program: autoload, attach (tracepoints, uprobes, uprobe_multi), test runs
    link        Link: an attachment, until closed
    map         Map: lookups, updates, batch reads into numpy
    variables   Variables: .rodata / .bss / .data globals through the object's BTF
    ringbuf     RingBuffer: records decoded in bulk as numpy arrays
    btf         BTF: kernel or object type information
    core        CO-RE relocations against another kernel's BTF (doctor --btf)
"""

from ..errors import MemwatcherError, NotSupportedError, PrivilegeError
from ._errors import (
    LibbpfError,
    LibbpfNotSupportedError,
    LibbpfPrivilegeError,
    VerifierError,
    set_debug_log,
)
from .btf import BTF
from .core import CoreRelocation, core_relocations
from .features import libbpf_path, libbpf_version, possible_cpus, probe_map_type, probe_prog_type
from .link import Link
from .map import BPF_NOEXIST, Map
from .object import BPFObject
from .program import Program
from .ringbuf import RingBuffer

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
