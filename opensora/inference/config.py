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
    # prompts
    prompt: list[str] | None = None
    prompt_path: str | None = None  # .txt (one prompt per line) or .csv with a "text" column
    start_index: int | None = None
    end_index: int | None = None
    aes: float | None = None  # appended as "aesthetic score: X."
    flow: float | None = None  # appended as "motion score: X."
    camera_motion: str | None = None  # appended as "camera motion: X."
    llm_refine: bool = False
    # size: resolution + aspect_ratio when resolution is set, else image_size
    num_frames: int | str = 17
    resolution: str | None = None
    aspect_ratio: str = "9:16"
    image_size: tuple[int, int] = (256, 256)
    fps: int = 24
    save_fps: int | None = None  # defaults to fps // frame_interval
    frame_interval: int = 1  # the training clips' frame step (1.0/1.1 models were trained on every 3rd frame)
    multi_resolution: str | None = None  # accepted for release configs; size conditioning is always on
    # conditioning and long generation
    reference_path: list[str | None] | None = None  # per prompt, ';'-separated files
    mask_strategy: list[str | None] | None = None  # per prompt
    loop: int = 1
    condition_frame_length: int = 5
    condition_frame_edit: float = 0.0
    align: int | None = None
    # sampling
    seed: int = 42
    batch_size: int = 1
    num_sample: int = 1
    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"
    device: str | None = None
    offload: bool = False  # park the diffusion model and VAE on the CPU while the other stage runs
    # outputs
    save_dir: str = "samples"
    sample_name: str | None = None
    prompt_as_path: bool = False
    reproducible_video: bool = True  # the same seed gives the same MP4 bytes (x264 encodes ~3x slower)
    verbose: int = 1  # 0 quiet, 1 one line per sample and memory, 2 progress bars too
