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


def help_paragraphs_unbroken(app) -> None:
    """Rich keeps a docstring's line breaks in `--help`: a summary wrapped at 120 columns in the source was cut
    mid-sentence in the command list, and an exit-status line in a command's help. Give each command its docstring
    with every paragraph on one line, for the terminal to wrap."""
    import inspect

    for command in app.registered_commands:
        if command.help is None and command.callback.__doc__:
            paragraphs = [" ".join(paragraph.split()) for paragraph in inspect.getdoc(command.callback).split("\n\n")]
            command.short_help = command.short_help or paragraphs[0]
            command.help = "\n\n".join(paragraphs)
