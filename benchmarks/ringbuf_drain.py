"""Ring buffer drain throughput: memwatcher's Python path vs a C count-only drain.

The test object's `flood` program (run with BPF_PROG_TEST_RUN) fills a ring
buffer with N 64-byte records; the same fill is then drained either by a C
callback that only counts (the ceiling) or by memwatcher's path (C copy into
a Python-owned buffer + numpy structured decode). Rounds alternate, and the
figure is the ratio of records/s, median over rounds. Target: >= 0.4.

    python benchmarks/ringbuf_drain.py [--records N] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP / "tests"))

from conftest import TEST_BPF_DIR, build_test_object  # noqa: E402
from memwatcher.libbpf import BPFObject, RingBuffer  # noqa: E402
from memwatcher.records import load_header  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    dtype = load_header(TEST_BPF_DIR / "trigger.h").trigger_event
    ring_bytes = 1 << (args.records * (dtype.itemsize + 8) - 1).bit_length()
    c_rates, py_rates = [], []
    with BPFObject.open(build_test_object("trigger")) as obj:
        obj.rodata.flood_records = args.records
        obj.maps.events.max_entries = ring_bytes
        obj.programs.on_sys_enter.autoload = False
        obj.programs.on_getpid.autoload = False
        obj.load()
        rb = RingBuffer(obj.maps.events, dtype)
        flood = obj.programs.flood
        for _ in range(args.rounds):
            flood.test_run()
            t0 = time.perf_counter()
            n = rb.discard()
            c_rates.append(n / (time.perf_counter() - t0))
            assert n == args.records, n

            flood.test_run()
            t0 = time.perf_counter()
            records = rb.consume()
            checksum = int(records["seq"].sum())  # touch a decoded field
            py_rates.append(len(records) / (time.perf_counter() - t0))
            assert len(records) == args.records and checksum > 0
        dropped = obj.bss.dropped

    c_rate, py_rate = statistics.median(c_rates), statistics.median(py_rates)
    print(f"record size        {dtype.itemsize} bytes, {args.records} records x {args.rounds} rounds")
    print(f"C count-only drain {c_rate / 1e6:8.1f} M records/s")
    print(f"memwatcher drain   {py_rate / 1e6:8.1f} M records/s (C copy + numpy decode)")
    print(f"ratio              {py_rate / c_rate:8.2f}  (target >= 0.4)")
    print(f"dropped            {dropped}")


if __name__ == "__main__":
    main()
