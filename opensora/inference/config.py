"""The keys an inference config may hold, with their defaults (defined once, here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class InferenceConfig:
    model: dict
    text_encoder: dict
    scheduler: dict = field(default_factory=lambda: {"type": "rflow", "use_timestep_transform": True})
    vae: dict | None = None
    prompt: list[str] | None = None
    prompt_path: str | None = None
    num_frames: int = 17
    image_size: tuple[int, int] = (256, 256)
    fps: int = 24
    seed: int = 42
    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"
    device: str | None = None
    batch_size: int = 1
    outputs: str = "samples"
    cfg_scale: float | None = None
