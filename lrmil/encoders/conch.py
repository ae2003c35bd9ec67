"""CONCH (Lu et al. 2024) as a patch encoder, only where the user has its package and checkpoint.

Nothing here is required: without the `conch` package or a local checkpoint the factory raises
one clear error. The weights are gated by their authors, so we never download them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lrmil.encoders.base import EncoderCfg

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ConchEncoder(nn.Module):
    """CONCH ViT-B/16 image tower; features are the projected image embedding (512-d)."""

    def __init__(self, checkpoint: Path):
        super().__init__()
        try:
            from conch.open_clip_custom import create_model_from_pretrained
        except ImportError:
            raise RuntimeError("encoder 'conch' needs the CONCH package (pip install "
                               "git+https://github.com/mahmoodlab/CONCH) and its checkpoint file") from None
        if not checkpoint.is_file():
            raise FileNotFoundError(f"{checkpoint}: CONCH checkpoint not found "
                                    "(pass --weights PATH to pytorch_model.bin)")
        self.model, _ = create_model_from_pretrained("conch_ViT-B-16", checkpoint_path=str(checkpoint))
        self.cfg = EncoderCfg(name="conch", embed_dim=512, patch_px=448, mean=OPENAI_CLIP_MEAN,
                              std=OPENAI_CLIP_STD, precision="fp16", source="MahmoodLab/CONCH",
                              license="CC-BY-NC-ND-4.0 (gated; the user's own copy)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x, proj_contrast=False, normalize=False)
