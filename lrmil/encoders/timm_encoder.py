"""Any timm model as a patch encoder: pooled features, weights only from a local file or, when asked, the hub."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lrmil.encoders.base import EncoderCfg


class TimmEncoder(nn.Module):
    """Wraps `timm.create_model(arch, num_classes=0)`; its pretrained_cfg supplies mean, std and input size."""

    def __init__(self, arch: str, weights: str):
        super().__init__()
        import timm

        self.model = timm.create_model(arch, pretrained=weights == "hub", num_classes=0)
        pcfg = self.model.pretrained_cfg
        self.cfg = EncoderCfg(
            name=f"timm/{arch}", embed_dim=self.model.num_features, patch_px=int(pcfg["input_size"][-1]),
            mean=tuple(pcfg["mean"]), std=tuple(pcfg["std"]), precision="fp16",
            source=str(pcfg.get("hf_hub_id") or pcfg.get("url") or "timm"), license=str(pcfg.get("license", "")))

    def load_file(self, path: Path) -> None:
        """A timm/Hugging Face `model.safetensors`; classifier weights are ignored, anything else missing fails."""
        from safetensors.torch import load_file

        state = load_file(str(path))
        own = self.model.state_dict()
        missing = sorted(set(own) - set(state))
        if missing:
            raise ValueError(f"{path}: not weights for {self.cfg.name} (missing {len(missing)} tensors, "
                             f"e.g. {missing[0]})")
        self.model.load_state_dict({k: v for k, v in state.items() if k in own})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
