"""Maps of an object: lookups and updates by key, batch reads into numpy arrays."""

from __future__ import annotations

import errno as _errno
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from .._libbpf import ffi, lib
from ._errors import _ENOTSUPP, LibbpfError, _Call
from .features import possible_cpus

if TYPE_CHECKING:
    from .object import BPFObject


# Map.update flags (include/uapi/linux/bpf.h, stable ABI): BPF_NOEXIST creates, never overwrites.
BPF_NOEXIST = 1

_PERCPU_TYPES = {"percpu_hash", "percpu_array", "lru_percpu_hash", "percpu_cgroup_storage"}


def _as_buffer(data: Any, size: int) -> bytes | memoryview:
    """Bytes of a key or value: bytes-like, numpy scalar/array, or an int."""
    if isinstance(data, int):
        return data.to_bytes(size, "little", signed=data < 0)
    if isinstance(data, np.generic):
        return memoryview(np.ascontiguousarray(data)).cast("B")
    if isinstance(data, np.ndarray):
        return memoryview(np.ascontiguousarray(data)).cast("B")
    return memoryview(data).cast("B")


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
