"""`lrmil` command line: thin wrappers that build a config and call one library function.

Run `lrmil --help` for the list. A flag that sets a config field reads its default from the config, never restating it.
Written here instead are the defaults of inputs and outputs, --recursive, --config, --threads (0: torch's own; bench's
comes from its config), --mpp (None: the slide's metadata; patch and export have no config field for it), --folds
(empty: every fold in the CSV), and `export --path --int8` and `bundle --notice`, which no config holds.

Exit status:
- 0: done; in patch, extract and predict, every slide succeeded.
- 1: done, but something was left out: a slide failed in patch, extract or predict (OUT/errors.csv), or none was
  found; train or distill left out a slide of the splits CSV whose feature file was missing or unreadable
  (OUT/errors.csv, metrics.json's left_out); distill-patches left out a slide or its 20x features (the .errors.csv and
  .json beside the weights).
- 1: --out, or another file the run writes, cannot be written (read-only, full); one line names it.
- 2: a usage or configuration error, refused before the work: a bad option, a file where --out's folder goes (a folder
  where a weights file --out goes), an input given by an option that is missing (--features, --teacher-features,
  --splits, --model) or a file where a feature folder goes, as in `pulse`. A slide given as an argument that is
  missing is a failed slide (1), as a recording is in `pulse analyze`.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Optional

import typer
from tqdm.contrib.logging import logging_redirect_tqdm

from export.atomic import error_line
from export.console import escape_what_stdout_cannot_print, help_paragraphs_unbroken
from lrmil.config import DistillPatchConfig, ExtractConfig, PatchConfig, PretrainConfig, SynthConfig, TissueConfig
from lrmil.mil.config import ABMILConfig, BenchConfig, DistillConfig, MILConfig, PredictConfig

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="LRMIL: whole-slide classification with a 20x teacher distilled into a 5x student.")
app.callback()(escape_what_stdout_cannot_print)  # before every command

_SYNTH, _TISSUE, _PATCH = SynthConfig(), TissueConfig(), PatchConfig()
_EXTRACT, _PRETRAIN, _STAGE1 = ExtractConfig(), PretrainConfig(), DistillPatchConfig()
_MIL, _DISTILL, _PREDICT, _BENCH = MILConfig(), DistillConfig(), PredictConfig(), BenchConfig()

# readable=False: one input that cannot be read fails in the batch (errors.csv, exit status 1), not the whole run
SLIDES_ARG = typer.Argument(..., readable=False, help="Slide files and/or folders of slides.")
RECURSIVE_OPT = typer.Option(False, "--recursive", "-r",
                             help="Also search the subfolders of each folder given "
                                  "(an archive kept a folder per case).")
MPP_OPT = typer.Option(None, "--mpp", help="Level-0 microns per pixel for slides without it in their metadata "
                                           "(see --override-mpp).")
OVERRIDE_MPP_OPT = typer.Option(_EXTRACT.override_mpp, "--override-mpp",
                                help="Use --mpp for every slide, replacing the metadata (wrong scanner headers).")
THREADS_OPT = typer.Option(0, "--threads", help="CPU threads for torch (0 keeps torch's default).")
MASK_MPP_OPT = typer.Option(_TISSUE.mask_mpp, help="Tissue mask resolution in microns per pixel.")
MIN_SAT_OPT = typer.Option(_TISSUE.min_saturation, help="Floor of the Otsu saturation threshold.")
EXCLUDE_INK_OPT = typer.Option(_TISSUE.exclude_ink, "--exclude-ink/--keep-ink",
                               help="Leave blue, green and black pen ink on the glass out of the tissue (red ink "
                                    "stays: it shares eosin's colours); --keep-ink for slides stained blue or green "
                                    "(Alcian blue, trichrome).")
TEACHER_PX_OPT = typer.Option(_PATCH.teacher_px, help="20x patch side in pixels (5x patches cover 4x4 of them).")
MIN_TISSUE_OPT = typer.Option(_PATCH.min_tissue, help="Tissue fraction a 20x patch needs to be kept.")
FOLDS_OPT = typer.Option("", "--folds", help="Comma list of test folds to run (empty: every fold in the CSV).")
CONFIG_OPT = typer.Option(None, "--config", help="Rerun a previous run from its config.json; only --out and "
                                                 "--threads may be given with it.")


def _setup(threads: int) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def _fail(exc: Exception) -> None:
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # str(KeyError) adds quotes
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _unwritable(exc: OSError) -> None:
    """--out cannot be written (read-only, full), or another file the run needs: one line naming it and exit status
    1, as in `pulse analyze`."""
    typer.echo(f"error: {error_line(exc)}", err=True)
    raise typer.Exit(1)


@contextmanager
def _one_line_errors(*usage: type[Exception]) -> Iterator[None]:
    """Around a command's work, so that every command ends alike: an OSError the system raised (it has an errno) is
    one line naming its file, exit 1, as an --out that cannot be written; `usage` errors, which lrmil raises naming an
    input or an option, exit 2. An --out that could not be made ('No such file or directory') was taken for a missing
    input."""
    try:
        yield
    except OSError as exc:
        if exc.errno is None and isinstance(exc, usage):  # lrmil's own, e.g. 'w.safetensors: weights file not found'
            _fail(exc)
        _unwritable(exc)
    except usage as exc:
        _fail(exc)


def _check_options(out_folder: Optional[Path], mpp: Optional[float] = None, override_mpp: bool = False,
                   device: Optional[str] = None, folders: Optional[dict[str, Optional[str | Path]]] = None) -> None:
    """Options every slide would fail on are refused once, before the batch (exit status 2). `folders`: input
    folders by option name (None: not given); a missing --features was one 'no feature file' line per slide of the
    splits CSV, then 'the folder holds no .h5 files'."""
    from export.atomic import file_in_the_way
    from export.backends.torch_backend import torch_device
    from lrmil.slide import mpp_problem

    if out_folder is not None and (blocker := file_in_the_way(out_folder)):
        _fail(ValueError(f"{blocker}: --out must be a folder, and this is a file"))
    for option, folder in (folders or {}).items():
        if folder is not None and not Path(folder).is_dir():
            problem = "must be a folder, and this is a file" if Path(folder).exists() else "folder not found"
            _fail(ValueError(f"{folder}: {option} {problem}"))
    if override_mpp and mpp is None:
        _fail(ValueError("--override-mpp needs --mpp, the value that replaces every slide's metadata"))
    if mpp is not None and (problem := mpp_problem(mpp)):
        _fail(ValueError(problem))
    try:
        if device is not None:  # not importing torch for synth
            torch_device(device)
    except ValueError as exc:
        _fail(exc)


def _weights_folder(out: Path) -> None:
    """pretrain-encoder and distill-patches write their weights file after minutes of training: its folder is made
    first, and a file in its way, or a folder at --out, is refused (2) rather than found once trained."""
    from export.atomic import file_in_the_way

    if blocker := file_in_the_way(out.parent):  # it was "somefile: File exists"
        _fail(ValueError(f"{blocker}: a file, where --out's folder goes"))
    if out.is_dir():
        _fail(ValueError(f"{out}: a folder, where --out's weights file goes"))
    with _one_line_errors():
        out.parent.mkdir(parents=True, exist_ok=True)


def _slides(inputs: list[Path], recursive: bool) -> list[Path]:
    """The slide files among `inputs`; finding none ends the run with exit status 1."""
    from lrmil.slide import find_slides

    found = find_slides(inputs, recursive)
    if not found:
        where = "and their subfolders" if recursive else "without their subfolders (--recursive searches those)"
        typer.echo(f"no slide files found in {', '.join(map(str, inputs))}: folders are searched {where}, "
                   "for whole-slide formats; name plain images as files", err=True)
        raise typer.Exit(1)
    return found


def _report(summary: dict) -> None:
    """Print a batch summary; exit 1 when a slide failed, so scripts notice without reading errors.csv."""
    typer.echo(json.dumps(summary))
    if summary["failed"]:
        typer.echo(f"{summary['failed']} slide(s) failed: see {summary['errors_csv']}", err=True)
        raise typer.Exit(1)


def _report_run(out: str, metrics: dict) -> None:
    """train and distill: the pooled metrics, and the slides left out counted as a batch's failed slides."""
    failed = len(metrics["left_out"])
    _report({**metrics["pooled"], "failed": failed, "errors_csv": str(Path(out) / "errors.csv") if failed else ""})


def _grid_configs(mask_mpp: float, min_saturation: float, exclude_ink: bool, teacher_px: int, min_tissue: float):
    return (replace(_TISSUE, mask_mpp=mask_mpp, min_saturation=min_saturation, exclude_ink=exclude_ink),
            replace(_PATCH, teacher_px=teacher_px, min_tissue=min_tissue))


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (slides/ and labels.csv)."),
    count: int = typer.Option(_SYNTH.count, help="Number of slides."),
    size: int = typer.Option(_SYNTH.size, help="Level-0 pixels per side (20x, 0.5 um/px)."),
    seed: int = typer.Option(_SYNTH.seed, help="Random seed; the same seed gives the same set."),
    classes: int = typer.Option(_SYNTH.classes, help="Number of classes (2-4); class 0 has no lesions."),
    folds: int = typer.Option(_SYNTH.folds, help="Number of stratified folds in labels.csv."),
    coarse_cue: float = typer.Option(_SYNTH.coarse_cue, help="Darkening of atypical nuclei still visible at 5x."),
    fine_amplitude: float = typer.Option(_SYNTH.fine_amplitude, help="Strength of the 20x-only chromatin texture."),
    atypical_scale: float = typer.Option(_SYNTH.atypical_scale, help="Radius factor of atypical nuclei (5x cue)."),
    atypical_density: float = typer.Option(_SYNTH.atypical_density, help="Share of lesion cells holding a nucleus "
                                                                         "(5x cue; normal tissue: nucleus_density)."),
    compression: str = typer.Option(_SYNTH.compression, help="TIFF compression: zlib (lossless) or jpeg."),
    workers: int = typer.Option(_SYNTH.workers, help="Processes rendering tiles (same output for any value)."),
) -> None:
    """Write a labelled synthetic slide set whose class signal is visible at 20x and blurred at 5x."""
    from lrmil.synth import synthesize

    _check_options(out)
    # the labels.csv of one fold, or of no slide, was written and then refused by `lrmil train`
    if folds < 3:
        _fail(ValueError(f"--folds {folds}: `lrmil train` needs at least 3 folds (test, validation, train)"))
    if count < 3 * classes:
        _fail(ValueError(f"--count {count}: `lrmil train` needs each class's slides in 3 folds, so at least "
                         f"{3 * classes} slides of {classes} classes"))
    cfg = replace(_SYNTH, count=count, size=size, seed=seed, classes=classes, folds=folds, coarse_cue=coarse_cue,
                  fine_amplitude=fine_amplitude, atypical_scale=atypical_scale, atypical_density=atypical_density,
                  compression=compression, workers=workers)
    with _one_line_errors(ValueError):
        labels_csv = synthesize(out, cfg)
    typer.echo(f"{count} slides of {size}x{size} px -> {out / 'slides'}; labels: {labels_csv}")


@app.command()
def patch(
    slides: list[Path] = SLIDES_ARG,
    recursive: bool = RECURSIVE_OPT,
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (masks/, patches/, errors.csv)."),
    mpp: Optional[float] = MPP_OPT,
    override_mpp: bool = OVERRIDE_MPP_OPT,
    mask_mpp: float = MASK_MPP_OPT,
    min_saturation: float = MIN_SAT_OPT,
    exclude_ink: bool = EXCLUDE_INK_OPT,
    teacher_px: int = TEACHER_PX_OPT,
    min_tissue: float = MIN_TISSUE_OPT,
    strict: bool = typer.Option(_EXTRACT.strict, help="Stop at the first bad slide instead of logging it."),
) -> None:
    """Find tissue and cut the two-resolution grid: mask PNGs and grid HDF5 files, no encoding."""
    from lrmil.features import run_patching

    _setup(0)
    _check_options(out, mpp, override_mpp)
    paths = _slides(slides, recursive)
    tissue, patch_cfg = _grid_configs(mask_mpp, min_saturation, exclude_ink, teacher_px, min_tissue)
    with _one_line_errors(), logging_redirect_tqdm():
        summary = run_patching(paths, tissue, patch_cfg, mpp, out, strict, override_mpp)
    _report(summary)


@app.command()
def extract(
    slides: list[Path] = SLIDES_ARG,
    recursive: bool = RECURSIVE_OPT,
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (features/<encoder>_<mag>x_<px>px/ ...)."),
    encoder: str = typer.Option(_EXTRACT.encoder, help="Registered encoder name, or timm/<arch>."),
    weights: str = typer.Option(_EXTRACT.weights, help="default, random, hub (timm; downloads) or a weights file."),
    resolution: str = typer.Option(_EXTRACT.resolution, help="teacher (20x patches) or student (5x patches)."),
    batch_size: int = typer.Option(_EXTRACT.batch_size, min=1, help="Patches per encoder call."),
    workers: int = typer.Option(_EXTRACT.num_workers, help="DataLoader processes reading patches."),
    device: str = typer.Option(_EXTRACT.device, help="cpu or cuda[:N]."),
    autocast: bool = typer.Option(_EXTRACT.autocast, help="On CUDA, run in the encoder's fp16/bf16 precision."),
    mpp: Optional[float] = MPP_OPT,
    override_mpp: bool = OVERRIDE_MPP_OPT,
    mask_mpp: float = MASK_MPP_OPT,
    min_saturation: float = MIN_SAT_OPT,
    exclude_ink: bool = EXCLUDE_INK_OPT,
    teacher_px: int = TEACHER_PX_OPT,
    min_tissue: float = MIN_TISSUE_OPT,
    resume: bool = typer.Option(_EXTRACT.resume, help="Skip slides whose feature file matches this config; keep the "
                                "features of those whose grid other tissue flags leave as it was."),
    strict: bool = typer.Option(_EXTRACT.strict, help="Stop at the first bad slide instead of logging it."),
    threads: int = THREADS_OPT,
) -> None:
    """Encode the 20x or 5x patches of each slide into one HDF5 feature file per slide."""
    from lrmil.features import run_extract

    _setup(threads)
    _check_options(out, mpp, override_mpp, device)
    paths = _slides(slides, recursive)
    tissue, patch_cfg = _grid_configs(mask_mpp, min_saturation, exclude_ink, teacher_px, min_tissue)
    cfg = replace(_EXTRACT, encoder=encoder, weights=weights, resolution=resolution, batch_size=batch_size,
                  num_workers=workers, device=device, autocast=autocast, mpp=mpp, override_mpp=override_mpp,
                  resume=resume, strict=strict, tissue=tissue, patch=patch_cfg)
    with _one_line_errors(FileNotFoundError, KeyError, ValueError, RuntimeError), logging_redirect_tqdm():
        summary = run_extract(paths, cfg, out)  # usage errors: encoder or weights problems
    _report(summary)


@app.command("pretrain-encoder")
def pretrain_encoder(
    out: Path = typer.Option(..., "--out", "-o", help="Weights file to write (.safetensors)."),
    steps: int = typer.Option(_PRETRAIN.steps, min=1, help="Optimiser steps."),
    batch_size: int = typer.Option(_PRETRAIN.batch_size, min=1, help="Crops per step."),
    crop_px: int = typer.Option(_PRETRAIN.crop_px, help="Side of the 20x training crops."),
    lr: float = typer.Option(_PRETRAIN.lr, help="Peak learning rate (one-cycle)."),
    seed: int = typer.Option(_PRETRAIN.seed, help="Random seed."),
    threads: int = THREADS_OPT,
) -> None:
    """Train the small ViT on synthetic 20x crops (minutes on CPU): the teacher encoder."""
    from lrmil.pretrain import pretrain

    _setup(threads)
    _weights_folder(out)
    cfg = replace(_PRETRAIN, steps=steps, batch_size=batch_size, crop_px=crop_px, lr=lr, seed=seed)
    with _one_line_errors():
        metrics = pretrain(cfg, _SYNTH, out)
    typer.echo(json.dumps(metrics))


@app.command("distill-patches")
def distill_patches(
    slides: list[Path] = SLIDES_ARG,
    recursive: bool = RECURSIVE_OPT,
    out: Path = typer.Option(..., "--out", "-o", help="Student encoder weights to write (.safetensors)."),
    teacher_weights: str = typer.Option(_STAGE1.teacher_weights, help="Teacher encoder weights (default: bundled)."),
    teacher_mil: Optional[Path] = typer.Option(None, help="Teacher ABMIL (.safetensors): its attention on each 20x "
                                                          "patch weights that patch's term in the loss "
                                                          "(with --teacher-features)."),
    teacher_features: Optional[Path] = typer.Option(None, help="Folder of the teacher's 20x feature files."),
    splits: Optional[Path] = typer.Option(None, help="CSV slide_id,label,fold; --test-fold slides are left out."),
    test_fold: int = typer.Option(_STAGE1.test_fold, help="Fold never used for stage 1."),
    layers: str = typer.Option(",".join(map(str, _STAGE1.layers)),
                               help="Comma list of ViT blocks matched besides the output."),
    loss: str = typer.Option(_STAGE1.loss, help="cosine or mse."),
    layer_weight: float = typer.Option(_STAGE1.layer_weight, help="Weight of each intermediate layer term."),
    attention_weighting: bool = typer.Option(_STAGE1.attention_weighting, help="Weight children by teacher attention."),
    max_parents: int = typer.Option(_STAGE1.max_parents_per_slide, help="5x patches used per slide."),
    epochs: int = typer.Option(_STAGE1.epochs, help="Passes over the 5x patches."),
    batch_size: int = typer.Option(_STAGE1.batch_size, min=1, help="5x patches per step."),
    lr: float = typer.Option(_STAGE1.lr, help="Learning rate."),
    seed: int = typer.Option(_STAGE1.seed, help="Random seed."),
    device: str = typer.Option(_STAGE1.device, help="cpu or cuda[:N]."),
    mpp: Optional[float] = MPP_OPT,
    override_mpp: bool = OVERRIDE_MPP_OPT,
    mask_mpp: float = MASK_MPP_OPT,
    min_saturation: float = MIN_SAT_OPT,
    exclude_ink: bool = EXCLUDE_INK_OPT,
    teacher_px: int = TEACHER_PX_OPT,
    min_tissue: float = MIN_TISSUE_OPT,
    threads: int = THREADS_OPT,
) -> None:
    """Stage 1: distil the 20x teacher encoder into a 5x student ViT, block by block."""
    from lrmil.distill_patch import distill_patch, errors_file
    from lrmil.slide import SlideReadError

    _setup(threads)
    _check_options(None, mpp, override_mpp, device, folders={"--teacher-features": teacher_features})
    paths = _slides(slides, recursive)
    _weights_folder(out)
    # the grid flags must be those --teacher-features were extracted with: the teacher's attention is per 20x
    # patch of that grid (a slide cut otherwise is refused)
    tissue, patch_cfg = _grid_configs(mask_mpp, min_saturation, exclude_ink, teacher_px, min_tissue)
    cfg = replace(_STAGE1, teacher_weights=teacher_weights, test_fold=test_fold, loss=loss, layer_weight=layer_weight,
                  layers=tuple(int(v) for v in layers.split(",") if v.strip()), attention_weighting=attention_weighting,
                  max_parents_per_slide=max_parents, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                  device=device, mpp=mpp, override_mpp=override_mpp, tissue=tissue, patch=patch_cfg)
    with _one_line_errors(FileNotFoundError, KeyError, ValueError, SlideReadError):  # e.g. two slides of one id
        metrics = distill_patch(cfg, paths, out, splits, teacher_mil, teacher_features)
    failed = len(metrics["left_out"])
    _report({**metrics, "failed": failed, "errors_csv": str(errors_file(out)) if failed else ""})


# --- MIL: train, distill (stage 2), predict, bench -------------------------------------------

def _folds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"a comma list of fold numbers, got {text!r}", param_hint="--folds") from None


def _model_cfg(hidden_dim: int, attn_dim: int, drop_rate: float) -> ABMILConfig:
    return replace(_MIL.model, hidden_dim=hidden_dim, attn_dim=attn_dim, drop_rate=drop_rate)


def _rerun(ctx: typer.Context, cls, config: Path, out: Path):
    """A previous run's settings from its config.json, into --out when one is typed; any other typed flag is
    refused rather than silently ignored."""
    typed = [p.opts[0] for p in ctx.command.params if p.name not in ("config", "out", "threads")
             and ctx.get_parameter_source(p.name).name != "DEFAULT"]
    if typed:
        _fail(ValueError(f"--config reruns {config} as it was: only --out and --threads go with it, "
                         f"not {', '.join(typed)}"))
    try:
        cfg = cls.load(config)  # a misspelt or unknown key is refused, not silently left at its default
    except (FileNotFoundError, ValueError) as exc:
        _fail(exc)
    return replace(cfg, out=str(out)) if ctx.get_parameter_source("out").name != "DEFAULT" else cfg


def _need(**flags) -> None:
    """Flags required unless --config gives them."""
    if missing := [f"--{name.replace('_', '-')}" for name, value in flags.items() if value is None]:
        _fail(ValueError(f"missing {', '.join(missing)} (or --config with a previous run's config.json)"))


@app.command()
def train(
    ctx: typer.Context,
    features: Optional[Path] = typer.Option(None, "--features",
                                            help="Folder of per-slide HDF5 feature files (20x for the teacher)."),
    splits: Optional[Path] = typer.Option(None, "--splits", help="CSV with slide_id, label, fold."),
    out: Path = typer.Option(Path(_MIL.out), "--out", "-o",
                             help="Run folder (fold<k>/model.safetensors, predictions.csv); "
                                  "`lrmil bundle` makes a fold's model usable by predict."),
    folds: str = FOLDS_OPT,
    epochs: int = typer.Option(_MIL.epochs, help="Maximum epochs per fold."),
    patience: int = typer.Option(_MIL.patience, help="Epochs without a better validation AUC before stopping."),
    lr: float = typer.Option(_MIL.lr, help="AdamW learning rate."),
    weight_decay: float = typer.Option(_MIL.weight_decay, help="AdamW weight decay."),
    hidden_dim: int = typer.Option(_MIL.model.hidden_dim, help="ABMIL instance embedding size."),
    attn_dim: int = typer.Option(_MIL.model.attn_dim, help="Gated-attention hidden size."),
    drop_rate: float = typer.Option(_MIL.model.drop_rate, help="Dropout in the ABMIL."),
    seed: int = typer.Option(_MIL.seed, help="Random seed."),
    config: Optional[Path] = CONFIG_OPT,
    threads: int = THREADS_OPT,
) -> None:
    """Train an ABMIL per fold (cross-entropy, early stopping on validation AUC): the 20x teacher."""
    from lrmil.mil.train import train as run_train

    _setup(threads)
    if config is None:
        _need(features=features, splits=splits)
    cfg = _rerun(ctx, MILConfig, config, out) if config else MILConfig(
        features=str(features), splits=str(splits), out=str(out), folds=_folds(folds), epochs=epochs,
        patience=patience, lr=lr, weight_decay=weight_decay, seed=seed,
        model=_model_cfg(hidden_dim, attn_dim, drop_rate))
    _check_options(Path(cfg.out), folders={"--features": cfg.features})
    # logging_redirect_tqdm: a warning mid-run on its own line, not after the folds bar
    with _one_line_errors(FileNotFoundError, KeyError, ValueError), logging_redirect_tqdm():
        metrics = run_train(cfg)
    _report_run(cfg.out, metrics)


@app.command()
def distill(
    ctx: typer.Context,
    features: Optional[Path] = typer.Option(None, "--features",
                                            help="The student's 5x feature folder (stage-1 features)."),
    teacher_features: Optional[Path] = typer.Option(None, "--teacher-features",
                                                    help="The teacher's 20x feature folder."),
    teacher: Optional[Path] = typer.Option(None, "--teacher",
                                           help="Teacher run folder from `lrmil train` (same splits)."),
    splits: Optional[Path] = typer.Option(None, "--splits", help="CSV with slide_id, label, fold."),
    out: Path = typer.Option(Path(_DISTILL.out), "--out", "-o",
                             help="Run folder of the student (as `lrmil train`'s; "
                                  "`lrmil bundle` makes a fold usable by predict)."),
    folds: str = FOLDS_OPT,
    w_ce: float = typer.Option(_DISTILL.w_ce, help="Weight of cross-entropy to the slide label (0 = off)."),
    w_logits: float = typer.Option(_DISTILL.w_logits, help="Weight of KL to the teacher's bag logits (0 = off)."),
    w_attention: float = typer.Option(_DISTILL.w_attention,
                                      help="Weight of KL to the teacher's parent attention (0 = off)."),
    w_topk: float = typer.Option(_DISTILL.w_topk, help="Weight of the top-k instance loss (0 = off)."),
    temperature: float = typer.Option(_DISTILL.temperature, help="Softmax temperature of the logit KL."),
    topk: int = typer.Option(_DISTILL.topk, help="Instances in the top-k loss."),
    epochs: int = typer.Option(_DISTILL.epochs, help="Maximum epochs per fold."),
    patience: int = typer.Option(_DISTILL.patience, help="Epochs without a better validation AUC before stopping."),
    lr: float = typer.Option(_DISTILL.lr, help="AdamW learning rate."),
    weight_decay: float = typer.Option(_DISTILL.weight_decay, help="AdamW weight decay."),
    hidden_dim: int = typer.Option(_DISTILL.model.hidden_dim, help="ABMIL instance embedding size."),
    attn_dim: int = typer.Option(_DISTILL.model.attn_dim, help="Gated-attention hidden size."),
    drop_rate: float = typer.Option(_DISTILL.model.drop_rate, help="Dropout in the ABMIL."),
    seed: int = typer.Option(_DISTILL.seed, help="Random seed."),
    config: Optional[Path] = CONFIG_OPT,
    threads: int = THREADS_OPT,
) -> None:
    """Stage 2: train the 5x student ABMIL per fold with CE + logit KD + attention KD + top-k loss."""
    from lrmil.mil.distill import distill as run_distill

    _setup(threads)
    if config is None:
        _need(features=features, teacher_features=teacher_features, teacher=teacher, splits=splits)
    cfg = _rerun(ctx, DistillConfig, config, out) if config else DistillConfig(
        features=str(features), teacher_features=str(teacher_features), teacher=str(teacher), splits=str(splits),
        out=str(out), folds=_folds(folds), w_ce=w_ce, w_logits=w_logits, w_attention=w_attention, w_topk=w_topk,
        temperature=temperature, topk=topk, epochs=epochs, patience=patience, lr=lr, weight_decay=weight_decay,
        seed=seed, model=_model_cfg(hidden_dim, attn_dim, drop_rate))
    _check_options(Path(cfg.out), folders={"--features": cfg.features, "--teacher-features": cfg.teacher_features})
    with _one_line_errors(FileNotFoundError, KeyError, ValueError), logging_redirect_tqdm():
        metrics = run_distill(cfg)
    _report_run(cfg.out, metrics)


@app.command()
def predict(
    slides: list[Path] = SLIDES_ARG,
    recursive: bool = RECURSIVE_OPT,
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (SLIDE.json, heatmaps, top-k PNGs, attention "
                                                      "GeoJSON, errors.csv)."),
    model: str = typer.Option(_PREDICT.model, "--model",
                              help="Model folder (model.json, or onnx.json from `lrmil export`); "
                                   "'demo' = bundled synthetic demo."),
    path: str = typer.Option(_PREDICT.path, "--path", help="student (reads 5x only) or teacher (20x, for comparison)."),
    mpp: Optional[float] = MPP_OPT,
    override_mpp: bool = OVERRIDE_MPP_OPT,
    batch_size: int = typer.Option(_PREDICT.batch_size, min=1, help="Patches per encoder call."),
    topk: int = typer.Option(_PREDICT.topk, help="Most-attended patches saved per slide."),
    heatmap_px: int = typer.Option(_PREDICT.heatmap_px, min=1,
                                   help="Longer side of the slide image in the heatmap PNG "
                                        "(colour bar and notice strip come on top)."),
    device: str = typer.Option(_PREDICT.device, help="cpu or cuda[:N]."),
    strict: bool = typer.Option(_PREDICT.strict, help="Stop at the first bad slide instead of logging it."),
    resume: bool = typer.Option(_PREDICT.resume, help="Skip slides whose outputs this model and these settings "
                                                      "already made from the same slide file."),
    threads: int = THREADS_OPT,
) -> None:
    """Classify slides: label, probabilities, attention heatmap and top-k patches per slide."""
    from lrmil.predict import run_predict

    _setup(threads)
    _check_options(out, mpp, override_mpp, device)
    paths = _slides(slides, recursive)
    cfg = PredictConfig(model=model, path=path, mpp=mpp, override_mpp=override_mpp, batch_size=batch_size, topk=topk,
                        heatmap_px=heatmap_px, device=device, strict=strict, resume=resume)
    with _one_line_errors(FileNotFoundError, KeyError, ValueError), logging_redirect_tqdm():
        summary = run_predict(paths, cfg, out)  # usage errors: model folder problems
    if summary["notice"]:
        typer.echo(f"NOTE: {summary['notice']}", err=True)
    _report(summary)


@app.command()
def bundle(
    out: Path = typer.Option(..., "--out", "-o",
                             help="Model folder to write (model.json), for `lrmil predict --model`."),
    student_encoder: Path = typer.Option(...,
                                         help="5x patch encoder (.safetensors), e.g. from `lrmil distill-patches`."),
    student_mil: Path = typer.Option(...,
                                     help="5x ABMIL: RUN/fold<k>/model.safetensors of `lrmil distill` or `train`."),
    teacher_encoder: Path = typer.Option(..., help="20x patch encoder (.safetensors) of the teacher's features."),
    teacher_mil: Path = typer.Option(..., help="20x ABMIL: RUN/fold<k>/model.safetensors of `lrmil train`."),
    mask_mpp: float = MASK_MPP_OPT,
    min_saturation: float = MIN_SAT_OPT,
    exclude_ink: bool = EXCLUDE_INK_OPT,
    teacher_px: int = TEACHER_PX_OPT,
    min_tissue: float = MIN_TISSUE_OPT,
    notice: str = typer.Option("", help="Shown with every prediction of the model (e.g. 'research use only')."),
) -> None:
    """Package trained encoders and ABMILs as a predict model folder; give the grid flags their features were
    extracted with."""
    from lrmil.mil.bundle import save_bundle

    _check_options(out)
    tissue, patch_cfg = _grid_configs(mask_mpp, min_saturation, exclude_ink, teacher_px, min_tissue)
    with _one_line_errors(FileNotFoundError, KeyError, ValueError):
        folder = save_bundle(out, (student_encoder, student_mil), (teacher_encoder, teacher_mil), patch_cfg, tissue,
                             notice)
    typer.echo(f"model folder: {folder} (lrmil predict SLIDE... --model {folder})")


@app.command("export")
def export_onnx(
    out: Path = typer.Option(..., "--out", "-o",
                             help="Folder for the ONNX graphs and onnx.json; `lrmil predict --model` "
                                  "reads it (ONNX Runtime)."),
    model: str = typer.Option(_PREDICT.model, "--model",
                              help="Model folder (model.json); 'demo' = bundled synthetic demo."),
    path: str = typer.Option("student", "--path", help="student, teacher or both."),
    slide: Optional[list[Path]] = typer.Option(None, "--slide", help="Check parity on tissue patches of this slide "
                                                                      "(repeatable; default: seeded random pixels)."),
    int8: bool = typer.Option(False, "--int8", help="Quantise the encoder to static INT8, calibrated on --slide "
                                                    "tissue; the folder then runs the INT8 encoder."),
    mpp: Optional[float] = typer.Option(None, "--mpp",
                                        help="Level-0 microns per pixel for --slide files "
                                             "without it in their metadata."),
    threads: int = THREADS_OPT,
) -> None:
    """Export a model folder's path(s) to ONNX (patch encoder + ABMIL), checked against PyTorch before writing."""
    from lrmil.mil.bundle import PATHS
    from lrmil.onnx_export import export_model
    from lrmil.predict import resolve_model_dir

    _setup(threads)
    _check_options(out, mpp)
    if path not in (*PATHS, "both"):
        _fail(ValueError(f"--path must be student, teacher or both, got {path!r}"))
    with _one_line_errors(FileNotFoundError, KeyError, ValueError, RuntimeError):
        manifest = export_model(resolve_model_dir(model), out, PATHS if path == "both" else (path,), tuple(slide or ()),
                                mpp, threads=threads, int8=int8)
    for name in PATHS:
        for check in manifest.get(name, {}).get("parity", []):
            diffs = ", ".join(f"{k} {v:.1e}" for k, v in check["max_abs_diff"].items())
            typer.echo(f"{name}: {check['candidate']} vs torch on {manifest[name]['parity_patches']} patches: "
                       f"max|diff| {diffs} ok")
    typer.echo(f"ONNX model folder: {out} (lrmil predict SLIDE... --model {out})")


@app.command()
def bench(
    out: Path = typer.Option(Path(_BENCH.out), "--out", "-o", help="Benchmark folder (data, runs, results.md)."),
    count: int = typer.Option(_BENCH.count, help="Synthetic slides."),
    size: int = typer.Option(_BENCH.size, help="Level-0 px per side of each slide."),
    seed: int = typer.Option(_BENCH.seed, help="Seed of the data, encoders and MIL runs."),
    folds: int = typer.Option(_BENCH.folds, help="Cross-validation folds."),
    large_size: int = typer.Option(_BENCH.large_size, help="Side of the large slide timed on both paths."),
    timing_slides: int = typer.Option(_BENCH.timing_slides, help="Benchmark slides timed per path."),
    pretrain_steps: int = typer.Option(_BENCH.pretrain_steps, min=1, help="Teacher encoder pre-training steps."),
    stage1_epochs: int = typer.Option(_BENCH.stage1_epochs, help="Stage-1 distillation epochs."),
    mil_epochs: int = typer.Option(_BENCH.mil_epochs, help="Maximum ABMIL epochs per fold."),
    device: str = typer.Option(_BENCH.device, help="cpu or cuda[:N]."),
    threads: int = typer.Option(_BENCH.threads, help="Torch CPU threads."),
    demo_dir: str = typer.Option(_BENCH.demo_dir,
                                 help="Also bundle the fold-0 models here (e.g. lrmil/assets/demo_model)."),
) -> None:
    """Synthetic benchmark: teacher 20x vs 5x students (no KD, stage 2, stage 1+2) and seconds per slide."""
    from lrmil.mil.benchmark import results_table, run_bench

    _setup(0)
    _check_options(out, device=device)  # a GPU missing was a traceback once the slides were made
    cfg = BenchConfig(out=str(out), count=count, size=size, seed=seed, folds=folds, large_size=large_size,
                      timing_slides=timing_slides, pretrain_steps=pretrain_steps, stage1_epochs=stage1_epochs,
                      mil_epochs=mil_epochs, device=device, threads=threads, demo_dir=demo_dir)
    with _one_line_errors():
        results = run_bench(cfg)
    typer.echo(results_table(results))


help_paragraphs_unbroken(app)  # once every command is defined


def main() -> None:
    app()


if __name__ == "__main__":
    main()
