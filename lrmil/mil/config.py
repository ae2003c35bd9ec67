"""Every default of the MIL side of LRMIL lives here, once.

`ABMILConfig` travels with the weights (safetensors header) so a checkpoint rebuilds its own
model. `MILConfig` drives `lrmil train` (the 20x teacher, or a 5x student without KD) and
`DistillConfig` drives `lrmil distill` (stage 2); their fields map 1:1 onto the CLI flags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from export.jsonconfig import JsonConfig

DEMO_NOTICE = "synthetic demo model, not for diagnosis"


@dataclass(frozen=True)
class ABMILConfig(JsonConfig):
    """Architecture of one gated-attention MIL model (Ilse et al. 2018) and what it reads."""

    in_dim: int = 192  # feature size of the patch encoder; resolved from the feature store
    hidden_dim: int = 128
    attn_dim: int = 64
    labels: tuple[str, ...] = ("0", "1")
    drop_rate: float = 0.25
    # Provenance: which features the model expects (filled in by training from the store attrs).
    magnification: float = 20.0
    encoder: str = ""
    notice: str = ""  # e.g. DEMO_NOTICE; copied into every prediction

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict:
        return {"package": "lrmil", **dataclasses.asdict(self)}


@dataclass(frozen=True)
class MILConfig(JsonConfig):
    """One k-fold MIL training run on one feature folder (`lrmil train`)."""

    RECORD_NESTS: ClassVar[str] = "config"  # a run's config.json: {"config": {...}, "version": ..., ...}
    RECORD_KEYS: ClassVar[tuple[str, ...]] = ("model.package",)

    features: str = ""  # folder of per-slide HDF5 feature files
    splits: str = ""  # CSV with slide_id, label, fold
    out: str = "runs/teacher"
    folds: tuple[int, ...] = ()  # test folds to run; empty = every fold in the CSV
    model: ABMILConfig = field(default_factory=ABMILConfig)
    epochs: int = 60
    patience: int = 15  # epochs without a better validation (AUC, -loss) before stopping
    lr: float = 5e-4
    weight_decay: float = 1e-4
    seed: int = 0



@dataclass(frozen=True)
class DistillConfig(JsonConfig):
    """Stage 2 (`lrmil distill`): a 5x student ABMIL taught by a frozen 20x teacher ABMIL."""

    RECORD_NESTS: ClassVar[str] = "config"
    RECORD_KEYS: ClassVar[tuple[str, ...]] = ("model.package",)

    features: str = ""  # the student's 5x feature folder (stage-1 features for the full method)
    teacher_features: str = ""  # the teacher's 20x feature folder
    teacher: str = ""  # teacher run folder from `lrmil train` (fold<k>/model.safetensors)
    splits: str = ""
    out: str = "runs/student"
    folds: tuple[int, ...] = ()
    model: ABMILConfig = field(default_factory=ABMILConfig)
    epochs: int = 60
    patience: int = 15
    lr: float = 5e-4
    weight_decay: float = 1e-4
    seed: int = 0
    # Loss weights; 0 switches a term off.
    w_ce: float = 1.0
    w_logits: float = 1.0  # KL(teacher bag probabilities at T || student's)
    w_attention: float = 1.0  # KL(student attention || teacher attention summed over 16 children)
    w_topk: float = 0.5  # CE of the student's top-k instances (by teacher attention) to the slide label
    temperature: float = 2.0
    topk: int = 4





@dataclass(frozen=True)
class PredictConfig(JsonConfig):
    """`lrmil predict`: slides -> label, probabilities, heatmap and top-k patches per slide."""

    model: str = "demo"  # a model folder (model.json, or onnx.json from `lrmil export`), or "demo" (bundled)
    path: str = "student"  # "student" reads only 5x patches; "teacher" runs the 20x path for comparison
    mpp: float | None = None  # level-0 um/px for slides without it in their metadata; None = metadata only
    override_mpp: bool = False  # use `mpp` for every slide, replacing the metadata (wrong scanner headers)
    batch_size: int = 32
    topk: int = 8  # most-attended patches saved as a PNG grid
    heatmap_px: int = 1024  # longer side of the heatmap image
    device: str = "cpu"
    strict: bool = False  # re-raise the first bad slide instead of logging it
    resume: bool = True  # skip a slide whose SLIDE.json this model, these settings and this slide file made


@dataclass(frozen=True)
class BenchConfig(JsonConfig):
    """`lrmil bench` / `python bench/bench_lrmil.py`: about 20 min on 2 CPU cores."""

    out: str = "bench_out/lrmil"
    count: int = 32  # synthetic slides (balanced classes, stratified folds)
    size: int = 3072  # level-0 px per side of each benchmark slide
    seed: int = 0
    folds: int = 4
    large_size: int = 16384  # one large slide timed on both paths; 0 skips it
    timing_slides: int = 3  # benchmark slides timed per path
    pretrain_steps: int = 300
    stage1_epochs: int = 6  # passes of stage-1 (patch-level) distillation over the 5x patches
    mil_epochs: int = 60
    device: str = "cpu"
    threads: int = 1  # torch CPU threads; 1 is fastest on a shared, oversubscribed machine
    demo_dir: str = ""  # when set, the fold-0 models are bundled there as the demo model
