"""One sample at a time for an interactive front end (the Gradio demo): what a loaded model offers
(sizes, durations, default steps and guidance) and a request turned into a file on disk.

The work is done by :class:`~opensora.inference.pipeline.VideoPipeline`, as for the command line;
this module only checks a request, builds the prompt and writes the result.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import math
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from opensora.datasets.aspect import ASPECT_RATIOS_V2, RESOLUTIONS_V2, get_image_size, get_num_frames
from opensora.errors import ConfigError
from opensora.inference.adapters.mmdit import MMDiTAdapter
from opensora.inference.config import DEFAULT_ASPECT_RATIO, DEFAULT_ASPECT_RATIO_V2, InferenceConfig
from opensora.inference.media import save_sample
from opensora.inference.pipeline import VideoPipeline, VideoSize
from opensora.inference.prompts import append_scores, check_camera_motion
from opensora.inference.runner import build_pipeline, check_config, resolve_size
from opensora.registry import SCHEDULERS, build_module

RESOLUTIONS = ("144p", "240p", "360p", "480p", "720p")  # the range the 1.1 and 1.2 models were trained on
ASPECT_RATIO_NAMES = ("9:16", "16:9", "3:4", "4:3", "1:1")  # height:width, so "9:16" is landscape
DURATIONS = ("2s", "4s", "8s", "16s")
DURATIONS_V2 = ("33 frames", "65 frames", "97 frames", "129 frames")  # Open-Sora 2.0: 4k+1 frames
IMAGE = "image"  # the duration choice of a single frame
MAX_SAMPLING_STEPS = 1000
_PIXEL_SIZE = re.compile(r"^(\d+)x(\d+)$")
_FRAME_COUNT = re.compile(r"^(\d+) frames$")
_SAMPLE_NAME = re.compile(r"^sample_(\d+)\.")


@dataclass(frozen=True)
class SizeChoices:
    """The sizes a model offers, as names a user picks from, and the config's defaults among them.

    A fixed-size model (STDiT 1.0) offers one pixel size (``"512x512"``), no aspect ratios and one
    frame count; the others offer the trained resolutions and every listed aspect ratio.
    """

    resolutions: tuple[str, ...]
    aspect_ratios: tuple[str, ...]
    durations: tuple[str, ...]
    resolution: str
    aspect_ratio: str | None
    duration: str
    fps: int

    def size(self, resolution: str, aspect_ratio: str | None, duration: str) -> VideoSize:
        """The VideoSize of a choice; a name this model does not offer is a ConfigError listing those it does."""
        _check_choice("resolution", resolution, self.resolutions)
        _check_choice("duration", duration, self.durations)
        pixels = _PIXEL_SIZE.match(resolution)
        if pixels:
            height, width = int(pixels[1]), int(pixels[2])
        else:
            _check_choice("aspect ratio", aspect_ratio, self.aspect_ratios)
            height, width = get_image_size(resolution, aspect_ratio)
        return VideoSize(duration_frames(duration), height, width, self.fps)


def _check_choice(what: str, value: str | None, offered: tuple[str, ...]) -> None:
    if value not in offered:
        raise ConfigError(f"{what} {value!r} is not offered by this model (choose from: {', '.join(offered)})")


def duration_frames(duration: str) -> int:
    """Frames of a duration choice: ``"image"`` -> 1, ``"17 frames"`` -> 17, ``"2s"`` -> 51."""
    if duration == IMAGE:
        return 1
    count = _FRAME_COUNT.match(duration)
    return int(count[1]) if count else get_num_frames(duration)


def size_choices(cfg: InferenceConfig, pipeline: VideoPipeline) -> SizeChoices:
    """What ``pipeline``'s model can sample, with the config's own size as the default."""
    default = resolve_size(cfg)
    frames = f"{default.num_frames} frames"
    if getattr(pipeline.model, "input_size", None) is not None:  # one latent size only
        pixels = f"{default.height}x{default.width}"
        return SizeChoices((pixels,), (), (frames,), pixels, None, frames, cfg.fps)
    if isinstance(pipeline.adapter, MMDiTAdapter):
        return _size_choices_v2(cfg, default, frames)
    named = {get_num_frames(name): name for name in DURATIONS}
    duration = named.get(default.num_frames, IMAGE if default.num_frames == 1 else frames)
    durations = (IMAGE, *([] if duration in (IMAGE, *DURATIONS) else [duration]), *DURATIONS)
    # a config that names a pixel size (the demo's 32x32) was trained there: offer it first, as the default
    resolution = cfg.resolution or f"{default.height}x{default.width}"
    resolutions = RESOLUTIONS if resolution in RESOLUTIONS else (resolution, *RESOLUTIONS)
    if cfg.resolution:
        aspect_ratio = cfg.aspect_ratio or DEFAULT_ASPECT_RATIO
    else:
        aspect_ratio = _closest_name(default.height, default.width)
    aspect_ratios = ASPECT_RATIO_NAMES if aspect_ratio in ASPECT_RATIO_NAMES else (aspect_ratio, *ASPECT_RATIO_NAMES)
    return SizeChoices(resolutions, aspect_ratios, durations, resolution, aspect_ratio, duration, cfg.fps)


def _size_choices_v2(cfg: InferenceConfig, default: VideoSize, frames: str) -> SizeChoices:
    """Open-Sora 2.0: its two resolutions at width:height ratios, 1 or 4k+1 frames."""
    duration = IMAGE if default.num_frames == 1 else frames
    durations = (IMAGE, *([] if duration in (IMAGE, *DURATIONS_V2) else [duration]), *DURATIONS_V2)
    resolution = cfg.resolution or f"{default.height}x{default.width}"
    resolutions = tuple(RESOLUTIONS_V2) if resolution in RESOLUTIONS_V2 else (resolution, *RESOLUTIONS_V2)
    aspect_ratio = cfg.aspect_ratio or DEFAULT_ASPECT_RATIO_V2
    ratios = ASPECT_RATIOS_V2 if aspect_ratio in ASPECT_RATIOS_V2 else (aspect_ratio, *ASPECT_RATIOS_V2)
    return SizeChoices(resolutions, ratios, durations, resolution, aspect_ratio, duration, cfg.fps)


def _closest_name(height: int, width: int) -> str:
    def ratio(name: str) -> float:
        h, w = name.split(":")
        return int(h) / int(w)

    return min(ASPECT_RATIO_NAMES, key=lambda name: abs(ratio(name) - height / width))


@dataclass(frozen=True)
class Scores:
    """The 1.2 prompt suffixes; None leaves one out of the prompt."""

    aes: float | None = None
    flow: float | None = None
    camera_motion: str | None = None


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    size: VideoSize
    seed: int
    sampling_steps: int | None = None  # None: the config's
    guidance_scale: float | None = None  # None: the config's
    scores: Scores = Scores()
    reference_path: str | None = None  # an image or video the first frames are conditioned on
    refine: bool = False  # rewrite the prompt with the OpenAI API first


@dataclass(frozen=True)
class Generated:
    path: Path  # .mp4, or .png for one frame
    prompt: str  # the text the model was given


def refine_available() -> bool:
    """Prompt refinement needs the ``openai`` package and a key; without both it is not offered."""
    return bool(os.environ.get("OPENAI_API_KEY")) and importlib.util.find_spec("openai") is not None


class InteractiveGenerator:
    """A built pipeline and a folder of results; calls run one at a time (the model is shared)."""

    def __init__(self, cfg: InferenceConfig, pipeline: VideoPipeline, out_dir: str | Path) -> None:
        if pipeline.vae is None:
            raise ConfigError("the interactive demo needs a config with a 'vae' entry (it shows videos, not latents)")
        self.cfg = cfg
        self.pipeline = pipeline
        self.out_dir = Path(out_dir)
        self.choices = size_choices(cfg, pipeline)
        self.sampling_steps = _scheduler_steps(pipeline.scheduler)
        self.guidance_scale = float(pipeline.scheduler.cfg_scale)
        self.save_fps = cfg.save_fps or max(1, cfg.fps // cfg.frame_interval)
        self._lock = threading.Lock()
        self._numbers = itertools.count(_next_free_number(self.out_dir))  # never overwrite an earlier result

    @classmethod
    def from_config(cls, cfg: InferenceConfig, out_dir: str | Path, device: torch.device | None = None):
        check_config(cfg)  # a bad size, key or scheduler setting fails before the weights load
        device = device or torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return cls(cfg, build_pipeline(cfg, device), out_dir)

    def prompt_text(self, request: GenerationRequest) -> str:
        """The text the model reads: the prompt (refined if asked), then the enabled score suffixes."""
        text = " ".join(request.prompt.split())
        if not text:
            raise ConfigError("enter a prompt")
        if request.refine:
            from opensora.inference.refine import refine_prompts

            text = refine_prompts([text])[0]
        if isinstance(self.pipeline.adapter, MMDiTAdapter):  # 2.0 appends its own suffixes (fps, motion score)
            return text
        scores = request.scores
        check_camera_motion(scores.camera_motion)
        return append_scores(text, scores.aes, scores.flow, scores.camera_motion)

    def generate(self, request: GenerationRequest, progress: bool = True) -> Generated:
        """Sample ``request`` and write it to the output folder (PNG for one frame, MP4 otherwise)."""
        self._check(request)
        text = self.prompt_text(request)
        prompt = self.pipeline.adapter.reference_request(text, request.reference_path)
        with self._lock:
            pipeline = self._pipeline_with_steps(request.sampling_steps)
            video = pipeline.generate([prompt], request.size, [request.seed],
                                      guidance_scale=request.guidance_scale, progress=progress)[0]  # fmt: skip
            stem = self.out_dir / f"sample_{next(self._numbers):04d}"
        return Generated(save_sample(video, stem, self.save_fps), text)

    def _check(self, request: GenerationRequest) -> None:
        steps, scale = request.sampling_steps, request.guidance_scale
        if steps is not None and not 1 <= steps <= MAX_SAMPLING_STEPS:
            raise ConfigError(f"sampling steps must be between 1 and {MAX_SAMPLING_STEPS}, got {steps}")
        if scale is not None and not (math.isfinite(scale) and scale >= 0):
            raise ConfigError(f"the guidance (CFG) scale must be a number >= 0, got {scale}")
        if not 0 <= request.seed < 2**63:
            raise ConfigError(f"the seed must be between 0 and 2**63 - 1, got {request.seed}")
        if request.reference_path and not Path(request.reference_path).is_file():
            raise ConfigError(f"reference image '{request.reference_path}' does not exist")

    def _pipeline_with_steps(self, steps: int | None) -> VideoPipeline:
        """The pipeline, with a scheduler of ``steps`` steps when they differ from the config's."""
        if steps is None or steps == self.sampling_steps:
            return self.pipeline
        scheduler_cfg = {key: value for key, value in self.cfg.scheduler.items() if key != "timestep_respacing"}
        scheduler = build_module(scheduler_cfg, SCHEDULERS, num_sampling_steps=steps)
        return dataclasses.replace(self.pipeline, scheduler=scheduler)  # shares the model, encoder and VAE


def _next_free_number(out_dir: Path) -> int:
    numbers = [int(match[1]) for path in out_dir.glob("sample_*") if (match := _SAMPLE_NAME.match(path.name))]
    return max(numbers, default=-1) + 1


def _scheduler_steps(scheduler: object) -> int:
    # rflow and dpm-solver keep the count; a respaced IDDPM's timesteps are its sampling steps
    return int(getattr(scheduler, "num_sampling_steps", None) or scheduler.num_timesteps)
