"""The README's command reference keeps up with the CLIs: an option added to a command is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _options(app, command: str) -> set[str]:
    params = typer.main.get_command(app).commands[command].params
    return {o for p in params for o in p.opts if o.startswith("--")} - {"--help"}


def _block(start: str) -> str:
    """The fenced block holding `start`, or the paragraph from it to the next blank line."""
    at = README.index(start)
    if README.count("```", 0, at) % 2:  # inside a code block: to its end
        return README[at:README.index("```", at)]
    return README[at:README.find("\n\n", at)]


@pytest.mark.parametrize("command, start", [("analyze", "pulse analyze RECORDINGS... --out DIR"),
                                            ("segments", "- To check detections by ear, `pulse segments"),
                                            ("assess", "- To check the detector on your own site"),
                                            ("clips-from-annotations", "To retrain on long recordings you annotated"),
                                            ("activity", "- To see when each species sings")])
def test_every_option_of_the_field_commands_is_in_the_readme(command, start):
    from pulse.cli import app

    documented = set(re.findall(r"--[a-z][a-z0-9-]*", _block(start)))
    assert _options(app, command) - documented == set()


@pytest.mark.parametrize("cli", ["pulse", "lrmil"])
def test_every_command_is_named_in_the_readme(cli):
    from importlib import import_module

    app = import_module(f"{cli}.cli").app
    assert {name for name in typer.main.get_command(app).commands if f"{cli} {name}" not in README} == set()
