"""`pulse` command line: thin wrappers that build a config and call one library function.

Each subcommand lives next to the code it drives (pulse/analyze.py, pulse/train/, ...); this
file only parses flags. Run `pulse --help` for the list.
"""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="PULSE: Orthoptera song detection for field recordings.")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
