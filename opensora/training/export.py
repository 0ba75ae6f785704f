"""Turn a training checkpoint into a ``from_pretrained`` folder holding its EMA weights.

python tools/export_ema.py outputs/run/epoch0-global_step2000 exported/
STDiT3.from_pretrained("exported/")  # or --ckpt-path exported/ for inference
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from opensora.errors import CheckpointError
from opensora.models.modeling import load_weights
from opensora.registry import MODELS, build_module
from opensora.training.checkpoint import CheckpointManager


def export_ema(checkpoint_dir: str | os.PathLike, output_dir: str | os.PathLike, use_ema: bool = True) -> Path:
    """Write ``config.json`` + ``model.safetensors`` of the checkpoint's model, EMA weights in place.

    The EMA covers trainable parameters only; frozen ones and buffers come from the model weights
    saved beside it. ``use_ema=False`` exports the raw training weights instead.
    """
    checkpoint = CheckpointManager.find(checkpoint_dir)
    states = CheckpointManager.load(checkpoint, ["model", "model_config"] + (["ema"] if use_ema else []))
    config = dict(states["model_config"])
    class_name = config.pop("_class_name", None)
    if class_name is None:
        raise CheckpointError(f"checkpoint '{checkpoint}' does not say which model class it holds")
    weights = {**states["model"], **(states.get("ema") or {})}
    arch = {key: value for key, value in config.items() if not key.startswith("_")}
    with torch.device("meta"):  # no random initialisation: every tensor comes from the checkpoint
        model = build_module({"type": class_name, **arch}, MODELS)
    load_weights(model, weights, source=str(checkpoint))
    return model.save_pretrained(output_dir)
