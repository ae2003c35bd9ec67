"""LRMIL in PyTorch against its ONNX exports in ONNX Runtime: ms per patch encoded, ms per bag classified.

Real tissue patches of a real slide (each path's own grid, cycled to `--patches`), the same model folder in
every runtime (`lrmil export` writes the ONNX ones, FP32 and with `--int8`), the same threads, median of
`--repeats` passes; for each ONNX folder also how far its features are from PyTorch's on those patches.

    lrmil export --out runs/lrmil_onnx --path both --mpp 0.5 --slide ../shared/data/slides/CMU-1-Small-Region.svs \
        --slide ../shared/data/slides/TCGA-CR-7395-01A-01-TS1-no-mpp.svs
    lrmil export --out runs/lrmil_int8 --path both --mpp 0.5 --int8 \
        --slide ../shared/data/slides/CMU-1-Small-Region.svs \
        --slide ../shared/data/slides/TCGA-CR-7395-01A-01-TS1-no-mpp.svs
    python bench/bench_lrmil_onnx.py --onnx fp32=runs/lrmil_onnx --onnx int8=runs/lrmil_int8 \
        --slide ../shared/data/slides/TCGA-CR-7395-01A-01-TS1-no-mpp.svs --mpp 0.5 --json bench/results/lrmil_onnx.json

(bench/results/lrmil_onnx_export.json is the INT8 folder's onnx.json; --mpp fills in the TCGA slide's missing scale,
the CMU slide keeps its own.)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from export.atomic import write_json
from lrmil.mil.bundle import load_path
from lrmil.onnx_export import slide_patches
from lrmil.predict import resolve_model_dir


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: first calls allocate
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--onnx", action="append", required=True,
                        help="NAME=FOLDER that `lrmil export --path both` wrote")
    parser.add_argument("--slide", required=True)
    parser.add_argument("--mpp", type=float, default=None)
    parser.add_argument("--patches", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bag", type=int, default=4096, help="patches in the bag timed through the MIL")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default="runs/bench_lrmil_onnx.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    result = {"slide": args.slide, "threads": args.threads, "batch_size": args.batch_size, "paths": {}}
    for name in ("student", "teacher"):
        runtimes = {"torch": load_path(resolve_model_dir(args.model), name),
                    **{label: load_path(folder, name, threads=args.threads)
                       for label, folder in (item.split("=", 1) for item in args.onnx)}}
        real = slide_patches([args.slide], runtimes["torch"], args.mpp, args.patches).astype(np.uint8)
        patches = real[np.arange(args.patches) % len(real)]
        bag = np.random.default_rng(0).normal(size=(args.bag, runtimes["torch"].mil.cfg.in_dim)).astype(np.float32)
        row = {"real_patches": int(len(real))}
        reference = runtimes["torch"].encode(real)
        for runtime, model in runtimes.items():
            encode = median_seconds(lambda: [model.encode(patches[i:i + args.batch_size])
                                             for i in range(0, len(patches), args.batch_size)], args.repeats)
            row[runtime] = {"encode_ms_per_patch": round(1000 * encode / len(patches), 3),
                            "mil_ms_per_bag": round(1000 * median_seconds(lambda: model.classify(bag), args.repeats),
                                                    2),
                            "features_max_abs_diff": float(np.abs(model.encode(real) - reference).max())}
        result["paths"][name] = row
        print(name, row)
    write_json(args.json, result)


if __name__ == "__main__":
    main()
