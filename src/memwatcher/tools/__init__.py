"""One module per report. Each defines:

* ``plan() -> kernel.Plan``: the hooks it needs and the variant it will use
  on this kernel (shown by ``memwatcher doctor``);
* ``register(app: typer.Typer)``: adds its subcommand to the CLI;
* ``USES_BPF = False`` where it loads no BPF program (it then needs no BPF privileges).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["REPORTS", "report_modules"]

REPORTS = ("procstat", "sysstat", "paf", "pr", "memleak", "oom", "cgroups")


def report_modules() -> dict[str, ModuleType]:
    """The reports this installation has, by name, in display order."""
    found = {}
    for name in REPORTS:
        try:
            found[name] = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
    return found
