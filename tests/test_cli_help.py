"""`pulse --help` and `lrmil --help` list each command with the first paragraph of its docstring, and a command's
`--help` shows all of it; Rich keeps a paragraph's line breaks, which cut a summary mid-sentence ("... a folder of its
species, to" / "retrain on ...") and an exit-status line ("2 nothing" / "to assess or bad option.")."""

import re

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from lrmil.cli import app as lrmil_app
from pulse.cli import app as pulse_app


@pytest.mark.parametrize("app", [pulse_app, lrmil_app], ids=["pulse", "lrmil"])
def test_command_list_breaks_no_summary_mid_sentence(app):
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    assert result.exit_code == 0
    commands = result.output[result.output.index("Commands"):]
    rows = [re.sub(r"^│\s*|\s*│$", "", line) for line in commands.splitlines()[1:] if line.startswith("│")]
    names = set(get_command(app).commands)
    # at 400 columns every summary fits on its command's row: a row without a command name is a summary broken off
    assert rows and all(row.split(" ", 1)[0] in names for row in rows), "\n".join(rows)


@pytest.mark.parametrize("app", [pulse_app, lrmil_app], ids=["pulse", "lrmil"])
def test_a_command_help_keeps_each_paragraph_of_its_docstring_on_one_line(app):
    import inspect

    for name, command in get_command(app).commands.items():
        result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "1000", "TERMINAL_WIDTH": "1000"})
        paragraphs = inspect.getdoc(command.callback).split("\n\n")
        for paragraph in paragraphs[1:]:  # at 1000 columns each is one line of the help, as in the docstring
            assert " ".join(paragraph.split()) in result.output, (name, paragraph)
