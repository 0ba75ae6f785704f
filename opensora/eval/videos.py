"""Pairing real and generated videos by file name, and loading both as comparable frame stacks.

Frames are decoded by :mod:`opensora.datasets.video_io` and resized by
:mod:`opensora.datasets.transforms`; this module only chooses which frames and what size.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from opensora.datasets.transforms import center_crop_or_pad, resize_short_side
from opensora.datasets.video_io import probe, read_clip
from opensora.errors import OpenSoraError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif")


@dataclass(frozen=True)
class VideoPair:
    """A real video and the generated (e.g. VAE-reconstructed) video with the same file stem."""

    name: str
    real: Path
    generated: Path


@dataclass(frozen=True)
class Pairing:
    """The matched pairs (sorted by name) and the stems found in only one folder."""

    pairs: list[VideoPair]
    only_real: list[str]
    only_generated: list[str]

    def unmatched_line(self) -> str | None:
        """One line naming the unmatched files, or None when every file has its partner."""
        if not self.only_real and not self.only_generated:
            return None
        sides = {"real": self.only_real, "generated": self.only_generated}
        parts = [f"{len(names)} only in {side} ({_some(names)})" for side, names in sides.items() if names]
        return "unmatched videos, skipped: " + "; ".join(parts)


@dataclass(frozen=True)
class FrameOptions:
    """Which frames to compare and at what size; None leaves that step out.

    ``sample_fps`` keeps every k-th frame, k = round(source fps / sample_fps) (at least 1: frames are
    never invented). ``num_frames`` caps the count after that, from the first frame. ``resolution``
    scales the short side to that many pixels; ``crop_size`` then takes the centre square.
    """

    num_frames: int | None = None
    sample_fps: float | None = None
    resolution: int | None = None
    crop_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("num_frames", "sample_fps", "resolution", "crop_size"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise OpenSoraError(f"--{name} must be positive, got {value}")


def pair_videos(real_dir: str | os.PathLike[str], generated_dir: str | os.PathLike[str]) -> Pairing:
    """Videos of the two folders matched by file stem (``a.mp4`` pairs with ``a.avi``); error if none match."""
    real, generated = _videos_by_stem(real_dir, "real"), _videos_by_stem(generated_dir, "generated")
    common = sorted(real.keys() & generated.keys())
    if not common:
        counts = f"{len(real)} and {len(generated)} videos"
        raise OpenSoraError(f"no videos with the same name in '{real_dir}' and '{generated_dir}' ({counts})")
    pairs = [VideoPair(stem, real[stem], generated[stem]) for stem in common]
    return Pairing(pairs, sorted(real.keys() - generated.keys()), sorted(generated.keys() - real.keys()))


def load_pair(pair: VideoPair, options: FrameOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """Both videos as float (T, 3, H, W) in [0, 1], T the frames both have (up to ``num_frames``)."""
    plans = [_frame_plan(path, options) for path in (pair.real, pair.generated)]
    count = min(available for _, available in plans)
    if options.num_frames is not None:
        count = min(count, options.num_frames)
    paths = (pair.real, pair.generated)
    real, generated = (_load(path, count, interval, options) for path, (interval, _) in zip(paths, plans))
    if real.shape != generated.shape:
        raise OpenSoraError(
            f"'{pair.name}': real frames are {tuple(real.shape[-2:])}, generated {tuple(generated.shape[-2:])}; "
            "give --resolution and/or --crop_size to compare them"
        )
    return real, generated


def _frame_plan(path: Path, options: FrameOptions) -> tuple[int, int]:
    """(frame interval, how many frames that interval yields) for one video."""
    info = probe(path)
    interval = 1
    if options.sample_fps is not None and info.fps > 0:
        interval = max(1, math.floor(info.fps / options.sample_fps + 0.5))  # nearest, halves up
    return interval, (info.num_frames - 1) // interval + 1


def _load(path: Path, count: int, interval: int, options: FrameOptions) -> torch.Tensor:
    frames = read_clip(path, count, frame_interval=interval, start=0).frames  # (T, H, W, 3) uint8
    video = frames.permute(0, 3, 1, 2)  # (T, 3, H, W)
    if options.resolution is not None:
        video = resize_short_side(video, options.resolution)
    if options.crop_size is not None:
        if options.crop_size > min(video.shape[-2:]):
            size = tuple(video.shape[-2:])
            raise OpenSoraError(f"'{path}': --crop_size {options.crop_size} is larger than the frames, {size}")
        video = center_crop_or_pad(video, options.crop_size, options.crop_size)
    return (video.float() / 255.0).clamp_(0.0, 1.0)  # antialiased resizing can overshoot slightly


def _videos_by_stem(folder: str | os.PathLike[str], side: str) -> dict[str, Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise OpenSoraError(f"{side} video folder '{folder}' does not exist or is not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.suffix.lower() not in VIDEO_EXTENSIONS:
            continue
        if path.stem in found:
            other = found[path.stem].name
            raise OpenSoraError(f"{side} folder '{folder}' has two videos named '{path.stem}': {other}, {path.name}")
        found[path.stem] = path
    return found


def _some(names: list[str], shown: int = 5) -> str:
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f", and {more} more" if more > 0 else "")
