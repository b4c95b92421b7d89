"""Readable names for mangled C++ (Itanium ABI) and Rust (legacy and v0) symbols.

``demangle(name)`` returns the name as a person reads it, or ``name`` itself
when it is not a mangled name or cannot be decoded. Only names that start
with ``_Z`` or ``_R`` are looked at: the C++ demangler would otherwise read a
plain name such as ``i`` as a type ("int").

- C++: libstdc++'s ``__cxa_demangle`` (cffi, ABI mode), the runtime's own
  demangler, so names read as ``c++filt`` prints them (GCC clone suffixes
  included: ``f() [clone .cold]``).
- Rust: the ``pyderust`` package (bindings of the ``rustc-demangle`` crate) in
  its hash-less form, the one Rust's own backtraces print: legacy
  ``_ZN...17h<16 hex>E`` names lose the ``::h<hash>`` element and have their
  ``$LT$``-style escapes decoded; v0 ``_R`` names are printed without crate
  disambiguators. Without the package, legacy names go through
  ``__cxa_demangle`` with the hash dropped (escapes stay) and v0 names are
  left as they are.

Neither library being loadable is an error: names are then returned unchanged.
"""

from __future__ import annotations

import functools
import re
from typing import Any

__all__ = ["demangle"]

_CDEF = """
char *__cxa_demangle(const char *mangled_name, char *output_buffer, size_t *length, int *status);
void free(void *ptr);
"""

# A legacy Rust symbol: an Itanium nested name whose last element is the 17-character
# "h" + 16 hex digits hash, optionally followed by a ".suffix" (ThinLTO's ".llvm.NNNN").
_RUST_LEGACY = re.compile(r"_ZN.*17h[0-9a-f]{16}E(?:\.[!-~]*)?\Z", re.S)
_RUST_HASH = re.compile(r"::h[0-9a-f]{16}(?=\Z| \[clone )")

_UNSET: Any = object()
_ffi: Any = None  # cffi.FFI, made on first use: importing cffi costs ~20 ms of start-up
_cxx: Any = _UNSET  # (libstdc++, C namespace) or None
_rust: Any = _UNSET  # pyderust.demangle or None


def _get_ffi() -> Any:
    """The cffi.FFI of the two declarations, made once."""
    global _ffi
    if _ffi is None:
        import cffi

        ffi = cffi.FFI()
        ffi.cdef(_CDEF)
        _ffi = ffi
    return _ffi


def _cxx_libs():
    """(libstdc++, global C namespace) once, or None when libstdc++ cannot be loaded."""
    global _cxx
    if _cxx is _UNSET:
        ffi = _get_ffi()
        try:
            # free() must come from the allocator libstdc++'s malloc resolved to: both are
            # looked up in the process's global namespace (an LD_PRELOADed allocator included).
            _cxx = (ffi.dlopen("libstdc++.so.6"), ffi.dlopen(None))
        except OSError:
            _cxx = None
    return _cxx


def _rust_demangler():
    """pyderust.demangle, or None when the package is not installed."""
    global _rust
    if _rust is _UNSET:
        try:
            from pyderust import demangle as rust_demangle
        except ImportError:
            rust_demangle = None
        _rust = rust_demangle
    return _rust


def _cxa_demangle(name: str) -> str | None:
    """``__cxa_demangle(name)``, or None when libstdc++ is missing or rejects the name."""
    libs = _cxx_libs()
    if libs is None:
        return None
    cxx, c = libs
    try:
        mangled = name.encode(errors="surrogateescape")
    except UnicodeEncodeError:
        return None
    status = _ffi.new("int *", -4)
    out = cxx.__cxa_demangle(mangled, _ffi.NULL, _ffi.NULL, status)
    if out == _ffi.NULL:
        # status -1: out of memory; -2: not a valid mangled name; -3: bad argument.
        return None
    try:
        return _ffi.string(out).decode(errors="replace") if status[0] == 0 else None
    finally:
        c.free(out)


def _rust_demangle(name: str) -> str | None:
    rust = _rust_demangler()
    if rust is None:
        return None
    try:
        return rust(name, include_hash=False)
    except ValueError:  # pyderust.DemangleError: not Rust, or over its recursion/size limits
        return None


@functools.lru_cache(maxsize=1 << 16)
def demangle(name: str) -> str:
    """The demangled form of ``name``; ``name`` itself when it is not a mangled name.

    C++ names read as ``c++filt -i`` prints them, Rust names as ``rustc-demangle``
    prints them without the hash (``{:#}``). Never raises for a ``str``; results are cached.
    """
    if name.startswith("_R"):
        return _rust_demangle(name) or name
    if not name.startswith("_Z"):
        return name
    if _RUST_LEGACY.match(name):
        text = _rust_demangle(name)
        if text is not None:
            return text
        text = _cxa_demangle(name)
        return _RUST_HASH.sub("", text) if text is not None else name
    return _cxa_demangle(name) or name
