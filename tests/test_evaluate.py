"""`pulse evaluate`: metric definitions on known scores, and a full report from a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from export.artifact import save_weights
from pulse.cli import app
from pulse.config import ModelConfig
from pulse.evaluate import condition_metrics, excerpts, recording_bootstrap
from pulse.models import create_model

REPO = Path(__file__).resolve().parents[1]
NAMES = ("a", "b", "c")


def test_excerpts_keep_long_enough_tails():
    audio = np.arange(25, dtype=np.float32) + 1
    pieces = excerpts(audio, 10, 4)
    assert len(pieces) == 3 and all(len(p) == 10 for p in pieces)
    assert np.count_nonzero(pieces[2]) == 5  # zero-padded tail
    assert len(excerpts(audio[:23], 10, 4)) == 2  # a 3-sample tail is dropped
    assert len(excerpts(audio[:2], 10, 4)) == 1  # a clip shorter than the minimum is still kept


def test_metrics_on_known_scores():
    labels = np.array([0, 0, 1, 1, 2, 2])
    clip_ids = np.array([0, 0, 1, 1, 2, 2])
    perfect = np.eye(3)[labels] * 0.9 + 0.05
    negatives = np.full((4, 3), 0.01)
    m = condition_metrics(perfect, labels, clip_ids, negatives, NAMES, threshold=0.5)
    assert m["window"]["macro_f1"] == 1.0 and m["clip"]["macro_f1"] == 1.0
    assert m["window"]["mAP"] == 1.0 and m["window"]["roc_auc"] == 1.0 and m["detection_auc"] == 1.0
    assert m["window"]["confusion"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]
    shifted = np.roll(perfect, 1, axis=1)  # every window called the next species
    m = condition_metrics(shifted, labels, clip_ids, np.full((4, 3), 0.99), NAMES, threshold=0.5)
    assert m["window"]["macro_f1"] == 0.0 and m["window"]["per_species"]["a"]["recall"] == 0.0
    assert m["detection_auc"] == 0.0  # negatives score above every positive
    half = perfect.copy()
    half[1] = [0.05, 0.9, 0.05]  # one window of clip 0 wrong; clip max still right
    m = condition_metrics(half, labels, clip_ids, negatives, NAMES, threshold=0.5)
    assert m["window"]["accuracy"] == 5 / 6 and m["clip"]["accuracy"] == 1.0
    peak = perfect.copy()  # clip 0's first window says a, its second b more weakly: the clip is called by its peak
    peak[0], peak[1] = [0.9, 0.5, 0.0], [0.1, 0.8, 0.0]
    m = condition_metrics(peak, labels, clip_ids, negatives, NAMES, threshold=0.5)
    assert m["window"]["accuracy"] == 5 / 6 and m["clip"]["accuracy"] == 1.0  # by the mean it was b
    # a negative window is as loud as its loudest species: one at 0.99 for "c" outscores every positive
    loud_one = np.tile([0.0, 0.0, 0.99], (4, 1))
    assert condition_metrics(perfect, labels, clip_ids, loud_one, NAMES, threshold=0.5)["detection_auc"] == 0.0


def test_recording_bootstrap_resamples_whole_recordings_within_species():
    labels = np.repeat([0, 0, 1, 1], 3)  # species 0: recordings 0, 1; species 1: recordings 2, 3; 3 excerpts each
    clip_ids = np.repeat([0, 1, 2, 3], 3)
    assert np.all(recording_bootstrap(labels[None], labels, clip_ids, 50) == 1.0)  # nothing to be unsure of
    wrong = labels.copy()
    wrong[clip_ids == 0] = 1  # every excerpt of recording 0 called species 1
    draws = recording_bootstrap(wrong[None], labels, clip_ids, 400, seed=1)
    # a resample holds recording 0 twice (F1 1/3), once (F1 0.733) or not at all (F1 1): nothing in between,
    # as a resample of single excerpts would give
    values = set(np.round(draws, 3))
    assert values <= {0.333, 0.733, 1.0} and len(values) == 3
    assert abs(np.mean(draws == 1.0) - 0.25) < 0.07  # recording 1 drawn twice: P = 1/4
    both = np.stack([labels, wrong])  # two alignments, one right, one as above: averaged per resample
    assert np.allclose(recording_bootstrap(both, labels, clip_ids, 400, seed=1), (1 + draws) / 2)


def test_every_condition_is_scored_again_at_each_delay():
    """A model that hears its species only when the song starts on its frame grid: the spread is reported."""
    from pulse.config import EvalConfig
    from pulse.evaluate import EvalData, delay, evaluate, format_table, selection_score

    np.testing.assert_array_equal(delay(np.arange(1, 6, dtype=np.float32)[None], 2), [[0, 0, 1, 2, 3]])
    rate, labels = 1000, np.array([0, 1, 2, 0, 1, 2])
    windows = np.ones((6, 3 * rate), np.float32)
    windows[:, 0] = labels + 2  # the species, written in the first sample; delayed windows start with silence

    def on_grid_only(batch: np.ndarray) -> np.ndarray:
        heard = batch[:, 0] > 0
        return np.where(heard[:, None], np.eye(3)[np.maximum(batch[:, 0] - 2, 0).astype(int)], [0.4, 0.3, 0.3])

    data = EvalData(windows, labels, np.arange(6), [np.zeros(4 * rate, np.float32)],
                    np.zeros((2, 3 * rate), np.float32), sample_rate=rate)
    report = evaluate(on_grid_only, data, EvalConfig(snr_db=(), delays_ms=(5.0, 10.0)), NAMES)
    clean = report["conditions"]["clean"]
    assert clean["window"]["macro_f1"] == 1.0  # as cut: on the grid
    aligned = clean["alignment"]
    assert aligned["delays_ms"] == [0.0, 5.0, 10.0] and aligned["window_macro_f1"][0] == 1.0
    assert aligned["window_macro_f1"][1] == aligned["window_macro_f1"][2] == pytest.approx(1 / 6)  # all called "a"
    assert aligned["window_macro_f1_mean"] == pytest.approx((1 + 2 / 6) / 3) and aligned["window_macro_f1_min"] < 0.2
    # detection: on the grid every window is heard (1.0) over silent negatives (0.4); delayed, all tie at 0.4
    assert aligned["detection_auc"] == [1.0, 0.5, 0.5]
    assert aligned["detection_auc_mean"] == pytest.approx(2 / 3) and aligned["detection_auc_min"] == 0.5
    assert "over delays" in format_table(report) and "0, 5, 10 ms later" in format_table(report)
    without = evaluate(on_grid_only, data, EvalConfig(snr_db=(), delays_ms=()), NAMES)
    assert "alignment" not in without["conditions"]["clean"] and "over delays" not in format_table(without)
    # model selection scores the alignment mean, not the lucky cut; one draw only where there is no other
    assert selection_score(report) == pytest.approx((1 + 2 / 6) / 3) and selection_score(without) == 1.0
    with pytest.raises(ValueError, match="sample_rate"):
        evaluate(on_grid_only, EvalData(windows, labels, np.arange(6), [], windows[:2]), EvalConfig(snr_db=()), NAMES)
    # the negatives are delayed with the positives: negatives the model hears on the grid are heard only as cut
    heard_negatives = np.ones((2, 3 * rate), np.float32) * 2
    tied = evaluate(on_grid_only, EvalData(windows, labels, np.arange(6), [], heard_negatives, sample_rate=rate),
                    EvalConfig(snr_db=(), delays_ms=(5.0, 10.0)), NAMES)
    assert tied["conditions"]["clean"]["alignment"]["detection_auc"] == [0.5, 0.5, 0.5]  # each delay: all tie


def test_evaluate_cli_writes_report_and_png(shared_data, tmp_path):
    species = ("Gryllus campestris", "Tettigonia viridissima")
    frame = pd.read_csv(REPO / "data_manifests/insectset32.csv", dtype=str, keep_default_na=False)
    frame = frame[frame["species"].isin(species) & (frame["split"] == "validation")].head(3)
    manifest = tmp_path / "tiny.csv"
    frame.to_csv(manifest, index=False)
    cfg = ModelConfig(arch="pulse_cnn_xs", labels=species, common_names=species, codes=("GRYCAM", "TETVIR"),
                      window_s=1.0, n_mels=32, embed_dim=32)
    torch.manual_seed(0)
    save_weights(tmp_path / "model.safetensors", create_model(cfg).eval().state_dict(), cfg.to_dict())
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, [
        "evaluate", "--model", str(tmp_path / "model.safetensors"), "--manifest", str(manifest),
        "--audio-root", str(shared_data / "audio/insectset32"), "--split", "validation",
        "--background-manifest", str(REPO / "data_manifests/backgrounds.csv"),
        "--background-root", str(shared_data / "audio/backgrounds"), "--snr-db", "10,0,-10", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert list(report["conditions"]) == ["clean", "snr_+10dB", "snr_+0dB", "snr_-10dB"]
    durations = frame["duration_s"].astype(float)
    assert report["n_clips"] == 3 and report["n_windows"] >= int(durations.sum() // 1)
    for metrics in report["conditions"].values():
        assert {"macro_f1", "accuracy", "macro_f1_thresholded", "mAP", "roc_auc", "per_species",
                "confusion"} <= set(metrics["window"])
        assert set(metrics["window"]["per_species"]) == set(species)
        assert 0.0 <= metrics["detection_auc"] <= 1.0 and "macro_f1" in metrics["clip"]
        assert metrics["alignment"]["delays_ms"] == [0.0, 5.0, 10.0, 15.0]  # the default delays
        assert metrics["alignment"]["window_macro_f1"][0] == metrics["window"]["macro_f1"]
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "win F1" in (out / "report.txt").read_text() and "clean" in result.output
    once = CliRunner().invoke(app, ["evaluate", "--model", str(tmp_path / "model.safetensors"), "--manifest",
                                    str(manifest), "--audio-root", str(shared_data / "audio/insectset32"),
                                    "--background-root", str(shared_data / "audio/backgrounds"), "--snr-db", "0",
                                    "--delays-ms", "", "--out", str(tmp_path / "once")])
    assert once.exit_code == 0, once.output
    assert "alignment" not in json.loads((tmp_path / "once" / "report.json").read_text())["conditions"]["clean"]
    missing = CliRunner().invoke(app, ["evaluate", "--model", str(tmp_path / "nope.onnx"), "--out", str(out)])
    assert missing.exit_code == 2 and "not found" in missing.output
    # A training config names the data once: its manifests and validation split, then the flags typed here.
    (tmp_path / "mine.json").write_text(json.dumps({
        "manifest": str(manifest), "audio_root": str(shared_data / "audio/insectset32"),
        "background_manifest": str(REPO / "data_manifests/backgrounds.csv"),
        "background_root": str(shared_data / "audio/backgrounds"), "evaluation": {"snr_db": [0]}}))
    from_config = CliRunner().invoke(app, ["evaluate", "--model", str(tmp_path / "model.safetensors"),
                                           "--config", str(tmp_path / "mine.json"), "--delays-ms", "",
                                           "--out", str(tmp_path / "c")])
    assert from_config.exit_code == 0, from_config.output
    report = json.loads((tmp_path / "c" / "report.json").read_text())
    assert list(report["conditions"]) == ["clean", "snr_+0dB"] and report["n_clips"] == 3
    assert report["config"]["delays_ms"] == [] and report["config"]["manifest"] == str(manifest)


def test_the_bundled_models_are_evaluated_by_the_names_pulse_analyze_takes(shared_data, tmp_path):
    """`pulse analyze --model default` works, so `pulse evaluate --model default` should (it said "model file not
    found"); BirdNET names other species and is refused in one line."""
    frame = pd.read_csv(REPO / "data_manifests/insectset32.csv", dtype=str, keep_default_na=False)
    manifest = tmp_path / "one.csv"
    frame[frame["split"] == "validation"].head(1).to_csv(manifest, index=False)
    common = ["--manifest", str(manifest), "--audio-root", str(shared_data / "audio/insectset32"), "--background-root",
              str(shared_data / "audio/backgrounds"), "--snr-db", "0", "--delays-ms", ""]
    by_name = CliRunner().invoke(app, ["evaluate", "--model", "default", *common, "--out", str(tmp_path / "a")])
    by_path = CliRunner().invoke(app, ["evaluate", "--model", str(REPO / "pulse/assets/default/model.onnx"), *common,
                                       "--out", str(tmp_path / "b")])
    assert by_name.exit_code == by_path.exit_code == 0, by_name.output
    reports = [json.loads((tmp_path / name / "report.json").read_text()) for name in ("a", "b")]
    assert reports[0]["conditions"] == reports[1]["conditions"] and reports[0]["model"] == reports[1]["model"]
    birdnet = CliRunner().invoke(app, ["evaluate", "--model", "birdnet", *common, "--out", str(tmp_path / "c")])
    assert birdnet.exit_code == 2 and "pulse evaluate scores PULSE models" in birdnet.output
    assert len(birdnet.output.strip().splitlines()) == 1


def test_listed_excerpts_without_song_are_left_out(tmp_path):
    import soundfile as sf

    from pulse.config import EvalConfig
    from pulse.evaluate import prepare

    rate = 8000
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "a.wav", 0.1 * rng.standard_normal(7 * rate), rate)  # excerpts at 0, 3, 6 s
    sf.write(tmp_path / "bg.wav", 0.1 * rng.standard_normal(5 * rate), rate)
    pd.DataFrame({"path": ["a.wav"], "species": ["a"], "split": ["validation"], "license": ["CC0-1.0"],
                  "recordist": ["x"], "duration_s": [7.0], "sample_rate": [rate]}).to_csv(tmp_path / "m.csv",
                                                                                         index=False)
    pd.DataFrame({"path": ["bg.wav"], "split": ["validation"], "license": ["CC0-1.0"], "source": ["noise"],
                  "duration_s": [5.0], "sample_rate": [rate]}).to_csv(tmp_path / "bg.csv", index=False)
    pd.DataFrame({"path": ["a.wav"], "start_s": [3.0], "reason": ["between chirps"]}).to_csv(tmp_path / "x.csv",
                                                                                               index=False)
    cfg = EvalConfig(manifest=str(tmp_path / "m.csv"), audio_root=str(tmp_path),
                     background_manifest=str(tmp_path / "bg.csv"), background_root=str(tmp_path))
    every = prepare(cfg, NAMES, rate, 3.0)
    kept = prepare(EvalConfig(**{**cfg.to_dict(), "exclude_excerpts": str(tmp_path / "x.csv")}), NAMES, rate, 3.0)
    assert (len(every.windows), every.n_excluded, len(kept.windows), kept.n_excluded) == (3, 0, 2, 1)
    np.testing.assert_array_equal(kept.windows, every.windows[[0, 2]])
    pd.DataFrame({"path": ["a.wav"], "start_s": [4.0]}).to_csv(tmp_path / "typo.csv", index=False)
    with pytest.raises(ValueError, match="typo.csv: 1 listed excerpt") as info:
        prepare(EvalConfig(**{**cfg.to_dict(), "exclude_excerpts": str(tmp_path / "typo.csv")}), NAMES, rate, 3.0)
    assert str(info.value).endswith("e.g. a.wav at 4.0 s")
    pd.DataFrame({"path": ["Pholidoptera_griseoaptera/b.flac"], "start_s": [3.0]}).to_csv(tmp_path / "shipped.csv",
                                                                                         index=False)
    with pytest.raises(ValueError) as info:  # a config copied without changing it: the shipped list
        prepare(EvalConfig(**{**cfg.to_dict(), "exclude_excerpts": str(tmp_path / "shipped.csv")}), NAMES, rate, 3.0)
    assert str(info.value).endswith(f"; none of its recordings is in split 'validation' of {tmp_path / 'm.csv'}: a "
                                    "list made for other data (in a config copied for your own, set "
                                    "evaluation.exclude_excerpts to \"\")")
    sf.write(tmp_path / "b.wav", 0.1 * rng.standard_normal(7 * rate), rate)  # the shipped list's data, split train
    both = pd.read_csv(tmp_path / "m.csv")
    pd.concat([both, both.assign(path="b.wav", split="train")]).to_csv(tmp_path / "m2.csv", index=False)
    pd.DataFrame({"path": ["b.wav"], "start_s": [3.0]}).to_csv(tmp_path / "of_train.csv", index=False)
    with pytest.raises(ValueError) as info:  # pulse evaluate --config shipped.json --split validation: not other data
        prepare(EvalConfig(**{**cfg.to_dict(), "manifest": str(tmp_path / "m2.csv"),
                              "exclude_excerpts": str(tmp_path / "of_train.csv")}), NAMES, rate, 3.0)
    assert str(info.value).endswith(f"; its recordings are in split 'train' of {tmp_path / 'm2.csv'}, not "
                                    "'validation': a list made for that split (--exclude-excerpts \"\" for this one)")
    pd.DataFrame({"file": ["a.wav"], "start": [3.0]}).to_csv(tmp_path / "columns.csv", index=False)
    with pytest.raises(ValueError, match="columns.csv: an excerpt exclusion list needs the columns path and start_s"):
        prepare(EvalConfig(**{**cfg.to_dict(), "exclude_excerpts": str(tmp_path / "columns.csv")}), NAMES, rate, 3.0)


def test_noisy_mixes_stay_within_full_scale_at_the_asked_snr():
    from pulse.evaluate import EvalData, mix
    from pulse.train.augment import rms

    rng = np.random.default_rng(0)
    song = (0.9 * np.sin(np.linspace(0, 4000, 3000))).astype(np.float32)[None]  # loud: peaks near full scale
    noise = (0.3 * rng.standard_normal(10_000)).astype(np.float32)
    data = EvalData(song, np.zeros(1, int), np.zeros(1, int), [noise], noise[None, :3000])
    mixed = mix(data, -10.0, seed=0)[0]
    assert np.abs(mixed).max() == pytest.approx(1.0)  # 0.9 + 3.16 x noise would peak far above 1
    residual = mixed - song[0] * (mixed @ song[0]) / (song[0] @ song[0])
    assert 20 * np.log10(rms(mixed - residual) / rms(residual)) == pytest.approx(-10.0, abs=1.0)
    quiet = EvalData(0.01 * song, np.zeros(1, int), np.zeros(1, int), [noise], noise[None, :3000])
    assert np.abs(mix(quiet, 10.0, seed=0)[0]).max() < 0.1  # already within full scale: left as it is


def test_the_report_says_when_macro_averages_leave_out_species_absent_from_the_split():
    """Macro averages run over the species with excerpts in the split: say so, as scikit-learn's default differs."""
    from pulse.config import EvalConfig
    from pulse.evaluate import EvalData, evaluate, format_table

    rate = 1000
    rows = np.array([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9], [0.1, 0.9, 0.1]])  # the third called c

    def model(batch: np.ndarray) -> np.ndarray:  # excerpt i carries i + 1 in its first sample, negatives 0
        index = batch[:, 0].astype(int)
        return np.where(index[:, None] > 0, rows[np.maximum(index - 1, 0)], 0.05)

    def report(labels: list[int]) -> dict:
        windows = np.zeros((4, 3 * rate), np.float32)
        windows[:, 0] = np.arange(1, 5)
        data = EvalData(windows, np.array(labels), np.arange(4), [np.zeros(4 * rate, np.float32)],
                        np.zeros((2, 3 * rate), np.float32), sample_rate=rate)
        return evaluate(model, data, EvalConfig(snr_db=(), delays_ms=()), NAMES)

    two = report([0, 1, 0, 1])  # no excerpt of c
    assert two["conditions"]["clean"]["window"]["macro_f1"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert "macro averages over the 2 of the model's 3 species with excerpts here" in format_table(two)
    assert "macro averages over" not in format_table(report([0, 1, 2, 1]))


def test_a_bad_exclusion_list_or_snr_list_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from pulse.cli import app
    from pulse.evaluate import excluded_excerpts

    (tmp_path / "excl.csv").write_text("path,start_s,reason\na.flac,3,silent\nb.flac,abc,silent\n")
    with pytest.raises(ValueError, match=r"excl.csv, line 3: start_s 'abc' is not a number of seconds"):
        excluded_excerpts(str(tmp_path / "excl.csv"))
    result = CliRunner().invoke(app, ["evaluate", "--model", "m.onnx", "--snr-db", "0,x", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "a comma list of numbers, got '0,x'" in result.output


def test_an_exclusion_list_saved_on_windows_names_excerpts_as_the_manifest_does(tmp_path):
    """Saved as Excel's 'Unicode Text' (UTF-16, tabs) it was 'not UTF-8 text', and a path written on Windows
    (`Gryllus_campestris\\a.flac`) never matched the manifest's `Gryllus_campestris/a.flac`."""
    from pulse.evaluate import excluded_excerpts

    (tmp_path / "excl.txt").write_bytes("path\tstart_s\treason\r\nGryllus_campestris\\a.flac\t3\tsilent\r\n"
                                        .encode("utf-16"))
    assert excluded_excerpts(str(tmp_path / "excl.txt")) == {("Gryllus_campestris/a.flac", 3.0)}


def test_an_exclusion_list_typed_in_a_french_excel_matches_a_manifest_of_names_from_a_mac(tmp_path, shared_data):
    """Saved by Excel in a French locale (';', '3,0') it was "needs the columns path and start_s"; and 'é' typed into
    it (NFC) never matched the manifest make-manifest wrote from a Mac's copy (NFD): "1 listed excerpt(s) match no
    3 s excerpt". So it is from a manifest written on Windows (`Gryllus_campestris\\x.flac`), whose clips were
    never the listed excerpts' however either list wrote its paths."""
    import unicodedata

    from typer.testing import CliRunner

    from pulse.cli import app
    from pulse.config import EvalConfig
    from pulse.evaluate import prepare

    songs = sorted((shared_data / "audio" / "insectset32" / "Gryllus_campestris").glob("*.flac"))[:2]
    (tmp_path / "audio" / "Gryllus_campestris").mkdir(parents=True)
    for song, name in zip(songs, ("champêtre_é.flac", "b.flac")):
        (tmp_path / "audio" / "Gryllus_campestris" / unicodedata.normalize("NFD", name)).write_bytes(song.read_bytes())
    for flags, out in (([], "m.csv"), (["--unlabelled", "--val-fraction", "0.5"], "bg.csv")):
        root = tmp_path / "audio" / ("Gryllus_campestris" if flags else "")
        assert CliRunner().invoke(app, ["make-manifest", str(root), "--out", str(tmp_path / out), "--val-fraction",
                                        "0.5", *flags]).exit_code == 0
    manifest = pd.read_csv(tmp_path / "m.csv").assign(split="validation")
    manifest.to_csv(tmp_path / "m.csv", index=False)
    (tmp_path / "x.csv").write_bytes(unicodedata.normalize(
        "NFC", "path;start_s;reason\r\nGryllus_campestris/champêtre_é.flac;3,0;silence\r\n").encode("utf-8-sig"))
    cfg = EvalConfig(manifest=str(tmp_path / "m.csv"), audio_root=str(tmp_path / "audio"),
                     background_manifest=str(tmp_path / "bg.csv"), background_root=str(root),
                     background_split="validation")
    labels = ("Gryllus campestris",)
    every = prepare(cfg, labels, 16000, 3.0)
    kept = prepare(EvalConfig(**{**cfg.to_dict(), "exclude_excerpts": str(tmp_path / "x.csv")}), labels, 16000, 3.0)
    assert (kept.n_excluded, len(kept.windows)) == (1, len(every.windows) - 1)
    manifest.assign(path=manifest["path"].str.replace("/", "\\")).to_csv(tmp_path / "windows.csv", index=False)
    for listed in ("/", "\\"):
        (tmp_path / "w.csv").write_text(f"path,start_s\nGryllus_campestris{listed}champêtre_é.flac,3\n")
        on_windows = prepare(EvalConfig(**{**cfg.to_dict(), "manifest": str(tmp_path / "windows.csv"),
                                           "exclude_excerpts": str(tmp_path / "w.csv")}), labels, 16000, 3.0)
        assert (on_windows.n_excluded, len(on_windows.windows)) == (1, len(every.windows) - 1)
