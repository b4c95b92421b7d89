"""Ring buffer consumers: records copied in C into a Python-owned buffer, decoded as numpy arrays."""

from __future__ import annotations

import errno as _errno
from typing import TYPE_CHECKING, Any

import numpy as np

from .._libbpf import ffi, lib
from ._errors import LibbpfError, _Call, _take_log, libbpf_error

if TYPE_CHECKING:
    from .map import Map


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
