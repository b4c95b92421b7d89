#!/usr/bin/env python3
"""Generate the memwatcher(1) man page from the CLI definition itself.

.venv/bin/python scripts/gen-man.py > docs/memwatcher.1
"""

from __future__ import annotations

import sys

from memwatcher import __version__
from memwatcher.cli import root_command


def esc(text: str) -> str:
    """Escape text for roff: backslashes, and a leading dot or quote."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in (text or "").split("\n\n") if p.strip()]


def option_lines(cmd, ctx) -> list[str]:  # typer vendors click: its Command and Context
    out = []
    for param in cmd.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None or param.name in ("help", "install_completion", "show_completion"):
            continue
        names, help_text = record
        out += [".TP", f"\\fB{esc(names)}\\fR", esc(" ".join(help_text.split()))]
    return out


def main() -> None:
    root = root_command(load_all=True)
    ctx = root.context_class(root, info_name="memwatcher")
    lines = [
        f'.TH MEMWATCHER 1 "" "memwatcher {__version__}" "User Commands"',
        ".SH NAME",
        "memwatcher \\- eBPF memory observatory for Linux",
        ".SH SYNOPSIS",
        "\\fBmemwatcher\\fR [\\fIOPTIONS\\fR] [\\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIinterval\\fR [\\fIcount\\fR]]]",
        ".SH DESCRIPTION",
    ]
    for p in paragraphs(root.help):
        lines += [esc(p), ".PP"]
    lines += [".SH OPTIONS", *option_lines(root, ctx), ".SH COMMANDS"]
    for name, cmd in sorted(root.commands.items()):
        sub_ctx = cmd.context_class(cmd, info_name=name, parent=ctx)
        lines += [f".SS {esc(name)}"]
        for p in paragraphs(cmd.help):
            lines += [esc(p), ".PP"]
        lines += option_lines(cmd, sub_ctx)
    lines += [
        ".SH EXIT STATUS",
        "0 success; 1 runtime error; 2 usage error; 77 missing privileges or kernel support;",
        "126 or 127 memleak \\-\\-command cannot run or does not exist (after it ran, its own status).",
        ".SH SEE ALSO",
        "\\fBmem_watcher\\fR (the original tool's flags, mapped onto these commands), the pages under docs/.",
    ]
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
