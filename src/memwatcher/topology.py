"""The running kernel's NUMA nodes: which node ids it can have, and which hold memory.

Read from ``/sys/devices/system/node`` (node lists such as "0", "0-3", "0,2-5").
A kernel built without NUMA support has no such directory: node 0 only.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["NODE_DIR", "node_id_count", "node_ids", "parse_node_list"]

NODE_DIR = Path("/sys/devices/system/node")


def parse_node_list(text: str) -> list[int]:
    """Node ids of a kernel node list ("0", "0-3", "0,2-5"; empty: none)."""
    ids: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        ids.extend(range(int(lo), int(hi or lo) + 1))
    return ids


def node_ids(state: str = "possible") -> list[int]:
    """The node ids in a state the kernel lists: "possible", "online", "has_memory", ..."""
    try:
        return parse_node_list((NODE_DIR / state).read_text())
    except OSError:
        return [0]


def node_id_count() -> int:
    """The kernel's nr_node_ids: the highest possible node id + 1, the size of per-node tables."""
    return max(node_ids("possible"), default=0) + 1
