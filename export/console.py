"""What the commands print on stdout: a name the console's encoding cannot hold must not fail the command, and a
line that names files names a few of thousands."""

from __future__ import annotations

import sys


def escape_what_stdout_cannot_print() -> None:
    """Characters stdout's encoding cannot hold are printed as backslash escapes, as Python prints them on stderr.
    Where stdout is strict (a Linux UTF-8 locale other than C.UTF-8; a file on Windows, cp1252), an --out folder named
    in Cyrillic, or in Latin-1 bytes, raised UnicodeEncodeError at the summary line, after the work was done."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)  # a TextIOWrapper's; a test's stand-in may lack it
    if reconfigure is not None:
        reconfigure(errors="backslashreplace")


def first_three(names: list[str], separator: str = ", ") -> str:
    """The first three of `names`, then '...' where there are more: a line names a few of thousands."""
    return separator.join(names[:3]) + (f"{separator}..." if len(names) > 3 else "")


def summaries_on_one_line(app) -> None:
    """A Typer app's command list shows each docstring's first paragraph, and Rich keeps its line breaks: a summary
    wrapped at 120 columns in the source was cut mid-sentence in `--help`. Give each command that paragraph unbroken."""
    for command in app.registered_commands:
        if command.short_help is None and command.callback.__doc__:
            command.short_help = " ".join(command.callback.__doc__.split("\n\n")[0].split())
