"""Model names -> opened Predictors: the bundled students, BirdNET, or a path to any exported model.

`pulse analyze`, `pulse embeddings` and the field app open models here, so a name means the same model
everywhere and a model without PULSE metadata, or a bad --overlap / --min-len, fails the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path

from export.predictor import Predictor, load_predictor
from pulse import levels
from pulse.config import InferConfig
from pulse.schema import LabelSet
from pulse.teacher.birdnet import model_path as birdnet_model_path
from pulse.windows import WindowSpec

log = logging.getLogger(__name__)
ASSETS = Path(__file__).parent / "assets"
DEFAULT_MODEL = ASSETS / "default" / "model.onnx"
# Named models: name -> (artefact, predictor backend). Any other name is a path to an artefact.
# "default" is distilled from BirdNET, so under BirdNET's CC BY-NC-SA licence; "supervised" is the same
# recipe without distillation, free of that licence; "lowrate" is the supervised recipe trained also on
# band-limited audio: for 16-32 kHz recorders.
MODEL_ALIASES: dict[str, tuple[Path, str]] = {"default": (DEFAULT_MODEL, "auto"),
                                              "supervised": (ASSETS / "supervised" / "model.onnx", "auto"),
                                              "lowrate": (ASSETS / "lowrate" / "model.onnx", "auto"),
                                              "birdnet": (birdnet_model_path(), "birdnet")}


def model_band(metadata: dict) -> tuple[float, float]:
    """The frequency band (Hz) a model listens to: where its detection boxes are drawn."""
    return float(metadata.get("f_min", 0.0)), float(metadata.get("f_max", metadata["sample_rate"] / 2))


def below_rate_note(file_rate: int, band_top_hz: float, model: str) -> str:
    """What a recording too slow for the model's band cannot hold ("" if it holds it all); said by the CLI and the
    app."""
    if file_rate / 2 >= band_top_hz:
        return ""
    advice = "; the `lowrate` model is trained for such recordings" if model in ("default", "supervised") else ""
    return (f"recorded at {file_rate} Hz: songs above {file_rate // 2} Hz are not in the file, below the model's "
            f"band top of {band_top_hz:g} Hz{advice}")


# the top of the audio band, a 48 kHz recorder's Nyquist frequency: a file whose rate goes beyond it holds ultrasound
ULTRASOUND_HZ = 24_000


def above_band_note(file_rate: int, model_rate: int, band: tuple[float, float]) -> str:
    """What an ultrasonic recording (a bush-cricket's AudioMoth file at 192-384 kHz, a bat detector's) holds that the
    model never hears ("" for audio rates): said by the CLI and the app, as the spectrogram of such a file shows
    the ultrasound the detections seem to come from."""
    if file_rate / 2 <= max(band[1], ULTRASOUND_HZ):
        return ""
    return (f"recorded at {file_rate} Hz: resampled to the model's {model_rate} Hz, it hears {band[0]:g}-{band[1]:g} "
            f"Hz only; what the file holds above {band[1]:g} Hz (up to {file_rate // 2} Hz) is not used, and a song "
            f"only there is not detected")


def resolve_model(name: str) -> tuple[Path, str]:
    """The one place a model name becomes (artefact path, backend)."""
    return MODEL_ALIASES.get(name, (Path(name), "auto"))


def read_species_list(path: str | Path) -> tuple[str, ...]:
    """One species per line; blank lines and lines starting with # are skipped."""
    from export.tables import windows_text  # here: export.tables loads pandas, which `pulse analyze` starts without

    try:
        text = windows_text(path)  # Notepad's UTF-8 with a BOM made the first name unknown, its 'Unicode' unreadable
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the species list ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ValueError(f"{exc}; save the species list as UTF-8 (Notepad: Save As, Encoding UTF-8)") from None
    lines = (line.strip() for line in text.splitlines())
    species = tuple(line for line in lines if line and not line.startswith("#"))
    if not species:
        raise ValueError(f"{path}: the species list is empty")
    return species


def open_model(name: str, device: str = "cpu", species_list: str = "", threads: int = 0,
               location: tuple[float, float, int, float] | None = None) -> Predictor:
    """`location` (lat, lon, week, sf_thresh): BirdNET's location filter chooses its species, and a species list
    is then not used, as in BirdNET-Analyzer (its --slist is ignored when --lat and --lon are given)."""
    path, backend = resolve_model(name)
    if name in MODEL_ALIASES and not path.is_file():
        raise FileNotFoundError(f"{path}: the {name!r} model is not installed here; "
                                "pass --model PATH to a .onnx or .safetensors file")
    if threads < 0:
        raise ValueError(f"threads must be 0 (every core) or more, got {threads}")
    if not species_list and location is None:
        return load_predictor(path, backend=backend, device=device, threads=threads)
    if backend != "birdnet":
        raise ValueError(f"{species_list}: a species list applies to --model birdnet only" if species_list
                         else "--lat, --lon, --week and --sf-thresh (BirdNET's location filter) apply to --model "
                              "birdnet only")
    if location is not None:
        return load_predictor(path, backend=backend, device=device, threads=threads,
                              species=_species_at(location, species_list))
    species = read_species_list(species_list)
    try:
        return load_predictor(path, backend=backend, device=device, threads=threads, species=species)
    except ValueError as exc:  # a name BirdNET does not know: say which list it came from
        raise ValueError(f"{species_list}: {exc}") from None


def _species_at(location: tuple[float, float, int, float], species_list: str) -> tuple[str, ...]:
    """The species BirdNET's meta model expects at `location`, said in one line."""
    from pulse.teacher.location import ALL_YEAR, species_at

    lat, lon, week, sf_thresh = location
    when = "any week" if week == ALL_YEAR else f"week {week}"
    if species_list:
        log.warning("%s: not used, as --lat and --lon choose the species (BirdNET-Analyzer ignores --slist then "
                    "too)", species_list)
    species = species_at(lat, lon, week, sf_thresh)
    if not species:
        raise ValueError(f"no BirdNET species occurs at {lat:g}, {lon:g} in {when} with a frequency of at least "
                         f"{sf_thresh:g}: lower --sf-thresh")
    log.info("BirdNET's location filter: %d of its species occur at %g, %g in %s (frequency >= %g)", len(species),
             lat, lon, when, sf_thresh)
    return species


def open_checked_model(cfg: InferConfig) -> tuple[Predictor, WindowSpec, LabelSet]:
    """`cfg.model` opened, with the windows its metadata and `cfg` ask for and its labels; a model without
    PULSE metadata or a bad --overlap / --min-len is one error, and the model is closed again."""
    model_path, _ = resolve_model(cfg.model)
    predictor = open_model(cfg.model, cfg.device, cfg.species_list, cfg.threads, cfg.location)
    try:
        predictor = levels.for_model(predictor, cfg.level_floor)
        meta = predictor.metadata
        if missing := [k for k in ("labels", "sample_rate", "window_s") if k not in meta]:
            raise ValueError(f"{model_path}: not a PULSE model (its metadata lacks {', '.join(missing)}; "
                             "`pulse export` writes it)")
        rate = int(meta["sample_rate"])
        spec = WindowSpec.from_seconds(float(meta["window_s"]), cfg.overlap, rate, cfg.min_len)
        return predictor, spec, LabelSet.from_metadata(meta)
    except Exception:
        predictor.close()
        raise
