"""Every default of the LRMIL data side lives here, once.

Each job (tissue, patching, extraction, synthetic slides, stage-1 distillation) takes one frozen
config; the CLI maps its flags 1:1 onto the fields and writes `to_dict()` next to the outputs.
Magnification is defined by microns per pixel: 20x is 0.5 um/px, so m-x is 10/m um/px.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from export.jsonconfig import JsonConfig

MPP_AT_20X = 0.5  # um/px at 20x, the usual convention (Aperio, CLAM, TRIDENT)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def mpp_for_magnification(magnification: float) -> float:
    return MPP_AT_20X * 20.0 / magnification


def magnification_for_mpp(mpp: float) -> float:
    return MPP_AT_20X * 20.0 / mpp


def hash_record(record: dict) -> str:
    """Short stable hash of a JSON-able dict (key order does not matter)."""
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TissueConfig(JsonConfig):
    """Thumbnail -> tissue mask: Otsu on HSV saturation, then morphological clean-up."""

    mask_mpp: float = 8.0  # mask resolution; a 20x 256-px patch is 16x16 mask pixels
    min_saturation: float = 0.05  # Otsu threshold floor: a blank slide stays empty
    exclude_ink: bool = True  # blue, green, black pen ink is not tissue; False for Alcian blue, trichrome
    blur_sigma: float = 1.0  # mask pixels, before thresholding
    close_radius: int = 2  # bridges small gaps inside tissue
    open_radius: int = 1  # removes speckle
    min_object_px: int = 64  # at mask_mpp: 64 px = 0.004 mm^2
    max_hole_px: int = 256  # holes of at most this many mask pixels are filled


@dataclass(frozen=True)
class PatchConfig(JsonConfig):
    """Two-resolution grid: teacher patches at 20x, each student patch covers ratio x ratio of them."""

    teacher_magnification: float = 20.0
    teacher_px: int = 256
    ratio: int = 4  # student magnification = teacher / ratio (5x); 16 children per student patch
    student_px: int = 256  # read size of a student patch (covers ratio*teacher_px at 20x)
    min_tissue: float = 0.25  # fraction of a teacher patch that must be tissue
    mpp_tolerance: float = 0.05  # a scan within 5% of the target mpp is read natively, no resize

    @property
    def student_magnification(self) -> float:
        return self.teacher_magnification / self.ratio

    def level(self, name: str) -> tuple[float, int]:
        """(magnification, patch px) of the "teacher" or "student" level."""
        if name == "teacher":
            return self.teacher_magnification, self.teacher_px
        if name == "student":
            return self.student_magnification, self.student_px
        raise ValueError(f"a grid level is 'teacher' or 'student', got {name!r}")


PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class ExtractConfig(JsonConfig):
    """`lrmil extract`: encode one grid resolution of many slides into HDF5 feature files."""

    encoder: str = "lrmil_vit_tiny"
    weights: str = "default"  # "default" (the bundled file), "random", "hub" (timm; downloads) or a .safetensors path
    resolution: str = "teacher"  # "teacher" (20x) or "student" (5x)
    batch_size: int = 64
    num_workers: int = 2  # DataLoader workers reading patches
    device: str = "cpu"
    autocast: bool = True  # on CUDA: run in the encoder cfg's precision; CPU always fp32
    mpp: float | None = None  # level-0 um/px for slides without it in their metadata; None = metadata only
    override_mpp: bool = False  # use `mpp` for every slide, replacing the metadata (wrong scanner headers)
    resume: bool = True
    strict: bool = False  # re-raise the first bad slide instead of logging it
    tissue: TissueConfig = field(default_factory=TissueConfig)
    patch: PatchConfig = field(default_factory=PatchConfig)


@dataclass(frozen=True)
class SynthConfig(JsonConfig):
    """`lrmil synth`: labelled synthetic slides whose class signal lives in 20x detail."""

    count: int = 20
    size: int = 8192  # level-0 pixels per side
    seed: int = 0
    classes: int = 2  # class 0 has no atypical regions
    folds: int = 5
    tile: int = 512
    mpp: float = MPP_AT_20X
    tissue_fraction: float = 0.55  # share of the slide covered by tissue blobs
    lesions: tuple[int, int] = (2, 4)  # atypical regions per positive slide (min, max)
    lesion_radius_px: tuple[int, int] = (200, 400)  # a lesion fills whole 20x patches but part of a 5x one
    nucleus_cell_px: int = 16  # one candidate nucleus per cell of this size
    nucleus_radius_px: tuple[float, float] = (3.0, 5.0)  # 6-10 px nuclei at 20x, 1.5-2.5 px at 5x
    nucleus_density: float = 0.6  # share of cells holding a nucleus
    fine_amplitude: float = 0.5  # +-50% intensity chromatin texture in atypical nuclei (20x only)
    # What survives the 4x blur to 5x, all slight: atypical nuclei are a little darker, larger and denser.
    coarse_cue: float = 0.04  # extra haematoxylin density of atypical nuclei
    atypical_scale: float = 1.06  # radius factor of atypical nuclei (capped to fit the cell)
    atypical_density: float = 0.64  # share of lesion cells holding a nucleus
    compression: str = "zlib"  # lossless keeps the 20x texture; "jpeg" also works
    jpeg_quality: int = 90
    workers: int = 1  # processes rendering tiles; the output is identical for any value


@dataclass(frozen=True)
class PretrainConfig(JsonConfig):
    """Supervised pre-training of the small ViT on synthetic 20x patches (CPU, minutes)."""

    encoder: str = "lrmil_vit_tiny"
    seed: int = 0
    steps: int = 500
    batch_size: int = 32
    crop_px: int = 64  # trained on crops; fixed sin-cos positions let the ViT run on any patch size
    lr: float = 1e-3
    weight_decay: float = 0.05


@dataclass(frozen=True)
class DistillPatchConfig(JsonConfig):
    """Stage 1: 5x student ViT matched block-wise to the frozen 20x teacher encoder."""

    teacher_weights: str = "default"  # teacher encoder weights; the student starts as a copy
    encoder: str = "lrmil_vit_tiny"
    layers: tuple[int, ...] = (1,)  # intermediate blocks matched besides the output (0-based)
    loss: str = "cosine"  # "cosine" or "mse" (on layer-normalised features)
    layer_weight: float = 0.5  # weight of each intermediate layer relative to the output term
    attention_weighting: bool = True  # weight children by the teacher MIL's attention, when given
    test_fold: int = 0  # slides of this fold (splits CSV) are never used for stage 1
    max_parents_per_slide: int = 16  # caps the 20x teacher work; half by attention, half at random
    val_fraction: float = 0.1  # parents held out to report the match before and after
    epochs: int = 3
    batch_size: int = 8  # 5x patches per step (each brings up to 16 teacher children)
    lr: float = 1e-4
    weight_decay: float = 0.05
    seed: int = 0
    device: str = "cpu"
    mpp: float | None = None  # as ExtractConfig.mpp
    override_mpp: bool = False
    tissue: TissueConfig = field(default_factory=TissueConfig)
    patch: PatchConfig = field(default_factory=PatchConfig)
