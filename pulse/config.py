"""Every default PULSE uses lives here, once.

`ModelConfig` travels with the weights (safetensors header, ONNX metadata) so preprocessing is
rebuilt from the artefact, never typed in at a call site. `InferConfig` and `TrainConfig` map
1:1 onto the CLI flags of `pulse analyze` and `pulse train`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from pulse.species import INSECTSET32_SPECIES

INSECTSET32_ATTRIBUTION = (
    'Trained on "InsectSet32" by Marius Faiss (2022), Zenodo record 7072196, '
    "doi:10.5281/zenodo.7072196, CC BY 4.0. Orthoptera recordings (c) Baudewijn Odé."
)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture, frontend and provenance of one audio model."""

    arch: str = "pulse_cnn_s"
    labels: tuple[str, ...] = tuple(s.scientific for s in INSECTSET32_SPECIES)
    common_names: tuple[str, ...] = tuple(s.common for s in INSECTSET32_SPECIES)
    codes: tuple[str, ...] = tuple(s.code for s in INSECTSET32_SPECIES)
    # Frontend: 44.1 kHz keeps bush-cricket energy up to 22 kHz, where field noise is weakest.
    sample_rate: int = 44100
    window_s: float = 3.0  # the unit of analysis, as in BirdNET
    n_fft: int = 1024
    hop_length: int = 441  # 10 ms frames resolve syllable rhythms
    n_mels: int = 64
    f_min: float = 500.0
    f_max: float = 22050.0
    embed_dim: int = 256
    drop_rate: float = 0.2
    # Provenance, written into every artefact and model card.
    version: str = "0.1.0"
    training_data: str = "untrained"
    license: str = "MIT (code); weights inherit the licences of their training data"
    attribution: str = ""

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict:
        return {"package": "pulse", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
        return cls(**values)


FORMATS = ("raven", "csv", "audacity", "scores")


@dataclass(frozen=True)
class InferConfig:
    """Settings of `pulse analyze` (BirdNET-Analyzer names where one exists)."""

    model: str = "default"  # "default" (bundled ONNX), "birdnet", or a .onnx/.safetensors path
    min_conf: float = 0.25
    overlap: float = 0.0  # seconds shared by consecutive windows
    batch_size: int = 32
    workers: int = 1  # decoding processes; the model runs in the main process
    formats: tuple[str, ...] = ("raven", "csv")
    resume: bool = True
    device: str = "cpu"
    channel: int | None = None  # None mixes all channels to mono
    block_s: float = 300.0  # audio decoded per block: bounds memory for hours-long files
    strict: bool = False  # re-raise the first bad file instead of logging it

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on; saved as RUN_DIR/config.json."""

    manifest: str = "data_manifests/insectset32.csv"
    audio_root: str = "../shared/data/audio/insectset32"
    backgrounds: tuple[str, ...] = ("../shared/data/audio/backgrounds",)
    train_split: str = "train"
    val_split: str = "validation"
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
    freq_masks: int = 2
    freq_mask_bins: int = 8
    time_masks: int = 2
    time_mask_frames: int = 30
    num_workers: int = 0
    # Extra loss terms added by the semi-supervised and distillation issue (0 disables).
    lambda_byol: float = 0.0
    lambda_kd: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
        if isinstance(values.get("model"), dict):
            values["model"] = ModelConfig.from_dict(values["model"])
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
