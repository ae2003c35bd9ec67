"""The command reference (docs/*.md, README.md) keeps up with the CLIs: an option added to a command is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main

ROOT = Path(__file__).resolve().parents[1]
# The reference first: the README's overview repeats some commands in short, without their options.
DOCS = [p.read_text(encoding="utf-8") for p in [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]]


def _options(app, command: str) -> set[str]:
    params = typer.main.get_command(app).commands[command].params
    return {o for p in params for o in p.opts if o.startswith("--")} - {"--help"}


def _block(start: str) -> str:
    """The fenced block holding `start`, or the paragraph from it to the next blank line (first file holding it)."""
    text = next(t for t in DOCS if start in t)
    at = text.index(start)
    if text.count("```", 0, at) % 2:  # inside a code block: to its end
        return text[at:text.index("```", at)]
    return text[at:text.find("\n\n", at)]


@pytest.mark.parametrize("command, start", [("analyze", "pulse analyze RECORDINGS... --out DIR"),
                                            ("segments", "- To check detections by ear, `pulse segments"),
                                            ("assess", "- To check the detector on your own site"),
                                            ("clips-from-annotations", "To retrain on long recordings you annotated"),
                                            ("activity", "- To see when each species sings")])
def test_every_option_of_the_field_commands_is_documented(command, start):
    from pulse.cli import app

    documented = set(re.findall(r"--[a-z][a-z0-9-]*", _block(start)))
    assert _options(app, command) - documented == set()


@pytest.mark.parametrize("cli", ["pulse", "lrmil"])
def test_every_command_is_named_in_the_docs(cli):
    from importlib import import_module

    app = import_module(f"{cli}.cli").app
    commands = typer.main.get_command(app).commands
    assert {name for name in commands if not any(f"{cli} {name}" in text for text in DOCS)} == set()
