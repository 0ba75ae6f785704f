"""Several text encoders behind one ``encode``: Open-Sora 2.0 reads T5 states and a pooled CLIP vector."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from opensora.errors import ConfigError
from opensora.registry import MODELS, build_module


@MODELS.register("text_encoders")
class TextEncoders(nn.Module):
    """``encode(texts)`` merges the outputs of named encoders, the first to give a key keeping it.

    Open-Sora 2.0: ``encoders=dict(t5=dict(type="t5", ...), clip=dict(type="clip", ...))`` gives
    T5's ``y`` [B, 1, L, C] and ``mask`` [B, L] and CLIP's pooled ``y_vec`` [B, C'] (CLIP's own
    states and mask are shadowed by T5's). ``model_max_length`` and ``output_dim`` are the first's.
    """

    def __init__(self, encoders: dict[str, dict]) -> None:
        super().__init__()
        if not encoders:
            raise ConfigError("text_encoders needs at least one entry in 'encoders'")
        self.encoders = nn.ModuleDict({name: build_module(cfg, MODELS) for name, cfg in encoders.items()})
        first = next(iter(self.encoders.values()))
        self.model_max_length = first.model_max_length
        self.output_dim = first.output_dim

    @torch.no_grad()
    def encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        merged: dict[str, torch.Tensor] = {}
        for encoder in self.encoders.values():
            for key, value in encoder.encode(texts).items():
                merged.setdefault(key, value)
        return merged

    def to(self, *args: Any, **kwargs: Any) -> TextEncoders:
        # each encoder's own ``to`` (a CPU-offloaded HF encoder only remembers the device)
        for encoder in self.encoders.values():
            encoder.to(*args, **kwargs)
        return self
