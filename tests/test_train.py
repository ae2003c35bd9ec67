"""Weak-label training: tiny real runs (2 species, 1 s windows, pulse_cnn_xs, one step per epoch).

Checks that a run records its config and checkpoint, that it is deterministic with a seed, and
that a run killed after its first epoch resumes to exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from export.artifact import load_weights
from pulse.config import ModelConfig, TrainConfig
from pulse.train import weak_labels
from pulse.train.activity import FRAME_S, active_frames
from pulse.train.augment import (band_limit, crop, hard_clip, lowpass, mix_at_snr, rms, slow_down, spec_augment,
                                 spectral_tilt, unknown_singer)
from pulse.train.data import BatchSampler, Clip, speed_variants
from pulse.plots import training_figure
from pulse.train.pooling import create_pooling

REPO = Path(__file__).resolve().parents[1]
SPECIES = ("Gryllus campestris", "Tettigonia viridissima")


def tiny_config(shared_data: Path, tmp_path: Path, **changes) -> TrainConfig:
    """Two clips per species for training and one for validation, from the real manifest."""
    frame = pd.read_csv(REPO / "data_manifests/insectset32.csv", dtype=str, keep_default_na=False)
    frame = frame[frame["species"].isin(SPECIES)].sort_values("duration_s").groupby(["species", "split"]).head(2)
    frame = frame[(frame["split"] == "train") | ~frame.duplicated(["species", "split"])]
    manifest = tmp_path / "tiny.csv"
    frame.to_csv(manifest, index=False)
    model = ModelConfig(arch="pulse_cnn_xs", labels=SPECIES, common_names=SPECIES, codes=("GRYCAM", "TETVIR"),
                        window_s=1.0, n_mels=32, embed_dim=32)
    settings = dict(manifest=str(manifest), audio_root=str(shared_data / "audio/insectset32"),
                    background_manifest=str(REPO / "data_manifests/backgrounds.csv"),
                    background_root=str(shared_data / "audio/backgrounds"), model=model, epochs=2,
                    steps_per_epoch=1, batch_size=4, background_speeds=(1.0, 1.25), threads=1)
    return TrainConfig(**{**settings, **changes})


def weights(path: Path) -> dict:
    return load_weights(path)[0]


def test_run_writes_config_checkpoint_and_is_deterministic(shared_data, tmp_path):
    cfg = tiny_config(shared_data, tmp_path)
    best = weak_labels.train(cfg, tmp_path / "a")
    for name in ("config.json", "checkpoint.safetensors", "model.safetensors", "history.json", "validation.json",
                 "training.png"):
        assert (tmp_path / "a" / name).is_file(), name
    curves = training_figure(json.loads((tmp_path / "a/history.json").read_text()))
    losses, validation = curves.axes
    assert [t.get_text() for t in losses.get_legend().get_texts()] == ["bce"]
    assert "score" in [t.get_text() for t in validation.get_legend().get_texts()]
    record = json.loads((tmp_path / "a/config.json").read_text())
    assert TrainConfig.from_dict(record) == cfg and len(record["manifest_sha256"]) == 64 and record["device"] == "cpu"
    assert [row["epoch"] for row in json.loads((tmp_path / "a/history.json").read_text())] == [1, 2]
    from export.artifact import CheckpointError
    from export.predictor import load_predictor
    with pytest.raises(CheckpointError, match="a training checkpoint .* not a model; use .*a/model.safetensors"):
        load_predictor(tmp_path / "a/checkpoint.safetensors")  # the easy mistake: the file beside model.safetensors
    assert {"loss_bce", "clean_f1", "snr_+0dB_det_auc", "clean_f1_mean", "snr_+0dB_det_auc_mean", "score"} <= set(best)
    assert best["score"] == pytest.approx(np.mean([best[k] for k in ("clean_f1_mean", "snr_+0dB_f1_mean",
                                                                     "snr_-10dB_f1_mean", "snr_+0dB_det_auc_mean")]),
                                          abs=1e-3)  # selection on the alignment means (rounded in the row)
    weak_labels.train(cfg, tmp_path / "b")
    first, second = weights(tmp_path / "a/checkpoint.safetensors"), weights(tmp_path / "b/checkpoint.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = weak_labels.train(tiny_config(shared_data, tmp_path, seed=1), tmp_path / "c")
    assert other is not None
    assert not torch.equal(first["model.head.1.weight"],
                           weights(tmp_path / "c/checkpoint.safetensors")["model.head.1.weight"])


def test_killed_run_resumes_to_the_same_weights(shared_data, tmp_path, monkeypatch):
    # With the moving average, the optional song augmentations and BYOL (its mixup memory) on, so their state
    # resumes too.
    cfg = tiny_config(shared_data, tmp_path, ema_decay=0.5, song_speeds=(0.9, 1.0, 1.1), lowpass_prob=0.5, tilt_db=6.0,
                      lambda_byol=0.1)
    cfg = dataclasses.replace(cfg, semi=dataclasses.replace(
        cfg.semi, byol_batch=2, unlabelled_manifests=(cfg.background_manifest,),
        unlabelled_roots=(cfg.background_root,)))
    weak_labels.train(cfg, tmp_path / "full")
    real_save = weak_labels.save_checkpoint

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt  # killed right after the first epoch's checkpoint

    monkeypatch.setattr(weak_labels, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        weak_labels.train(cfg, tmp_path / "killed")
    monkeypatch.setattr(weak_labels, "save_checkpoint", real_save)
    assert len(json.loads((tmp_path / "killed/history.json").read_text())) == 1
    weak_labels.train(cfg, tmp_path / "killed")
    full = weights(tmp_path / "full/checkpoint.safetensors")
    resumed = weights(tmp_path / "killed/checkpoint.safetensors")
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    with pytest.raises(ValueError, match="different config"):
        weak_labels.train(tiny_config(shared_data, tmp_path, lr=1e-4), tmp_path / "killed")


def test_a_finished_run_is_not_set_up_again_and_keeps_its_record(shared_data, tmp_path, monkeypatch, caplog):
    """Rerunning a finished run (bench/ablate.py does, for every run it lists) returns its best epoch without
    decoding any audio, and config.json still names the code and manifest that trained it."""
    cfg = tiny_config(shared_data, tmp_path)
    manifest_row = open(cfg.manifest).readlines()[-1]
    best = weak_labels.train(cfg, tmp_path / "a")
    record = json.loads((tmp_path / "a/config.json").read_text())
    (tmp_path / "a/config.json").write_text(json.dumps({**record, "git_sha": "the commit that trained it"}))
    monkeypatch.setattr(weak_labels, "load_clips", lambda *args, **kwargs: pytest.fail("audio decoded again"))
    assert weak_labels.train(cfg, tmp_path / "a") == best
    assert json.loads((tmp_path / "a/config.json").read_text())["git_sha"] == "the commit that trained it"
    assert "has changed since this run started" not in caplog.text
    with open(cfg.manifest, "a") as manifest:  # a recording added: the finished run is kept, and says it is older
        manifest.write(manifest_row)
    assert weak_labels.train(cfg, tmp_path / "a") == best
    assert f"{cfg.manifest} has changed since this run started" in caplog.text


def test_setup_errors_are_clear_and_a_run_that_never_trained_can_be_set_up_again(shared_data, tmp_path, caplog):
    with pytest.raises(ValueError, match="model.common_names lists 9 entries for 2 labels"):
        ModelConfig(labels=SPECIES)
    with pytest.raises(FileNotFoundError, match="nowhere.csv: manifest not found .*relative to the working directory"):
        weak_labels.train(tiny_config(shared_data, tmp_path, manifest="nowhere.csv"), tmp_path / "run")
    broken = tiny_config(shared_data, tmp_path, background_manifest=str(tmp_path / "no_backgrounds.csv"))
    with pytest.raises(ValueError, match="no_backgrounds.csv: manifest not found"):
        weak_labels.train(broken, tmp_path / "run")
    assert (tmp_path / "run" / "config.json").is_file()  # written, but no step was trained: the fixed config may run
    # BirdNET-Analyzer's Noise folder named as a species trained without a word on it, and its model reported Noise
    four = ModelConfig(arch="pulse_cnn_xs", labels=(*SPECIES, "Nemobius sylvestris", "Noise"), common_names=(),
                       codes=(), window_s=1.0, n_mels=32, embed_dim=32)
    with caplog.at_level("WARNING", logger="pulse.train.weak_labels"):
        assert weak_labels.train(tiny_config(shared_data, tmp_path, model=four, epochs=1), tmp_path / "run")
    assert "1 of the model's 4 species have no training recordings (Nemobius sylvestris)" in caplog.text
    assert ("model.labels has Noise, BirdNET-Analyzer's name for sounds that are no class: this model would report "
            "it as a species") in caplog.text
    assert "no validation recording" not in caplog.text  # said once, as unheard: not again as unmeasured
    frame = pd.read_csv(tmp_path / "tiny.csv", dtype=str, keep_default_na=False)
    frame[(frame["split"] == "train") | (frame["species"] != SPECIES[1])].to_csv(tmp_path / "no_val.csv", index=False)
    caplog.clear()
    with caplog.at_level("WARNING", logger="pulse.train.weak_labels"):
        weak_labels.train(dataclasses.replace(tiny_config(shared_data, tmp_path, epochs=1),
                                              manifest=str(tmp_path / "no_val.csv")),
                          tmp_path / "run_no_val")
    assert f"1 of the model's species have no validation recording ({SPECIES[1]})" in caplog.text


def test_pooling_functions():
    logits = torch.tensor([[[1.0, -2.0], [3.0, -1.0], [-1.0, 0.0]]])  # [B=1, K=3, C=2]
    embeddings = torch.randn(1, 3, 4)
    assert torch.equal(create_pooling("max", 4, 2)(logits, embeddings), torch.tensor([[3.0, 0.0]]))
    assert torch.allclose(create_pooling("mean", 4, 2)(logits, embeddings), torch.tensor([[1.0, -1.0]]))
    attention = create_pooling("attention", 4, 2)
    pooled = attention(logits, embeddings)
    assert (pooled >= logits.amin(dim=1) - 1e-6).all() and (pooled <= logits.amax(dim=1) + 1e-6).all()
    with torch.no_grad():  # equal relevance for every window: attention is the mean
        attention.relevance.weight.zero_()
    assert torch.allclose(attention(logits, embeddings), logits.mean(dim=1))
    with pytest.raises(KeyError, match="unknown clip pooling"):
        create_pooling("median", 4, 2)


def test_waveform_augmentations():
    rng = np.random.default_rng(0)
    clip = rng.standard_normal(1000).astype(np.float32)
    looped = crop(clip[:300], 1000, rng, loop=True)
    assert looped.shape == (1000,) and np.count_nonzero(looped) == 1000
    padded = crop(clip[:300], 1000, rng, loop=False)
    assert np.count_nonzero(padded) == 300
    noise = rng.standard_normal(1000).astype(np.float32) * 7
    for snr in (-10.0, 0.0, 10.0):
        mixed = mix_at_snr(clip, noise, snr)
        assert 20 * np.log10(rms(clip) / rms(mixed - clip)) == pytest.approx(snr, abs=1e-3)


def test_spec_augment_masks_whole_bands_deterministically():
    logmel = torch.randn(3, 1, 16, 40)
    args = (2, 4, 2, 8)
    a = spec_augment(logmel, torch.Generator().manual_seed(1), *args)
    b = spec_augment(logmel, torch.Generator().manual_seed(1), *args)
    assert torch.equal(a, b) and a.shape == logmel.shape
    changed = a != logmel
    assert changed.any()
    fill = logmel.mean(dim=(1, 2, 3))
    for i in range(3):
        assert torch.allclose(a[i][changed[i]], fill[i].expand(int(changed[i].sum())))
    assert torch.equal(spec_augment(logmel, torch.Generator(), 0, 4, 0, 8), logmel)


def test_sampler_balances_classes_and_draws_negatives():
    cfg = TrainConfig(model=ModelConfig(labels=("a", "b"), common_names=("a", "b"), codes=("A", "B"), window_s=0.1),
                      batch_size=400, negative_prob=0.25, mixup_prob=0.0)
    rng = np.random.default_rng(0)
    clips = [Clip("a1", rng.standard_normal(44100).astype(np.float32), 0)] * 5 + \
            [Clip("b1", rng.standard_normal(2000).astype(np.float32), 1)]
    sampler = BatchSampler(clips, [rng.standard_normal(44100).astype(np.float32)], cfg)
    windows, targets = sampler.batch(0)
    assert windows.shape == (400, cfg.windows_per_clip, cfg.model.window_samples)
    negatives = targets.sum(axis=1) == 0
    assert 0.15 < negatives.mean() < 0.35
    per_class = targets[~negatives].sum(axis=0)
    assert abs(per_class[0] - per_class[1]) < 0.25 * per_class.sum()  # 5:1 clips, yet balanced
    again, _ = sampler.batch(0)
    assert np.array_equal(windows, again)


def test_without_class_balance_clips_are_drawn_by_length_across_classes():
    cfg = TrainConfig(model=ModelConfig(labels=("a", "b"), common_names=("a", "b"), codes=("A", "B"), window_s=0.1),
                      batch_size=400, negative_prob=0.0, mixup_prob=0.0, background_prob=0.0, class_balance=False)
    rng = np.random.default_rng(0)
    clips = [Clip("a1", rng.standard_normal(3 * 4410).astype(np.float32), 0),
             Clip("b1", rng.standard_normal(4410).astype(np.float32), 1)]
    _, targets = BatchSampler(clips, [], cfg).batch(0)
    assert 0.68 < targets[:, 0].mean() < 0.82  # 3:1 in audio, so about 3:1 in draws (balanced would be 1:1)


def test_init_from_starts_at_given_weights(shared_data, tmp_path):
    source = tmp_path / "source.safetensors"
    weak_labels.train(tiny_config(shared_data, tmp_path, epochs=1), tmp_path / "a")
    (tmp_path / "a/model.safetensors").rename(source)
    frozen = tiny_config(shared_data, tmp_path, epochs=1, init_from=str(source), lr=0.0)  # lr 0: weights stay put
    weak_labels.train(frozen, tmp_path / "b")
    start, after = weights(source), weights(tmp_path / "b/model.safetensors")
    assert torch.equal(start["encoder.stem.0.weight"], after["encoder.stem.0.weight"])
    assert torch.equal(start["head.1.weight"], after["head.1.weight"])


def test_init_from_a_model_of_other_species_keeps_its_encoder_not_its_head(shared_data, tmp_path):
    """Fine-tuning a trained model onto species of one's own: the encoder and embedding carry over, the head
    starts afresh, also where the species are only in another order (its rows would name the wrong species)."""
    source = tmp_path / "source.safetensors"
    cfg = tiny_config(shared_data, tmp_path, epochs=1)
    weak_labels.train(cfg, tmp_path / "a")
    (tmp_path / "a/model.safetensors").rename(source)
    swapped = dataclasses.replace(cfg.model, labels=cfg.model.labels[::-1], common_names=cfg.model.common_names[::-1],
                                  codes=cfg.model.codes[::-1])
    weak_labels.train(dataclasses.replace(cfg, init_from=str(source), lr=0.0, model=swapped), tmp_path / "b")
    start, after = weights(source), weights(tmp_path / "b/model.safetensors")
    assert torch.equal(start["encoder.stem.0.weight"], after["encoder.stem.0.weight"])
    assert torch.equal(start["embed.0.weight"], after["embed.0.weight"])
    assert not torch.equal(start["head.1.weight"], after["head.1.weight"])


def test_init_from_must_be_a_pulse_model_of_the_configs_shape(shared_data, tmp_path):
    """The training checkpoint sits beside model.safetensors and is an easy file to name; weights of another
    architecture are another easy mistake. Each is one ValueError naming the file, not a tensor-by-tensor dump."""
    from export.artifact import save_weights
    from pulse.models import create_model
    from pulse.train.checkpoint import save_checkpoint

    cfg = tiny_config(shared_data, tmp_path, epochs=1)
    model = create_model(cfg.model)
    save_weights(tmp_path / "model.safetensors", model.state_dict(), cfg.model.to_dict())
    save_checkpoint(tmp_path / "checkpoint.safetensors", {"model": model}, torch.optim.AdamW(model.parameters()),
                    {"step": 1})
    with pytest.raises(ValueError, match=r"checkpoint.safetensors: a training checkpoint .*use .*model.safetensors"):
        weak_labels.train(dataclasses.replace(cfg, init_from=str(tmp_path / "checkpoint.safetensors")), tmp_path / "a")
    other = dataclasses.replace(cfg, init_from=str(tmp_path / "model.safetensors"),
                                model=dataclasses.replace(cfg.model, arch="pulse_cnn_s", embed_dim=64))
    with pytest.raises(ValueError, match=r"model.safetensors: init_from weights do not fit the config's model: "
                                         r"arch 'pulse_cnn_xs' \(config: 'pulse_cnn_s'\), embed_dim 32 \(config: 64\)"):
        weak_labels.train(other, tmp_path / "b")
    for change, said in (({"n_mels": 64}, r"n_mels 32 \(config: 64\)"),  # other mel bands, or a second channel
                         ({"band_contrast": True}, r"band_contrast False \(config: True\)")):
        other = dataclasses.replace(cfg, init_from=str(tmp_path / "model.safetensors"),
                                    model=dataclasses.replace(cfg.model, **change))
        with pytest.raises(ValueError, match=rf"init_from weights do not fit the config's model: {said}$"):
            weak_labels.train(other, tmp_path / "c")


def test_init_from_weights_of_another_frontend_are_said(shared_data, tmp_path, caplog):
    """A config written for one's own species, as docs/pulse.md says (labels, init_from, the same arch, n_mels and
    embed_dim), leaves n_fft, hop_length and f_min at ModelConfig's defaults, which are not the bundled default's
    (512, 882, 1000): its encoder was fine-tuned on frames and bands it never learnt without a word (read so, the
    bundled default names 13 of 21 validation clips right instead of 20). Said once, naming each setting."""
    from export.artifact import save_weights
    from pulse.models import create_model

    cfg = tiny_config(shared_data, tmp_path, init_from=str(tmp_path / "model.safetensors"))
    save_weights(tmp_path / "model.safetensors", create_model(cfg.model).state_dict(), cfg.model.to_dict())
    with caplog.at_level(logging.WARNING, logger="pulse.train.weak_labels"):
        assert weak_labels.check_init_from(cfg)
        assert not caplog.records  # the same frontend: nothing to say
        other = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, hop_length=882, f_min=1000.0))
        assert weak_labels.check_init_from(other)
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.startswith(f"{tmp_path / 'model.safetensors'}: its frontend is not the config's: hop_length 441 "
                           "(config: 882), f_min 500.0 (config: 1000.0);")

def test_ema_without_validation_and_threaded_batches(shared_data, tmp_path):
    """val_split "" keeps the last epoch's model: here the moving average, not the raw weights;
    drawing batches in threads must not change a single weight."""
    cfg = tiny_config(shared_data, tmp_path, val_split="", ema_decay=0.5, epochs=3)
    last = weak_labels.train(cfg, tmp_path / "serial")
    assert last["epoch"] == 3 and "score" not in last
    assert not (tmp_path / "serial/validation.json").exists()
    shipped, state = weights(tmp_path / "serial/model.safetensors"), weights(tmp_path / "serial/checkpoint.safetensors")
    name = "head.1.weight"
    assert torch.equal(shipped[name], state[f"ema.module.{name}"])
    assert not torch.equal(shipped[name], state[f"model.{name}"])
    weak_labels.train(cfg, tmp_path / "threaded", workers=2)
    threaded = weights(tmp_path / "threaded/checkpoint.safetensors")
    assert all(torch.equal(state[k], threaded[k]) for k in state)
    # threads 0 leaves torch's own thread count (every core in a fresh process) rather than failing
    assert weak_labels.train(dataclasses.replace(cfg, threads=0, epochs=1), tmp_path / "torch_default")["epoch"] == 1


def test_refit_trains_on_extra_splits_and_refuses_to_validate_on_them(shared_data, tmp_path, monkeypatch):
    """The final refit sees the validation clips too; validating on clips it trains on is an error."""
    seen = []

    class RecordingSampler(BatchSampler):
        def __init__(self, clips, backgrounds, cfg):
            seen.extend(clip.path for clip in clips)
            super().__init__(clips, backgrounds, cfg)

    monkeypatch.setattr(weak_labels, "BatchSampler", RecordingSampler)
    cfg = tiny_config(shared_data, tmp_path, val_split="", extra_train_splits=("validation",), epochs=1)
    weak_labels.train(cfg, tmp_path / "refit")
    frame = pd.read_csv(cfg.manifest, dtype=str, keep_default_na=False)
    assert sorted(seen) == sorted(frame["path"])  # 2 train + 1 validation clip of each species
    assert frame["split"].value_counts()["validation"] == 2
    with pytest.raises(ValueError, match="both trained on and validated on"):
        weak_labels.train(tiny_config(shared_data, tmp_path, extra_train_splits=("validation",)), tmp_path / "bad")


def test_song_speed_shifts_pitch_and_lowpass_removes_highs():
    sample_rate, length = 44100, 44100
    t = np.arange(2 * length) / sample_rate
    tone = np.sin(2 * np.pi * 4000 * t).astype(np.float32)
    same, fast = speed_variants([tone], (1.0, 1.1), sample_rate)
    assert same is tone and len(fast) == pytest.approx(len(tone) / 1.1, abs=2)
    peak_hz = np.argmax(np.abs(np.fft.rfft(fast[:length]))) * sample_rate / length
    assert peak_hz == pytest.approx(4400, abs=5)
    low, high = (np.sin(2 * np.pi * f * t[:length]).astype(np.float32) for f in (1000, 18000))
    assert rms(lowpass(low, 6000, sample_rate)) > 0.65 and rms(lowpass(high, 6000, sample_rate)) < 0.1


def test_slow_down_stretches_time_and_keeps_bands():
    """Syllables every 10 frames come every 10-20 frames at tempo 0.5-1; each band keeps its level (pitch kept)."""
    frames, n_mels = 200, 16
    syllables = (torch.arange(frames) % 10 < 3).float()
    profile = torch.linspace(1.0, 2.0, n_mels)
    logmel = (profile[:, None] * syllables[None]).expand(64, 1, n_mels, frames).contiguous()
    slowed = slow_down(logmel, torch.Generator().manual_seed(0), prob=1.0, slowest=0.5)
    periods = []
    for window in slowed[:, 0, 0]:
        centred = window - window.mean()
        autocorrelation = torch.stack([(centred[:-lag] * centred[lag:]).mean() for lag in range(8, 23)])
        periods.append(int(autocorrelation.argmax()) + 8)  # the first peak: lags 8-22 hold one period only
    assert 10 <= min(periods) <= 11 and 18 <= max(periods) <= 21  # tempi across [0.5, 1]
    band_means = slowed.mean(dim=(0, 1, 3)) / logmel.mean(dim=(0, 1, 3))
    assert torch.allclose(band_means, torch.ones(n_mels), atol=0.1)
    assert torch.equal(slow_down(logmel, torch.Generator(), prob=0.0, slowest=0.5), logmel)
    again = slow_down(logmel, torch.Generator().manual_seed(0), prob=1.0, slowest=0.5)
    assert torch.equal(again, slowed)


def test_only_chosen_species_and_background_are_slowed(tmp_path):
    cfg = TrainConfig(model=ModelConfig(labels=("hopper", "cricket"), common_names=("h", "c"), codes=("H", "C")),
                      tempo_prob=1.0, tempo_species=("hopper",))
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])  # alone, cricket, overlay, background
    assert weak_labels.slowable(targets, cfg).tolist() == [True, False, False, True]
    assert weak_labels.slowable(targets, TrainConfig(model=cfg.model)).all()
    logmel = torch.rand(4, 1, 8, 100)
    slowed = slow_down(logmel, torch.Generator().manual_seed(0), 1.0, 0.5, weak_labels.slowable(targets, cfg))
    assert [not torch.equal(a, b) for a, b in zip(slowed, logmel)] == [True, False, False, True]
    with pytest.raises(ValueError, match="tempo_species: Grylus"):
        weak_labels.train(dataclasses.replace(cfg, tempo_species=("Grylus",)), tmp_path / "run")


def test_band_limit_keeps_what_a_slower_recorder_hears_and_clipping_flattens_peaks():
    sample_rate, length = 44100, 44100
    t = np.arange(length) / sample_rate
    low, high = (np.sin(2 * np.pi * f * t).astype(np.float32) for f in (5000, 14000))
    heard = band_limit(low + high, 22050, sample_rate)
    assert len(heard) == length and heard.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(heard[1000:-1000]))
    freqs = np.fft.rfftfreq(length - 2000, 1 / sample_rate)
    assert spectrum[np.abs(freqs - 5000) < 20].max() > 100 * spectrum[np.abs(freqs - 14000) < 20].max()
    assert rms(band_limit(high, 32000, sample_rate)) > 0.65  # 14 kHz is below 16 kHz: kept
    clipped = hard_clip(2 * low, -6.0)
    assert np.abs(clipped).max() == pytest.approx(2 * 10 ** (-6 / 20), rel=1e-3)
    assert np.mean(np.abs(clipped) >= 0.999 * np.abs(clipped).max()) > 0.2  # flat tops, not a rescale


def test_spectral_tilt_is_a_zero_mean_ramp_within_its_bound():
    logmel = torch.zeros(4, 1, 32, 10)
    tilted = spectral_tilt(logmel, torch.Generator().manual_seed(0), 6.0)
    per_band = tilted[:, 0, :, 0]
    assert torch.allclose(per_band.mean(dim=1), torch.zeros(4), atol=1e-6)
    assert torch.equal(tilted[..., :1].expand_as(tilted), tilted)  # same gain in every frame
    span_db = (per_band[:, -1] - per_band[:, 0]).abs() * 10 / np.log(10)
    assert (span_db <= 6.0 + 1e-4).all() and (span_db > 0).any()


def test_song_crops_land_on_the_chirp_of_a_sparse_singer():
    """One 0.2 s chirp in 20 s of quiet: random crops mostly miss it, song-centred crops never do."""
    sample_rate = 44100
    rng = np.random.default_rng(0)
    audio = (1e-3 * rng.standard_normal(20 * sample_rate)).astype(np.float32)
    chirp = slice(12 * sample_rate, 12 * sample_rate + sample_rate // 5)
    audio[chirp] += 0.3 * np.sin(2 * np.pi * 8000 * np.arange(sample_rate // 5) / sample_rate).astype(np.float32)
    active = active_frames(audio, sample_rate, f_min=1000.0)
    assert 0 < active.sum() <= 6 and np.all(np.abs(np.flatnonzero(active) * FRAME_S - 12.1) < 0.2)
    flat = (0.1 * np.sin(2 * np.pi * 5000 * np.arange(sample_rate) / sample_rate)).astype(np.float32)
    assert active_frames(flat, sample_rate, f_min=1000.0).all()  # a steady song is active throughout

    def share_with_chirp(song_crop_prob: float) -> float:
        cfg = TrainConfig(model=ModelConfig(), song_crop_prob=song_crop_prob, negative_prob=0.0, mixup_prob=0.0,
                          background_prob=0.0, gain_db=(0.0, 0.0))
        sampler = BatchSampler([Clip("sparse", audio, 0)], [audio], cfg)
        draws = np.random.default_rng(1)
        return float(np.mean([np.abs(sampler._song(sampler.clips[0], draws, loop=False)).max() > 0.1
                              for _ in range(300)]))

    assert share_with_chirp(1.0) == 1.0
    assert share_with_chirp(0.0) < 0.3  # a 3 s crop of 20 s holds the chirp about 1 time in 6


def test_level_targets_name_the_louder_singer_not_the_one_with_more_power():
    """A chirp 1/10 of the time against a steady tone of the same mean power: the chirp is ~10 dB louder
    while it sings, so with level targets it keeps 1 and the tone gets its amplitude ratio (mixed within
    +-6 dB rms: 4-16 dB below, target 0.16-0.63); without them both are 1."""
    sample_rate, n = 44100, 44100
    t = np.arange(n) / sample_rate
    tone = (0.1 * np.sin(2 * np.pi * 5000 * t)).astype(np.float32)
    chirp = np.zeros(n, np.float32)
    for start in range(0, n, n // 2):  # a 50 ms chirp every 0.5 s: on 10 % of the time
        chirp[start:start + n // 20] = np.sin(2 * np.pi * 8000 * t[:n // 20])
    clips = [Clip("tone", tone, 0), Clip("chirp", chirp, 1)]

    def mixed_targets(level_targets: bool) -> np.ndarray:
        cfg = TrainConfig(model=ModelConfig(labels=("a", "b"), common_names=("a", "b"), codes=("A", "B"), window_s=1.0),
                          batch_size=64, negative_prob=0.0, background_prob=0.0, noise_prob=1.0, mixup_prob=1.0,
                          mixup_level_targets=level_targets)
        return BatchSampler(clips, [], cfg).batch(0)[1]

    targets = mixed_targets(True)
    assert (targets[:, 1] == 1).all()
    assert (targets[:, 0] > 0.15).all() and (targets[:, 0] < 0.65).all() and np.ptp(targets[:, 0]) > 0.1
    assert (mixed_targets(False) == 1).all()


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("pulse_*.json")), ids=lambda p: p.name)
def test_shipped_configs_name_only_known_settings(path):
    assert TrainConfig.load(path)  # refuses a key no setting takes


def test_a_bad_config_file_is_one_line_naming_the_file_and_the_setting(tmp_path):
    """A misspelt "epoch" once trained the default 30 epochs without a word; a string "2" failed deep in training."""
    from typer.testing import CliRunner

    from pulse.cli import app

    def train_with(text: str) -> str:
        (tmp_path / "mine.json").write_text(text)
        result = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "mine.json"),
                                          "--out", str(tmp_path / "r")])
        assert result.exit_code == 2 and "Traceback" not in result.output and len(result.output.splitlines()) == 1
        return result.output

    assert "mine.json: no setting is called epoch, model.lables (misspelt?)" in train_with(
        '{"epoch": 2, "model": {"lables": ["a"]}}')
    assert "mine.json: epochs must be a whole number, got '2'" in train_with('{"epochs": "2"}')
    # a list setting given one value was split into characters (backgrounds "bgs": b, g, s) or failed in training
    assert "mine.json: backgrounds must be a list of strings, got 'bgs'" in train_with('{"backgrounds": "bgs"}')
    assert "mine.json: snr_db must be a list of 2 numbers, got 5" in train_with('{"snr_db": 5}')
    assert ("mine.json: model must be an object of settings, got 'pulse_cnn_xs'"
            in train_with('{"model": "pulse_cnn_xs"}'))
    assert ("mine.json: teacher_caches must be a list of strings, got 'x'"
            in train_with('{"semi": {"teacher_caches": "x"}}'))
    assert "mine.json: not valid JSON" in train_with('{"epochs": 2,}')
    assert "mine.json: model.labels lists a more than once" in train_with('{"model": {"labels": ["a", "b", "a"]}}')
    assert "unknown audio encoder 'resnet9'" in train_with('{"model": {"arch": "resnet9"}}')  # before any decoding
    # refused only once all the audio was decoded, and a run that never trained its species head, exit status 0
    assert "mine.json: semi.kd_loss must be cosine or mse, got 'l2'" in train_with('{"semi": {"kd_loss": "l2"}}')
    assert "mine.json: semi.pretrain_frac must be above 0 and below 1 with the pretrain_finetune schedule" in (
        train_with('{"lambda_byol": 1, "semi": {"schedule": "pretrain_finetune", "pretrain_frac": 1.0}}'))
    assert "mine.json: semi.schedule must be joint or pretrain_finetune, got 'finetune'" in train_with(
        '{"semi": {"schedule": "finetune"}}')
    assert "mine.json: semi.schedule pretrain_finetune needs lambda_byol or lambda_kd above 0" in train_with(
        '{"semi": {"schedule": "pretrain_finetune"}}')
    (tmp_path / "mine.json").unlink()
    missing = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "mine.json"), "--out", str(tmp_path / "r")])
    assert missing.exit_code == 2 and "mine.json: cannot read the config (No such file or directory)" in missing.output
    run_record = {**TrainConfig().to_dict(), "git_sha": "abc", "package_version": "0", "manifest_sha256": "0",
                  "device": "cpu"}
    (tmp_path / "config.json").write_text(json.dumps(run_record))
    assert TrainConfig.load(tmp_path / "config.json") == TrainConfig()  # a run's own record reruns it


def test_train_on_a_device_torch_cannot_use_is_one_line_before_the_run_folder(tmp_path, monkeypatch):
    """docs/pulse.md's `pulse train ... --device cuda` without a GPU was a torch traceback after config.json was
    written."""
    import torch
    from typer.testing import CliRunner

    from pulse.cli import app

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device, said in (("cuda", "--device cuda: torch finds no CUDA GPU here; use --device cpu"),
                         ("gpu", "--device gpu: expected cpu, cuda or cuda:N")):
        result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "r"), "--device", device, "--workers", "2"])
        assert result.exit_code == 2 and result.output.splitlines() == [f"error: {said}"]
    assert not (tmp_path / "r").exists()


def test_labels_of_your_own_need_no_common_names_or_codes():
    own = ModelConfig.from_dict({"labels": ["Ephippiger diurnus", "Gryllus campestris"]})
    assert own.labels == ("Ephippiger diurnus", "Gryllus campestris") and own.common_names == own.codes == ()
    with pytest.raises(ValueError, match="derived codes repeat \\(GRYCAM"):  # Raven's Species Code would be ambiguous
        ModelConfig.from_dict({"labels": ["Gryllus campestris", "Gryllus campanula"]})
    twins = ModelConfig.from_dict({"labels": ["Gryllus campestris", "Gryllus campanula"],
                                   "codes": ["GRYCAM", "GRYCAN"]})
    assert twins.codes == ("GRYCAM", "GRYCAN")


def test_a_clip_that_cannot_be_read_is_left_out_with_one_line(shared_data, tmp_path, caplog):
    from pulse.train.data import load_clips

    cfg = tiny_config(shared_data, tmp_path)
    frame = pd.read_csv(cfg.manifest, dtype=str, keep_default_na=False)
    audio = tmp_path / "audio"
    for rel in frame["path"]:
        (audio / rel).parent.mkdir(parents=True, exist_ok=True)
        (audio / rel).write_bytes((Path(cfg.audio_root) / rel).read_bytes())
    broken = frame[frame["split"] == "train"]["path"].iloc[0]
    (audio / broken).write_bytes(b"fLaC" + bytes(2000))  # a FLAC header and nothing decodable
    with caplog.at_level("WARNING", logger="pulse.train.data"):
        clips = load_clips(cfg.manifest, str(audio), "train", SPECIES, 44100)
    assert len(clips) == (frame["split"] == "train").sum() - 1 and broken not in {c.path for c in clips}
    assert f"{audio / broken}: " in caplog.text and "left out" in caplog.text


def test_unknown_singer_is_a_pulsed_band_above_the_crickets_and_leaves_the_target_alone():
    """The synthetic other insect sits in 5-16 kHz, is silent between pulses, and mixed behind a clip it
    adds that band without naming a second species."""
    sample_rate, n = 44100, 44100
    draws = np.random.default_rng(3)
    for _ in range(20):
        singer = unknown_singer(n, sample_rate, draws)
        power = np.abs(np.fft.rfft(singer)) ** 2
        freqs = np.fft.rfftfreq(n, 1 / sample_rate)
        peak = freqs[power.argmax()]
        assert abs(rms(singer) - 1.0) < 1e-3 and 4500 < peak < 17000
        assert power[(freqs > 0.75 * peak) & (freqs < 1.3 * peak)].sum() > 0.8 * power.sum()
        assert np.mean(np.abs(singer) < 1e-6) > 0.1  # pulses, not a steady hiss

    for low_rate in (24000, 16000):  # models at lower rates: every draw fits under their Nyquist frequency
        for _ in range(50):
            power = np.abs(np.fft.rfft(unknown_singer(low_rate, low_rate, draws))) ** 2
            assert np.fft.rfftfreq(low_rate, 1 / low_rate)[power.argmax()] < 0.45 * low_rate

    tone = (0.1 * np.sin(2 * np.pi * 2000 * np.arange(n) / sample_rate)).astype(np.float32)

    def batch(prob: float) -> tuple[np.ndarray, np.ndarray]:
        cfg = TrainConfig(model=ModelConfig(labels=("a", "b"), common_names=("a", "b"), codes=("A", "B"), window_s=1.0),
                          batch_size=16, negative_prob=0.0, background_prob=0.0, noise_prob=1.0, mixup_prob=0.0,
                          gain_db=(0.0, 0.0), unknown_singer_prob=prob, unknown_singer_snr_db=(0.0, 0.0))
        return BatchSampler([Clip("tone", tone, 0)], [], cfg).batch(0)

    def share_above_4khz(windows: np.ndarray) -> np.ndarray:
        power = np.abs(np.fft.rfft(windows, axis=-1)) ** 2
        return power[..., np.fft.rfftfreq(n, 1 / sample_rate) > 4000].sum(-1) / power.sum(-1)

    plain, plain_targets = batch(0.0)
    mixed, mixed_targets = batch(1.0)
    assert (share_above_4khz(plain) < 0.01).all()
    shares = share_above_4khz(mixed)  # as loud as the song, or silent where a chirping singer pauses
    assert (np.isclose(shares, 0.5, atol=0.02) | (shares < 0.01)).all()
    assert np.isclose(shares, 0.5, atol=0.02).mean() > 0.75
    assert (plain_targets == mixed_targets).all()
    assert (mixed_targets[:, 0] == 1).all() and (mixed_targets[:, 1] == 0).all()


def test_archive_band_limit_cuts_the_song_and_leaves_the_soundscape_behind_it_full_band():
    """A song of 5 and 15 kHz tones, cut as a 24 kHz archive would (nothing above 12 kHz), then mixed into a
    soundscape with an 18 kHz tone: 15 kHz is gone, 5 and 18 kHz stay; with the augmentation off all three stay."""
    sample_rate, n = 44100, 44100
    t = np.arange(n) / sample_rate
    song = (np.sin(2 * np.pi * 5000 * t) + np.sin(2 * np.pi * 15000 * t)).astype(np.float32)
    soundscape = np.sin(2 * np.pi * 18000 * np.arange(4 * n) / sample_rate).astype(np.float32)

    def tone_power(prob: float) -> np.ndarray:
        cfg = TrainConfig(model=ModelConfig(labels=("a",), common_names=("a",), codes=("A",), window_s=1.0),
                          batch_size=8, negative_prob=0.0, background_prob=1.0, noise_prob=0.0, mixup_prob=0.0,
                          snr_db=(0.0, 0.0), gain_db=(0.0, 0.0), song_band_limit_prob=prob,
                          song_band_limit_rates=(24000,))
        windows = BatchSampler([Clip("song", song, 0)], [soundscape], cfg).batch(0)[0].reshape(-1, n)
        power = np.abs(np.fft.rfft(windows[:, 2000:-2000], axis=-1)) ** 2
        freqs = np.fft.rfftfreq(n - 4000, 1 / sample_rate)
        return np.stack([power[:, np.abs(freqs - f) < 50].sum(-1) for f in (5000, 15000, 18000)], axis=1)

    cut, kept = tone_power(1.0), tone_power(0.0)
    assert (cut[:, 1] < 1e-3 * cut[:, 0]).all() and (cut[:, 2] > 0.5 * cut[:, 0]).all()
    assert (kept[:, 1] > 0.5 * kept[:, 0]).all() and (kept[:, 2] > 0.2 * kept[:, 0]).all()


def test_evaluation_data_settings_a_training_config_cannot_use_are_named():
    """Per-epoch validation reads the training manifests' validation split; evaluation.split "x" was ignored
    without a word (`pulse train` now warns with this list)."""
    from pulse.config import EvalConfig
    from pulse.train.weak_labels import evaluation_config, unused_evaluation_data

    assert unused_evaluation_data(TrainConfig()) == []
    own = TrainConfig(manifest="mine/manifest.csv", audio_root="mine", val_split="val")  # evaluation.* left as shipped
    assert unused_evaluation_data(own) == []
    odd = TrainConfig(evaluation=EvalConfig(split="x", manifest="other.csv"))
    assert unused_evaluation_data(odd) == ["evaluation.manifest 'other.csv'", "evaluation.split 'x'"]
    assert (evaluation_config(odd).split, evaluation_config(odd).manifest) == ("validation", TrainConfig().manifest)
