"""Small real media files for tests, written with PyAV and Pillow into a test's tmp folder.

:func:`index_frames` draws each frame's index as a row of black/white bars (one bar per bit), which
survives lossy coding, so a test can tell which source frames a reader returned with
:func:`read_index`.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
from PIL import Image

META_COLUMNS = ["path", "text", "num_frames", "height", "width"]


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: float | Fraction = 24,
    codec: str = "libx264",
    rotation: int | None = None,
    gop: int | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode uint8 (T, H, W, 3) ``frames`` (H and W even) to ``path``; the container follows the suffix.

    ``rotation`` (degrees counter-clockwise) is stored as the stream's display matrix; ``gop`` is
    the keyframe interval.
    """
    path = Path(path)
    rate = Fraction(fps).limit_denominator(100_000)
    high_quality = {"crf": "12"} if codec == "libx264" else {"qscale": "2"}
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=rate, options=high_quality)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")))
        container.mux(stream.encode(None))
    return path


def write_image(path: str | Path, array: np.ndarray) -> Path:
    """Save a uint8 (H, W, 3) array; the format follows the suffix (lossless quality where lossy)."""
    path = Path(path)
    Image.fromarray(array).save(path, quality=100)
    return path


def write_sample(path: Path, pixels: np.ndarray, caption: str) -> tuple[str, str, int, int, int]:
    """Write uint8 ``pixels`` to ``path``, (T, H, W, 3) as a 24 fps video and (H, W, 3) as an image;
    returns the sample's metadata row (file name, caption, frames, height, width)."""
    if pixels.ndim == 4:
        write_video(path, pixels, fps=24)
    else:
        write_image(path, pixels)
    frames = pixels.shape[0] if pixels.ndim == 4 else 1
    height, width = pixels.shape[-3:-1]
    return Path(path).name, caption, frames, height, width


def metadata_table(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=META_COLUMNS)


def index_frames(num_frames: int, height: int = 32, width: int = 64, bits: int = 9) -> np.ndarray:
    """uint8 (T, H, W, 3): frame t shows t in binary as ``bits`` vertical bars, lowest bit on the left."""
    if num_frames > 2**bits or width // bits < 4:
        raise ValueError(f"{num_frames} frames do not fit {bits} bars of at least 4 pixels in width {width}")
    bar = width // bits
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        for bit in range(bits):
            if t >> bit & 1:
                frames[t, :, bit * bar : (bit + 1) * bar] = 255
    return frames


def read_index(frame: np.ndarray, bits: int = 9) -> int:
    """The index drawn by :func:`index_frames` in a decoded (H, W, 3) frame."""
    bar = frame.shape[1] // bits
    value = 0
    for bit in range(bits):
        # the middle of each bar: its edges blur under lossy coding
        middle = frame[:, bit * bar + 1 : (bit + 1) * bar - 1].astype(np.float32).mean()
        value |= int(middle > 127) << bit
    return value


def gray_frames(levels: list[int], height: int = 32, width: int = 48) -> np.ndarray:
    """uint8 (T, H, W, 3) frames of uniform gray, one level per frame."""
    return np.broadcast_to(np.asarray(levels, np.uint8)[:, None, None, None], (len(levels), height, width, 3)).copy()
