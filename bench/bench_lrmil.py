"""Synthetic LRMIL benchmark: teacher 20x vs 5x students (no KD, stage 2, stage 1 + 2) and timing.

Regenerates everything from the seed (synthetic slides, encoder pre-training, features, k-fold
MIL runs), then times `lrmil predict` on both paths. Writes OUT/results.json and OUT/results.md
(the table in bench/README.md). Same as `lrmil bench`.

    python bench/bench_lrmil.py --out bench_out/lrmil --seed 0
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

from lrmil.mil.benchmark import results_table, run_bench
from lrmil.mil.config import BenchConfig


def parse(argv: list[str] | None = None) -> BenchConfig:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(BenchConfig):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    return BenchConfig(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    print(results_table(run_bench(parse(argv))))


if __name__ == "__main__":
    main()
