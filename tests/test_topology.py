"""NUMA node lists as the kernel writes them, and the machine's own against /proc/zoneinfo."""

from __future__ import annotations

import re
from pathlib import Path

from memwatcher.topology import node_id_count, node_ids, parse_node_list


def test_parse_node_list() -> None:
    assert parse_node_list("0\n") == [0]
    assert parse_node_list("0-2,5") == [0, 1, 2, 5]
    assert parse_node_list("0,2-5,7") == [0, 2, 3, 4, 5, 7]
    assert parse_node_list("") == []


def test_nodes_with_memory_are_zoneinfos_nodes() -> None:
    # /proc/zoneinfo lists the zones of every node that has memory (an independent reader).
    with_zones = {int(n) for n in re.findall(r"^Node (\d+), zone", Path("/proc/zoneinfo").read_text(), re.M)}
    assert set(node_ids("has_memory")) <= with_zones
    assert max(with_zones) < node_id_count()
    assert set(node_ids("has_memory")) <= set(node_ids("possible"))
