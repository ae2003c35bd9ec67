"""Registry of PULSE audio architectures; `create_model(cfg)` is the single door.

Register a new encoder with `@MODELS.register()`: a function taking `in_chans` (2 with
`ModelConfig.band_contrast`) that returns a module mapping log-mels [B, in_chans, n_mels, frames]
to pooled features [B, num_features], with a `num_features` attribute; its name is then a valid
`ModelConfig.arch`. `PulseClassifier` adds the embedding and head that training (BYOL, KD) uses,
so nothing else changes. tests/test_export.py runs and exports every registered name.
"""

from __future__ import annotations

from pathlib import Path

from export.registry import Registry
from pulse.config import ModelConfig
from pulse.models.classifier import ModelOutput, PulseClassifier, ScoresAndEmbedding
from pulse.models.cnn import ConvEncoder, TimmEncoder

MODELS: Registry = Registry("audio encoder")


@MODELS.register()
def pulse_cnn_xs(in_chans: int = 1):
    return ConvEncoder((16, 32, 64, 128), in_chans)


@MODELS.register()
def pulse_cnn_s(in_chans: int = 1):
    return ConvEncoder((24, 48, 96, 192), in_chans)


@MODELS.register()
def pulse_cnn_m(in_chans: int = 1):
    return ConvEncoder((32, 64, 128, 256), in_chans)


@MODELS.register()
def timm_mobilenetv3_small(in_chans: int = 1):
    """A timm backbone behind the same contract (random init: nothing is downloaded)."""
    return TimmEncoder("mobilenetv3_small_100", in_chans)


def create_model(cfg: ModelConfig, frontend_mode: str = "fft") -> PulseClassifier:
    encoder = MODELS.create(cfg.arch, in_chans=2 if cfg.band_contrast else 1)
    return PulseClassifier(cfg, encoder, frontend_mode=frontend_mode)


def load_model(path: str | Path, frontend_mode: str = "fft") -> PulseClassifier:
    """Rebuild a model from a safetensors checkpoint and the config in its header."""
    from export.artifact import load_weights

    state, metadata = load_weights(path, package="pulse")  # another package's file: one line, not a key dump
    model = create_model(ModelConfig.from_dict(metadata), frontend_mode)
    model.load_state_dict(state)
    return model.eval()


def build_from_metadata(metadata: dict, frontend_mode: str = "fft") -> PulseClassifier:
    """Hook for `export.backends.torch_backend`: an untrained model with this config."""
    return create_model(ModelConfig.from_dict(metadata), frontend_mode)


__all__ = ["MODELS", "ModelOutput", "PulseClassifier", "ScoresAndEmbedding", "create_model", "load_model"]
