"""Writers shared by every report: table, JSON lines, CSV.

Reports hand over rows of raw values (bytes, pages, nanoseconds, counts) keyed
by the JSON name of each column; only the table writer humanizes them. A
value of ``None`` means the running kernel does not have that counter: JSON
shows ``null``, CSV an empty cell, the table ``-``.
"""

from __future__ import annotations

import csv
import enum
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "Column",
    "OutputFormat",
    "Writer",
    "check_writable",
    "human_bytes",
    "make_writer",
    "timestamp",
    "write_atomically",
]


class OutputFormat(str, enum.Enum):
    table = "table"
    json = "json"
    csv = "csv"


@dataclass(frozen=True)
class Column:
    """One output column: ``key`` is its JSON/CSV name, ``unit`` drives the table."""

    key: str
    header: str
    unit: str = ""  # "bytes", "ns", "" (plain number or text)
    left: bool = False  # left-align (text columns)


def human_bytes(n: float) -> str:
    """1536 -> '1.5K' (binary units, as top and free print them)."""
    value = float(n)
    for suffix in ("B", "K", "M", "G", "T"):
        if abs(value) < 1024 or suffix == "T":
            if suffix == "B":
                return f"{int(value)}B"
            return f"{value:.1f}{suffix}"
        value /= 1024
    return f"{value:.1f}P"


def human_ns(n: float) -> str:
    for suffix, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{suffix}"
    return f"{int(n)}ns"


def timestamp() -> str:
    """Local time with UTC offset, millisecond precision (ISO 8601)."""
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def _cell(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "bytes":
        return human_bytes(value)
    if unit == "ns":
        return human_ns(value)
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


class Writer:
    """Writes one sample (a list of rows) at a time."""

    def __init__(self, columns: Sequence[Column], stream: TextIO | None = None) -> None:
        self.columns = list(columns)
        self.stream = stream or sys.stdout

    def write(self, rows: Sequence[dict[str, Any]], time: str | None = None, title: str = "") -> None:
        raise NotImplementedError

    def message(self, text: str) -> None:
        """A note for humans (stderr, so data streams stay parseable)."""
        print(text, file=sys.stderr, flush=True)


class TableWriter(Writer):
    def write(self, rows: Sequence[dict[str, Any]], time: str | None = None, title: str = "") -> None:
        cells = [[_cell(row.get(c.key), c.unit) for c in self.columns] for row in rows]
        widths = [max([len(c.header)] + [len(r[i]) for r in cells]) for i, c in enumerate(self.columns)]

        def fmt(values: list[str]) -> str:
            parts = [v.ljust(w) if c.left else v.rjust(w) for v, w, c in zip(values, widths, self.columns)]
            return "  ".join(parts).rstrip()

        stamp = (time or timestamp())[11:19]
        out = [f"{stamp} {title}".rstrip(), fmt([c.header for c in self.columns])]
        out += [fmt(r) for r in cells]
        print("\n".join(out) + "\n", file=self.stream, flush=True)


class JsonWriter(Writer):
    def write(self, rows: Sequence[dict[str, Any]], time: str | None = None, title: str = "") -> None:
        t = time or timestamp()
        for row in rows:
            record = {"time": t}
            record.update({c.key: row.get(c.key) for c in self.columns})
            self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()


class CsvWriter(Writer):
    def __init__(self, columns: Sequence[Column], stream: TextIO | None = None) -> None:
        super().__init__(columns, stream)
        self._csv = csv.writer(self.stream, lineterminator="\n")
        self._csv.writerow(["time"] + [c.key for c in self.columns])

    def write(self, rows: Sequence[dict[str, Any]], time: str | None = None, title: str = "") -> None:
        t = time or timestamp()
        for row in rows:
            self._csv.writerow([t] + ["" if row.get(c.key) is None else row.get(c.key) for c in self.columns])
        self.stream.flush()


def make_writer(fmt: OutputFormat | str, columns: Sequence[Column], stream: TextIO | None = None) -> Writer:
    kind = OutputFormat(fmt)
    cls = {OutputFormat.table: TableWriter, OutputFormat.json: JsonWriter, OutputFormat.csv: CsvWriter}[kind]
    return cls(columns, stream)


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step: a reader (or a kill) sees the old file or the new one."""
    tmp = _temporary_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_writable(path: Path) -> str | None:
    """Why ``path`` cannot be written as an output file (None if it can), found before any work starts."""
    if path.is_dir():
        return f"{path} is a directory"
    if not path.parent.is_dir():
        return f"directory {path.parent} does not exist"
    tmp = _temporary_name(path)
    try:
        tmp.open("wb").close()
        tmp.unlink()
    except OSError as e:
        return f"cannot write in {path.parent}: {e.strerror}"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{path} is not writable"
    return None
