"""The `memwatcher` command: one subcommand per report, plus `doctor`.

Exit codes: 0 success, 1 runtime error, 2 usage error, 77 missing privileges
or kernel support; 130 or 143 for SIGINT or SIGTERM before a report's own
handler is in place. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import importlib
import json
import resource
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from .errors import MemwatcherError, NotSupportedError, PrivilegeError
from .options import Count, Duration, Interval, schedule
from .output import Column, OutputFormat, make_writer
from .runner import raise_on_signals, run_periodic, stop_on_signals
from .tools import REPORTS

EXIT_RUNTIME = 1
EXIT_UNSUPPORTED = 77

# Commands defined by their own module (its register(app)), imported only when named:
# `memwatcher procstat` never imports memleak's symbolizer or the exporter's HTTP server.
_COMMAND_MODULES = {**{name: f"{__package__}.tools.{name}" for name in REPORTS}, "export": f"{__package__}.exporter"}


class _LazyCommands(TyperGroup):
    """The root command group, loading each module-defined command on first use."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in _COMMAND_MODULES if n not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        module = _COMMAND_MODULES.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            sub = typer.Typer(rich_markup_mode=None)
            importlib.import_module(module).register(sub)
            self.add_command(typer.main.get_command(sub), cmd_name)
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    cls=_LazyCommands,
    help="eBPF memory observatory: per-process and system memory, page allocation, reclaim, leaks, OOM kills.\n\n"
    "Without a command, runs the live dashboard (memwatcher top). Periodic reports also take "
    "BCC-style positional arguments: memwatcher procstat 2 10 = every 2 s, 10 samples.\n\n"
    "Exit codes: 0 ok, 1 runtime error, 2 usage error, 77 missing privileges or kernel support, "
    "126 or 127 the command cannot run or does not exist (memleak --command; after it ran, its own status).",
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    add_completion=True,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from . import __version__, libbpf
        from .objects import objects_dir

        typer.echo(f"memwatcher {__version__}")
        typer.echo(f"libbpf {libbpf.libbpf_version()} from {libbpf.libbpf_path()}")
        typer.echo(f"BPF objects in {objects_dir()}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool | None, typer.Option("--version", callback=_version, is_eager=True, help="Show versions and exit.")
    ] = None,
) -> None:
    if ctx.invoked_subcommand is None:
        top_command()


@app.command("top")
def top_command(
    interval: Interval = 2.0,
    duration: Duration = None,
    count: Count = None,
    top: Annotated[int, typer.Option("--top", "-n", min=1, help="Processes to show.")] = 10,
    plain: Annotated[bool, typer.Option("--plain", help="Periodic plain text even on a terminal.")] = False,
) -> None:
    """Live dashboard: system memory, top processes, reclaim, allocation failures.

    Example: memwatcher top --interval 1 --top 15
    """
    from .dashboard import Dashboard, fancy_terminal, render_rich, render_text
    from .kernel import require_bpf
    from .progress import slow_step

    require_bpf()
    with stop_on_signals() as stop, ExitStack() as stack:
        with slow_step("loading and attaching the procstat, sysstat, pr, paf and oom programs..."):
            board = stack.enter_context(Dashboard(top=top))
        last: list = []
        live = None
        if fancy_terminal() and not plain:
            from rich.live import Live

            live = stack.enter_context(Live(render_rich(board.sample()), auto_refresh=False, transient=True))

        def refresh() -> None:
            state = board.sample()
            last[:] = [state]
            if live is not None:
                live.update(render_rich(state), refresh=True)
            else:
                typer.echo(render_text(state))

        run_periodic(schedule(interval, duration, count), refresh, stop)
        if live is not None:
            live.stop()
        if last and live is not None:
            typer.echo("final summary:\n" + render_text(last[0]))


@app.command("doctor")
def doctor_command(
    output: Annotated[OutputFormat, typer.Option("--output", "-o", help="table or json.")] = OutputFormat.table,
    btf: Annotated[
        Path | None,
        typer.Option(
            "--btf",
            help="Instead, check the BPF objects against another kernel's BTF (a vmlinux ELF or raw BTF file, "
            "e.g. a copy of its /sys/kernel/btf/vmlinux): CO-RE relocations and hooks, without booting it.",
            metavar="FILE",
        ),
    ] = None,
) -> None:
    """Check what this kernel supports and which variant each report will use.

    Example: memwatcher doctor --output json; memwatcher doctor --btf vmlinux-6.1.btf
    """
    from . import doctor

    if btf is not None:
        _doctor_btf(btf, output)
        return
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
            runs_with = [plan.variant, *(f"without {hook}" for hook in plan.without())]
            detail = "; ".join(plan.reasons() if not plan.runnable else runs_with)
            rows.append({"check": f"report {plan.report}", "status": "ok" if plan.runnable else "NO", "detail": detail})
        writer.write(rows, title=f"kernel {diagnosis.kernel_release}, libbpf {diagnosis.libbpf_version}")
    if not diagnosis.all_runnable:
        raise typer.Exit(EXIT_RUNTIME)


def _doctor_btf(btf: Path, output: OutputFormat) -> None:
    from . import corecheck
    from .kernel import require_bpf

    if not btf.is_file():
        raise typer.BadParameter(f"no such file: {btf}", param_hint="--btf")
    require_bpf()
    checks = corecheck.check_btf(btf)
    if output == OutputFormat.json:
        typer.echo(json.dumps({"btf": str(btf), "objects": {c.name: c.to_json() for c in checks}}, indent=2))
    else:
        writer = make_writer(
            output,
            [
                Column("object", "OBJECT", left=True),
                Column("status", "STATUS", left=True),
                Column("relocations", "RELOCATIONS"),
                Column("detail", "DETAIL", left=True),
            ],
        )
        rows = []
        for c in checks:
            details = [c.error] if c.error else []
            details += [f"UNGUARDED in {a.program}: {a.spec}" for a in c.absent if a.verdict == "unguarded"]
            for verdict, label in (("guarded", "absent, existence-checked"), ("alternative", "absent, other layout")):
                specs = sorted({a.spec for a in c.absent if a.verdict == verdict})
                details += [f"{label}: {', '.join(specs)}"] if specs else []
            details += [f"hooks missing: {', '.join(c.missing_hooks)}"] if c.missing_hooks else []
            rows.append(
                {
                    "object": c.name,
                    "status": "ok" if c.ok else "FAIL",
                    "relocations": c.relocations,
                    "detail": "; ".join(details),
                }
            )
        writer.write(rows, title=f"CO-RE check against {btf}")
    if not all(c.ok for c in checks):
        raise typer.Exit(EXIT_RUNTIME)


@app.command("report")
def report_command(
    jsonl: Annotated[
        Path,
        typer.Argument(
            help="memleak's saved JSON lines (memwatcher memleak --output json), - for stdin.", metavar="JSONL"
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.", metavar="FILE")],
) -> None:
    """A self-contained HTML report (flame graph, memory over time, stacks, run) from memleak's JSON lines.

    Example: memwatcher memleak -p 1234 -d 60 -o json > leaks.jsonl; memwatcher report leaks.jsonl -o leaks.html
    """
    from .htmlreport import history_from_jsonl, write_report
    from .output import check_writable, human_bytes

    if (problem := check_writable(output)) is not None:
        raise typer.BadParameter(problem, param_hint="--output")
    try:
        with ExitStack() as stack:
            lines = sys.stdin if str(jsonl) == "-" else stack.enter_context(open(jsonl, encoding="utf-8"))
            history = history_from_jsonl(lines, source=str(jsonl))
    except UnicodeDecodeError:
        raise MemwatcherError(f"{jsonl} is not text (memleak's JSON lines are)") from None
    except OSError as e:
        raise MemwatcherError(f"cannot read {jsonl}: {e.strerror}") from None
    size_bytes = write_report(history, output)
    print(f"memwatcher: {output} written ({human_bytes(size_bytes)}, {history.intervals} reads)", file=sys.stderr)


def root_command(load_all: bool = False) -> Any:
    """The click command behind ``app``; ``load_all`` imports every command (man page, tests)."""
    root = typer.main.get_command(app)
    if load_all:
        for name in root.list_commands(None):
            root.get_command(None, name)
    return root


def _bcc_positionals(root: Any, argv: list[str]) -> list[str]:
    """Rewrite BCC-style ``CMD [options] interval [count]`` into ``--interval``/``--count``.

    Which options take a value is read from the command's own definition, so
    ``procstat --top 5 2 10`` means top 5, every 2 s, 10 samples.
    """
    if not argv or argv[0].startswith("-"):
        return argv
    sub = root.get_command(None, argv[0])
    names = {n for p in (sub.params if sub else []) for n in getattr(p, "opts", [])}
    if sub is None or "--interval" not in names:
        return argv
    takes_value = {
        n for p in sub.params if not getattr(p, "is_flag", True) and not getattr(p, "count", False) for n in p.opts
    }
    head, numbers, i = [argv[0]], [], 1
    while i < len(argv):
        token = argv[i]
        if token == "--":
            head += argv[i:]
            break
        if token in takes_value:
            head += argv[i : i + 2]
            i += 2
            continue
        try:
            float(token)
            numbers.append(token)
        except ValueError:
            head.append(token)
        i += 1
    if len(numbers) > 2:
        return argv  # let the command report the extra arguments
    flags = [*(["--interval", numbers[0]] if numbers else []), *(["--count", numbers[1]] if len(numbers) > 1 else [])]
    return head + flags


def _help_text(root: Any, args: list[str]) -> str | None:
    """The help ``memwatcher [COMMAND] -h`` asks for, formatted without parsing the other options.

    typer imports pydantic (~75 ms, a quarter of the start-up) to process any
    option, --help included; help needs none of it. None: not a plain help request.
    """
    words = args[: args.index("--")] if "--" in args else args
    if not any(w in ("-h", "--help") for w in words):
        return None
    ctx = root.context_class(root, info_name="memwatcher", **root.context_settings)
    sub = root.get_command(ctx, words[0]) if words and not words[0].startswith("-") else None
    if sub is None:
        return None if words and not words[0].startswith("-") else root.get_help(ctx)
    return sub.get_help(sub.context_class(sub, info_name=words[0], parent=ctx))


def _run() -> None:
    root = root_command()
    args = _bcc_positionals(root, sys.argv[1:])
    help_text = _help_text(root, args)
    if help_text is not None:
        print(help_text)
        sys.exit(0)
    try:
        status = root.main(args=args, prog_name="memwatcher", standalone_mode=False)
    except Exception as e:
        if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):
            raise
        # A usage error (click's, vendored by typer): one line, exit 2.
        known = root.list_commands(None)
        command = next((a for a in args if a in known), "")
        hint = f"memwatcher {command} --help" if command else "memwatcher --help"
        print(f"memwatcher: {e.format_message()} (see {hint})", file=sys.stderr)
        sys.exit(e.exit_code)
    sys.exit(status if isinstance(status, int) else 0)


def main() -> None:
    """Run the app, turning known errors into one line (``memwatcher.__main__`` is the console entry)."""
    # SIGINT or SIGTERM before a report's own handler is in place (e.g. while
    # loading): unwind through every `with` block, so whatever was loaded is closed.
    raise_on_signals()
    # One fd per --pid (pidfds), per exporter client, per probe link: the soft
    # limit (often 1024) is a default, not a policy; nothing here uses select(2).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        _run()
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
