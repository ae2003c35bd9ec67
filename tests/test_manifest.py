"""Manifest validation: every kind of problem is reported, one line each, and good manifests pass."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pulse.cli import app
from pulse.config import ModelConfig
from pulse.manifest import LABELLED_COLUMNS, ManifestError, load_manifest, read_manifest, validate_manifest

REPO = Path(__file__).resolve().parents[1]
LABELS = ModelConfig().labels


def test_a_path_typed_in_another_case_names_the_file_copied_from_a_mac(tmp_path, root):
    """Élytre.flac copied from a Mac (its name in NFD) and listed as élytre.flac typed by hand (NFC): the line names
    the file there, as it does for a name whose spellings agree."""
    import unicodedata

    on_disk = unicodedata.normalize("NFD", "Élytre.flac")
    (root / on_disk).write_bytes(b"x")
    manifest = write(tmp_path, [row(unicodedata.normalize("NFC", "élytre.flac"))])
    result = CliRunner().invoke(app, ["manifest", str(manifest), "--audio-root", str(root)])
    assert result.exit_code == 1 and f"; {on_disk} is named so but for case" in result.output


def write(tmp_path, rows, columns=LABELLED_COLUMNS):
    path = tmp_path / "m.csv"
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


def row(path, species=LABELS[0], split="train"):
    return [path, species, split, "CC-BY-4.0", "someone", "1.0", "44100"]


@pytest.fixture
def root(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    for name in ("a.flac", "b.flac", "c.flac"):
        (audio / name).write_bytes(b"x")
    return audio


def test_clean_manifest_has_no_problems(tmp_path, root):
    path = write(tmp_path, [row("a.flac"), row("b.flac", LABELS[1]), row("c.flac", split="validation")])
    assert validate_manifest(read_manifest(path), root, LABELS) == []
    assert len(load_manifest(path, root, LABELS)) == 3


def test_each_problem_is_reported_on_its_own_line(tmp_path, root):
    rows = [row("a.flac"), row("a.flac"), row("missing.flac"), row("b.flac", "Homo sapiens")]
    problems = validate_manifest(read_manifest(write(tmp_path, rows)), root, LABELS, name="m.csv")
    assert any("m.csv: duplicate path a.flac (2 rows: 2, 3)" in p for p in problems)
    assert any("m.csv:4: missing file" in p and "missing.flac" in p for p in problems)
    assert any("m.csv:5: unknown species 'Homo sapiens'" in p for p in problems)
    assert any("split 'validation' is empty" in p for p in problems)
    assert len(problems) == 4
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path / "m.csv", root, LABELS)
    assert len(str(info.value).splitlines()) == 4


def test_missing_columns_are_named_and_provenance_columns_are_optional(tmp_path, root):
    path = write(tmp_path, [["a.flac", LABELS[0]]], columns=("path", "species"))
    (problem,) = validate_manifest(read_manifest(path), root, LABELS)
    assert "missing column(s) split (needed: path, species, split; documented: path, species, split, license" in problem
    minimal = write(tmp_path, [["a.flac", LABELS[0], "train"], ["c.flac", LABELS[0], "validation"]],
                    columns=("path", "species", "split"))
    assert validate_manifest(read_manifest(minimal), root, LABELS) == []


def test_unlabelled_schema_needs_no_species(tmp_path, root):
    path = write(tmp_path, [["a.flac", "train", "MIT", "somewhere", "1.0", "44100"]],
                 columns=("path", "split", "license", "source", "duration_s", "sample_rate"))
    assert validate_manifest(read_manifest(path), root, LABELS, splits=("train",)) == []


def test_shipped_manifests_are_valid(shared_data):
    audio = shared_data / "audio"
    insectset = read_manifest(REPO / "data_manifests/insectset32.csv")
    assert validate_manifest(insectset, audio / "insectset32", LABELS) == []
    backgrounds = read_manifest(REPO / "data_manifests/backgrounds.csv")
    assert validate_manifest(backgrounds, audio / "backgrounds") == []
    published = pd.read_csv(audio / "insectset32.csv").set_index("path")["split"]
    ours = read_manifest(REPO / "data_manifests/insectset32.csv").set_index("path")["split"]
    assert ours.sort_index().equals(published.sort_index())  # the published splits, unchanged


def test_cli_exit_codes(tmp_path, root):
    runner = CliRunner()
    good = write(tmp_path, [row("a.flac"), row("c.flac", split="validation")])
    result = runner.invoke(app, ["manifest", str(good), "--audio-root", str(root)])
    assert result.exit_code == 0 and "OK, 2 rows, labelled (train: 1, validation: 1)" in result.output
    unlabelled = tmp_path / "unlabelled.csv"
    pd.read_csv(good).drop(columns="species").to_csv(unlabelled, index=False)
    result = runner.invoke(app, ["manifest", str(unlabelled), "--audio-root", str(root)])
    assert result.exit_code == 0 and "OK, 2 rows, unlabelled (no species column)" in result.output
    bad = write(tmp_path, [row("a.flac"), row("nope.flac")])
    result = runner.invoke(app, ["manifest", str(bad), "--audio-root", str(root)])
    assert result.exit_code == 1 and "missing file" in result.output and "is empty" in result.output


def test_own_species_validate_against_the_training_config(tmp_path, root):
    """`pulse manifest --config` checks species against that config's labels, not the bundled nine."""
    import dataclasses
    import json

    from pulse.config import TrainConfig

    own = write(tmp_path, [row("a.flac", "Chorthippus mollis"), row("c.flac", "Chorthippus mollis", "validation")])
    runner = CliRunner()
    result = runner.invoke(app, ["manifest", str(own), "--audio-root", str(root)])
    assert result.exit_code == 1 and "unknown species 'Chorthippus mollis' (2 rows)" in result.output
    assert result.output.count("unknown species") == 1 and "pass --config with model.labels" in result.output
    model = ModelConfig(labels=("Chorthippus mollis",), common_names=("Lesser Field Grasshopper",), codes=("CHOMOL",))
    config = tmp_path / "mine.json"
    config.write_text(json.dumps(dataclasses.replace(TrainConfig(), model=model).to_dict()))
    result = runner.invoke(app, ["manifest", str(own), "--audio-root", str(root), "--config", str(config)])
    assert result.exit_code == 0 and "OK, 2 rows" in result.output


def test_a_label_with_the_common_name_glued_on_is_named(tmp_path, root):
    """BirdNET-Analyzer's folder name copied into model.labels ('Gryllus campestris_Field Cricket') gave only
    "unknown species 'Gryllus campestris'": the name the user thought they had given."""
    own = write(tmp_path, [row("a.flac", "Gryllus campestris"), row("c.flac", "Gryllus campestris", "validation")])
    labels = ("Chorthippus brunneus", "Gryllus campestris_Field Cricket")
    (problem,) = validate_manifest(read_manifest(own), root, labels, name="m.csv")
    assert problem == ("m.csv:2: unknown species 'Gryllus campestris' (2 rows); the labels have 'Gryllus "
                       "campestris_Field Cricket': a label is the scientific name alone, the common name goes in "
                       "model.common_names")
    (problem,) = validate_manifest(read_manifest(own), root, ("Gryllus campestrisx",), name="m.csv")
    assert problem == "m.csv:2: unknown species 'Gryllus campestris' (2 rows)"


def test_make_manifest_from_species_folders(tmp_path, shared_data):
    source = sorted((shared_data / "audio" / "insectset32" / "Gryllus_campestris").glob("*.flac"))[:5]
    for folder, files in (("Gryllus_campestris", source), ("Chorthippus mollis", source[:1])):
        (tmp_path / "mine" / folder).mkdir(parents=True)
        for f in files:
            (tmp_path / "mine" / folder / f.name).write_bytes(f.read_bytes())
    (tmp_path / "mine" / "Gryllus_campestris" / "notes.wav").write_text("not audio")
    out = tmp_path / "manifest.csv"
    result = CliRunner().invoke(app, ["make-manifest", str(tmp_path / "mine"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and "notes.wav: not readable as audio" in result.output
    frame = read_manifest(out)
    assert list(frame.columns) == list(LABELLED_COLUMNS) and len(frame) == 6
    splits = frame.groupby("species")["split"].value_counts().to_dict()
    assert splits == {("Gryllus campestris", "train"): 4, ("Gryllus campestris", "validation"): 1,
                      ("Chorthippus mollis", "train"): 1}  # a lone recording trains
    assert frame["sample_rate"].eq("44100").all() and frame["duration_s"].astype(float).gt(0).all()
    assert validate_manifest(frame, tmp_path / "mine", ("Gryllus campestris", "Chorthippus mollis"), ("train",)) == []



@pytest.mark.skipif(os.name != "posix", reason="a name that is not UTF-8 is a POSIX file system's")
def test_make_manifest_lists_a_recording_whose_name_is_not_utf8_and_the_manifest_finds_it(tmp_path, shared_data):
    """A Latin-1 name (an old Windows archive, unzipped) stopped make-manifest with UnicodeEncodeError and a traceback,
    nothing written. Its byte is written as \\udcXX, as `pulse analyze`'s tables write it, and read back as the name."""
    source = sorted((shared_data / "audio" / "insectset32" / "Gryllus_campestris").glob("*.flac"))[:2]
    folder = tmp_path / "mine" / "Gryllus_campestris"
    folder.mkdir(parents=True)
    latin1 = Path(os.fsdecode(os.fsencode(folder) + b"/champ\xeatre.flac"))
    latin1.write_bytes(source[0].read_bytes())
    (folder / "ok.flac").write_bytes(source[1].read_bytes())
    out = tmp_path / "manifest.csv"
    for flags in ([], ["--unlabelled"]):
        result = CliRunner().invoke(app, ["make-manifest", str(tmp_path / "mine" if not flags else folder), "--out",
                                          str(out), *flags])
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
        assert "champ\\udceatre.flac" in out.read_text(encoding="utf-8")
        root = tmp_path / "mine" if not flags else folder
        assert sorted((root / p).is_file() for p in read_manifest(out)["path"]) == [True, True]
        assert CliRunner().invoke(app, ["manifest", str(out), "--audio-root", str(root), "--splits", "train"]
                                  ).exit_code == 0


def test_a_manifest_saved_again_by_excel_is_read_or_refused_saying_how_to_save_it(tmp_path, shared_data):
    """make-manifest asks for license and recordist to be filled in: Excel in a French or German locale saves the
    table with ';' between columns (read as one column: "missing column(s) path, split"), and as 'CSV' in the system's
    code page ("error: 'utf-8' codec can't decode byte 0xea in position 13", naming no file)."""
    folder = tmp_path / "mine" / "Gryllus campestris"
    folder.mkdir(parents=True)
    source = sorted((shared_data / "audio" / "insectset32" / "Gryllus_campestris").glob("*.flac"))[0]
    (folder / "Champêtre; haie 3.flac").write_bytes(source.read_bytes())
    made = tmp_path / "made.csv"
    assert CliRunner().invoke(app, ["make-manifest", str(tmp_path / "mine"), "--out", str(made)]).exit_code == 0
    excel = read_manifest(made).assign(license="CC BY 4.0").to_csv(sep=";", index=False, lineterminator="\r\n")
    for encoding, saved in (("utf-8-sig", "CSV UTF-8"), ("cp1252", "CSV")):
        (tmp_path / f"{saved}.csv").write_bytes(excel.encode(encoding))
        result = CliRunner().invoke(app, ["manifest", str(tmp_path / f"{saved}.csv"), "--audio-root",
                                          str(tmp_path / "mine"), "--splits", "train"])
        if saved == "CSV UTF-8":
            assert result.exit_code == 0 and "OK, 1 rows, labelled" in result.output, result.output
            assert read_manifest(tmp_path / f"{saved}.csv")["license"].tolist() == ["CC BY 4.0"]
        else:
            assert result.exit_code == 2 and result.output.strip() == (
                f"error: {tmp_path / 'CSV.csv'}, line 2: not UTF-8 text; save it as 'CSV UTF-8 (Comma delimited)' "
                "(Excel: Save As)")


def test_make_manifest_splits_stay_put_as_recordings_are_added_and_copies_share_a_split(tmp_path, shared_data):
    """All species drew from one random stream: one file added to a folder moved recordings between splits in
    every folder, so a model trained on the old manifest was validated on its own training data. A recording
    copied into two species folders (two singers in it) could be trained on in one and validated in the other."""
    from pulse.manifest import manifest_from_folders

    songs = sorted((shared_data / "audio" / "insectset32").glob("*/*.flac"))
    mine = tmp_path / "mine"
    for i, song in enumerate(songs[:30]):
        (mine / f"species_{i % 3}").mkdir(parents=True, exist_ok=True)
        (mine / f"species_{i % 3}" / song.name).write_bytes(song.read_bytes())
    before = manifest_from_folders(mine)[0].set_index("path")["split"]
    (mine / "species_0" / songs[30].name).write_bytes(songs[30].read_bytes())
    after = manifest_from_folders(mine)[0].set_index("path")["split"]
    moved = [path for path in before.index if after[path] != before[path]]
    # never into validation
    assert all(path.startswith("species_0/") and before[path] == "validation" for path in moved)
    assert before.value_counts().to_dict() == {"train": 24, "validation": 6}
    held_out = next(path for path in after.index if path.startswith("species_0/") and after[path] == "validation")
    for copy in ("species_1", "species_2"):  # a species_0 validation recording in both other folders
        (mine / copy / Path(held_out).name).write_bytes((mine / held_out).read_bytes())
    frame = manifest_from_folders(mine)[0]
    assert set(frame.loc[frame["path"].str.endswith("/" + Path(held_out).name), "split"]) == {"validation"}
    assert set(manifest_from_folders(mine, seed=1)[0]["split"]) == {"train", "validation"}


def test_make_manifest_lists_a_recording_it_cannot_read_and_goes_on(tmp_path, shared_data, monkeypatch):
    import export.artifact
    from pulse.manifest import manifest_from_folders

    song = next((shared_data / "audio" / "insectset32").glob("*/*.flac"))
    for name in ("a.flac", "b.flac"):
        (tmp_path / "Gryllus_campestris").mkdir(exist_ok=True)
        (tmp_path / "Gryllus_campestris" / name).write_bytes(song.read_bytes())
    hash_of = export.artifact.sha256

    def refused(path):  # as a file the user may not read (root reads anything, so it is simulated)
        if Path(path).name == "b.flac":
            raise PermissionError(13, "Permission denied")
        return hash_of(path)

    monkeypatch.setattr(export.artifact, "sha256", refused)
    frame, problems = manifest_from_folders(tmp_path)
    assert list(frame["path"]) == ["Gryllus_campestris/a.flac"]
    assert problems == [f"{tmp_path / 'Gryllus_campestris' / 'b.flac'}: cannot read it (Permission denied)"]


def test_make_manifest_reads_birdnet_analyzer_training_folders(tmp_path):
    """A BirdNET-Analyzer user's training data: `Scientific name_Common name` folders gave the species
    'Gryllus campestris Field Cricket', and the `Noise` folder of negatives became a species of its own, which a
    model trained on the manifest would then report as detections."""
    import soundfile as sf

    from pulse.manifest import manifest_from_folders

    folders = ("Gryllus campestris_Field Cricket", "Chorthippus_brunneus", "Noise", "-Gryllus campestris_Field Cricket",
               "Gryllus campestris_Field Cricket,Chorthippus brunneus_Common Field Grasshopper")
    for i, folder in enumerate(folders):
        (tmp_path / folder).mkdir()
        for j in range(2):
            sf.write(tmp_path / folder / f"{j}.wav", np.random.default_rng(10 * i + j).normal(0, 0.1, 8000), 16000)
    frame, problems = manifest_from_folders(tmp_path)
    assert sorted(set(frame["species"])) == ["Chorthippus brunneus", "Gryllus campestris"]
    assert dict(zip(frame["species"], frame["common_name"])) == {"Gryllus campestris": "Field Cricket",
                                                                "Chorthippus brunneus": ""}
    assert len(problems) == 3 and all(line.startswith(str(tmp_path)) for line in problems)
    noise = next(line for line in problems if line.startswith(str(tmp_path / "Noise")))
    assert f'"backgrounds": ["{tmp_path / "Noise"}"]' in noise


def test_make_manifest_of_a_noise_folder(tmp_path):
    """BirdNET-Analyzer's Noise folder had no way into a manifest ('no species folders'), so a user could neither
    validate on their own backgrounds (background_manifest) nor cache BirdNET's outputs of them (teacher-cache)."""
    import soundfile as sf

    noise = tmp_path / "Noise"
    (noise / "site2").mkdir(parents=True)
    for i, name in enumerate(("a.wav", "b.wav", "c.wav", "site2/d.flac")):
        sf.write(noise / name, np.random.default_rng(i).normal(0, 0.1, 8000), 16000)
    (noise / "notes.wav").write_bytes(b"not audio")
    result = CliRunner().invoke(app, ["make-manifest", str(noise), "--unlabelled", "--out", str(tmp_path / "n.csv")])
    assert result.exit_code == 0, result.output
    assert f"skipped {noise / 'notes.wav'}" in result.output
    assert f'"background_manifest": "{tmp_path / "n.csv"}", "background_root": "{noise}"' in result.output
    frame = read_manifest(tmp_path / "n.csv")
    assert list(frame.columns) == ["path", "split", "license", "source", "duration_s", "sample_rate"]
    assert list(frame["path"]) == ["a.wav", "b.wav", "c.wav", "site2/d.flac"]
    assert sorted(frame["split"]) == ["train", "train", "train", "validation"]
    assert validate_manifest(frame, noise) == []
    labelled = CliRunner().invoke(app, ["make-manifest", str(noise / "site2"), "--out", str(tmp_path / "m.csv")])
    assert labelled.exit_code == 2 and "--unlabelled" in labelled.output
    with pytest.raises(ManifestError, match="Noise: a folder, not a manifest .*--unlabelled"):
        read_manifest(noise)  # teacher-cache --manifest mydata/Noise said 'manifest not found'


def test_birdnet_analyzer_folders_padded_or_all_underscores_are_read_as_meant(tmp_path):
    """'Noise ' (a trailing space from a copy) became the species 'Noise'; 'Gryllus_campestris_Field cricket' the
    species 'Gryllus campestris Field cricket'; and 'Gryllus_campestris' beside 'Gryllus campestris_Field Cricket'
    (one species) lost its common name."""
    import soundfile as sf

    from pulse.manifest import manifest_from_folders

    folders = ("Gryllus campestris_Field Cricket", "Gryllus_campestris", "Oecanthus_pellucens_Italian tree cricket",
               "Noise ")
    for i, folder in enumerate(folders):
        (tmp_path / folder).mkdir()
        sf.write(tmp_path / folder / "0.wav", np.random.default_rng(i).normal(0, 0.1, 8000), 16000)
    frame, problems = manifest_from_folders(tmp_path)
    assert dict(zip(frame["species"], frame["common_name"])) == {"Gryllus campestris": "Field Cricket",
                                                                "Oecanthus pellucens": "Italian tree cricket"}
    assert len(problems) == 1 and problems[0].startswith(f"{tmp_path / 'Noise '}: BirdNET-Analyzer's folder")


def test_unlabelled_refuses_a_birdnet_analyzer_training_root_and_an_unreadable_folder(tmp_path):
    """'pulse make-manifest mydata --unlabelled' (the training root, not its Noise folder) listed every song of
    every species as a background recording, to be mixed into training as no song; a folder of nothing readable
    wrote an empty manifest and offered it for training; one recording gave a manifest without a validation split,
    which training then refused as background_manifest ("split 'validation' is empty") after being told to use it."""
    import soundfile as sf

    from pulse.manifest import folder_species, longer_label_hint, unlabelled_manifest_from_folder

    mydata = tmp_path / "mydata"
    for i, folder in enumerate(("Gryllus campestris_Field Cricket", "Chorthippus_brunneus", "Noise", "rain")):
        (mydata / folder).mkdir(parents=True)
        sf.write(mydata / folder / "0.wav", np.random.default_rng(i).normal(0, 0.1, 8000), 16000)
    with pytest.raises(ManifestError, match=r"mydata: BirdNET-Analyzer's training folders \(species "
                                            r"Chorthippus_brunneus, Gryllus campestris_Field Cricket beside Noise\).*"
                                            r"pulse make-manifest .*mydata/Noise --unlabelled"):
        unlabelled_manifest_from_folder(mydata)
    (mydata / "Noise").rename(mydata / "ambient")  # no Noise folder: a folder of backgrounds by site or kind
    assert len(unlabelled_manifest_from_folder(mydata)[0]) == 4
    (tmp_path / "junk" / "Gryllus_campestris").mkdir(parents=True)
    (tmp_path / "junk" / "Gryllus_campestris" / "a.wav").write_bytes(b"not audio")
    for flags in (["--unlabelled"], []):
        result = CliRunner().invoke(app, ["make-manifest", str(tmp_path / "junk"), *flags, "--out",
                                          str(tmp_path / "j.csv")])
        assert result.exit_code == 2 and "no recording could be read (skipped above)" in result.output, result.output
        assert not (tmp_path / "j.csv").exists()
    lone = CliRunner().invoke(app, ["make-manifest", str(mydata / "rain"), "--unlabelled", "--out",
                                    str(tmp_path / "r.csv")])
    assert lone.exit_code == 0 and "r.csv has no validation split" in lone.output
    assert "has no validation split" not in CliRunner().invoke(app, ["make-manifest", str(mydata), "--unlabelled",
                                                                     "--out", str(tmp_path / "m.csv")]).output
    # a genus beside its species is no common name glued on; a folder of a common name alone names no species ''
    assert longer_label_hint("Gryllus", ("Gryllus campestris",)) == ""
    assert longer_label_hint("Gryllus campestris", ("Gryllus campestris Field Cricket",)) != ""
    assert folder_species("_Field cricket") == ("Field cricket", "")


def test_the_validation_draw_takes_one_of_two_follows_the_seed_and_refuses_a_fraction_of_one():
    from pulse.manifest import check_val_fraction, drawn_for_validation

    contents = {f"{i:064x}" for i in range(10)}
    assert len(drawn_for_validation(set(list(contents)[:2]), 0.2, 0)) == 1  # round(0.4) is 0: at least one
    assert len({frozenset(drawn_for_validation(contents, 0.2, seed)) for seed in range(4)}) > 1
    assert drawn_for_validation(contents, 0.2, 3) == drawn_for_validation(set(sorted(contents)), 0.2, 3)
    with pytest.raises(ValueError, match=r"--val-fraction must be in \[0, 1\), got 1"):
        check_val_fraction(1.0)  # no recording left to train on


def test_make_manifest_prints_paths_with_spaces_as_they_can_be_pasted(tmp_path):
    """'My Data/Noise' was printed bare in the shell command to run (two words to a shell) and the config line."""
    import json
    import shlex

    import soundfile as sf

    from pulse.manifest import manifest_from_folders

    root = tmp_path / "My Data"
    for folder in ("Gryllus campestris_Field Cricket", "Noise"):
        (root / folder).mkdir(parents=True)
        sf.write(root / folder / "0.wav", np.random.default_rng(0).normal(0, 0.1, 8000), 16000)
    (line,) = manifest_from_folders(root)[1]
    config = json.loads("{" + line[line.index('"backgrounds"'):line.index("]") + 1] + "}")
    assert config == {"backgrounds": [str(root / "Noise")]}
    command = line[line.index("pulse make-manifest"):line.index(" --out")]
    assert shlex.split(command)[2] == str(root / "Noise")
    out = tmp_path / "n.csv"
    said = CliRunner().invoke(app, ["make-manifest", str(root / "Noise"), "--unlabelled", "--out", str(out)]).output
    assert f"--audio-root {shlex.quote(str(root / 'Noise'))}" in said and json.dumps(str(root / "Noise")) in said


def test_a_manifest_typed_by_hand_finds_recordings_copied_from_a_mac(tmp_path, shared_data):
    """A name typed into the table (é as one character, NFC) and the file copied from a Mac (e and a combining accent,
    NFD) look alike and differ in bytes: `pulse manifest` said 'missing file', training stopped. They are found,
    nothing is renamed, and the manifest keeps its own spelling (the teacher cache's key)."""
    from pulse.train.data import load_clips

    songs = sorted((shared_data / "audio" / "insectset32" / "Gryllus_campestris").glob("*.flac"))[:2]
    typed = ["Ängsgräshoppa/fältsyrsa_é.flac", "Ängsgräshoppa/syrsa_ö.flac"]
    for song, name in zip(songs, typed):
        on_disk = tmp_path / "audio" / unicodedata.normalize("NFD", name)
        on_disk.parent.mkdir(parents=True, exist_ok=True)
        on_disk.write_bytes(song.read_bytes())
    manifest = write(tmp_path, [row(typed[0]), row(typed[1], split="validation")])
    result = CliRunner().invoke(app, ["manifest", str(manifest), "--audio-root", str(tmp_path / "audio")])
    assert result.exit_code == 0 and "OK, 2 rows" in result.output, result.output
    clips = load_clips(str(manifest), str(tmp_path / "audio"), "train", LABELS, 16000)
    assert [clip.path for clip in clips] == [typed[0]] and clips[0].audio.size > 16000
    assert sorted(os.listdir(tmp_path / "audio")) == [unicodedata.normalize("NFD", "Ängsgräshoppa")]


def test_one_recording_listed_in_both_unicode_spellings_is_a_duplicate(tmp_path, shared_data):
    """The same name typed (NFC) in one row and pasted from a Mac's listing (NFD) in another looks like one name but
    differs in bytes: `pulse manifest` said OK and training read the recording twice. One line names both rows."""
    song = sorted((shared_data / "audio" / "insectset32" / "Gryllus_campestris").glob("*.flac"))[0]
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / unicodedata.normalize("NFD", "fältsyrsa_é.flac")).write_bytes(song.read_bytes())
    (tmp_path / "audio" / "other.flac").write_bytes(song.read_bytes())
    spellings = [unicodedata.normalize(form, "fältsyrsa_é.flac") for form in ("NFC", "NFD")]
    manifest = write(tmp_path, [row(spellings[0]), row(spellings[1]), row("other.flac", split="validation")])
    result = CliRunner().invoke(app, ["manifest", str(manifest), "--audio-root", str(tmp_path / "audio")])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == (f"{manifest}: duplicate path {spellings[0]} (2 rows: 2, 3, the same name in two "
                                     f"spellings)")


def test_a_manifest_saved_on_windows_finds_recordings_under_backslash_paths(tmp_path, shared_data):
    """A table written on Windows names `Gryllus_campestris\\x.flac` (PowerShell: `.\\Gryllus_campestris\\x.flac`):
    every row was 'missing file'; Excel's 'Unicode Text' (UTF-16, tabs) was 'not UTF-8 text'. Such rows are found,
    one also listed with / is a duplicate, and a drive's or share's path (D:\\..., \\...) is one line saying what to
    do; a relative one not found says it was looked for with \\ as a folder separator."""
    from pulse.train.data import load_clips

    songs = sorted((shared_data / "audio" / "insectset32" / "Gryllus_campestris").glob("*.flac"))[:2]
    for song in songs:
        (tmp_path / "audio" / "Gryllus_campestris").mkdir(parents=True, exist_ok=True)
        (tmp_path / "audio" / "Gryllus_campestris" / song.name).write_bytes(song.read_bytes())
    typed = [f"Gryllus_campestris\\{songs[0].name}", f".\\Gryllus_campestris\\{songs[1].name}"]
    table = pd.DataFrame([row(typed[0]), row(typed[1], split="validation")], columns=list(LABELLED_COLUMNS))
    for name, sep, encoding in (("crlf_bom.csv", ",", "utf-8-sig"), ("unicode_text.txt", "\t", "utf-16")):
        data = table.to_csv(index=False, sep=sep, lineterminator="\r\n").encode(encoding)
        (tmp_path / name).write_bytes(data)
        result = CliRunner().invoke(app, ["manifest", str(tmp_path / name), "--audio-root", str(tmp_path / "audio")])
        assert result.exit_code == 0 and "OK, 2 rows" in result.output, result.output
        clips = load_clips(str(tmp_path / name), str(tmp_path / "audio"), "validation", LABELS, 16000)
        assert [clip.path for clip in clips] == [typed[1]] and clips[0].audio.size > 16000
    drive = "D:\\field\\Gryllus_campestris\\x.flac"
    manifest = write(tmp_path, [row(typed[0]), row(f"Gryllus_campestris/{songs[0].name}"),
                                row(typed[1], split="validation"), row(drive), row(drive[2:]),
                                row("Gryllus_campestris\\x.flac")])
    result = CliRunner().invoke(app, ["manifest", str(manifest), "--audio-root", str(tmp_path / "audio")])
    elsewhere = ("; a Windows path with a drive or share, which is not here: list it relative to the audio root "
                 "(field\\x.wav for D:\\field\\x.wav, the audio root where D:\\ is copied)")
    assert result.exit_code == 1 and result.output.splitlines() == [
        f"{manifest}:5: missing file {tmp_path / 'audio' / drive}{elsewhere}",
        f"{manifest}:6: missing file {tmp_path / 'audio' / drive[2:]}{elsewhere}",
        f"{manifest}:7: missing file {tmp_path / 'audio' / 'Gryllus_campestris'}\\x.flac; looked for with its \\ as "
        "folder separators, as Windows writes them",
        f"{manifest}: duplicate path Gryllus_campestris/{songs[0].name} (2 rows: 2, 3, the same name in two spellings)"]


def test_a_path_in_another_case_is_missing_and_names_the_file_of_that_name(tmp_path, root):
    """A table made on Windows or a Mac (file systems that ignore case) lists gryllus\\REC1.FLAC where Linux has
    Gryllus/rec1.flac: `pulse manifest`, training and the teacher cache said only 'missing file'. The file is still
    not taken for it (with Rec1.flac beside it, which is meant cannot be told), but the line names what is there."""
    from pulse.config import TeacherCacheConfig
    from pulse.teacher.cache import build_cache
    from pulse.train.data import load_clips

    (root / "Gryllus").mkdir()
    for name in ("rec1.flac", "rec2.flac", "Rec2.flac"):
        (root / "Gryllus" / name).write_bytes(b"x")
    manifest = write(tmp_path, [row("gryllus\\REC1.FLAC"), row("GRYLLUS/REC2.flac"), row("a.flac"),
                                row("B.flac", split="validation"), row("gryllus\\nothing.flac", split="validation")])
    result = CliRunner().invoke(app, ["manifest", str(manifest), "--audio-root", str(root)])
    backslashes = "; looked for with its \\ as folder separators, as Windows writes them"
    but_for_case = "named so but for case (Windows and macOS ignore case, Linux does not): list it as it is named"
    assert result.exit_code == 1 and result.output.splitlines() == [
        f"{manifest}:2: missing file {root / 'gryllus'}\\REC1.FLAC{backslashes}; Gryllus/rec1.flac is {but_for_case}",
        f"{manifest}:3: missing file {root / 'GRYLLUS/REC2.flac'}; Gryllus/Rec2.flac and Gryllus/rec2.flac are "
        f"{but_for_case}",
        f"{manifest}:5: missing file {root / 'B.flac'}; b.flac is {but_for_case}",
        f"{manifest}:6: missing file {root / 'gryllus'}\\nothing.flac{backslashes}"]
    with pytest.raises(ManifestError, match="Gryllus/rec1.flac is named so but for case"):
        load_clips(str(manifest), str(root), "train", LABELS, 16000)
    cfg = TeacherCacheConfig(manifest=str(manifest), audio_root=str(root), out=str(tmp_path / "cache"))
    assert len(build_cache(cfg, teacher=object())) == 0  # none is read: no teacher asked
    errors = pd.read_csv(tmp_path / "cache" / "errors.csv")
    assert errors.set_index("path").loc["gryllus\\REC1.FLAC", "message"] == (
        f"missing file{backslashes}; Gryllus/rec1.flac is {but_for_case}")


def test_training_folders_of_dozens_of_species_are_refused_naming_three(tmp_path):
    """The line refusing a BirdNET-Analyzer training root for --unlabelled names a few of its species folders, not
    each of the hundreds such a root may hold."""
    from pulse.manifest import unlabelled_manifest_from_folder

    for folder in ("Noise", *(f"Gryllus s{letter}" for letter in "abcdefghijklmnopqrstuvwxyz")):
        (tmp_path / folder).mkdir()
    with pytest.raises(ManifestError, match=r"\(species Gryllus sa, Gryllus sb, Gryllus sc, \.\.\. beside Noise\)"):
        unlabelled_manifest_from_folder(tmp_path)
