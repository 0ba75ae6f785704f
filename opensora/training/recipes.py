"""Which training recipe a diffusion config describes: its schema and the function that runs it.

scripts/train.py reads the config once to pick the recipe, then loads it against that recipe's
schema, so each recipe rejects the keys of the others: an Open-Sora 2.0 MMDiT model trains with
:class:`~opensora.training.config.MMDiTTrainConfig`, every other model with
:class:`~opensora.training.config.TrainConfig`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opensora.training.base import TrainResult
from opensora.training.config import BaseTrainConfig, MMDiTTrainConfig, TrainConfig


@dataclass(frozen=True)
class Recipe:
    schema: type[BaseTrainConfig]
    train: Callable[[Any], TrainResult]


def is_mmdit(model_cfg: Any) -> bool:
    """Whether a model dict builds an MMDiT (its class name, or one of its presets such as ``flux``)."""
    from opensora.models.mmdit.mmdit import MMDIT_PRESETS, MMDiT

    kind = model_cfg.get("type") if isinstance(model_cfg, Mapping) else None
    return kind == MMDiT.__name__ or kind in MMDIT_PRESETS


def select_recipe(cfg: Mapping[str, Any]) -> Recipe:
    """The recipe of a raw config dict (as :func:`opensora.config.read_config` returns it)."""
    if is_mmdit(cfg.get("model")):
        from opensora.training.mmdit_trainer import train_mmdit

        return Recipe(MMDiTTrainConfig, train_mmdit)
    from opensora.training.trainer import train

    return Recipe(TrainConfig, train)
