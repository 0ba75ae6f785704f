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


def save_sample(video: torch.Tensor, stem: Path, fps: float) -> Path:
    """Write ``video`` [3, T, H, W] as ``stem.png`` (T == 1) or ``stem.mp4``; returns the path."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    frames = to_uint8_frames(video)
    if frames.shape[0] == 1:
        path = stem.with_name(stem.name + ".png")
        Image.fromarray(frames[0]).save(path)
        return path
    path = stem.with_name(stem.name + ".mp4")
    write_mp4(path, frames, fps)
    return path


def write_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    """uint8 (T, H, W, 3) frames as H.264 MP4 (yuv420p, crf 18), written to a temporary name first."""
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:  # yuv420p stores chroma at half size
        frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    partial = path.with_name(f".{path.name}.partial")
    # x264 threads (frame and lookahead) make the bytes vary from run to run: one of each is reproducible
    with av.open(str(partial), "w", format="mp4") as container:
        rate = Fraction(fps).limit_denominator(1001)
        options = {"crf": "18", "x264-params": "threads=1:lookahead-threads=1"}
        stream = container.add_stream("libx264", rate=rate, options=options)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for array in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24").reformat(format="yuv420p")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    partial.replace(path)  # a killed run never leaves a truncated file that --prompt-as-path would skip
