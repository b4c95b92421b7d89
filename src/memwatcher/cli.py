"""The `memwatcher` command: one subcommand per report, plus `doctor`.

Exit codes: 0 success, 1 runtime error, 2 usage error, 77 missing privileges
or kernel support. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from . import __version__, doctor, libbpf
from .errors import MemwatcherError, NotSupportedError, PrivilegeError
from .objects import objects_dir
from .output import Column, OutputFormat, make_writer
from .tools import report_modules

EXIT_RUNTIME = 1
EXIT_UNSUPPORTED = 77

app = typer.Typer(
    help="eBPF memory observatory: per-process and system memory, page allocation, reclaim, leaks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"memwatcher {__version__}")
        typer.echo(f"libbpf {libbpf.libbpf_version()} from {libbpf.libbpf_path()}")
        typer.echo(f"BPF objects in {objects_dir()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None, typer.Option("--version", callback=_version, is_eager=True, help="Show versions and exit.")
    ] = None,
) -> None:
    pass


@app.command("doctor")
def doctor_command(
    output: Annotated[OutputFormat, typer.Option("--output", "-o", help="table or json.")] = OutputFormat.table,
) -> None:
    """Check what this kernel supports and which variant each report will use.

    Example: memwatcher doctor --output json
    """
    diagnosis = doctor.diagnose()
    if output == OutputFormat.json:
        typer.echo(json.dumps(diagnosis.to_json(), indent=2))
    else:
        writer = make_writer(
            output,
            [
                Column("check", "CHECK", left=True),
                Column("status", "STATUS", left=True),
                Column("detail", "DETAIL", left=True),
            ],
        )
        rows = [{"check": c.name, "status": "ok" if c.ok else "MISSING", "detail": c.detail} for c in diagnosis.checks]
        for plan in diagnosis.plans:
            detail = "; ".join(plan.reasons()) if not plan.runnable else plan.variant
            rows.append({"check": f"report {plan.report}", "status": "ok" if plan.runnable else "NO", "detail": detail})
        writer.write(rows, title=f"kernel {diagnosis.kernel_release}, libbpf {diagnosis.libbpf_version}")
    if not diagnosis.all_runnable:
        raise typer.Exit(EXIT_RUNTIME)


for _module in report_modules().values():
    _module.register(app)


def main() -> None:
    """Console entry point: run the app, turning known errors into one line."""
    try:
        app()
    except (PrivilegeError, NotSupportedError) as e:
        print(f"memwatcher: {e}", file=sys.stderr)
        sys.exit(EXIT_UNSUPPORTED)
    except MemwatcherError as e:
        print(f"memwatcher: {e}", file=sys.stderr)
        sys.exit(EXIT_RUNTIME)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(EXIT_RUNTIME)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
