"""`lrmil predict`: whole slides -> label, probabilities, attention heatmap and top-k patches.

The student path reads only 5x patches (the 20x grid is arithmetic on the tissue mask and is
never read); `path="teacher"` runs the 20x teacher for comparison. Each stage is timed
separately (tissue, patches, read, encode, mil), which is what the benchmark's speed-up uses.
A slide that fails becomes one row in OUT/errors.csv (this run's failures only) and the batch
goes on. OUT/predictions.csv lists every SLIDE.json in OUT, so a rerun on more slides adds to it, but not
the earlier prediction of a slide this run failed on (a file replaced by a broken copy must not keep its old answer).
A rerun (or a killed run run again) skips the slides whose outputs this model and these settings already
made from the same slide file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from export.artifact import sha256
from export.atomic import write_json
from export.folder_lock import sweep_killed_runs
from export.made_with import made_with, said_again, why_again
from lrmil.batch import run_batch
from lrmil.config import hash_record
from lrmil.geojson import save_attention_geojson
from lrmil.heatmap import overlay, percentiles, save_png, score_map, tile_grid, with_colour_bar, with_notice
from lrmil.mil.bundle import OnnxPathModel, PathModel, demo_model_dir, load_path
from lrmil.mil.config import PredictConfig
from lrmil.patching import GridLevel, make_grid, note_if_enlarged
from lrmil.slide import (SlideIds, SlideReader, SlideReadError, check_not_another_slides, open_slide, read_scaled,
                         slide_file_name, slide_id, slide_location, slide_source)
from lrmil.tissue import save_mask_png, thumbnail_size, tissue_mask

log = logging.getLogger(__name__)
IMAGES = ("mask", "heatmap", "topk")  # a prediction's image files, by their SLIDE.json keys
OUTPUTS = (*IMAGES, "geojson")  # every file a finished prediction has beside its SLIDE.json
RUN_CONFIG = "config.json"  # the run's settings, beside the slides' outputs
SUFFIXES = {"mask": "_mask.png", "heatmap": "_heatmap.png", "topk": "_topk.png", "geojson": "_attention.geojson",
            "json": ".json"}


def output_names(sid: str) -> dict[str, str]:
    """The slide's output files by their SLIDE.json keys ("json": SLIDE.json itself), named as an SD card, a USB
    drive or Windows takes them ('scan 12:00' as 'scan 12_00') and cut short where a slide named near 255 bytes
    would make them too long for the file system (`slide_file_name`)."""
    return {key: slide_file_name(sid, suffix) for key, suffix in SUFFIXES.items()}


class Stopwatch:
    """Seconds per named stage, in the order the stages ran."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.add(stage, now - self._last)
        self._last = now

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def restart(self) -> None:
        self._last = time.perf_counter()


def encode_patches(reader: SlideReader, level: GridLevel, model: PathModel | OnnxPathModel, cfg: PredictConfig,
                   clock: Stopwatch, desc: str) -> np.ndarray:
    """Features [N, D] of every patch of `level`; reading and encoding are timed apart."""
    chunks = []
    with tqdm(total=len(level), desc=desc, unit="patch", leave=False, disable=None) as bar:  # terminals only
        for start in range(0, len(level), cfg.batch_size):
            clock.restart()
            batch = np.stack([read_scaled(reader, (int(x), int(y)), level.size_level0, level.patch_px)
                              for x, y in level.coords[start:start + cfg.batch_size]])
            clock.lap("read")
            chunks.append(model.encode(batch))
            clock.lap("encode")
            bar.update(len(batch))
    return np.concatenate(chunks)


def run_key(cfg: PredictConfig, model_dir: Path) -> dict:
    """What decides a slide's outputs besides the slide: the model's files and the settings that change the
    outputs (not batch size, device or threads; the scale is added per slide, as applied). The files by their bytes,
    not by the folder's place or their times: a model folder copied elsewhere or reinstalled predicts nothing again."""
    files = sorted(p for p in model_dir.iterdir() if p.is_file())
    return {"model": [(p.name, sha256(p)) for p in files],
            "settings": {k: getattr(cfg, k) for k in ("path", "topk", "heatmap_px")}}


def slide_key(path: Path, cfg: PredictConfig, run: dict) -> str:
    """`run` (`run_key`) plus the scale this slide gets (a header read): adding --mpp for the slides without one
    does not redo the slides whose metadata decides."""
    with open_slide(path, cfg.mpp, cfg.override_mpp) as reader:
        return hash_record({**run, "mpp": reader.mpp})


def earlier_record(out: Path, sid: str) -> tuple[Path, dict]:
    """The SLIDE.json an earlier run wrote for the slide id `sid`, and what it holds ({} when there is none to
    read)."""
    path = out / output_names(sid)["json"]
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return path, {}
    return path, record if isinstance(record, dict) else {}


def why_again_of(record: dict, run: dict, cfg: PredictConfig, scale: float | None = None) -> str:
    """Why the slide's earlier prediction (`record`, its SLIDE.json) is made again as the model or settings changed
    (its key is not `run`'s at the scale it was made at) or its scale did ("" if none did): `scale`, the slide's
    now, once it is opened; before, where `scale_now` tells it."""
    if not record:
        return ""
    reasons = []
    if record.get("key") != hash_record({**run, "mpp": record.get("mpp")}):
        reasons.append(why_again(record.get("made_with"), made_with(run["model"], run["settings"])))
    if (scale := scale_now(record, cfg) if scale is None else scale) is not None and scale != record.get("mpp"):
        reasons.append(f"the scale changed (mpp {record.get('mpp')} -> {scale})")
    return " and ".join(reasons)


def scale_now(record: dict, cfg: PredictConfig) -> float | None:
    """The scale (um/px) the slide gets now where its SLIDE.json tells it without opening the slide: --mpp where it
    replaces the metadata, or where the record's came from --mpp for want of metadata. None: the metadata's, or not
    known without opening it."""
    if cfg.mpp is not None and (cfg.override_mpp or (record.get("mpp_source") == "--mpp"
                                                     and not record.get("override_mpp"))):
        return float(cfg.mpp)
    return None


def predicted_again(slides: list[Path], out: Path, run: dict, cfg: PredictConfig) -> Counter:
    """Why the slides an earlier run into `out` predicted from the same files are predicted again (`why_again_of`),
    read from their SLIDE.json before any slide is opened: said once, before the work (a scale only the slide tells,
    after an --override-mpp run, is said in the summary)."""
    ids, reasons = SlideIds(slides), Counter()
    for path in slides:
        record = earlier_record(out, ids.id_of(path))[1]
        with contextlib.suppress(OSError, SlideReadError):  # a slide gone or unreadable fails in the batch, said there
            if record.get("source") == slide_source(path) and (why := why_again_of(record, run, cfg)):
                reasons[why] += 1
    return reasons


def is_finished(out: Path, path: Path, key: str, record: dict) -> bool:
    """The slide's SLIDE.json (`record`) was made with `key` from this very file, and its images are all there."""
    try:
        return (record.get("key") == key and record.get("source") == slide_source(path)
                and all((out / record[output]).is_file() for output in OUTPUTS))
    except (OSError, KeyError, TypeError):
        return False


FEW_PATCHES = 8


def note_if_few_patches(path: Path, level: GridLevel) -> None:
    """One line for a slide with under FEW_PATCHES patches of tissue (a tiny biopsy, a small crop): its label then
    rests on those few, and one patch was predicted without a word. 8 is the top-k panel `predict` shows by default:
    below it the panel holds the whole tissue and attention has next to nothing to choose among. On 6 synthetic
    slides of 50 5x patches (`lrmil synth --size 8192`, demo model), 8 drawn at random gave the whole slide's label
    82% of the time, 1 patch 54% (chance: 50%), 16 patches 95%: there is no sharper line to draw."""
    if (n := len(level)) < FEW_PATCHES:
        log.warning("%s: only %d patch%s of tissue at %gx; the prediction rests on %s", path, n,
                    "" if n == 1 else "es", level.magnification, "it" if n == 1 else "them")


def predict_slide(path: str | Path, model: PathModel | OnnxPathModel, cfg: PredictConfig, out: str | Path,
                  key: str = "", sid: str | None = None, run: dict | None = None) -> dict:
    """Run one slide end to end and write SLIDE.json, SLIDE_mask.png (the tissue found, outlined on the
    thumbnail), SLIDE_heatmap.png, SLIDE_topk.png and SLIDE_attention.geojson (every patch's attention, for
    QuPath) (`key`, `slide_key`'s, is recorded so that a rerun can skip it, and `run`, the `run_key` it
    hashes, readable beside it as `made_with`, so that a rerun can say why it does not; `sid`: its id in the
    batch)."""
    path, out = Path(path), Path(out)
    sid = sid or slide_id(path)
    clock = Stopwatch()
    source = slide_source(path)
    with open_slide(path, cfg.mpp, cfg.override_mpp) as reader:
        thumb = reader.thumbnail(thumbnail_size(reader.dimensions, reader.mpp, model.tissue))
        mask = tissue_mask(thumb, model.tissue)
        clock.lap("tissue")
        grid = make_grid(mask, reader.dimensions, reader.mpp, reader.level_downsamples, model.patch)
        level = getattr(grid, model.name)
        note_if_enlarged(path, level, model.name, reader.mpp)
        clock.lap("patches")
        if len(level) == 0:
            raise ValueError(f"{path}: no tissue found, nothing to classify")
        note_if_few_patches(path, level)
        features = encode_patches(reader, level, model, cfg, clock, sid)
        clock.restart()
        probs, attention = model.classify(features)
        clock.lap("mil")
        seconds = {**clock.seconds, "total": sum(clock.seconds.values())}
        top = np.argsort(-attention)[: cfg.topk]
        top_patches = [read_scaled(reader, tuple(int(v) for v in level.coords[i]), level.size_level0, level.patch_px)
                       for i in top]
        view = reader.thumbnail(cfg.heatmap_px)
        mpp, mpp_source, dimensions = reader.mpp, reader.mpp_source, reader.dimensions
    labels, names = model.labels, output_names(sid)
    save_mask_png(out / names["mask"], thumb, mask)
    heat = score_map(level.coords, level.size_level0, percentiles(attention), dimensions, view.shape[:2])
    save_png(out / names["heatmap"], with_notice(with_colour_bar(overlay(view, heat)), model.notice))
    captions = [f"#{r + 1} attn {attention[i]:.3g}" for r, i in enumerate(top)]
    save_png(out / names["topk"], with_notice(tile_grid(top_patches, captions), model.notice))
    save_attention_geojson(out / names["geojson"], level.coords, level.size_level0, attention, dimensions)
    record = {
        "slide": str(path), "slide_id": sid, "model": cfg.model, "path": model.name,
        "magnification": level.magnification,
        "label": labels[int(probs.argmax())], "probabilities": {name: float(p) for name, p in zip(labels, probs)},
        "patches": int(len(level)), "seconds": {k: round(v, 4) for k, v in seconds.items()},
        "mpp": mpp, "mpp_source": mpp_source, "override_mpp": cfg.override_mpp,  # a rerun's scale, told unopened
        "enlargement": round(level.enlargement, 4),
        "top_patches": [{"x": int(level.coords[i][0]), "y": int(level.coords[i][1]),
                         "size_level0": level.size_level0, "attention": float(attention[i])} for i in top],
        **{key: names[key] for key in OUTPUTS}, "notice": model.notice,
        "key": key, "made_with": made_with(run["model"], run["settings"]) if run else None, "source": source,
    }
    write_json(out / names["json"], record)  # last: only a slide with all its outputs counts as done
    return record


def resolve_model_dir(model: str) -> Path:
    return demo_model_dir() if model == "demo" else Path(model)


def prediction_table(out: str | Path, failed: frozenset[str] = frozenset(),
                     ids: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per prediction record (SLIDE.json) in `out`, from this run or an earlier one, by slide id and slide
    file, leaving out the slide ids in `failed` and, for the slide files in `ids` (this run's, by location), any
    record under another id than theirs: an earlier run, given fewer folders, named 2023/S1/HE.svs HE where this
    one names it 2023_S1_HE beside 2024_S1_HE."""
    rows = []
    for path in sorted(Path(out).glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:  # a file of the user's, empty or not JSON: not a prediction
            log.warning("%s: left out of predictions.csv, not a prediction record (%s)", path, exc)
            continue
        if not isinstance(record, dict) or not {"slide_id", "probabilities"} <= record.keys():
            continue  # config.json and anything else that is not a prediction
        if path.name != output_names(str(record["slide_id"]))["json"]:  # a copy ('HE - Copy.json'): listed twice
            log.warning("%s: left out of predictions.csv, a record of slide %s not where lrmil predict writes it (%s)",
                        path, record["slide_id"], output_names(str(record["slide_id"]))["json"])
            continue
        if record["slide_id"] in failed:
            log.warning("%s: left out of predictions.csv, this run failed on the slide (%s)", path, record["slide"])
            continue
        source = record.get("source")
        location = source.get("path") if isinstance(source, dict) else None
        if (now := (ids or {}).get(location, record["slide_id"])) != record["slide_id"]:
            log.warning("%s: left out of predictions.csv, an earlier prediction of %s, which this run names %s",
                        path, location, now)
            continue
        rows.append({"slide_id": record["slide_id"], "slide": record.get("slide", ""), "label": record["label"],
                     "patches": record["patches"],
                     "seconds": record["seconds"]["total"],
                     **{f"p_{k}": v for k, v in record["probabilities"].items()},
                     # which run wrote the row: reruns into one --out with another path or model add to the table
                     **{k: record.get(k, "") for k in ("model", "path", "magnification", "mpp", "mpp_source")},
                     "notice": record.get("notice", "")})
    return pd.DataFrame(rows)


def run_predict(slides: list[Path], cfg: PredictConfig, out: str | Path) -> dict:
    """Predict every slide; bad slides go to OUT/errors.csv. Writes OUT/predictions.csv and RUN_CONFIG."""
    from lrmil.mil.metrics import write_predictions

    out, model_dir = Path(out), resolve_model_dir(cfg.model)
    model = load_path(model_dir, cfg.path, cfg.device, torch.get_num_threads())
    sweep_killed_runs(out)
    write_json(out / RUN_CONFIG, {**cfg.to_dict(), "model_dir": str(model_dir), "notice": model.notice})
    run, failed, ids = run_key(cfg, model_dir), set(), {}
    if cfg.resume and (again := predicted_again(slides, out, run, cfg)):
        log.info("%s", said_again(again, f"slide(s) an earlier run into {out} predicted are predicted again"))
    redone = Counter()  # the slides predicted again, by reason, counted as each is predicted (one that fails is not)

    def predict_unless_finished(path: Path, sid: str) -> bool:
        """True when the slide was predicted now, False when an earlier run's outputs were current."""
        if output_names(sid)["json"].lower() == RUN_CONFIG:  # Config.json too: a NAS share may not tell them apart
            raise SlideReadError(path, f"its id '{sid}' would write its {RUN_CONFIG} over the run's settings file "
                                       "(and be predicted again by every rerun); rename the file")
        earlier, record = earlier_record(out, sid)
        # Before the try: the id's outputs are the other file's, and its row stays in predictions.csv.
        check_not_another_slides(earlier, path, record.get("source"))
        ids[str(slide_location(path))] = sid
        try:
            key = slide_key(path, cfg, run)
            if cfg.resume and is_finished(out, path, key, record):
                return False
            made = predict_slide(path, model, cfg, out, key, sid, run)
        except Exception:
            failed.add(sid)  # its slide id is its own: run_batch refuses a second file with that id
            raise
        if cfg.resume and record.get("source") == made["source"] and (
                why := why_again_of(record, run, cfg, made["mpp"])):
            redone[why] += 1
        return True

    predicted, errors = run_batch(slides, predict_unless_finished, out, "predict", cfg.strict,
                                  desc=f"predict ({cfg.path})")
    table = prediction_table(out, frozenset(failed), ids)
    if len(table):
        write_predictions(out / "predictions.csv", table)
    else:  # nothing left to list: an older table would still show what this run failed on
        (out / "predictions.csv").unlink(missing_ok=True)
    return {"done": sum(predicted), "skipped": len(predicted) - sum(predicted), "redone": redone.total(),
            "redone_because": dict(redone.most_common()), **errors.summary(), "notice": model.notice}
