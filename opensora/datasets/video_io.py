"""Reading clips from videos (PyAV) and images (Pillow), decoding only the frames a clip needs.

A clip of ``num_frames`` frames taken every ``frame_interval`` frames spans the source frames
``[start, start + (num_frames - 1) * frame_interval]``. :func:`read_clip` seeks to the keyframe at
or before ``start``, decodes forward, and stops at the window's last frame, so a short clip from a
long video costs about one GOP plus the window, not the whole file. After a seek a frame's index
is its timestamp times the frame rate (exact for constant-rate video); where a format cannot seek,
seeks coarsely (MPEG-TS) or has no timestamps (raw H.264), frames are decoded from the first one
and counted instead. Frame counts come from the container, else from counting packets.

Frames are returned as displayed: a stored frame carrying a rotation (the container's display
matrix, which PyAV exposes per frame as ``VideoFrame.rotation``, degrees counter-clockwise) is
rotated accordingly; images honour their EXIF orientation. Flips in a display matrix are ignored.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter
from PIL import Image, ImageOps

from opensora.datasets.metadata import is_image
from opensora.errors import OpenSoraError


class VideoReadError(OpenSoraError):
    """A video or image that is missing, unreadable, corrupt, or too short for the request."""


@dataclass(frozen=True)
class VideoInfo:
    """What a file holds; ``height``/``width`` as displayed (after rotation). Images: one frame, fps 0."""

    num_frames: int
    height: int
    width: int
    fps: float
    rotation: int
    is_image: bool


@dataclass
class VideoClip:
    """``frames``: uint8 (T, H, W, 3) as displayed; ``fps = source_fps / frame_interval``.

    ``start`` is the source index of the first frame; ``decoded_frames`` counts the frames the
    decoder produced to get them (for checking that reads stay local).
    """

    frames: torch.Tensor
    fps: float
    source_fps: float
    start: int
    decoded_frames: int = 0


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Frame count, displayed size, frame rate and rotation of a video or image.

    Counts come from the container when it records them, else from counting packets. The first
    frame is decoded, which both checks the file and gives the rotation.
    """
    path = _existing(path)
    if is_image(path):
        height, width = _read_image(path).shape[:2]
        return VideoInfo(num_frames=1, height=height, width=width, fps=0.0, rotation=0, is_image=True)
    with _open_video(path) as (container, stream):
        num_frames = _frame_count(stream, path)
        fps = _frame_rate(stream, path)
        frame = next(container.decode(stream), None)
        if frame is None:
            raise VideoReadError(f"'{path}': no decodable video frame")
        rotation = _rotation(frame, stream)
    height, width = (frame.height, frame.width) if rotation % 180 == 0 else (frame.width, frame.height)
    return VideoInfo(num_frames, height, width, float(fps), rotation, is_image=False)


def read_clip(
    path: str | os.PathLike[str],
    num_frames: int,
    frame_interval: int = 1,
    start: int | None = None,
    rng: np.random.Generator | None = None,
) -> VideoClip:
    """``num_frames`` frames, ``frame_interval`` apart, from ``start`` (random with ``rng``, else 0).

    An image gives a one-frame clip whatever ``num_frames`` is. A file too short for the window,
    or one that cannot be read, raises a one-line VideoReadError naming the path.
    """
    if num_frames < 1 or frame_interval < 1:
        raise ValueError(f"num_frames and frame_interval must be >= 1, got {num_frames} and {frame_interval}")
    if start is not None and start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    path = _existing(path)
    if is_image(path):
        frames = torch.from_numpy(_read_image(path)[None])  # (1, H, W, 3)
        return VideoClip(frames, fps=0.0, source_fps=0.0, start=0, decoded_frames=1)
    span = (num_frames - 1) * frame_interval + 1
    with _open_video(path) as (container, stream):
        total = _frame_count(stream, path)
        fps = _frame_rate(stream, path)
        if start is None:
            start = 0 if rng is None or total < span else int(rng.integers(0, total - span + 1))
        if start + span > total:
            raise VideoReadError(
                f"'{path}': has {total} frames, too short for {num_frames} frames every {frame_interval} from {start}"
            )
        indices = start + frame_interval * np.arange(num_frames)
        frames, decoded = _decode_window(container, stream, indices, fps, path)
    clip = torch.from_numpy(np.stack(frames))  # (T, H, W, 3)
    return VideoClip(clip, fps=float(fps / frame_interval), source_fps=float(fps), start=start, decoded_frames=decoded)


def _decode_window(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    indices: np.ndarray,
    fps: Fraction,
    path: Path,
) -> tuple[list[np.ndarray], int]:
    """RGB arrays of the frames at ``indices`` (ascending) and how many frames were decoded."""
    if indices[0] == 0:
        frames, decoded = _collect(container, stream, indices, fps, by_timestamp=False)
    else:
        # half a frame early, so rounding in the timestamps cannot put the target frame before it
        target = (Fraction(int(indices[0])) - Fraction(1, 2)) / fps / stream.time_base
        frames, decoded = None, 0
        if _seek(container, stream, (stream.start_time or 0) + math.floor(target)):
            frames, decoded = _collect(container, stream, indices, fps, by_timestamp=True)
        if frames is None or len(frames) < len(indices):
            # no seeking, a seek past the window, no timestamps or a short read: from the top, afresh
            with av.open(str(path)) as fresh:
                frames, more = _collect(fresh, fresh.streams[stream.index], indices, fps, by_timestamp=False)
            decoded += more
    if len(frames) < len(indices):
        raise VideoReadError(f"'{path}': decoded only {len(frames)} of {len(indices)} requested frames (truncated?)")
    return frames, decoded


def _seek(container: av.container.InputContainer, stream: av.video.stream.VideoStream, pts: int) -> bool:
    """Seek to the keyframe at or before ``pts``; False where the format cannot (e.g. raw H.264)."""
    try:
        container.seek(pts, stream=stream, backward=True, any_frame=False)
    except av.FFmpegError:  # a failed seek may leave the demuxer anywhere: the caller starts afresh
        return False
    return True


def _collect(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    indices: np.ndarray,
    fps: Fraction,
    by_timestamp: bool,
) -> tuple[list[np.ndarray] | None, int]:
    """Decode from the current position, keeping the frames at ``indices``; also the count decoded.

    Without ``by_timestamp`` the position must be the first frame, and frames are numbered as they
    come. With it (after a seek) a frame's number comes from its timestamp, and the result is None
    when the first frame is already past ``indices[0]`` or has no timestamp.
    """
    first_pts, frames_per_tick = stream.start_time or 0, float(stream.time_base * fps)
    kept: list[np.ndarray] = []
    decoded = 0
    # one converter for the clip: a frame's own to_ndarray(format=...) sets up the scaler anew each time
    reformatter = VideoReformatter()
    for position, frame in enumerate(container.decode(stream)):
        decoded += 1
        index = position
        if by_timestamp:
            if frame.pts is None:
                return None, decoded
            index = round((frame.pts - first_pts) * frames_per_tick)
            if decoded == 1 and index > indices[0]:
                return None, decoded
        while len(kept) < len(indices) and indices[len(kept)] <= index:
            # a timestamp gap (variable frame rate) repeats the frame shown during the gap
            kept.append(_to_rgb(frame, stream, reformatter))
        if len(kept) == len(indices):
            break
    return kept, decoded


def _to_rgb(frame: av.VideoFrame, stream: av.video.stream.VideoStream, reformatter: VideoReformatter) -> np.ndarray:
    """(H, W, 3) uint8 as displayed."""
    rgb = reformatter.reformat(frame, format="rgb24").to_ndarray()
    quarter_turns = round(_rotation(frame, stream) / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k=quarter_turns)) if quarter_turns else rgb


def _rotation(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> int:
    """Display rotation in degrees counter-clockwise, a multiple of 90."""
    degrees = getattr(frame, "rotation", None)  # PyAV >= 13 reads the display matrix
    if degrees is None:
        degrees = -float(stream.metadata.get("rotate", 0))  # older FFmpeg: a clockwise tag
    return int(round(degrees / 90) * 90) % 360


def _frame_count(stream: av.video.stream.VideoStream, path: Path) -> int:
    count = stream.frames
    if count <= 0:  # Matroska/WebM and some others do not record it: count packets (no decoding)
        # in a second container, so this one stays at the start even in formats that cannot seek
        with av.open(str(path)) as counting:
            count = sum(1 for packet in counting.demux(counting.streams[stream.index]) if packet.size > 0)
    if count <= 0:
        raise VideoReadError(f"'{path}': video stream has no frames")
    return count


def _frame_rate(stream: av.video.stream.VideoStream, path: Path) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise VideoReadError(f"'{path}': video stream has no frame rate")
    return Fraction(rate)


@contextmanager
def _open_video(path: Path) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """The container and its first video stream; FFmpeg errors inside become VideoReadErrors."""
    with _av_errors(path):
        container = av.open(str(path))
        try:
            if not container.streams.video:
                raise VideoReadError(f"'{path}': no video stream")
            yield container, container.streams.video[0]
        finally:
            container.close()


@contextmanager
def _av_errors(path: Path) -> Iterator[None]:
    """Turn FFmpeg's errors into one-line VideoReadErrors naming ``path``."""
    try:
        yield
    except av.FFmpegError as exc:
        reason = exc.strerror or str(exc)
        raise VideoReadError(f"'{path}': cannot decode: {' '.join(reason.split())}") from exc


def _read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8, EXIF orientation applied."""
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            return np.array(image.convert("RGB"))  # a writable copy, so torch.from_numpy can share it
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError is an OSError
        raise VideoReadError(f"'{path}': cannot read image: {' '.join(str(exc).split())}") from exc


def _existing(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"'{path}': no such file")
    return path
