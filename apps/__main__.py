"""`python -m apps field` / `python -m apps lab`: serve one Gradio app, on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import typer

app = typer.Typer(help="Gradio apps: field (audio) and lab (slides).", no_args_is_help=True, add_completion=False)


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"  # local only; --host 0.0.0.0 exposes the app to the network
    port: int = 7860
    work_dir: str = ""  # where request outputs go; "" makes a fresh temporary folder


def builder(name: str) -> Callable:
    """The named app's `build`, importing that app only: the lab's imports (torch, ~490 MB) made the field server
    644 MB before its first request, against 157 MB for its own."""
    return importlib.import_module(f"apps.{name}").build


# Largest upload each app takes: some hours of field audio (16-bit 48 kHz mono is ~350 MB an hour); a large
# whole-slide image. Longer recordings and slide archives are for `pulse analyze` and `lrmil predict`.
MAX_UPLOAD = {"field": "2gb", "lab": "20gb"}


def launch(name: str, cfg: ServeConfig = ServeConfig(), block: bool = True):
    """Build and serve the named app; with block=False, return the running Blocks (call .close())."""
    blocks = builder(name)(cfg.work_dir or None)
    blocks.launch(server_name=cfg.host, server_port=cfg.port, share=False, inbrowser=False,
                  prevent_thread_lock=not block, max_file_size=MAX_UPLOAD[name])
    return blocks


_DEFAULTS = ServeConfig()
HOST = typer.Option(_DEFAULTS.host, help="Interface to bind; 0.0.0.0 exposes the app to the network.")
PORT = typer.Option(_DEFAULTS.port, help="TCP port.")
WORK_DIR = typer.Option(_DEFAULTS.work_dir, help="Folder for request outputs (default: a temporary folder).")


@app.command()
def field(host: str = HOST, port: int = PORT, work_dir: str = WORK_DIR) -> None:
    """Audio app: detections, scores and embeddings of one field recording."""
    launch("field", ServeConfig(host, port, work_dir))


@app.command()
def lab(host: str = HOST, port: int = PORT, work_dir: str = WORK_DIR) -> None:
    """Slide app: tissue mask, attention heatmap, top-k patches and the prediction of one slide."""
    launch("lab", ServeConfig(host, port, work_dir))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
