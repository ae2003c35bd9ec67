"""BYOL term, BYOL-A augmentations and the unlabelled pool."""

from __future__ import annotations

import dataclasses
import logging
import re
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from pulse.config import ModelConfig, SemiConfig
from pulse.manifest import ManifestError, validate_manifest
from pulse.models import create_model
from pulse.train.byol import (BYOL, MixupMemory, byol_loss, ema_update, match_statistics, mlp,
                              random_resize_crop, running_stats_frozen)
from pulse.train.losses import StepOutputs
from pulse.unlabelled import UnlabelledPool, make_pseudo_field, read_span

TINY = ModelConfig(arch="pulse_cnn_xs", window_s=0.5, sample_rate=16000, f_max=8000.0, n_mels=32, embed_dim=32)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


class NoisePool:
    """A stand-in pool: band-limited noise bursts, a fixed set of 6 'recordings'."""

    def __init__(self, length: int):
        rng = np.random.default_rng(0)
        self.items = [np.convolve(rng.standard_normal(length), np.ones(k) / k, "same").astype(np.float32)
                      for k in (1, 2, 4, 8, 16, 32)]

    def batch(self, rng, size):
        return np.stack([self.items[int(i)] for i in rng.integers(len(self.items), size=size)])


def test_byol_loss_is_two_minus_two_cosine():
    x = torch.randn(4, 8)
    assert byol_loss(x, 3 * x).item() == pytest.approx(0.0, abs=1e-6)
    assert byol_loss(x, -x).item() == pytest.approx(4.0, abs=1e-6)
    y = torch.randn(4, 8)
    expected = (2 - 2 * torch.nn.functional.cosine_similarity(x, y)).mean()
    assert byol_loss(x, y).item() == pytest.approx(expected.item(), abs=1e-6)


def test_ema_update_moves_target_toward_online():
    online, target = mlp(4, 8, 2), mlp(4, 8, 2)
    before = [p.clone() for p in target.parameters()]
    ema_update(target, online, 0.75)
    for b, t, o in zip(before, target.parameters(), online.parameters()):
        torch.testing.assert_close(t, 0.75 * b + 0.25 * o)
    ema_update(target, online, 0.0)
    for t, o in zip(target.parameters(), online.parameters()):
        torch.testing.assert_close(t, o)


def test_mixup_memory_mixes_in_the_linear_domain():
    generator = torch.Generator().manual_seed(0)
    mixup = MixupMemory(size=3, ratio=0.4)
    first = torch.randn(2, 1, 4, 5)
    assert torch.equal(mixup(first, generator), first)  # empty memory: nothing to mix with
    second = torch.randn(2, 1, 4, 5)
    mixed = mixup(second, generator)
    assert not torch.allclose(mixed, second)
    lo = torch.minimum(second.exp(), first.exp().min(0).values).min()
    assert (mixed.exp() >= lo - 1e-6).all()
    assert (mixed.exp() <= torch.maximum(second.exp(), first.exp().max(0).values) + 1e-5).all()
    mixup(torch.randn(2, 1, 4, 5), generator)
    assert len(mixup.items) == 3  # FIFO capped at its size


def test_random_resize_crop_keeps_shape_and_is_identity_at_scale_one():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 16, 40)
    torch.testing.assert_close(random_resize_crop(x, generator, 1.0, (1.0, 1.0)), x)
    y = random_resize_crop(x, generator, 1.5, (0.6, 1.5))
    assert y.shape == x.shape and torch.isfinite(y).all() and not torch.allclose(y, x)


def test_match_statistics_restores_each_examples_level():
    ref = torch.randn(3, 1, 8, 10) * torch.tensor([1.0, 2.0, 5.0]).view(3, 1, 1, 1) - 4
    out = match_statistics(torch.randn(3, 1, 8, 10) * 9 + 3, ref)
    torch.testing.assert_close(out.mean((1, 2, 3)), ref.mean((1, 2, 3)), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std((1, 2, 3)), ref.std((1, 2, 3)), atol=1e-3, rtol=1e-3)


def test_byol_term_trains_the_student_and_only_ema_moves_the_target():
    torch.manual_seed(0)
    model = create_model(TINY).train()
    cfg = SemiConfig(byol_batch=6, byol_hidden=32, byol_dim=16, byol_ema=0.9, mixup_memory=8)
    term = BYOL(1.0, model, cfg, NoisePool(TINY.window_samples), seed=0)
    params = list(model.parameters()) + list(term.projector.parameters()) + list(term.predictor.parameters())
    optimizer = torch.optim.Adam(params, lr=3e-3)
    out = StepOutputs(0, *([None] * 6))
    target_before = [p.clone() for p in term.target_model.parameters()]
    losses = []
    for step in range(12):
        loss = term(model, dataclasses.replace(out, step=step % 2))
        optimizer.zero_grad()
        loss.backward()
        assert model.encoder.stem[0].weight.grad.abs().sum() > 0
        assert all(p.grad is None for p in term.target_model.parameters())
        optimizer.step()
        term.after_step(model)
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and 0 <= min(losses) and max(losses) <= 4
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    moved = [not torch.equal(a, b) for a, b in zip(target_before, term.target_model.parameters())]
    assert any(moved)


def test_byol_views_leave_the_students_batchnorm_statistics_alone():
    """Measured in the ablation: BYOL views folded into the running statistics cost the supervised
    head 0.1 F1 at inference. The BYOL forward must use batch statistics and keep running ones."""
    torch.manual_seed(0)
    model = create_model(TINY).train()
    term = BYOL(1.0, model, SemiConfig(byol_batch=4, byol_hidden=16, byol_dim=8, mixup_memory=4),
                NoisePool(TINY.window_samples), seed=0)
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    loss = term(model, StepOutputs(0, *([None] * 6)))
    assert torch.isfinite(loss) and loss.requires_grad
    after = model.state_dict()
    assert all(torch.equal(stats[k], after[k]) for k in stats)
    norm = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    momentum = norm.momentum
    with running_stats_frozen(model):
        assert norm.momentum == 0.0
    assert norm.momentum == momentum
    model(torch.randn(4, TINY.window_samples))  # an ordinary forward still updates them
    assert not all(torch.equal(stats[k], model.state_dict()[k]) for k in stats)


def test_an_unreadable_pool_file_is_left_out_and_a_window_it_breaks_in_is_silence(tmp_path, caplog):
    """A junk or missing file stopped training with a traceback; a FLAC cut short after the pool was built (its
    header still promising the whole) crashed it mid-run at the same step on every resume."""
    rate = 22050
    whole = (0.1 * np.random.default_rng(0).standard_normal(4 * rate)).astype(np.float32)
    sf.write(tmp_path / "cut.flac", whole, rate)
    (tmp_path / "junk.wav").write_bytes(b"RIFF" + bytes(100))
    manifest = tmp_path / "pool.csv"
    manifest.write_text("path,split\ncut.flac,train\njunk.wav,train\nmissing.flac,train\n")
    with caplog.at_level("WARNING"):
        pool = UnlabelledPool.from_manifests((str(manifest),), (str(tmp_path),), "train", rate, 1.0)
    assert [f.path.name for f in pool.files] == ["cut.flac"]
    assert sum("left out of the pool" in r.message for r in caplog.records) == 2
    data = (tmp_path / "cut.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[:len(data) // 2])  # cut after the pool was built
    batch = pool.batch(np.random.default_rng(1), 16)
    assert batch.shape == (16, rate) and (~batch.any(axis=1)).any() and batch.any(axis=1).any()
    said = [r.getMessage() for r in caplog.records if "its unreadable windows are silence" in r.message]
    assert len(said) == 1 and said[0].startswith(f"{tmp_path / 'cut.flac'}: corrupt or truncated in "), said  # once
    (tmp_path / "bad.csv").write_text("file,split\ncut.flac,train\n")
    with pytest.raises(ManifestError, match="bad.csv: no path column"):
        UnlabelledPool.from_manifests((str(tmp_path / "bad.csv"),), (str(tmp_path),), "train", rate, 1.0)


def test_a_pool_of_more_files_than_audio_infos_cache_does_not_examine_a_header_per_window(tmp_path, monkeypatch,
                                                                                         caplog):
    """Each window examined its file's header again, which audio_info keeps for the last 4096 files only: a pool of
    more files did so for nearly every window, decoding a FLAC without its length in the header whole each time. A
    file replaced since the pool was built is still examined anew."""
    import pulse.io

    monkeypatch.setattr(pulse.io, "RECENT_NS", 0)  # files written just now are examined once, as older ones are
    rate = 8000
    sf.write(tmp_path / "a.flac", (0.1 * np.random.default_rng(0).standard_normal(4 * rate)).astype(np.float32), rate)
    data = bytearray((tmp_path / "a.flac").read_bytes())  # STREAMINFO's 36-bit sample count at bytes 18-25 set to 0
    data[18:26] = (int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)).to_bytes(8, "big")
    (tmp_path / "a.flac").write_bytes(bytes(data))
    pool = UnlabelledPool([tmp_path / "a.flac"], rate, 1.0)
    assert pulse.io.audio_info(tmp_path / "a.flac").counted and pool.files[0].duration_s == 4.0
    counted = []
    monkeypatch.setattr(pulse.io, "_decodable_frames", lambda path: counted.append(path) or (4 * rate, ""))
    for _ in range(3):
        pulse.io._examined.cache_clear()  # what 4096 other pool files drawn in between do to it
        assert pool.window(np.random.default_rng(0)).any()
    assert counted == []
    sf.write(tmp_path / "a.flac", np.full(2 * rate, 0.25, np.float32), rate)  # replaced by a shorter recording
    with caplog.at_level("WARNING"):
        batch = pool.batch(np.random.default_rng(1), 8)
    assert batch.any() and np.isin(np.round(batch, 3), (0.0, 0.25)).all()  # the new one: silence past its end
    assert not caplog.records  # not read past its end as the old one's header says it goes on


def test_the_pool_draws_files_as_rng_choice_did(tmp_path):
    """A run resumed across the change draws the same batches: files are picked in proportion to their durations
    from the same random numbers as `rng.choice(p=...)` took."""
    rate = 8000
    seconds = (1.0, 5.0, 2.0, 9.0)
    for i, s in enumerate(seconds):
        sf.write(tmp_path / f"{i}.wav", np.full(int(s * rate), (i + 1) / 8, np.float32), rate, subtype="FLOAT")
    pool = UnlabelledPool([tmp_path / f"{i}.wav" for i in range(4)], rate, 0.5)
    rng, replica = np.random.default_rng(3), np.random.default_rng(3)
    weights = np.array(seconds) / sum(seconds)
    for _ in range(200):
        expected = int(replica.choice(4, p=weights))
        replica.uniform(0.0, seconds[expected] - 0.5)
        np.testing.assert_allclose(pool.window(rng), (expected + 1) / 8, atol=1e-6)


def test_unlabelled_pool_streams_real_windows(shared_data):
    root = shared_data / "audio" / "backgrounds"
    files = sorted(root.glob("*.flac"))[:3]
    pool = UnlabelledPool(files, 22050, 1.5)
    batch = pool.batch(np.random.default_rng(0), 4)
    assert batch.shape == (4, 33075) and np.isfinite(batch).all() and (np.abs(batch).max(axis=1) > 0).all()
    info = sf.info(files[0])
    tail = read_span(files[0], info.duration - 0.5, 1.5, 22050)
    assert np.abs(tail[:10000]).max() > 0 and not tail[12000:].any()  # past the end: zeros
    head = read_span(files[0], -0.5, 1.5, 22050)  # before the start: zeros, then the recording from its first sample
    np.testing.assert_array_equal(head[:11025], 0.0)
    np.testing.assert_allclose(head[11025:], read_span(files[0], 0.0, 1.0, 22050), atol=1e-6)
    with pytest.raises(ValueError, match="roots"):
        UnlabelledPool.from_manifests(("a.csv", "b.csv"), ("x",), "train", 22050, 1.5)


def test_pseudo_field_recordings_are_valid_unlabelled_audio(shared_data, tmp_path):
    audio = shared_data / "audio"
    frame = pd.read_csv(audio / "insectset32.csv")
    songs = [audio / "insectset32" / p for p in frame.loc[frame["split"] == "train", "path"][:3]]
    beds = [audio / "backgrounds" / "OSS_great_plains_toad.flac"]
    manifest = make_pseudo_field(songs, beds, tmp_path, count=2, duration_s=12.0, sample_rate=22050,
                                 songs_per_minute=20.0, snr_db=(0.0, 10.0), seed=0)
    assert validate_manifest(manifest, tmp_path, splits=("train",)) == []
    data, rate = sf.read(tmp_path / manifest["path"][0])
    assert rate == 22050 and len(data) == 12 * 22050 and np.abs(data).max() <= 1.0
    again = make_pseudo_field(songs, beds, tmp_path / "again", 2, 12.0, 22050, 20.0, (0.0, 10.0), seed=0)
    np.testing.assert_array_equal(sf.read(tmp_path / "again" / again["path"][1])[0],
                                  sf.read(tmp_path / manifest["path"][1])[0])


def write_noise(path, seconds, rate, seed=0):
    """White noise at an rms of 0.05, as 16-bit PCM."""
    noise = 0.05 * np.random.default_rng(seed).standard_normal(int(seconds * rate))
    sf.write(path, noise.astype(np.float32), rate, subtype="PCM_16")
    return path


def test_pseudo_field_reads_only_the_soundscape_excerpts_it_uses(tmp_path):
    """Every soundscape was read whole, resampled, before the first recording: 2.1 GB for 2.9 hours of them
    (bench/README.md). Only the 10 s excerpts drawn are read now: 5 minutes at 48 kHz (53 MB at peak read whole)
    and a 3 s one looped make 2 recordings of 25 s at 22050 Hz in 8 MB."""
    beds = [write_noise(tmp_path / "night.wav", 300, 48000), write_noise(tmp_path / "short.wav", 3, 48000, seed=1)]
    song = write_noise(tmp_path / "song.wav", 2, 22050, seed=2)
    tracemalloc.start()
    try:
        make_pseudo_field([song], beds, tmp_path / "out", 2, 25.0, 22050, 6.0, (0.0, 10.0), seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    data, rate = sf.read(tmp_path / "out" / "pseudo_field_0_001.flac")
    assert rate == 22050 and len(data) == 25 * 22050 and 0.03 < np.sqrt(np.mean(data[:22050] ** 2)) < 0.07
    assert peak < 16 * 2**20


def test_a_pseudo_field_leaves_out_a_soundscape_or_song_it_cannot_read(tmp_path, caplog):
    """One unreadable soundscape among a user's field recordings (or one song) stopped the whole run at its
    AudioReadError. It is now left out with one line naming it, the recordings those of the readable files alone;
    only when none can be read is it refused."""
    night, song = write_noise(tmp_path / "night.wav", 30, 22050), write_noise(tmp_path / "song.wav", 2, 22050, seed=1)
    (tmp_path / "junk.wav").write_bytes(b"not a recording")
    make_pseudo_field([song], [night], tmp_path / "alone", 1, 12.0, 22050, 20.0, (0.0, 10.0), seed=0)
    with caplog.at_level(logging.WARNING, logger="pulse.unlabelled"):
        make_pseudo_field([song, tmp_path / "gone.wav"], [tmp_path / "junk.wav", night], tmp_path / "out", 1, 12.0,
                          22050, 20.0, (0.0, 10.0), seed=0)
    np.testing.assert_array_equal(sf.read(tmp_path / "out" / "pseudo_field_0_000.flac")[0],
                                  sf.read(tmp_path / "alone" / "pseudo_field_0_000.flac")[0])
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"{tmp_path / 'junk.wav'}: not readable as audio") for m in said), said
    assert any(m.startswith(f"{tmp_path / 'gone.wav'}: no such file") for m in said), said
    with pytest.raises(ValueError, match="none of the 1 soundscapes"):
        make_pseudo_field([song], [tmp_path / "junk.wav"], tmp_path / "none", 1, 12.0, 22050, 20.0, (0.0, 10.0), seed=0)


def test_a_pseudo_field_reads_10s_of_a_song_at_most_and_a_soundscape_one_excerpt_long_whole(tmp_path, monkeypatch):
    """Each song is read for 10 s at most, as it is placed; a soundscape exactly one 10 s excerpt long is read
    whole."""
    import pulse.unlabelled
    from pulse.unlabelled import make_pseudo_field

    night, song = write_noise(tmp_path / "night.wav", 10, 22050), write_noise(tmp_path / "song.wav", 15, 22050, seed=1)
    read, read_span = [], pulse.unlabelled.read_span
    monkeypatch.setattr(pulse.unlabelled, "read_span", lambda path, start_s, duration_s, *args: (
        read.append(duration_s) or read_span(path, start_s, duration_s, *args)))
    assert len(make_pseudo_field([song], [night], tmp_path / "out", 1, 12.0, 22050, 20.0, (0.0, 10.0), seed=0)) == 1
    assert read and set(read) == {10.0}


def test_a_pseudo_field_goes_on_past_a_soundscape_or_song_cut_short(tmp_path, caplog):
    """A FLAC cut short (a copy stopped half-way) has a header that reads fine, and the first excerpt or song read
    past its end stopped the run, the recordings not yet made lost. Such a song is now left out, such a soundscape
    drawn from before the excerpt that failed, said in one line each, and every recording is made of the readable
    audio (none all silence); a soundscape with nothing readable past its header is left out."""
    night, song = write_noise(tmp_path / "night.wav", 30, 22050), write_noise(tmp_path / "song.wav", 2, 22050, seed=1)
    for name, seconds, kept in (("bed_cut.flac", 12, 0.5), ("song_cut.flac", 4, 0.5), ("header_only.flac", 12, 0)):
        whole = write_noise(tmp_path / name, seconds, 22050, seed=2).read_bytes()
        (tmp_path / name).write_bytes(whole[:int(len(whole) * kept) or 100])
    with caplog.at_level(logging.WARNING, logger="pulse.unlabelled"):
        manifest = make_pseudo_field([song, tmp_path / "song_cut.flac"], [night, tmp_path / "bed_cut.flac"],
                                     tmp_path / "out", 3, 12.0, 22050, 20.0, (0.0, 10.0), seed=0)
    assert len(manifest) == 3
    for name in manifest["path"]:
        data = sf.read(tmp_path / "out" / name)[0]
        assert len(data) == 12 * 22050 and np.isfinite(data).all() and np.abs(data).max() > 0.1
    said = [r.getMessage() for r in caplog.records]
    assert said.count(f"{tmp_path / 'song_cut.flac'}: corrupt or truncated in 0.00-4.00 s (flac decoder lost sync); "
                      "left out of the pseudo-field songs") == 1, said
    assert sum(m.startswith(f"{tmp_path / 'bed_cut.flac'}: corrupt or truncated in ") for m in said) == 1, said
    with pytest.raises(ValueError, match="none of the soundscapes"):
        make_pseudo_field([song], [tmp_path / "header_only.flac"], tmp_path / "none", 1, 12.0, 22050, 20.0,
                          (0.0, 10.0), 0)
    with pytest.raises(ValueError, match="none of the songs"):  # not recordings of soundscape alone
        make_pseudo_field([tmp_path / "song_cut.flac"], [night], tmp_path / "no_song", 1, 12.0, 22050, 200.0,
                          (0.0, 10.0), 0)


def test_a_pseudo_field_draws_from_a_soundscape_damaged_near_its_end_up_to_the_damage(tmp_path, caplog):
    """A 2-minute soundscape cut short at 75% (its header intact) was left out at its first excerpt that met the
    break, its 90 readable seconds never drawn from again, and alone it refused the run. Its excerpts now come from
    before the excerpt that failed, said as `pulse analyze` says a damaged file (not libsndfile's "Error : ...")."""
    whole = write_noise(tmp_path / "night.flac", 120, 22050).read_bytes()
    (tmp_path / "night.flac").write_bytes(whole[:len(whole) * 3 // 4])
    song = write_noise(tmp_path / "song.wav", 2, 22050, seed=1)
    with caplog.at_level(logging.WARNING, logger="pulse.unlabelled"):
        manifest = make_pseudo_field([song], [tmp_path / "night.flac"], tmp_path / "out", 4, 30.0, 22050, 6.0,
                                     (0.0, 10.0), seed=0)
    said = [r.getMessage() for r in caplog.records]
    assert said and all(re.fullmatch(rf"{re.escape(str(tmp_path / 'night.flac'))}: corrupt or truncated in "
                                     r"[\d.]+-[\d.]+ s \([^:]+\); only its first [\d.]+ s used from here on", m)
                        for m in said), said
    for name in manifest["path"]:
        data = sf.read(tmp_path / "out" / name)[0]
        quietest = min(np.abs(data[at:at + 22050]).max() for at in range(0, len(data), 22050))
        assert quietest > 0.05  # no second of silence: every excerpt read


def test_pseudo_field_songs_land_at_the_snr_asked(tmp_path):
    """One 2 s tone in a white-noise soundscape at 6 dB: its stretch of the recording holds the tone at 6 dB above
    the noise, measured against the noise elsewhere."""
    rate = 22050
    bed = write_noise(tmp_path / "night.wav", 120, 44100)
    tone = (0.5 * np.sin(2 * np.pi * 4000 * np.arange(2 * rate) / rate)).astype(np.float32)
    sf.write(tmp_path / "song.wav", tone, rate, subtype="FLOAT")
    make_pseudo_field([tmp_path / "song.wav"], [bed], tmp_path, 1, 12.0, rate, 5.0, (6.0, 6.0), seed=1)
    data = sf.read(tmp_path / "pseudo_field_1_000.flac")[0]
    power = np.mean(data.reshape(-1, rate // 10) ** 2, axis=1)  # per 0.1 s
    loud = power > 2 * np.median(power)
    inside = loud & np.roll(loud, 1) & np.roll(loud, -1)  # not the stretch's first or last frame, partly noise
    assert 20 <= loud.sum() <= 21 and np.ptp(np.flatnonzero(loud)) == loud.sum() - 1  # one song, whole
    snr_db = 10 * np.log10(power[inside].mean() / power[~loud].mean() - 1.0)
    assert snr_db == pytest.approx(6.0, abs=0.3)


def test_a_pool_file_listed_in_another_case_is_left_out_naming_the_file_of_that_name(tmp_path, caplog):
    """An unlabelled manifest made on Windows lists night\\REC1.FLAC where Linux has Night/rec1.flac: the pool left
    it out saying only 'no such file or folder'; it still does, naming the file that is there."""
    rate = 22050
    (tmp_path / "Night").mkdir()
    sf.write(tmp_path / "Night" / "rec1.flac", np.zeros(2 * rate, np.float32), rate)
    sf.write(tmp_path / "Night" / "rec2.flac", np.zeros(2 * rate, np.float32), rate)
    manifest = tmp_path / "pool.csv"
    manifest.write_text("path,split\nnight\\REC1.FLAC,train\nNight/rec2.flac,train\n")
    with caplog.at_level("WARNING"):
        pool = UnlabelledPool.from_manifests((str(manifest),), (str(tmp_path),), "train", rate, 1.0)
    assert [f.path.name for f in pool.files] == ["rec2.flac"]
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'night'}\\REC1.FLAC: no such file or folder; looked for with its \\ as folder separators, as "
        "Windows writes them; Night/rec1.flac is named so but for case (Windows and macOS ignore case, Linux does "
        "not): list it as it is named; left out of the pool"]


def test_an_unreadable_pseudo_field_file_is_named_whatever_the_error_names():
    """The warning line names the file first: an OSError without a file name (a disk's I/O error mid-read) and a
    decoder's RuntimeError carry none themselves."""
    from pulse.unlabelled import unread_line

    assert unread_line("night.wav", OSError(5, "Input/output error")) == "night.wav: [Errno 5] Input/output error"
    assert unread_line("night.wav", OSError(2, "No such file", "night.wav")) == "night.wav: No such file"
    assert unread_line("night.wav", RuntimeError("lost sync")) == "night.wav: lost sync"
