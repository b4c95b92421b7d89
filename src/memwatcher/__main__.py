"""Entry point of the ``memwatcher`` and ``mem_watcher`` commands and of ``python -m memwatcher``.

Signals are set up before the command's own imports, which take about half
a second: a SIGTERM or Ctrl-C meanwhile ends the command as one during
loading does (exit 143 or 130, no traceback), also when Python dropped the
exception the signal raised or wrapped it in another one
(memwatcher.runner.raise_on_signals). Once the
command has returned (everything closed, its exit status known), both are
ignored: one arriving while the interpreter shuts down would be raised where
Python can only print it, or kill the process after its work is done
(memwatcher's threads are daemons: nothing holds the shutdown up).
"""

from __future__ import annotations

import importlib
import signal
import sys


def _run(module: str) -> None:
    from .runner import raise_on_signals, received_signal

    try:
        try:
            raise_on_signals()
            entry = importlib.import_module(module).main
            if (signum := received_signal()) is not None:  # its exception was dropped during the imports
                sys.exit(128 + signum)
            entry()
        except KeyboardInterrupt:
            sys.exit(130)
        except Exception:
            # The signal's exception, raised inside a hook Python wraps (a class's
            # __set_name__ in an import raises RuntimeError "from" it): still a signal.
            if (signum := received_signal()) is not None:
                sys.exit(128 + signum)
            raise
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)


def main() -> None:
    """``memwatcher``: one subcommand per report (memwatcher.cli)."""
    _run("memwatcher.cli")


def compat_main() -> None:
    """``mem_watcher``: the original tool's short flags (memwatcher.compat)."""
    _run("memwatcher.compat")


if __name__ == "__main__":
    main()
