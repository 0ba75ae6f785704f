"""The keys an inference config may hold, with their defaults (defined once, here or where noted).

Some keys are alternatives and a config sets at most one of each: ``prompt`` or ``prompt_path``;
``image_size`` or ``resolution`` (with ``aspect_ratio``). On the command line the one given
replaces the config's (:func:`prefer_command_line`); both given at once is refused.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import Literal

from opensora.datasets.aspect import RESOLUTIONS_V2, get_image_size
from opensora.errors import ConfigError
from opensora.inference.sizes import DEFAULT_FPS, LoopSettings

DEFAULT_IMAGE_SIZE = (256, 256)  # (H, W) when a config names neither image_size nor resolution
DEFAULT_ASPECT_RATIO = "9:16"  # with a resolution: height:width of the landscape frame
DEFAULT_ASPECT_RATIO_V2 = "16:9"  # with a 2.0 resolution (256px, 768px): width:height of the landscape frame


@dataclass
class InferenceConfig:
    model: dict
    text_encoder: dict
    # the scheduler's own defaults apply to every key not given (see RectifiedFlow.__init__)
    scheduler: dict = field(default_factory=lambda: {"type": "rflow"})
    vae: dict | None = None
    # prompts: the list, or a file of them
    prompt: list[str] | None = None
    prompt_path: str | None = None  # .txt (one prompt per line) or .csv with a "text" column
    start_index: int | None = None
    end_index: int | None = None
    aes: float | None = None  # appended as "aesthetic score: X."
    flow: float | None = None  # appended as "motion score: X."
    camera_motion: str | None = None  # appended as "camera motion: X."
    llm_refine: bool = False
    # size: image_size, or resolution at aspect_ratio (see pixel_size)
    num_frames: int | str = 17
    resolution: str | None = None
    aspect_ratio: str | None = None
    image_size: tuple[int, int] | None = None
    fps: int = DEFAULT_FPS
    save_fps: int | None = None  # defaults to fps // frame_interval
    frame_interval: int = 1  # the training clips' frame step (1.0/1.1 models were trained on every 3rd frame)
    # the release's switch for size conditioning, which is always on here: only its value "STDiT2" is accepted
    multi_resolution: Literal["STDiT2"] | None = None
    # conditioning and long generation (defaults: opensora.inference.pipeline.LoopSettings)
    reference_path: list[str | None] | None = None  # per prompt, ';'-separated files
    mask_strategy: list[str | None] | None = None  # per prompt
    loop: int = LoopSettings.loops
    condition_frame_length: int = LoopSettings.condition_frame_length
    condition_frame_edit: float = LoopSettings.condition_frame_edit
    align: int | None = LoopSettings.align
    # Open-Sora 2.0 (MMDiT models): the conditioning mode, the motion score and negative prompt the
    # prompts get, and text-to-image-to-video (see opensora.inference.runner.FIRST_FRAME_KEYS)
    cond_type: str | None = None  # t2v, i2v_head, i2v_tail, i2v_loop, v2v_head, v2v_tail (None: t2v)
    motion_score: str | int | float | None = None  # appended as "{m} motion score."
    negative_prompt: str | None = None
    t2i: dict | None = None  # dict(model=..., vae=..., scheduler=..., resolution=...): frame 0 drawn by text-to-image
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

    def __post_init__(self) -> None:
        at_least = {"batch_size": (self.batch_size, 1), "num_sample": (self.num_sample, 1), "fps": (self.fps, 1),
                    "frame_interval": (self.frame_interval, 1), "loop": (self.loop, 1),
                    "save_fps": (self.save_fps, 1), "align": (self.align, 1), "start_index": (self.start_index, 0),
                    "end_index": (self.end_index, 0), "seed": (self.seed, 0), "verbose": (self.verbose, 0)}  # fmt: skip
        for key, (value, low) in at_least.items():
            if value is not None and value < low:
                raise ConfigError(f"config key '{key}' must be >= {low}, got {value}")
        if not (math.isfinite(self.condition_frame_edit) and 0.0 <= self.condition_frame_edit <= 1.0):
            raise ConfigError(f"condition_frame_edit must be in [0, 1], got {self.condition_frame_edit}")

    def prompt_source(self) -> list[str] | str:
        """The prompts, or the path of their file; ConfigError when neither or both are set."""
        if self.prompt and self.prompt_path:
            raise ConfigError("the config sets both prompt and prompt_path: keep one (on the command line, "
                              "--prompt or --prompt-path replaces the config's)")  # fmt: skip
        if not (self.prompt or self.prompt_path):
            raise ConfigError("no prompt: pass --prompt TEXT or --prompt-path FILE")
        return list(self.prompt) if self.prompt else self.prompt_path

    def pixel_size(self) -> tuple[int, int]:
        """(H, W) of the samples: ``image_size``, or ``resolution`` at ``aspect_ratio`` (default 9:16).

        Neither gives DEFAULT_IMAGE_SIZE; both, or an aspect ratio without a resolution, is a ConfigError:
        one of them would be ignored.
        """
        if self.resolution is not None:
            if self.image_size is not None:
                height, width = self.image_size
                raise ConfigError(f"the config sets both resolution '{self.resolution}' and image_size "
                                  f"{height}x{width}: keep one (on the command line, --resolution or "
                                  "--image-size replaces the config's)")  # fmt: skip
            default = DEFAULT_ASPECT_RATIO_V2 if self.resolution in RESOLUTIONS_V2 else DEFAULT_ASPECT_RATIO
            return get_image_size(self.resolution, self.aspect_ratio or default)
        if self.aspect_ratio is not None:
            size = "the default 256x256" if self.image_size is None else "image_size {}x{}".format(*self.image_size)
            raise ConfigError(f"aspect_ratio '{self.aspect_ratio}' needs a resolution (e.g. --resolution 720p); "
                              f"the size is {size} otherwise")  # fmt: skip
        height, width = self.image_size or DEFAULT_IMAGE_SIZE
        if height < 1 or width < 1:
            raise ConfigError(f"image_size must be two positive numbers (height width), got {height}x{width}")
        return height, width


# keys that stand in for one another: (command-line keys of one choice, the keys it replaces)
_ALTERNATIVES = (
    ("image_size", ("resolution", "aspect_ratio")),
    ("resolution", ("image_size",)),
    ("prompt", ("prompt_path",)),
    ("prompt_path", ("prompt",)),
)


def prefer_command_line(cfg: InferenceConfig, given: Collection[str]) -> InferenceConfig:
    """``cfg`` with the config file's alternative to each command-line choice cleared.

    ``given`` holds the config keys set by command-line flags: ``--image-size`` replaces the config's
    resolution and aspect ratio, ``--resolution`` its image size, ``--prompt`` its prompt file and
    ``--prompt-path`` its prompts. Both of a pair on the command line is refused. ``--aspect-ratio``
    alone replaces nothing: with a config's image size it is refused by :meth:`InferenceConfig.pixel_size`.
    """
    cleared: dict[str, None] = {}
    for chosen, replaced in _ALTERNATIVES:
        if chosen not in given:
            continue
        clash = next((key for key in replaced if key in given), None)
        if clash is not None:
            raise ConfigError(f"{_flag(chosen)} and {_flag(clash)} are alternatives: give one")
        cleared.update(dict.fromkeys(replaced))
    return replace(cfg, **cleared) if cleared else cfg


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")
