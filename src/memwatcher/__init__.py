"""memwatcher: an eBPF memory observatory for Linux."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("memwatcher")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+source"
