"""Turning decoded frames into model input: crop, resize and scale to [-1, 1].

Resizing uses ``torch.nn.functional.interpolate`` (bilinear with antialiasing, so downscaling does
not alias); torchvision is not a dependency.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from opensora.errors import ConfigError

MODES = ("resize_crop", "center", "random")


def video_transform(
    frames: torch.Tensor, size: tuple[int, int], mode: str = "resize_crop", rng: np.random.Generator | None = None
) -> torch.Tensor:
    """uint8 (T, H, W, 3) frames -> float (3, T, size_h, size_w) in [-1, 1].

    ``resize_crop``: scale so the frames cover ``size``, keeping the aspect ratio, and take the
    centre. ``random``: the same scale, a crop at a random place (from ``rng``). ``center``: scale
    so the short sides match (as the release's centre crop did), then take the centre, padding
    with black where the frames fall short of ``size``.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown video transform mode '{mode}' (known: {', '.join(MODES)})")
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames of shape (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    height, width = (int(v) for v in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {tuple(size)}")
    video = frames.permute(0, 3, 1, 2)  # (T, 3, H, W)
    if mode == "center":
        video = center_crop_or_pad(resize_short_side(video, min(height, width)), height, width)
    else:
        video = resize_crop(video, height, width, rng if mode == "random" else None)
    video = (video / 127.5 - 1.0).clamp_(-1.0, 1.0)
    return video.permute(1, 0, 2, 3).contiguous()  # (3, T, h, w)


def resize_crop(video: torch.Tensor, height: int, width: int, rng: np.random.Generator | None = None) -> torch.Tensor:
    """Crop (T, C, H, W) to the aspect of (height, width) and resize to it; float in the input's range.

    Equivalent to resizing the short side to cover and then cropping, but cropping first means
    only the kept pixels are resized. The crop is centred, or placed by ``rng`` when given.
    """
    src_h, src_w = video.shape[-2:]
    scale = max(height / src_h, width / src_w)
    crop_h = min(src_h, max(1, round(height / scale)))
    crop_w = min(src_w, max(1, round(width / scale)))
    if rng is None:
        top, left = (src_h - crop_h) // 2, (src_w - crop_w) // 2
    else:
        top, left = int(rng.integers(0, src_h - crop_h + 1)), int(rng.integers(0, src_w - crop_w + 1))
    video = video[..., top : top + crop_h, left : left + crop_w].float()
    if (crop_h, crop_w) == (height, width):
        return video
    return F.interpolate(video, size=(height, width), mode="bilinear", align_corners=False, antialias=True)


def resize_short_side(video: torch.Tensor, short: int) -> torch.Tensor:
    """Scale (T, C, H, W) so its shorter side is ``short`` pixels, keeping the aspect ratio; float."""
    src_h, src_w = video.shape[-2:]
    scale = short / min(src_h, src_w)
    size = (max(1, round(src_h * scale)), max(1, round(src_w * scale)))
    if size == (src_h, src_w):
        return video.float()
    return F.interpolate(video.float(), size=size, mode="bilinear", align_corners=False, antialias=True)


def center_crop_or_pad(video: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The centre (height, width) of (..., H, W), padded with zeros on sides that are too small."""
    src_h, src_w = video.shape[-2:]
    top, left = (src_h - height) // 2, (src_w - width) // 2
    # negative offsets mean padding: F.pad takes (left, right, top, bottom), negative values crop
    pad = (-left, width - src_w + left, -top, height - src_h + top)
    return F.pad(video, pad, value=0)
