"""Every default PULSE uses lives here, once.

`ModelConfig` travels with the weights (safetensors header, ONNX metadata) so preprocessing is
rebuilt from the artefact, never typed in at a call site. `InferConfig` and `TrainConfig` map
1:1 onto the CLI flags of `pulse analyze` and `pulse train`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from export.jsonconfig import JsonConfig
from pulse.species import BUNDLED_SPECIES, species_code


@dataclass(frozen=True)
class ModelConfig(JsonConfig):
    """Architecture, frontend and provenance of one audio model."""

    arch: str = "pulse_cnn_s"
    labels: tuple[str, ...] = tuple(s.scientific for s in BUNDLED_SPECIES)
    common_names: tuple[str, ...] = tuple(s.common for s in BUNDLED_SPECIES)
    codes: tuple[str, ...] = tuple(s.code for s in BUNDLED_SPECIES)
    # Frontend: 44.1 kHz keeps bush-cricket energy up to 22 kHz, where field noise is weakest.
    sample_rate: int = 44100
    window_s: float = 3.0  # the unit of analysis, as in BirdNET
    n_fft: int = 1024
    hop_length: int = 441  # 10 ms frames resolve syllable rhythms
    n_mels: int = 64
    window_taper: float = 1.0  # share of each frame tapered: 1 is Hann, less a flatter Tukey window
    # Samples per frame; 0: n_fft. Longer frames are folded onto n_fft points before the DFT, so frames as
    # long as the hop see every sample at the same DFT cost (pulse/frontend.py).
    frame_length: int = 0
    f_min: float = 500.0
    f_max: float = 22050.0
    # A second input channel: each mel band minus its own mean over the window, so a band that sounds all
    # window long (another insect's steady song, wind, a recorder's gain) cancels and what changes stands out.
    band_contrast: bool = False
    embed_dim: int = 256
    drop_rate: float = 0.2
    # Provenance, written into every artefact and model card.
    version: str = "0.1.0"
    training_data: str = "untrained"
    license: str = "MIT (code); weights inherit the licences of their training data"
    attribution: str = ""

    def __post_init__(self):
        for name in ("common_names", "codes"):  # empty: writers use the label itself and species_code(label)
            if getattr(self, name) and len(getattr(self, name)) != len(self.labels):
                raise ValueError(f"model.{name} lists {len(getattr(self, name))} entries for {len(self.labels)} "
                                 f"labels: give one per species, in the labels' order")
        for name in ("labels", "codes"):  # one output per species, one code per output
            values = getattr(self, name)
            if twice := sorted({v for v in values if values.count(v) > 1}):
                raise ValueError(f"model.{name} lists {', '.join(twice)} more than once")
        derived = [species_code(label) for label in self.labels]
        if not self.codes and (twice := sorted({c for c in derived if derived.count(c) > 1})):
            raise ValueError(f"the labels' derived codes repeat ({', '.join(twice)}: first three letters of genus "
                             f"and epithet): give model.codes, one per label")

    @classmethod
    def from_dict(cls, data: dict):
        """Labels of your own without common names or codes: those stay empty (the labels stand in for them)
        rather than defaulting to the bundled species' nine."""
        if "labels" in data:
            data = {"common_names": [], "codes": [], **data}
        return super().from_dict(data)

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict:
        return {"package": "pulse", **super().to_dict()}


LEVEL_FLOOR_DBFS = -20.0  # the low end of the bundled recipes' gain_db (peak dBFS of every training window)
MAX_RAISE_DB = 40.0  # a window quieter than the floor by more is near-silence (dither), not a distant singer


@dataclass(frozen=True)
class InferConfig(JsonConfig):
    """Settings of `pulse analyze` (BirdNET-Analyzer names where one exists)."""

    model: str = "default"  # "default" (bundled ONNX), "birdnet", or a .onnx/.safetensors path
    min_conf: float = 0.25
    overlap: float = 0.0  # seconds shared by consecutive windows
    min_len: float = 1.0  # seconds of audio a trailing window needs to be analysed (BirdNET-Analyzer's default)
    # Windows per model call. 16, not 32: on this project's CPU both models ran 6-11 % faster (bench/README.md,
    # "Batch size"); BirdNET-Analyzer's own default is 1.
    batch_size: int = 16
    workers: int = 0  # decoding threads (0: one per two cores, at least one; several also share out a long FLAC's
    # blocks); the model runs in the main thread
    threads: int = 0  # CPU threads of the model (BirdNET-Analyzer's --threads); 0: every core, for any backend
    formats: tuple[str, ...] = ("raven", "csv")
    resume: bool = True
    device: str = "cpu"
    channel: int | None = None  # None mixes all channels to mono
    # Audio decoded per block: bounds memory for hours-long files, and small blocks let the model start
    # while the rest of a file decodes (300 s blocks: ~500x real time on a 300 s file, 10 s: ~1000x).
    block_s: float = 10.0
    strict: bool = False  # re-raise the first bad file instead of logging it
    # --model birdnet only: a text file, one species per line (scientific name or BirdNET's
    # 'Scientific_Common' label), restricting the output to them as BirdNET-Analyzer's --slist does.
    species_list: str = ""
    # --model birdnet only: BirdNET's meta model keeps the species it expects at this place (degrees) in this week
    # (1-48, 4 a month; -1 all year) with an occurrence frequency of at least sf_thresh, as BirdNET-Analyzer's
    # --lat, --lon, --week and --sf_thresh do; a species_list is then not used, as there.
    lat: float | None = None
    lon: float | None = None
    week: int = -1
    sf_thresh: float = 0.03
    # A window peaking below this (dBFS) is raised to it, by at most 40 dB, before a PULSE model scores it:
    # the quietest level the bundled models trained on (pulse/levels.py). BirdNET scores windows as recorded.
    level_floor: float = LEVEL_FLOOR_DBFS
    # Up to this many consecutive windows of a species become one detection row (BirdNET-Analyzer's
    # --merge_consecutive); 0 or 1 keeps a row per window. scores.csv always keeps every window.
    merge_consecutive: int = 1

    @property
    def location(self) -> tuple[float, float, int, float] | None:
        """BirdNET's location filter (lat, lon, week, sf_thresh); None without --lat and --lon, or with both -1
        (BirdNET-Analyzer's defaults, its way of saying no filter: a command copied from it keeps every species)."""
        if (self.lat, self.lon) in ((None, None), (-1, -1)):
            return None
        return self.lat, self.lon, self.week, self.sf_thresh


MAX_CLIP_S = 60.0  # `pulse segments`: a longer detection (a merged run) keeps its first minute


@dataclass(frozen=True)
class SegmentConfig(JsonConfig):
    """Settings of `pulse segments` (BirdNET-Analyzer's names)."""

    min_conf: float = 0.25
    max_segments: int = 100  # per species, drawn at random
    seq_length: float = 3.0  # seconds: shorter detections are widened to this around their middle
    seed: int = 0


@dataclass(frozen=True)
class AssessConfig(JsonConfig):
    """Settings of `pulse assess` (a run's scores against Raven annotations of the same recordings)."""

    min_conf: float = 0.25  # a window scoring at least this is a detection (as `pulse analyze` reports it)
    # Seconds a box must overlap a window to make it positive (a box shorter than twice this: half of it). 1 s is a
    # third of a 3 s window: enough song for the model to hear, unlike a box's edge grazing the window.
    min_overlap_s: float = 1.0


DEFAULT_MANIFEST = "data_manifests/insectset32.csv"
DEFAULT_AUDIO_ROOT = "../shared/data/audio/insectset32"
DEFAULT_BACKGROUND_MANIFEST = "data_manifests/backgrounds.csv"
DEFAULT_BACKGROUND_ROOT = "../shared/data/audio/backgrounds"


@dataclass(frozen=True)
class EvalConfig(JsonConfig):
    """Settings of `pulse evaluate`: 3 s excerpts, clean and mixed into held-out soundscapes."""

    manifest: str = DEFAULT_MANIFEST
    audio_root: str = DEFAULT_AUDIO_ROOT
    split: str = "validation"
    background_manifest: str = DEFAULT_BACKGROUND_MANIFEST
    background_root: str = DEFAULT_BACKGROUND_ROOT
    background_split: str = "validation"  # soundscapes never seen in training
    snr_db: tuple[float, ...] = (10.0, 0.0, -10.0)
    min_excerpt_s: float = 1.0  # a clip's last partial window is kept (zero-padded) if at least this long
    exclude_excerpts: str = ""  # CSV (path, start_s, reason) of excerpts without song, left out of the scores
    negative_hop_s: float = 1.0  # hop between pure-background windows used as detection negatives
    threshold: float = 0.5  # for the multi-label (thresholded) F1
    batch_size: int = 32
    seed: int = 0
    # Each condition scored again with every excerpt this much later (silence in front): where a song falls on
    # the model's frame grid (20 ms for the bundled models) is chance in a real recording; it moved their window
    # F1 by up to 0.09.
    delays_ms: tuple[float, ...] = (5.0, 10.0, 15.0)
    # Quiet windows raised as `pulse analyze` raises them (`pulse evaluate`; a training run's per-epoch
    # validation scores as recorded: its windows are at the recordings' own levels either way).
    level_floor: float = LEVEL_FLOOR_DBFS



@dataclass(frozen=True)
class TeacherCacheConfig(JsonConfig):
    """Settings of `pulse teacher-cache` (BirdNET outputs per file content and window)."""

    manifest: str = DEFAULT_MANIFEST
    audio_root: str = DEFAULT_AUDIO_ROOT
    out: str = "runs/teacher/insectset32"
    # Distillation centres one student window on each cached window and averages the cached windows whose
    # centres fall inside it (pulse/train/distill_birdnet.py): at 1 s a 3 s student gets three times as many
    # windows as at 3 s, each target the mean of a window and its two neighbours; at 3 s one window alone.
    hop_s: float = 1.0
    batch_size: int = 16
    threads: int = 0  # LiteRT threads; 0 lets LiteRT decide


KD_LOSSES = ("cosine", "mse")
SCHEDULES = ("joint", "pretrain_finetune")


@dataclass(frozen=True)
class SemiConfig(JsonConfig):
    """BYOL on unlabelled audio and BirdNET distillation; used when lambda_byol / lambda_kd > 0."""

    # Unlabelled pool: (manifest, root) pairs, their `unlabelled_split` rows; labels, if any, are ignored.
    unlabelled_manifests: tuple[str, ...] = (DEFAULT_BACKGROUND_MANIFEST, DEFAULT_MANIFEST)
    unlabelled_roots: tuple[str, ...] = (DEFAULT_BACKGROUND_ROOT, DEFAULT_AUDIO_ROOT)
    unlabelled_split: str = "train"
    # BYOL (Grill et al. 2020) with BYOL-A augmentations (Niizumi et al. 2021).
    byol_batch: int = 16
    byol_ema: float = 0.99  # target <- ema * target + (1 - ema) * online, after every step
    byol_hidden: int = 1024
    byol_dim: int = 256
    mixup_ratio: float = 0.4  # mixing weight drawn from U(0, mixup_ratio), in the linear domain
    mixup_memory: int = 128  # past unlabelled log-mels kept for mixup
    rrc_virtual_time: float = 1.5  # the crop canvas is this much longer than the log-mel
    rrc_scale: tuple[float, float] = (0.6, 1.5)  # crop height and width relative to the log-mel
    byol_snr_db: tuple[float, float] = (0.0, 20.0)  # second pool window mixed into each view
    byol_gain_db: tuple[float, float] = (-12.0, 6.0)
    # Distillation from cached BirdNET outputs (`pulse teacher-cache`); each cache's config.json names
    # its manifest and root, and only their `teacher_split` rows are used.
    teacher_caches: tuple[str, ...] = ("runs/teacher/insectset32", "runs/teacher/backgrounds")
    teacher_split: str = "train"
    kd_batch: int = 16
    kd_loss: str = "cosine"  # embedding distance: cosine or mse (on standardised teacher embeddings)
    kd_logit_weight: float = 0.5  # weight of the Orthoptera-logit term next to the embedding term
    kd_temperature: float = 2.0
    kd_snr_db: tuple[float, float] = (-5.0, 20.0)  # student sees the window in noise, teacher saw it clean
    kd_background_prob: float = 0.5
    # Species scores of a BirdNET-embedding probe, cross-fitted over kd_probe_folds folds of the labelled
    # recordings, as soft targets for the student's own head (0: off).
    kd_probe_weight: float = 0.0
    kd_probe_folds: int = 5
    # "joint": every term from the first step; "pretrain_finetune": BYOL and KD alone for the first
    # pretrain_frac of the steps, then the terms that train the species head (weak labels, shift
    # consistency, ensemble) alone.
    schedule: str = "joint"
    pretrain_frac: float = 0.5

    def __post_init__(self):
        """Refused as the config is read (`JsonConfig.load` names the file): a kd_loss was refused only once all the
        audio was decoded, and a pretrain_frac of 1 trained no species head at all, in silence."""
        if self.kd_loss not in KD_LOSSES:
            raise ValueError(f"semi.kd_loss must be {' or '.join(KD_LOSSES)}, got {self.kd_loss!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"semi.schedule must be {' or '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.schedule == "pretrain_finetune" and not 0 < self.pretrain_frac < 1:
            raise ValueError(f"semi.pretrain_frac must be above 0 and below 1 with the pretrain_finetune schedule "
                             f"(the share of steps that pre-train, before the species head is trained), got "
                             f"{self.pretrain_frac!r}")


@dataclass(frozen=True)
class TrainConfig(JsonConfig):
    """Everything one training run depends on; saved as RUN_DIR/config.json."""

    manifest: str = DEFAULT_MANIFEST
    audio_root: str = DEFAULT_AUDIO_ROOT
    # Background audio: the manifest's train split is mixed in; its validation split is never trained on.
    background_manifest: str = DEFAULT_BACKGROUND_MANIFEST
    background_root: str = DEFAULT_BACKGROUND_ROOT
    backgrounds: tuple[str, ...] = ()  # extra background files or folders the user adds (all trained on)
    train_split: str = "train"
    val_split: str = "validation"  # empty: no per-epoch validation, the last epoch's model is kept
    # Labelled splits trained on besides train_split, e.g. ("validation",) for the final refit on every
    # labelled clip once the recipe is fixed; backgrounds still come from train_split alone.
    extra_train_splits: tuple[str, ...] = ()
    model: ModelConfig = field(default_factory=ModelConfig)
    seed: int = 0
    epochs: int = 30
    steps_per_epoch: int = 100
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-2
    pooling: str = "max"  # clip pooling of window scores: max, mean or attention
    windows_per_clip: int = 2
    class_balance: bool = True
    background_prob: float = 0.8
    snr_db: tuple[float, float] = (-15.0, 20.0)
    negative_prob: float = 0.15  # share of pure-background windows labelled all-zero
    gain_db: tuple[float, float] = (-20.0, 6.0)
    noise_prob: float = 0.25  # share of background mixes that use coloured noise instead of a recording
    background_speeds: tuple[float, ...] = (0.8, 0.9, 1.0, 1.12, 1.25)  # resampled copies widen a small pool
    mixup_prob: float = 0.25  # share of clips overlaid with a second species (multi-label target)
    # Mixed pairs: the quieter singer's target is its amplitude ratio to the louder (a recordist names the
    # singer in front); off: both 1.
    mixup_level_targets: bool = False
    # Share of song clips with a synthetic other insect behind them (pulse.train.augment.unknown_singer),
    # at unknown_singer_snr_db below the song; the target stays the focal species alone.
    unknown_singer_prob: float = 0.0
    unknown_singer_snr_db: tuple[float, float] = (-5.0, 15.0)
    # songs replayed at these speeds (pulse rate and pitch vary with temperature)
    song_speeds: tuple[float, ...] = (1.0,)
    tempo_prob: float = 0.0  # share of log-mels slowed down with pitch kept (song tempo falls with temperature)
    slowest_tempo: float = 0.5  # their tempo, drawn log-uniformly from [slowest_tempo, 1]
    # Only windows of these species (alone) and pure-background windows are slowed; empty: every window.
    # Grasshoppers, not crickets: a cricket's carrier moves with its pulse rate (song_speeds models
    # that), and a slowed cricket trill sounds like a toad's (bench/README.md, "Slower songs").
    tempo_species: tuple[str, ...] = ()
    lowpass_prob: float = 0.0  # share of songs low-passed before mixing, as by distance and vegetation
    lowpass_hz: tuple[float, float] = (6000.0, 20000.0)  # its cutoff, drawn log-uniformly from this range
    # Share of songs band-limited before mixing, as in archive recordings (MP3 cuts at ~16 kHz): the song
    # loses its top octave, the soundscape behind it keeps it (bench/README.md, "Songs from archive recordings").
    song_band_limit_prob: float = 0.0
    song_band_limit_rates: tuple[int, ...] = (24000, 32000, 40000)  # Hz; the song keeps up to half of one
    song_crop_prob: float = 0.0  # share of song crops centred on a loud moment, not placed at random
    band_limit_prob: float = 0.0  # share of mixed windows heard through a recorder at one of band_limit_rates
    band_limit_rates: tuple[int, ...] = (16000, 22050, 24000, 32000)  # Hz; nothing above half of it survives
    clip_prob: float = 0.0  # share of mixed windows hard-clipped (overdriven recorder, loud close singer)
    clip_db: tuple[float, float] = (-24.0, -3.0)  # clipping level below the window's peak, drawn uniformly
    tilt_db: float = 0.0  # random spectral tilt of each log-mel, up to +- this many dB (recorder response)
    short_clip_loop_prob: float = 0.5  # clips shorter than a window: loop-pad, else zero-pad as inference does
    freq_masks: int = 2
    freq_mask_bins: int = 8
    time_masks: int = 2
    time_mask_frames: int = 30
    label_smoothing: float = 0.02
    warmup_frac: float = 0.05  # share of steps with linear warm-up before the cosine decay
    grad_clip: float = 5.0
    ema_decay: float = 0.0  # > 0: validate and ship an exponential moving average of the weights
    init_from: str = ""  # weights (.safetensors) to fine-tune from; empty starts from random init
    threads: int = 2  # torch CPU threads; 0 leaves torch's default (every core)
    evaluation: EvalConfig = field(default_factory=EvalConfig)  # per-epoch validation, model selection
    # Weights of the loss terms beside the weak-label BCE (weight 1): BYOL on unlabelled audio
    # (pulse/train/byol.py) and distillation from cached BirdNET outputs (distill_birdnet.py); 0 disables.
    lambda_byol: float = 0.0
    lambda_kd: float = 0.0
    semi: SemiConfig = field(default_factory=SemiConfig)
    # Distillation from trained PULSE models (pulse/train/distill_ensemble.py): the student's window scores
    # are pulled towards the mean of these teachers' (0 disables).
    lambda_ensemble: float = 0.0
    ensemble_teachers: tuple[str, ...] = ()
    # Shift consistency (pulse/train/shift_consistency.py): each window is also scored a fraction of a
    # frame later, with the same augmentations, and the two scores are pulled together (0 disables).
    lambda_shift: float = 0.0

    # What `pulse train` adds to a run's config.json besides the settings (pulse/train/weak_labels.run_record).
    RECORD_KEYS = ("package_version", "git_sha", "manifest_sha256", "device", "model.package")

    def __post_init__(self):
        """What one setting needs of another, refused as the config is read, as `SemiConfig` refuses its own."""
        if self.semi.schedule == "pretrain_finetune" and self.lambda_byol <= 0 and self.lambda_kd <= 0:
            raise ValueError("semi.schedule pretrain_finetune needs lambda_byol or lambda_kd above 0: they are what "
                             "it pre-trains")


@dataclass(frozen=True)
class ExportConfig(JsonConfig):
    """Settings of `pulse export`: which artefacts to write and the real audio that checks them."""

    # Which log-mel graph model.onnx (what ONNX Runtime runs) holds: "auto" times all three on the
    # parity windows and keeps the fastest; "fft" (STFT op), "conv" (DFT basis as a convolution) or
    # "folded" (frames folded on their centre, two matrix products: `pulse.frontend`).
    ort_graph: str = "auto"
    int8: bool = False
    quantization: str = "static"  # "static" (activations calibrated on real audio) or "dynamic"
    calibration: tuple[str, ...] = (DEFAULT_AUDIO_ROOT,)  # audio files/folders for INT8 calibration and parity
    calibration_windows: int = 64  # one window from each of up to this many recordings
    parity_windows: int = 16
    trt: bool = False  # also build a TensorRT engine from model.trt.onnx (needs an NVIDIA GPU)
    trt_fp16: bool = True

