"""Model adapters: how the one pipeline drives each family of diffusion models.

``adapter_for(model, ...)`` picks the adapter of a built model; ``family(model_type)`` names the
family a config's model type belongs to before anything is built (for the checks that run first).
"""

from __future__ import annotations

from torch import nn

from opensora.inference.adapters.base import ModelAdapter, SamplingInputs
from opensora.inference.adapters.stdit import STDiTAdapter

__all__ = ["ModelAdapter", "STDiTAdapter", "SamplingInputs", "adapter_for", "family"]

MMDIT_CLASSES = ("MMDiT",)


def family(model_type: str) -> str:
    """"mmdit" for Open-Sora 2.0's MMDiT types, "stdit" otherwise (every 1.x model)."""
    from opensora.registry import MODELS

    target = MODELS.get(model_type)
    return "mmdit" if getattr(target, "__name__", "") in MMDIT_CLASSES else "stdit"


def adapter_for(model: nn.Module, **options) -> ModelAdapter:
    """The adapter of ``model``; ``options`` are the MMDiT adapter's (cond_type, motion_score, ...)."""
    if type(model).__name__ in MMDIT_CLASSES:
        from opensora.inference.adapters.mmdit import MMDiTAdapter

        return MMDiTAdapter.for_model(model, **options)
    config = getattr(model, "config", {})
    return STDiTAdapter(config.get("in_channels", 4), getattr(model, "input_size", None))
