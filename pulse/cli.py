"""`pulse` command line: thin wrappers that build a config and call one library function.

Each subcommand lives next to the code it drives (pulse/analyze.py, pulse/train/, ...); this
file only parses flags. Run `pulse --help` for the list.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from export.atomic import error_line
from export.console import escape_what_stdout_cannot_print, help_paragraphs_unbroken
from export.jsonconfig import read_json
from pulse.config import (MAX_CLIP_S, MAX_RAISE_DB, AssessConfig, EvalConfig, ExportConfig, InferConfig, ModelConfig,
                          SegmentConfig, TeacherCacheConfig, TrainConfig)
from pulse.writers import WRITERS

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="PULSE: Orthoptera song detection for field recordings.")
app.callback()(escape_what_stdout_cannot_print)  # before every command

_INFER = InferConfig()  # CLI defaults are read from the config, never restated
MODEL_HELP = ("'default' (bundled ONNX, distilled from BirdNET: CC BY-NC-SA), 'supervised' (not distilled: no NC "
              "clause), 'lowrate' (for 16-32 kHz recorders), 'birdnet', or a .onnx/.safetensors path.")
LEVEL_FLOOR_HELP = (f"dBFS: a window peaking below it is raised to it (by at most {MAX_RAISE_DB:g} dB) before a "
                    "PULSE model scores it, as quiet recorders need; -200 scores every window as recorded.")


# readable=False: one input that cannot be read fails in the batch (errors.csv, exit status 1), not the whole run
INPUTS_ARG = typer.Argument(..., readable=False, help="Audio files and/or folders (searched recursively).")


def _unwritable(exc: OSError) -> None:
    """--out cannot be written (read-only, full), or another file the run needs: one line, exit status 1."""
    typer.echo(f"error: {error_line(exc)}", err=True)
    raise typer.Exit(1)


def _again(redone: int) -> str:
    """How many of the files done were done before, repeated after the work (why was said in one line before it)."""
    return f" ({redone} again, as the model or settings changed)" if redone else ""


@app.command()
def analyze(
    ctx: typer.Context,
    inputs: list[Path] = INPUTS_ARG,
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (input folder structure is kept)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Rerun a previous run's config.json; flags given "
                                                                  "here override it."),
    model: str = typer.Option(_INFER.model, help=MODEL_HELP),
    min_conf: float = typer.Option(_INFER.min_conf, help="Minimum score reported as a detection."),
    overlap: float = typer.Option(_INFER.overlap, help="Seconds shared by consecutive windows."),
    min_len: float = typer.Option(_INFER.min_len, help="Seconds of audio a file's last window needs to be analysed "
                                                       "(an intact file shorter than that is analysed; one that "
                                                       "breaks off before it is an error)."),
    batch_size: int = typer.Option(_INFER.batch_size, help="Windows per model call."),
    workers: int = typer.Option(_INFER.workers, help="Decoding threads feeding the model (0: one per 2 cores, at "
                                                     "least 1); two or more also share out a long FLAC's blocks."),
    threads: int = typer.Option(_INFER.threads, help="CPU threads of the model, any backend (0: every core)."),
    format: str = typer.Option(",".join(_INFER.formats), "--format",
                               help=f"Comma list of {', '.join(WRITERS.list())}."),
    resume: bool = typer.Option(_INFER.resume, help="Skip files a previous run into --out finished."),
    device: str = typer.Option(_INFER.device, help="cpu or cuda[:N]."),
    channel: Optional[int] = typer.Option(_INFER.channel,
                                          help="Analyse this channel (0-based); default mixes to mono."),
    strict: bool = typer.Option(_INFER.strict, help="Stop at the first bad file instead of logging it."),
    species_list: str = typer.Option(_INFER.species_list, help="With --model birdnet: file of species to report "
                                                               "(one per line), as BirdNET-Analyzer's --slist."),
    lat: Optional[float] = typer.Option(_INFER.lat, help="With --model birdnet: the recording site's latitude; with "
                                                         "--lon, BirdNET's meta model keeps the species it expects "
                                                         "there (BirdNET-Analyzer's --lat; --species-list is then not "
                                                         "used)."),
    lon: Optional[float] = typer.Option(_INFER.lon, help="With --model birdnet: the site's longitude (--lon)."),
    week: int = typer.Option(_INFER.week, help="With --lat/--lon: week of the year, 1-48 (4 a month), -1 all year "
                                               "(--week)."),
    sf_thresh: float = typer.Option(_INFER.sf_thresh, help="With --lat/--lon: species occurring with at least this "
                                                           "frequency are kept (--sf_thresh)."),
    level_floor: float = typer.Option(_INFER.level_floor, help=LEVEL_FLOOR_HELP),
    merge_consecutive: int = typer.Option(_INFER.merge_consecutive, help="Up to N consecutive windows of a species "
                                          "as one detection row, scored by the mean of its 3 best windows, as "
                                          "BirdNET-Analyzer's --merge_consecutive (0 or 1: a row per window)."),
) -> None:
    """Detect species in recordings: Raven tables and detections.csv (more with --format), errors.csv, summary.json.

    Exit status: 0 all analysed; 1 some failed (errors.csv), none found or --strict stopped; 2 bad option."""
    import logging

    from pulse.analyze import analyze as run_analyze
    from pulse.io import AUDIO_SUFFIXES, AudioReadError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    flags = dict(model=model, min_conf=min_conf, overlap=overlap, min_len=min_len, batch_size=batch_size,
                 workers=workers, threads=threads, formats=tuple(f.strip() for f in format.split(",") if f.strip()),
                 resume=resume, device=device, channel=channel, strict=strict, species_list=species_list,
                 lat=lat, lon=lon, week=week, sf_thresh=sf_thresh,
                 level_floor=level_floor, merge_consecutive=merge_consecutive)
    try:
        if config is not None:  # the file's settings, then only the flags typed on this command line
            given = {k: v for k, v in flags.items()
                     if ctx.get_parameter_source("format" if k == "formats" else k).name != "DEFAULT"}
            cfg = replace(_read_run_config(config), **given)
        else:
            cfg = replace(_INFER, **flags)
        summary = run_analyze(inputs, out, cfg)
    except KeyboardInterrupt:  # finished files are journalled: the same command goes on from there
        typer.echo(f"interrupted: files finished so far are kept in {out}; run the same command again to go on",
                   err=True)
        raise typer.Exit(130)
    except AudioReadError as exc:  # --strict: the first bad recording ends the run
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)
    except (FileNotFoundError, KeyError, ValueError) as exc:  # bad model path, format or option: one line
        typer.echo(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}", err=True)
        raise typer.Exit(2)
    except OSError as exc:  # --out cannot be written (read-only, full): one line, before or instead of a traceback
        _unwritable(exc)
    s = summary.to_dict()
    speed = (f"; {s['audio_hours']} h of audio at {s['x_realtime']}x real time" if s["files_done"]
             else " (finished by an earlier run; --no-resume analyses them again)" if s["files_skipped"] else "")
    rewritten = f", {s['files_rewritten']} rewritten from saved scores" if s["files_rewritten"] else ""
    typer.echo(f"{s['files_done']} done{_again(s['files_redone'])}, {s['files_failed']} failed, "
               f"{s['files_skipped']} skipped{rewritten}{speed} -> {out}")
    if summary.model_license:  # the default model is distilled from BirdNET: its output is under BirdNET's licence
        typer.echo(f"model licence: {summary.model_license}")
    if not summary.files_total:
        typer.echo(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) found in: {', '.join(map(str, inputs))}", err=True)
        raise typer.Exit(1)
    if summary.files_failed:
        typer.echo(f"{summary.files_failed} file(s) failed: see {out / 'errors.csv'}", err=True)
        raise typer.Exit(1)


_SEGMENTS = SegmentConfig()


@app.command()
def segments(
    results: Path = typer.Argument(..., help="A `pulse analyze` --out folder (or its detections.csv)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder of clips, one subfolder per species; errors.csv, "
                                                      "segments.json (the settings: a rerun keeps its clips)."),
    min_conf: float = typer.Option(_SEGMENTS.min_conf, help="Only detections scoring at least this."),
    max_segments: int = typer.Option(_SEGMENTS.max_segments, help="Clips per species at most, drawn at random."),
    seq_length: float = typer.Option(_SEGMENTS.seq_length, help="Seconds a clip lasts at least (a shorter "
                                                                "detection is widened around its middle; clips "
                                                                f"last at most {MAX_CLIP_S:g})."),
    seed: int = typer.Option(_SEGMENTS.seed, help="Seed of the random draw."),
    audio_root: Optional[Path] = typer.Option(None, help="Folder the recordings' relative paths in detections.csv "
                                                         "start from (default: where `pulse analyze` ran)."),
    plots: bool = typer.Option(False, "--plots", help="Also a spectrogram of each clip, its detection boxed (.png "
                                                      "beside the .wav; added to an earlier run's clips too)."),
) -> None:
    """Cut detections into WAV clips per species, to listen to and verify (BirdNET-Analyzer's segments).

    Exit status: 0 all cut; 1 some recordings, clips or plots could not be read or written (errors.csv); 2 bad option
    or results."""
    import logging

    from pulse.segments import extract_segments

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = SegmentConfig(min_conf=min_conf, max_segments=max_segments, seq_length=seq_length, seed=seed)
    try:
        summary = extract_segments(results, out, cfg, audio_root, plots)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    except OSError as exc:  # --out cannot be written (read-only, full): one line
        _unwritable(exc)
    typer.echo(f"{summary.clips_written} clip(s) written, {summary.clips_kept} kept from an earlier run, "
               + (f"{summary.plots_written} plot(s), {summary.plots_failed} plot(s) failed, " if plots else "")
               + f"{summary.files_failed} recording(s) unreadable, {summary.clips_failed} clip(s) failed"
               + f"{_shortened(summary.clips_shortened)} -> {out}")
    if summary.files_failed or summary.clips_failed or summary.plots_failed:
        typer.echo(f"see {out / 'errors.csv'}", err=True)
        raise typer.Exit(1)


def _shortened(clips: int) -> str:
    """The last line's count of clips cut shorter than asked for (a short recording, a damaged FLAC's readable part),
    each a Shortened row of errors.csv, where there are any."""
    return f", {clips} shortened (errors.csv)" if clips else ""


@app.command("clips-from-annotations")
def clips_from_annotations(
    tables: list[Path] = typer.Argument(..., help="Raven selection tables and/or folders of them (.txt, searched "
                                                  "recursively), one per recording, matched to recordings as `pulse "
                                                  "assess` matches them; species are your own names."),
    audio: Path = typer.Option(..., "--audio", help="Folder of the annotated recordings (searched recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder of clips, one subfolder per species (FLAC), for "
                                                      "`pulse make-manifest`; problems.txt, errors.csv."),
    background: bool = typer.Option(False, "--background", help="Also cut the stretches no box covers (3 s at "
                                                                "least) into OUT/Background: backgrounds and "
                                                                "negatives for training."),
) -> None:
    """Cut each annotated box into a training clip (at least the model's 3 s window) in a folder of its species, to
    retrain on your own annotated recordings.

    Exit status: 0 all cut; 1 some tables, boxes or recordings were left out or could not be read (problems.txt); 2
    no usable table or bad option."""
    import logging

    from pulse.annotation_clips import clips_from_annotations as cut

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summary = cut(tables, audio, out, background)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    except OSError as exc:  # --out cannot be written (read-only, full): one line
        _unwritable(exc)
    for line in summary.problems:
        typer.echo(line, err=True)
    species = sorted(name for name in summary.clips if name != "Background")
    typer.echo(", ".join(f"{name}: {summary.clips[name]}" for name in [*species, "Background"] if summary.clips[name]))
    typer.echo(f"{summary.clips_written} clip(s) written, {summary.clips_kept} kept from an earlier run, "
               f"{summary.clips_failed} failed{_shortened(summary.clips_shortened)}, of {len(species)} species "
               f"-> {out}; next: pulse make-manifest {shlex.quote(str(out))} --out manifest.csv")
    if summary.problems or summary.clips_failed:
        typer.echo(f"{len(summary.problems)} problem(s): see {out / 'problems.txt'} and {out / 'errors.csv'}",
                   err=True)
        raise typer.Exit(1)


_ASSESS = AssessConfig()


@app.command()
def assess(
    annotations: list[Path] = typer.Argument(..., help="Raven selection tables and/or folders of them (.txt, searched "
                                                       "recursively), one per annotated recording or file sequence "
                                                       "(Begin File, File Offset); their folders "
                                                       "(below the folder given, or the tables' common one) tell "
                                                       "recordings of one name apart."),
    results: Path = typer.Option(..., "--results", "-r", help="The `pulse analyze` --out folder of those recordings "
                                                              "(run with --format including scores), or its "
                                                              "scores.csv."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for assessment.csv, precision_recall.png, "
                                                      "problems.txt."),
    min_conf: float = typer.Option(_ASSESS.min_conf, help="Score at which a window counts as a detection (precision, "
                                                          "recall, F1)."),
    min_overlap: float = typer.Option(_ASSESS.min_overlap_s, help="Seconds a box must overlap a window to make it "
                                                                  "positive (a box shorter than twice this: half "
                                                                  "of it)."),
) -> None:
    """Per-species precision, recall, F1, average precision and ROC AUC of a run against your annotations
    (BirdNET-Analyzer's evaluation); only annotated recordings are assessed: of a file-sequence table, the files
    between its first and last annotated one in their folder, boxes or not; a box running on into later files is song
    in each.

    A sequence's files are in the order of their starts in it (Begin Time - File Offset), those without boxes after
    the annotated one before them by name, digits compared as numbers (rec2 before rec10).

    Exit status: 0 assessed; 1 assessed, but some tables, boxes or recordings were left out (problems.txt); 2 nothing
    to assess or bad option."""
    import logging

    from pulse.assess import run_assessment

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = replace(_ASSESS, min_conf=min_conf, min_overlap_s=min_overlap)
    try:
        metrics, problems = run_assessment(annotations, results, out, cfg)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    except OSError as exc:
        _unwritable(exc)
    shown = metrics[metrics["positive_windows"] > 0][["species", "positive_windows", "precision", "recall", "f1",
                                                      "average_precision", "roc_auc"]]
    typer.echo(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for line in problems:
        typer.echo(line, err=True)
    typer.echo(f"{metrics['windows'].iloc[0]} windows of annotated recordings at --min-conf {min_conf:g} -> "
               f"{out / 'assessment.csv'}")
    if problems:
        typer.echo(f"{len(problems)} problem(s), their tables, boxes or recordings left out: see "
                   f"{out / 'problems.txt'}", err=True)
        raise typer.Exit(1)


@app.command()
def activity(
    results: Path = typer.Argument(..., help="A finished `pulse analyze` --out folder."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for activity.csv and activity.png "
                                                                 "(default: the run's folder)."),
    min_conf: Optional[float] = typer.Option(None, help="Score at which a window counts as a detection (default: "
                                                        "the run's --min-conf)."),
    zone: Optional[str] = typer.Option(None, "--timezone", help="IANA time zone whose clock dates and hours are of, "
                                       "DST included, e.g. Europe/Berlin (default: the --clock-timezone if given, "
                                       "else each recorder's clock as named)."),
    clock_zone: Optional[str] = typer.Option(None, "--clock-timezone", help="IANA time zone the recorders' clocks "
                                             "keep where a file does not give its UTC offset (default UTC, "
                                             "AudioMoth's; BAR-LT names, GUANO and AudioMoth comments give "
                                             "theirs)."),
) -> None:
    """When each species sings: detections, minutes of audio analysed and detections per hour of audio per site,
    date and hour of the recorder's clock or --timezone (activity.csv), and a heatmap per species (activity.png).

    Exit status: 0 written; 1 no recording had a start time; 2 not a finished run or bad option."""
    from pulse.activity import activity as run_activity

    try:
        summary = run_activity(results, out, min_conf, zone, clock_zone)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    except OSError as exc:
        _unwritable(exc)
    if summary.undated:
        which = "1 recording has no start time in its" if summary.undated == 1 else \
            f"{summary.undated} recordings have no start time in their"
        typer.echo(f"{which} name or metadata: left out", err=True)
    if summary.elsewhere:
        typer.echo(f"{summary.elsewhere} recordings in the run's journal are below none of its inputs (an earlier "
                   "run's into the same --out, or reached through a link to a folder elsewhere): left out", err=True)
    if not summary.recordings:
        typer.echo("error: no recording with a start time: activity.csv has no rows", err=True)
        raise typer.Exit(1)
    typer.echo(f"{summary.recordings} recordings, {summary.audio_s / 3600:.2f} h of audio at {summary.sites} site(s): "
               f"{summary.detections} detections of {summary.species} species -> "
               f"{(out or results) / 'activity.csv'}, activity.png")


def _read_run_config(path: Path) -> InferConfig:
    """The settings in a run's config.json (`pulse analyze` writes them under "config"), or a ValueError
    naming the file; keys this version does not know are named in a warning and ignored."""
    import logging

    try:
        settings = read_json(path)["config"]
        if not isinstance(settings, dict):
            raise KeyError("config")
        unknown = sorted(set(settings) - set(InferConfig.__dataclass_fields__))
        cfg = InferConfig.from_dict(settings)
    except IsADirectoryError:
        raise ValueError(f"{path}: --config takes a run's config.json, and this is a folder") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the config ({exc.strerror})") from None
    except (KeyError, TypeError):
        raise ValueError(f"{path}: not a `pulse analyze` config.json (no \"config\" settings in it)") from None
    if unknown:
        logging.getLogger("pulse").warning("%s: ignoring settings this version does not know: %s", path,
                                           ", ".join(unknown))
    return cfg


_EXPORT = ExportConfig()


@app.command()
def embeddings(
    inputs: list[Path] = INPUTS_ARG,
    out: Path = typer.Option(..., "--out", "-o", help="Folder of RECORDING.embeddings.h5 files (input folder "
                                                      "structure kept) and errors.csv."),
    model: str = typer.Option(_INFER.model, help=MODEL_HELP),
    overlap: float = typer.Option(_INFER.overlap, help="Seconds shared by consecutive windows."),
    min_len: float = typer.Option(_INFER.min_len, help="Seconds of audio a file's last window needs."),
    batch_size: int = typer.Option(_INFER.batch_size, help="Windows per model call."),
    threads: int = typer.Option(_INFER.threads, help="CPU threads of the model, any backend (0: every core)."),
    device: str = typer.Option(_INFER.device, help="cpu or cuda[:N]."),
    channel: Optional[int] = typer.Option(_INFER.channel, help="Embed this channel (0-based); default mixes to mono."),
    level_floor: float = typer.Option(_INFER.level_floor, help=LEVEL_FLOOR_HELP),
) -> None:
    """Per-window embeddings of recordings, one HDF5 file each, for search, clustering or your own classifier
    (BirdNET-Analyzer's embeddings).

    Exit status: 0 all embedded; 1 some failed (errors.csv) or none found; 2 bad option or model."""
    import logging

    from pulse.embeddings import embed

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = replace(_INFER, model=model, overlap=overlap, min_len=min_len, batch_size=batch_size, threads=threads,
                  device=device, channel=channel, level_floor=level_floor)
    try:
        summary = embed(inputs, out, cfg)
    except KeyboardInterrupt:  # finished files are kept: the same command skips them
        typer.echo(f"interrupted: files finished so far are kept in {out}; run the same command again to go on",
                   err=True)
        raise typer.Exit(130)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    except OSError as exc:
        _unwritable(exc)
    typer.echo(f"{summary.files_done} embedded{_again(summary.redone.total())}, {summary.files_failed} failed, "
               f"{summary.files_skipped} skipped (embedded before with these settings) -> {out}")
    if not (summary.files_done + summary.files_failed + summary.files_skipped):
        typer.echo(f"no audio files found in: {', '.join(map(str, inputs))}", err=True)
        raise typer.Exit(1)
    if summary.files_failed:
        typer.echo(f"{summary.files_failed} file(s) failed: see {out / 'errors.csv'}", err=True)
        raise typer.Exit(1)


@app.command("export")
def export_model(
    model: Path = typer.Option(..., "--model", "-m", help="Trained checkpoint (.safetensors) to export."),
    out: Path = typer.Option(..., "--out", "-o", help="Artefact folder to write."),
    ort_graph: str = typer.Option(_EXPORT.ort_graph,
                                  help="model.onnx frontend: auto (the fastest, timed), fft, conv or folded."),
    int8: bool = typer.Option(_EXPORT.int8, help="Also write model.int8.onnx (ONNX Runtime INT8)."),
    quantization: str = typer.Option(_EXPORT.quantization, help="INT8 method: static (calibrated) or dynamic."),
    calibration: list[Path] = typer.Option(list(map(Path, _EXPORT.calibration)),
                                           help="Real audio files/folders for INT8 calibration and parity checks "
                                                "(the default, where absent: pulse's example recordings)."),
    trt: bool = typer.Option(_EXPORT.trt, help="Also build a TensorRT engine (needs an NVIDIA GPU)."),
    trt_fp16: bool = typer.Option(_EXPORT.trt_fp16, help="Build the TensorRT engine in FP16."),
) -> None:
    """Export a checkpoint to ONNX (for ONNX Runtime and a TensorRT-portable graph) and check parity."""
    import logging

    from export.bundle import export_bundle

    logging.basicConfig(format="%(message)s")
    logging.getLogger("export").setLevel(logging.INFO)  # export's notes (which calibration audio), not onnxscript's
    cfg = replace(_EXPORT, ort_graph=ort_graph, int8=int8, quantization=quantization,
                  calibration=tuple(map(str, calibration)), trt=trt, trt_fp16=trt_fp16)
    try:
        checks = export_bundle(model, out, cfg)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    for check in checks:
        typer.echo(check.line())
    if not all(check.ok for check in checks):
        typer.echo(f"error: parity check failed; nothing written to {out}", err=True)
        raise typer.Exit(1)
    typer.echo(f"artefacts and config.json written to {out}")


_EVAL = EvalConfig()


@app.command()
def train(
    config: Optional[Path] = typer.Option(None, "--config", "-c",
                                          help="TrainConfig JSON (a run's config.json reruns it); omitted: defaults."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: config.json, checkpoint, model, history."),
    resume: bool = typer.Option(True, help="Continue from the --out folder's checkpoint.safetensors if it exists."),
    device: str = typer.Option("cpu", help="Torch device to train on: cpu, cuda, cuda:1 ..."),
    workers: int = typer.Option(0, help="Threads drawing augmented batches ahead of the model (0: none)."),
) -> None:
    """Train a species classifier on weakly labelled clips mixed with background audio."""
    import logging

    from pulse.manifest import ManifestError
    from pulse.teacher.cache import EntryUnreadable
    from pulse.train.weak_labels import train as run_train

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = TrainConfig.load(config) if config else TrainConfig()
        best = run_train(cfg, out, resume=resume, device=device, workers=workers)
    except EntryUnreadable as exc:  # hours in: say how to go on, not a traceback
        typer.echo(f"error: {exc}; training stopped: run the same command again then to go on from its last "
                   "checkpoint (each epoch's end)", err=True)
        raise typer.Exit(1)
    except (FileNotFoundError, ManifestError, ValueError, KeyError) as exc:
        typer.echo(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}", err=True)
        raise typer.Exit(2)
    typer.echo(f"best epoch {best.get('epoch')}: {best} -> {out / 'model.safetensors'}")


@app.command()
def evaluate(
    ctx: typer.Context,
    model: Path = typer.Option(..., "--model", "-m", help="default, supervised, lowrate, or a model artefact "
                                                         "(.onnx or .safetensors)."),
    manifest: Path = typer.Option(Path(_EVAL.manifest), help="Labelled manifest CSV."),
    audio_root: Path = typer.Option(Path(_EVAL.audio_root), help="Folder the manifest paths are relative to."),
    split: str = typer.Option(_EVAL.split, help="Manifest split to evaluate."),
    background_manifest: Path = typer.Option(Path(_EVAL.background_manifest), help="Background manifest CSV."),
    background_root: Path = typer.Option(Path(_EVAL.background_root), help="Folder of the background files."),
    background_split: str = typer.Option(_EVAL.background_split, help="Background split (held out from training)."),
    snr_db: str = typer.Option(",".join(f"{s:g}" for s in _EVAL.snr_db), help="Comma list of mixing SNRs in dB."),
    threshold: float = typer.Option(_EVAL.threshold, help="Score threshold of the multi-label F1."),
    seed: int = typer.Option(_EVAL.seed, help="Seed of the background offsets."),
    delays_ms: str = typer.Option(",".join(f"{d:g}" for d in _EVAL.delays_ms),
                                  help="Comma list of delays (ms) each condition is scored again at ('' for none)."),
    exclude_excerpts: str = typer.Option(_EVAL.exclude_excerpts, help="CSV (path, start_s, reason) of excerpts "
                                                                      "without song to leave out."),
    level_floor: float = typer.Option(_EVAL.level_floor, help=LEVEL_FLOOR_HELP),
    out: Path = typer.Option(Path("evaluation"), "--out", "-o", help="Folder for report.json/.txt, confusion.png."),
    config: Optional[Path] = typer.Option(None, "--config", help="A training config (or a run's config.json): its "
                                                                 "manifests, validation split and evaluation "
                                                                 "settings; flags typed here win."),
) -> None:
    """Score a model on 3 s excerpts, clean and mixed into held-out soundscapes (F1, mAP, AUC)."""
    from pulse.evaluate import evaluate_model, format_table
    from pulse.manifest import ManifestError

    flags = dict(manifest=str(manifest), audio_root=str(audio_root), split=split,
                 background_manifest=str(background_manifest), background_root=str(background_root),
                 background_split=background_split, snr_db=_numbers(snr_db, "--snr-db"),
                 threshold=threshold, seed=seed, exclude_excerpts=exclude_excerpts, level_floor=level_floor,
                 delays_ms=_numbers(delays_ms, "--delays-ms"))
    try:
        if config is not None:  # what that run validated on, then only the flags typed on this command line
            from pulse.train.weak_labels import evaluation_config

            typed = {k: v for k, v in flags.items() if ctx.get_parameter_source(k).name != "DEFAULT"}
            cfg = replace(evaluation_config(TrainConfig.load(config)), **typed)
        else:
            cfg = replace(_EVAL, **flags)
        report = evaluate_model(model, cfg, out)
    except (FileNotFoundError, ManifestError, ValueError, KeyError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    typer.echo(format_table(report))
    typer.echo(f"report.json, report.txt and confusion.png written to {out}")


def _numbers(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"a comma list of numbers, got {text!r}", param_hint=option) from None


@app.command("manifest")
def manifest_check(
    path: Path = typer.Argument(..., help="Manifest CSV (labelled or unlabelled schema)."),
    audio_root: Path = typer.Option(..., help="Folder the manifest paths are relative to."),
    splits: str = typer.Option("train,validation", help="Comma list of splits that must not be empty."),
    config: Optional[Path] = typer.Option(None, "--config", help="Training config whose model.labels are the "
                                                                 "species (default: the bundled model's 9)."),
) -> None:
    """Validate a manifest: missing files, unknown species, duplicate paths, empty splits."""
    from pulse.manifest import ManifestError, read_manifest, validate_manifest

    try:
        frame = read_manifest(path)
        model = TrainConfig.load(config).model if config else ModelConfig()
    except (ManifestError, FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    labels = model.labels if "species" in frame.columns else None
    problems = validate_manifest(frame, audio_root, labels, tuple(s for s in splits.split(",") if s), name=str(path))
    for line in problems:
        typer.echo(line, err=True)
    if config is None and any("unknown species" in line for line in problems):
        typer.echo("(species are checked against the bundled model's 9; for your own, pass --config with "
                   "model.labels)", err=True)
    if problems:
        raise typer.Exit(1)
    counts = frame["split"].value_counts().to_dict()
    # a labelled manifest that lost its species column is a valid unlabelled one: say which was checked
    kind = "labelled" if labels is not None else "unlabelled (no species column)"
    typer.echo(f"{path}: OK, {len(frame)} rows, {kind} ({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))})")


@app.command("make-manifest")
def make_manifest(
    root: Path = typer.Argument(..., help="Folder with one subfolder of recordings per species (the audio root)."),
    out: Path = typer.Option(..., "--out", "-o", help="Manifest CSV to write."),
    val_fraction: float = typer.Option(0.2, help="Share of each species' recordings held out for validation."),
    seed: int = typer.Option(0, help="Seed of the train/validation draw."),
    unlabelled: bool = typer.Option(False, help="ROOT holds recordings without song of the species (backgrounds, "
                                                "BirdNET-Analyzer's Noise folder): an unlabelled manifest, for the "
                                                "config's background_manifest and for teacher-cache."),
) -> None:
    """Write a labelled manifest from species folders (`Gryllus_campestris/*.wav`, or BirdNET-Analyzer's training
    folders), with durations and rates; or, with --unlabelled, one of a folder of backgrounds."""
    from pulse.manifest import ManifestError, manifest_from_folders, unlabelled_manifest_from_folder, write_manifest

    try:
        read = unlabelled_manifest_from_folder if unlabelled else manifest_from_folders
        frame, problems = read(root, val_fraction, seed)
    except (ManifestError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    for line in problems:
        typer.echo(f"skipped {line}", err=True)
    if frame.empty:  # an empty manifest was written and offered for training
        said = "no recording could be read (skipped above)" if problems else "no recordings found"
        typer.echo(f"error: {root}: {said}; {out} not written", err=True)
        raise typer.Exit(2)
    write_manifest(out, frame)
    if unlabelled:
        counts = frame["split"].value_counts().to_dict()
        typer.echo(f"{out}: {len(frame)} recordings ({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))}); "
                   f"train on them with \"background_manifest\": {json.dumps(str(out))}, \"background_root\": "
                   f"{json.dumps(str(root))} in the config, and cache BirdNET's outputs with pulse teacher-cache "
                   f"--manifest {shlex.quote(str(out))} --audio-root {shlex.quote(str(root))}")  # as pasted
        if "validation" not in counts:  # training's validation then stops at "split 'validation' is empty"
            typer.echo(f"{out} has no validation split (at least two recordings and a --val-fraction above 0 make "
                       f"one): as background_manifest, training's per-epoch validation needs it; add recordings, "
                       f"or list the folder in \"backgrounds\" instead", err=True)
        return
    counts = frame.groupby("species")["split"].value_counts().unstack(fill_value=0)
    typer.echo(counts.to_string())
    typer.echo(f"{out}: {len(frame)} recordings of {len(counts)} species; fill in license and recordist, then "
               f"train with model.labels (and common_names, codes) set to these species")
    if "common_name" in frame.columns:  # BirdNET-Analyzer's folder names carry them: ready for the config
        names = frame.drop_duplicates("species").sort_values("species")
        typer.echo(json.dumps({"labels": list(names["species"]), "common_names": list(names["common_name"])}))


_CACHE = TeacherCacheConfig()


@app.command("teacher-cache")
def teacher_cache(
    manifest: Path = typer.Option(Path(_CACHE.manifest), help="Manifest CSV (labelled or unlabelled) of the audio."),
    out: Path = typer.Option(Path(_CACHE.out), "--out", "-o", help="Cache folder: one .npz per file content."),
    audio_root: Path = typer.Option(Path(_CACHE.audio_root), help="Folder the manifest paths are relative to."),
    hop_s: float = typer.Option(_CACHE.hop_s, help="Seconds between the starts of consecutive 3 s windows."),
    batch_size: int = typer.Option(_CACHE.batch_size, help="Windows per BirdNET call."),
    threads: int = typer.Option(_CACHE.threads, help="LiteRT threads (0: LiteRT decides)."),
) -> None:
    """Run BirdNET once over a manifest and cache its embeddings and logits per window."""
    import logging

    import pandas as pd

    from pulse.manifest import ManifestError
    from pulse.teacher.cache import build_cache

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = replace(_CACHE, manifest=str(manifest), out=str(out), audio_root=str(audio_root), hop_s=hop_s,
                  batch_size=batch_size, threads=threads)
    try:
        index = build_cache(cfg)
    except (FileNotFoundError, ManifestError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    except OSError as exc:  # --out cannot be written (read-only, full): one line
        _unwritable(exc)
    failed = len(pd.read_csv(out / "errors.csv"))
    typer.echo(f"{len(index)} files, {int(index['windows'].sum())} windows cached in {out}")
    if failed:  # as `pulse analyze`: scripts notice without reading errors.csv
        typer.echo(f"{failed} file(s) failed: see {out / 'errors.csv'}", err=True)
        raise typer.Exit(1)


help_paragraphs_unbroken(app)  # once every command is defined


def main() -> None:
    app()


if __name__ == "__main__":
    main()
