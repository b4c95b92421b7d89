"""Interrupt close() before each of its bytecodes in turn, as a signal handler may.

Run by test_libbpf.py in a child process (a double free would kill pytest):
``python interrupt_close.py OBJECT``. For k = 1, 2, ... it builds an object
with a link, a ring buffer (and its counting consumer) and a parsed BTF,
closes them with an exception raised before the k-th bytecode executed in a
``close`` method of the memwatcher.libbpf package, closes everything again
as enclosing ``with`` blocks would, and checks that no BPF file descriptor is left. It
stops after the first k that the closing finished before reaching, printing
"done K"; a crash means something was freed twice.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from memwatcher import libbpf
from memwatcher.libbpf import BTF, BPFObject, LibbpfError, RingBuffer

LIBBPF_DIR = Path(libbpf.__file__).parent


class Interrupt(BaseException):
    """What a signal handler raises: KeyboardInterrupt, or cli's SystemExit on SIGTERM."""


def bpf_fds() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("anon_inode:bpf"):
            out.append(target)
    return sorted(out)


def interrupted(k: int, fn: Callable[[], object]) -> bool:
    """Run ``fn``, raising :class:`Interrupt` before the k-th bytecode of libbpf's close methods."""
    seen = 0

    def opcode(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal seen
        if event == "opcode":
            seen += 1
            if seen == k:
                raise Interrupt
        return opcode

    def call(frame: FrameType, event: str, arg: Any) -> Any:
        code = frame.f_code
        if Path(code.co_filename).parent != LIBBPF_DIR or code.co_name != "close":
            return None
        frame.f_trace_lines = False
        frame.f_trace_opcodes = True
        return opcode

    sys.settrace(call)
    try:
        fn()
    except Interrupt:
        return True
    finally:
        sys.settrace(None)
    return False


def close_interrupted(path: str, k: int) -> bool:
    """One object, link, ring buffer and BTF; close interrupted at bytecode k. False: k was past the end."""
    obj = BPFObject.open(path)
    obj.rodata.target_tgid = os.getpid()
    for prog in obj.programs.values():
        prog.autoload = prog.name == "on_sys_enter"
    obj.load()
    link = obj.programs.on_sys_enter.attach()
    RingBuffer(obj.maps.events, np.uint8).discard()  # the object owns it, and its counting consumer
    btf = BTF.from_file(path)
    hit = interrupted(k, lambda: (link.close(), obj.close(), btf.close()))
    link.close()  # as the enclosing `with` blocks do while the exception unwinds
    obj.close()
    btf.close()
    for use in (lambda: obj.maps.events.fd, lambda: obj.programs.on_sys_enter.fd, lambda: obj.btf.find("x", "int")):
        try:
            use()
        except LibbpfError:
            continue
        raise SystemExit(f"k={k}: used after close without an error")
    return hit


def main(path: str) -> None:
    before = bpf_fds()
    k = 1
    while True:
        hit = close_interrupted(path, k)
        gc.collect()
        if bpf_fds() != before:
            raise SystemExit(f"k={k}: left behind {bpf_fds()}")
        if not hit:
            break
        k += 1
    print(f"done {k}")


if __name__ == "__main__":
    main(sys.argv[1])
