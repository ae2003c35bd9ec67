"""Train several PULSE configs side by side, e.g. on one GPU, and collect their results.

    python bench/sweep.py configs/sweep_augment.json --out runs/sweep --device cuda --parallel 8 --workers 2

A sweep file names a base TrainConfig and, per run, only the settings that differ from it
(nested keys such as "model" merge, they do not replace):

    {"base": "configs/pulse_default.json", "set": {...every run...}, "runs": {"name": {...}, ...}}

`--set KEY=JSON` overrides a setting of every run from the command line (data paths on another
machine, say). Each run is an ordinary `pulse train` in OUT/NAME; OUT/NAME.json is its config, so
any run can be repeated alone. A run still going at `--deadline` seconds is stopped: its folder
keeps the model of its last finished epoch (and can be resumed). OUT/sweep.json records each
run's exit status and wall time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from export.atomic import write_json  # noqa: E402
from pulse.config import TrainConfig  # noqa: E402


def merge(base: dict, changes: dict) -> dict:
    """`base` with `changes` applied; dictionaries merge key by key."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def unknown_keys(changes: dict, known: dict, prefix: str = "") -> list[str]:
    """Keys of `changes` that `known` (a config as a dict) lacks: typos would otherwise be ignored."""
    out = []
    for key, value in changes.items():
        if key not in known:
            out.append(prefix + key)
        elif isinstance(value, dict) and isinstance(known[key], dict):
            out += unknown_keys(value, known[key], f"{prefix}{key}.")
    return out


def run_configs(sweep: dict, overrides: dict) -> dict[str, TrainConfig]:
    base = json.loads((REPO / sweep["base"]).read_text())
    common = merge(sweep.get("set", {}), overrides)
    configs = {}
    for name, changes in sweep["runs"].items():
        configs[name] = TrainConfig.from_dict(merge(merge(base, changes), common))
        unknown = unknown_keys(merge(changes, common), configs[name].to_dict())
        if unknown:
            raise SystemExit(f"sweep run {name}: unknown setting(s) {', '.join(unknown)}")
    return configs


def parse_set(items: list[str]) -> dict:
    """["a.b=1", 'c="x"'] -> {"a": {"b": 1}, "c": "x"}; a value that is not JSON is taken as a string."""
    out: dict = {}
    for item in items:
        key, _, text = item.partition("=")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument("--workers", type=int, default=0, help="batch-drawing threads per run")
    parser.add_argument("--deadline", type=float, default=0, help="stop runs still going after this many seconds")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=JSON")
    parser.add_argument("--only", nargs="*", default=None, help="run only these names")
    args = parser.parse_args()

    configs = run_configs(json.loads(args.sweep.read_text()), parse_set(args.overrides))
    if args.only is not None:
        configs = {k: v for k, v in configs.items() if k in args.only}
    args.out.mkdir(parents=True, exist_ok=True)
    queue = list(configs)
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    results: dict[str, dict] = {}
    start = time.time()
    while queue or running:
        while queue and len(running) < args.parallel:
            name = queue.pop(0)
            config_path = args.out / f"{name}.json"
            write_json(config_path, configs[name].to_dict())
            log = open(args.out / f"{name}.log", "w")
            command = [sys.executable, "-m", "pulse.cli", "train", "--config", str(config_path), "--out",
                       str(args.out / name), "--device", args.device, "--workers", str(args.workers)]
            running[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO), time.time())
            print(f"started {name}", flush=True)
        time.sleep(1.0)
        for name, (process, began) in list(running.items()):
            late = args.deadline and time.time() - start > args.deadline
            if process.poll() is None and late:
                process.terminate()
                process.wait()
            if process.poll() is not None:
                results[name] = {"returncode": process.returncode, "wall_s": round(time.time() - began, 1),
                                 "stopped_at_deadline": bool(late and process.returncode != 0)}
                print(f"finished {name}: {results[name]}", flush=True)
                del running[name]
        write_json(args.out / "sweep.json", results)


if __name__ == "__main__":
    main()
