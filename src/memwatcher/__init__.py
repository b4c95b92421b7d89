"""memwatcher: an eBPF memory observatory for Linux."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # Read on first use: importlib.metadata costs ~0.1 s at every start, before
    # the command's signal handlers can be in place (memwatcher.__main__).
    if name != "__version__":
        raise AttributeError(f"module 'memwatcher' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("memwatcher")
    except PackageNotFoundError:  # running from a source tree without install
        value = "0.0.0+source"
    globals()["__version__"] = value
    return value
