"""Do the exported graphs load and give the same answers in the ONNX Runtime a device has (docs/pulse.md, "Which ONNX
Runtime"; bench/README.md, "ONNX Runtime versions")?

Three steps. `run` imports numpy and onnxruntime only, so it runs in a throwaway venv holding one old version,
as a deployment would; `prepare` and `compare` run in the project's venv:

    .venv/bin/python bench/ort_versions.py prepare --out /tmp/ortv
    python3.11 -m venv /tmp/ort1163 && /tmp/ort1163/bin/pip install "numpy<2" onnxruntime==1.16.3
    /tmp/ort1163/bin/python bench/ort_versions.py run --out /tmp/ortv pulse/assets/*/model.onnx EXPORTS/*.onnx
    .venv/bin/python bench/ort_versions.py run --out /tmp/ortv ...the same graphs...   # the reference
    .venv/bin/python bench/ort_versions.py compare --out /tmp/ortv --reference 1.32.0

`prepare` cuts real recordings into windows as docs/pulse.md's "Running `model.onnx` without PULSE" says (3 s without
overlap, the last zero-padded if it holds 1 s, quiet windows raised to -20 dBFS by at most 40 dB) and reads real
tissue patches as `lrmil predict` does. `run` feeds each graph by its input's name: "waveform" the windows,
"patches" the patches, "features" what the encoder graph beside it (`X_mil.onnx` beside `X_encoder.onnx`) gave.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SONGS = "../shared/data/audio/insectset32"
SLIDES = ("../shared/data/slides/CMU-1-Small-Region.svs", "../shared/data/slides/TCGA-CR-7395-01A-01-TS1-no-mpp.svs")


def readme_windows(audio: np.ndarray, sample_rate: int, window: int, floor_dbfs: float, max_raise_db: float):
    """docs/pulse.md's recipe, in numpy, so that the check follows what a deployment without PULSE is told."""
    floor = 10 ** (floor_dbfs / 20)
    for start in range(0, len(audio), window):
        part = audio[start:start + window]
        if len(part) < sample_rate:
            break
        cut = np.zeros(window, np.float32)
        cut[:len(part)] = part
        peak = np.abs(cut).max()
        yield cut * min(floor / peak, 10 ** (max_raise_db / 20)) if 0 < peak < floor else cut


def prepare(out: Path, recordings: int, patches: int) -> None:
    from lrmil.mil.bundle import load_path
    from lrmil.onnx_export import slide_patches
    from pulse.config import LEVEL_FLOOR_DBFS, MAX_RAISE_DB
    from pulse.discovery import find_audio
    from pulse.io import read_audio

    files = [path for path, _ in find_audio([SONGS])]
    files = [files[i] for i in np.linspace(0, len(files) - 1, recordings).round().astype(int)]
    windows = [w for f in files for w in readme_windows(read_audio(f, 44100), 44100, 132300, LEVEL_FLOOR_DBFS,
                                                        MAX_RAISE_DB)]
    demo = Path(__file__).resolve().parents[1] / "lrmil" / "assets" / "demo_model"
    tissue = slide_patches(list(SLIDES), load_path(demo, "student"), 0.5, patches)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "inputs.npz", waveform=np.stack(windows), patches=tissue)
    print(f"{len(windows)} windows of {len(files)} recordings, {len(tissue)} tissue patches -> {out / 'inputs.npz'}")


def run(out: Path, graphs: list[str], threads: int) -> None:
    import onnxruntime as ort

    inputs = np.load(out / "inputs.npz")
    outputs, report = {}, {}
    for graph in graphs:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            feed = outputs[graph.replace("_mil.onnx", "_encoder.onnx")][0] if name == "features" else inputs[name]
            result = session.run(None, {name: feed})
            outputs[graph] = result
            report[graph] = {o.name: r.tolist() for o, r in zip(session.get_outputs(), result)}
        except Exception as exc:  # a graph this version refuses (or fails to run) is the finding
            report[graph] = {"error": str(exc).strip().splitlines()[-1].rsplit(") ", 1)[-1]}  # past the C++ signature
    path = out / f"onnxruntime-{ort.__version__}.json"
    path.write_text(json.dumps({"onnxruntime": ort.__version__, "numpy": np.__version__, "threads": threads,
                                "graphs": report}))
    print(f"{sum('error' not in r for r in report.values())} of {len(graphs)} graphs ran -> {path}")


def compare(out: Path, reference: str) -> None:
    """Max |difference| from the reference version's outputs: a row per graph and output, a column per version."""
    runs = {json.loads(p.read_text())["onnxruntime"]: json.loads(p.read_text())["graphs"]
            for p in out.glob("onnxruntime-*.json")}
    versions = sorted(runs, key=lambda v: tuple(int(x) for x in v.split(".")))
    print("| graph: output | " + " | ".join(versions) + " |\n|---|" + "---|" * len(versions))
    for graph, expected in runs[reference].items():
        for output, values in expected.items():
            cells = [f"{np.abs(np.asarray(runs[v][graph][output]) - np.asarray(values)).max():.1e}"
                     if output in runs[v].get(graph, {}) else "fails" for v in versions]
            print(f"| {graph}: {output} | " + " | ".join(cells) + " |")
    for version in versions:
        for graph, got in runs[version].items():
            if "error" in got:
                print(f"{version} {graph}: {got['error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("prepare", "run", "compare"))
    parser.add_argument("graphs", nargs="*", help="run: the ONNX files")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--recordings", type=int, default=12, help="prepare: InsectSet32 recordings, spread")
    parser.add_argument("--patches", type=int, default=24, help="prepare: tissue patches of the two slides")
    parser.add_argument("--threads", type=int, default=2, help="run: ONNX Runtime intra-op threads")
    parser.add_argument("--reference", default="1.32.0", help="compare: the version the others are measured from")
    args = parser.parse_intermixed_args()
    if args.step == "prepare":
        prepare(args.out, args.recordings, args.patches)
    elif args.step == "run":
        run(args.out, args.graphs, args.threads)
    else:
        compare(args.out, args.reference)


if __name__ == "__main__":
    main()
