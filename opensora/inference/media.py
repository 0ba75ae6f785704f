"""Reading references and writing samples: PNG for one frame, H.264 MP4 (PyAV) for videos."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from opensora.datasets.transforms import video_transform
from opensora.datasets.video_io import probe, read_clip


def load_reference(path: str | Path, height: int, width: int, max_frames: int | None = None) -> torch.Tensor:
    """An image or video as float [3, T, height, width] in [-1, 1], resized to cover and centre-cropped.

    A missing or undecodable file raises a one-line VideoReadError naming it.
    """
    info = probe(path)
    num_frames = info.num_frames if max_frames is None else max(1, min(info.num_frames, max_frames))
    clip = read_clip(path, num_frames=num_frames)
    return video_transform(clip.frames, (height, width), "resize_crop")


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """[3, T, H, W] in [-1, 1] -> uint8 (T, H, W, 3), rounded to the nearest level."""
    video = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return video.permute(1, 2, 3, 0).cpu().numpy()


def save_sample(video: torch.Tensor, stem: Path, fps: float, reproducible: bool = True) -> Path:
    """Write ``video`` [3, T, H, W] as ``stem.png`` (T == 1) or ``stem.mp4``; returns the path.

    ``reproducible``: the same frames always give the same MP4 bytes (see :func:`write_mp4`).
    """
    stem.parent.mkdir(parents=True, exist_ok=True)
    frames = to_uint8_frames(video)
    if frames.shape[0] == 1:
        path = stem.with_name(stem.name + ".png")
        Image.fromarray(frames[0]).save(path)
        return path
    path = stem.with_name(stem.name + ".mp4")
    write_mp4(path, frames, fps, reproducible)
    return path


def write_mp4(path: Path, frames: np.ndarray, fps: float, reproducible: bool = True) -> None:
    """uint8 (T, H, W, 3) frames as H.264 MP4 (yuv420p, crf 18), written to a temporary name first.

    x264's threads and, now and then, its SIMD code make the bytes of a file vary between runs on
    the same frames; ``reproducible`` uses one thread and plain C (about 3x slower to encode).
    """
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:  # yuv420p stores chroma at half size
        frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    partial = path.with_name(f".{path.name}.partial")
    with av.open(str(partial), "w", format="mp4") as container:
        rate = Fraction(fps).limit_denominator(1001)
        options = {"crf": "18", "x264-params": "threads=1:lookahead-threads=1:asm=0"} if reproducible else {"crf": "18"}
        stream = container.add_stream("libx264", rate=rate, options=options)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for array in frames:
            frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(array), format="yuv420p")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    partial.replace(path)  # a killed run never leaves a truncated file that --prompt-as-path would skip


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB -> the (H * 3 / 2, W) planar layout of yuv420p (BT.601, limited range).

    Converted here rather than by swscale, whose threaded conversion made the bytes of a file vary.
    """
    x = rgb.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    H, W = y.shape

    def half(plane: np.ndarray) -> np.ndarray:  # average each 2 x 2 block
        return plane.reshape(H // 2, 2, W // 2, 2).mean(axis=(1, 3))

    planes = [y, half(u), half(v)]
    return np.concatenate([np.clip(np.round(p), 0, 255).astype(np.uint8).reshape(-1) for p in planes]).reshape(-1, W)
