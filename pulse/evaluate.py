"""`pulse evaluate`: how well a model names species in 3 s excerpts, clean and in noise.

The validation clips are cut into consecutive 3 s excerpts (the unit a user's recordings are
analysed in), scored as they are and mixed into soundscapes that training never saw, at each
SNR of EvalConfig. Excerpts listed in `EvalConfig.exclude_excerpts` (checked by eye: no song in
them, e.g. the 10 s between two chirps of a Dark Bush-cricket) are left out, since no detector
can name a species from its silence. Detection AUC asks whether the best species score separates
excerpts with a song from windows of pure soundscape. Any artefact `export.predictor.load_predictor` opens
(ONNX, safetensors) can be evaluated, and training calls `evaluate` on its live model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from sklearn.metrics import (accuracy_score, average_precision_score, confusion_matrix, f1_score,
                             precision_recall_fscore_support, roc_auc_score)

from export.atomic import atomic_path, write_json, write_text
from export.tables import path_key, read_spreadsheet_csv, spreadsheet_number
from pulse.config import EvalConfig
from pulse.manifest import read_manifest
from pulse.train.augment import crop, mix_at_snr
from pulse.train.data import Clip, load_backgrounds, load_clips
from pulse.windows import WindowSpec, frame_windows

ScoreFn = Callable[[np.ndarray], np.ndarray]  # windows [B, N] -> sigmoid scores [B, C]


@dataclass(frozen=True)
class EvalData:
    windows: np.ndarray  # [W, N] clean 3 s excerpts
    labels: np.ndarray  # [W] species index
    clip_ids: np.ndarray  # [W] which clip each excerpt came from
    backgrounds: list[np.ndarray]  # held-out soundscapes for mixing
    negatives: np.ndarray  # [M, N] pure-soundscape windows
    n_excluded: int = 0  # excerpts left out as listed in EvalConfig.exclude_excerpts
    sample_rate: int = 0  # of the windows; EvalConfig.delays_ms needs it


def excerpts(audio: np.ndarray, length: int, min_length: int) -> list[np.ndarray]:
    """Consecutive windows framed exactly as `pulse analyze` frames them (no overlap): a partial last
    window is zero-padded if it has `min_length` samples; a clip shorter than that is one window."""
    spec = WindowSpec(window=length, hop=length, sample_rate=length, min_len=min_length)  # counts in samples
    return [window for _, chunk in frame_windows([audio], spec) for window in chunk]


def excluded_excerpts(path: str) -> set[tuple[str, float]]:
    """(clip path, excerpt start in s) pairs from a CSV with columns path, start_s (and a reason), as a spreadsheet
    saves it too (';' and '3,0' in a French or German locale); paths as `path_key` reads them, as `prepare` matches
    them to the manifest's (one typed by hand on Windows, the other written by make-manifest from names copied from
    a Mac)."""
    if not path:
        return set()
    table = read_spreadsheet_csv(path, ("path", "start_s"))
    if not {"path", "start_s"} <= set(table.columns):
        raise ValueError(f"{path}: an excerpt exclusion list needs the columns path and start_s")
    excluded = set()
    for line, (clip, start) in enumerate(zip(table["path"], table["start_s"]), start=2):
        try:
            excluded.add((path_key(clip), round(spreadsheet_number(start), 3)))
        except ValueError:
            raise ValueError(f"{path}, line {line}: start_s {start!r} is not a number of seconds") from None
    return excluded


def other_data_hint(cfg: EvalConfig, excluded: set[tuple[str, float]], clips: list[Clip]) -> str:
    """Where none of the listed recordings is in the split, the list is most often one a config copied for other
    data came with (the shipped configs name InsectSet32's): what to set instead."""
    listed = {path for path, _ in excluded}
    if listed & {path_key(clip.path) for clip in clips}:
        return ""
    frame = read_manifest(cfg.manifest)
    # --split train on the shipped list
    if elsewhere := sorted(set(frame.loc[frame["path"].map(path_key).isin(listed), "split"])):
        return (f"; its recordings are in split {', '.join(map(repr, elsewhere))} of {cfg.manifest}, not "
                f"{cfg.split!r}: a list made for that split (--exclude-excerpts \"\" for this one)")
    return (f"; none of its recordings is in split {cfg.split!r} of {cfg.manifest}: a list made for other data (in "
            f"a config copied for your own, set evaluation.exclude_excerpts to \"\")")


def prepare(cfg: EvalConfig, labels: tuple[str, ...], sample_rate: int, window_s: float) -> EvalData:
    """Decode the split's clips and the held-out soundscapes; cut both into windows."""
    length, min_length = int(round(window_s * sample_rate)), int(round(cfg.min_excerpt_s * sample_rate))
    excluded = excluded_excerpts(cfg.exclude_excerpts)
    windows, target, clip_ids, matched = [], [], [], set()
    clips = load_clips(cfg.manifest, cfg.audio_root, cfg.split, labels, sample_rate)
    for i, clip in enumerate(clips):
        for j, piece in enumerate(excerpts(clip.audio, length, min_length)):
            key = (path_key(clip.path), round(j * window_s, 3))
            if key in excluded:
                matched.add(key)
                continue
            windows.append(piece)
            target.append(clip.label)
            clip_ids.append(i)
    if excluded - matched:
        path, start = sorted(excluded - matched)[0]
        raise ValueError(f"{cfg.exclude_excerpts}: {len(excluded - matched)} listed excerpt(s) match no "
                         f"{window_s:g} s excerpt of split {cfg.split!r}, e.g. {path} at {start} s"
                         + other_data_hint(cfg, excluded, clips))
    backgrounds = load_backgrounds(cfg.background_manifest, cfg.background_root, cfg.background_split, sample_rate)
    hop = int(round(cfg.negative_hop_s * sample_rate))
    negatives = [bg[s:s + length] for bg in backgrounds for s in range(0, max(len(bg) - length, 0) + 1, hop)]
    negatives = [np.pad(n, (0, length - len(n))) for n in negatives]
    return EvalData(np.stack(windows).astype(np.float32), np.array(target), np.array(clip_ids), backgrounds,
                    np.stack(negatives).astype(np.float32), len(matched), sample_rate)


def mix(data: EvalData, snr_db: float, seed: int) -> np.ndarray:
    """Each excerpt mixed into a held-out soundscape (taken in turn) at a random offset.

    A mix that would exceed full scale is scaled down to peak at 1, as it must be to be stored in a
    file; without that, a -10 dB mix of a loud song peaks at up to 11 and no real file looks like it.
    """
    rng = np.random.default_rng([seed, int(round(snr_db * 100)) + 100_000])
    length = data.windows.shape[1]
    mixes = np.stack([mix_at_snr(w, crop(data.backgrounds[i % len(data.backgrounds)], length, rng, loop=True), snr_db)
                      for i, w in enumerate(data.windows)])
    return mixes / np.maximum(np.abs(mixes).max(axis=1, keepdims=True), 1.0)


def delay(windows: np.ndarray, samples: int) -> np.ndarray:
    """The same windows `samples` later: silence in front, their last `samples` dropped."""
    later = np.zeros_like(windows)
    later[:, samples:] = windows[:, :windows.shape[1] - samples]
    return later


def score(score_fn: ScoreFn, windows: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([score_fn(windows[i:i + batch_size]) for i in range(0, len(windows), batch_size)])


def condition_metrics(scores: np.ndarray, labels: np.ndarray, clip_ids: np.ndarray, negative_scores: np.ndarray,
                      names: tuple[str, ...], threshold: float) -> dict:
    """Window- and clip-level metrics of one condition (clean or one SNR)."""
    classes = np.arange(len(names))
    present = np.unique(labels)
    onehot = (labels[:, None] == classes[None]).astype(int)
    predicted = scores.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=classes, zero_division=0)
    clips = np.unique(clip_ids)
    clip_scores = np.stack([scores[clip_ids == c].max(axis=0) for c in clips])
    clip_labels = np.array([labels[clip_ids == c][0] for c in clips])
    detection_y = np.r_[np.ones(len(scores)), np.zeros(len(negative_scores))]
    detection_s = np.r_[scores.max(axis=1), negative_scores.max(axis=1)]
    return {
        "window": {
            "macro_f1": float(f1_score(labels, predicted, labels=present, average="macro", zero_division=0)),
            "accuracy": float(accuracy_score(labels, predicted)),
            "macro_f1_thresholded": float(f1_score(onehot[:, present], (scores >= threshold)[:, present].astype(int),
                                                   average="macro", zero_division=0)),
            "mAP": float(average_precision_score(onehot[:, present], scores[:, present], average="macro")),
            "roc_auc": float(roc_auc_score(onehot[:, present], scores[:, present], average="macro"))
            if len(present) > 1 else float("nan"),
            "per_species": {names[k]: {"precision": float(precision[k]), "recall": float(recall[k]),
                                       "f1": float(f1[k]), "support": int(support[k])} for k in classes},
            "confusion": confusion_matrix(labels, predicted, labels=classes).tolist(),
        },
        "clip": {
            "macro_f1": float(f1_score(clip_labels, clip_scores.argmax(axis=1), labels=np.unique(clip_labels),
                                       average="macro", zero_division=0)),
            "accuracy": float(accuracy_score(clip_labels, clip_scores.argmax(axis=1))),
        },
        "detection_auc": float(roc_auc_score(detection_y, detection_s)),
    }


def recording_bootstrap(predicted: np.ndarray, labels: np.ndarray, clip_ids: np.ndarray, resamples: int,
                        seed: int = 0) -> np.ndarray:
    """Window macro-F1 of `predicted` [A, W] (A alignments of W excerpts, averaged) on `resamples` resamplings
    of the recordings, each species keeping its number of recordings.

    Excerpts of one recording share its singer, level and background, so they are not independent: the
    recording is what gets resampled. A species with one recording always draws it, so its own
    uncertainty is not in the interval (which is then too narrow, not too wide).
    """
    rng = np.random.default_rng(seed)
    rows_of = {c: np.flatnonzero(clip_ids == c) for c in np.unique(clip_ids)}
    clips_of = {s: np.unique(clip_ids[labels == s]) for s in np.unique(labels)}
    present = np.unique(labels)
    result = np.empty(resamples)
    for r in range(resamples):
        rows = np.concatenate([rows_of[c] for clips in clips_of.values()
                               for c in rng.choice(clips, size=len(clips), replace=True)])
        result[r] = np.mean([f1_score(labels[rows], p[rows], labels=present, average="macro", zero_division=0)
                             for p in predicted])
    return result


def condition_name(snr_db: float | None) -> str:
    return "clean" if snr_db is None else f"snr_{snr_db:+g}dB"


def alignment_shifts(cfg: EvalConfig, sample_rate: int) -> list[int]:
    """The delays every condition is scored at, in samples: 0 (the excerpts as cut), then `cfg.delays_ms`."""
    return [0, *(int(round(d / 1000 * sample_rate)) for d in cfg.delays_ms)]


def evaluate(score_fn: ScoreFn, data: EvalData, cfg: EvalConfig, names: tuple[str, ...]) -> dict:
    """Metrics for clean excerpts and for each SNR in `cfg.snr_db`, each also at `cfg.delays_ms`.

    The headline metrics are those of the excerpts as cut; `alignment` holds window F1 and detection
    AUC at every delay (0 first) with their mean and minimum, the spread a user's recordings will see.
    """
    if cfg.delays_ms and not data.sample_rate:
        raise ValueError("EvalConfig.delays_ms needs EvalData.sample_rate")
    shifts = alignment_shifts(cfg, data.sample_rate)
    negative_scores = [score(score_fn, delay(data.negatives, k), cfg.batch_size) for k in shifts]
    conditions = {}
    for snr in (None, *cfg.snr_db):
        windows = data.windows if snr is None else mix(data, snr, cfg.seed)
        per_delay = [condition_metrics(score(score_fn, delay(windows, k), cfg.batch_size), data.labels, data.clip_ids,
                                       negatives, names, cfg.threshold)
                     for k, negatives in zip(shifts, negative_scores)]
        metrics = per_delay[0]
        if cfg.delays_ms:
            f1 = [m["window"]["macro_f1"] for m in per_delay]
            auc = [m["detection_auc"] for m in per_delay]
            metrics["alignment"] = {"delays_ms": [0.0, *map(float, cfg.delays_ms)], "window_macro_f1": f1,
                                    "detection_auc": auc, "window_macro_f1_mean": float(np.mean(f1)),
                                    "window_macro_f1_min": float(np.min(f1)), "detection_auc_mean": float(np.mean(auc)),
                                    "detection_auc_min": float(np.min(auc))}
        conditions[condition_name(snr)] = metrics
    return {"labels": list(names), "n_windows": int(len(data.windows)), "n_clips": int(len(np.unique(data.clip_ids))),
            "n_excluded_windows": data.n_excluded, "n_negative_windows": int(len(data.negatives)),
            "conditions": conditions}


def window_f1(metrics: dict) -> float:
    """A condition's window macro-F1: its mean over the alignments where they were scored, else as cut."""
    return metrics["alignment"]["window_macro_f1_mean"] if "alignment" in metrics else metrics["window"]["macro_f1"]


def detection_auc(metrics: dict) -> float:
    """A condition's detection AUC: its mean over the alignments where they were scored, else as cut."""
    return metrics["alignment"]["detection_auc_mean"] if "alignment" in metrics else metrics["detection_auc"]


def selection_score(report: dict) -> float:
    """One number for model selection: clean, 0 dB and -10 dB window macro-F1 and 0 dB detection AUC,
    each averaged over the alignments, so that an epoch is not chosen for where the excerpts were cut."""
    c = report["conditions"]
    parts = [window_f1(c["clean"])]
    for snr in (0.0, -10.0):
        if condition_name(snr) in c:
            parts.append(window_f1(c[condition_name(snr)]))
    if condition_name(0.0) in c:
        parts.append(detection_auc(c[condition_name(0.0)]))
    return float(np.mean(parts))


def format_table(report: dict) -> str:
    """A plain-text summary: one row per condition, then per-species F1 per condition."""
    conditions = report["conditions"]
    delays = next(iter(conditions.values())).get("alignment", {}).get("delays_ms")
    lines = [f"{report['n_windows']} excerpts of {report['n_clips']} clips ({report.get('n_excluded_windows', 0)} "
             f"without song left out); {report['n_negative_windows']} pure-soundscape windows as negatives", "",
             f"{'condition':<12} {'win F1':>7} {'clip F1':>7} {'F1@thr':>7} {'mAP':>6} {'ROC-AUC':>7} {'det AUC':>7}"
             + ("   over delays: win F1 mean (min), det AUC mean (min)" if delays else "")]
    for name, m in conditions.items():
        w = m["window"]
        aligned = m.get("alignment")
        lines.append(f"{name:<12} {w['macro_f1']:7.3f} {m['clip']['macro_f1']:7.3f} {w['macro_f1_thresholded']:7.3f} "
                     f"{w['mAP']:6.3f} {w['roc_auc']:7.3f} {m['detection_auc']:7.3f}"
                     + (f"   {aligned['window_macro_f1_mean']:.3f} ({aligned['window_macro_f1_min']:.3f}), "
                        f"{aligned['detection_auc_mean']:.3f} ({aligned['detection_auc_min']:.3f})" if aligned else ""))
    if delays:
        lines.append(f"(delays: every excerpt and negative also scored {', '.join(f'{d:g}' for d in delays)} ms later, "
                     f"silence in front)")
    species = next(iter(conditions.values()))["window"]["per_species"]
    if len(present := [label for label in report["labels"] if species[label]["support"]]) < len(report["labels"]):
        lines.append(f"(macro averages over the {len(present)} of the model's {len(report['labels'])} species with "
                     "excerpts here; scikit-learn's default would also average species that are only predicted, "
                     "at F1 0)")
    lines += ["", f"{'species (window F1)':<30}" + "".join(f"{n:>12}" for n in conditions)]
    for label in report["labels"]:
        lines.append(f"{label:<30}"
                     + "".join(f"{m['window']['per_species'][label]['f1']:12.3f}" for m in conditions.values()))
    return "\n".join(lines)


def plot_confusion(report: dict, codes: tuple[str, ...], path: Path) -> None:
    """Row-normalised window-level confusion matrices, one panel per condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conditions = report["conditions"]
    fig, axes = plt.subplots(1, len(conditions), figsize=(4.2 * len(conditions), 4.4), squeeze=False)
    for ax, (name, m) in zip(axes[0], conditions.items()):
        counts = np.array(m["window"]["confusion"], float)
        ax.imshow(counts / np.maximum(counts.sum(axis=1, keepdims=True), 1), vmin=0, vmax=1, cmap="Blues")
        ax.set_title(f"{name}  F1 {m['window']['macro_f1']:.2f}")
        ax.set_xticks(range(len(codes)), codes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(codes)), codes, fontsize=7)
        ax.set_xlabel("predicted")
    axes[0][0].set_ylabel("true")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def evaluate_model(model_path: str | Path, cfg: EvalConfig, out_dir: str | Path) -> dict:
    """Evaluate an artefact, or a bundled model by the name `pulse analyze` takes (default, supervised, lowrate);
    write report.json, report.txt and confusion.png to `out_dir`."""
    from export.predictor import load_predictor
    from pulse.levels import for_model
    from pulse.model_names import resolve_model

    model_path, backend = resolve_model(str(model_path))
    if backend == "birdnet":
        raise ValueError("birdnet: pulse evaluate scores PULSE models, and BirdNET does not name these species "
                         "(bench/ablate.py scores a probe on its embedding)")
    predictor = for_model(load_predictor(model_path), cfg.level_floor)  # as `pulse analyze` scores
    meta = predictor.metadata
    names = tuple(meta["labels"])
    data = prepare(cfg, names, int(meta["sample_rate"]), float(meta["window_s"]))
    report = evaluate(lambda batch: predictor.predict(batch)["scores"], data, cfg, names)
    predictor.close()
    report = {"model": str(model_path), "config": cfg.to_dict(), **report}
    out_dir = Path(out_dir)
    write_json(out_dir / "report.json", report)
    write_text(out_dir / "report.txt", format_table(report) + "\n")
    plot_confusion(report, tuple(meta.get("codes") or names), out_dir / "confusion.png")
    return report
