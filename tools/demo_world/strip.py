"""A few frames of a video side by side as one PNG (the README's picture).

python tools/demo_world/strip.py samples/sample_0000.mp4 docs/demo_strip.png --frames 6 --scale 2
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from opensora.datasets.video_io import probe, read_clip


def make_strip(frames: np.ndarray, count: int, scale: int, gap: int = 2) -> np.ndarray:
    """``count`` evenly spaced frames of uint8 (T, H, W, 3), each enlarged ``scale`` times, in a row."""
    picks = np.linspace(0, len(frames) - 1, count).round().astype(int)
    tiles = [frames[i].repeat(scale, axis=0).repeat(scale, axis=1) for i in picks]
    height, width = tiles[0].shape[:2]
    strip = np.full((height, count * width + (count - 1) * gap, 3), 255, dtype=np.uint8)
    for k, tile in enumerate(tiles):
        strip[:, k * (width + gap) : k * (width + gap) + width] = tile
    return strip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="+", help="one or more videos (one row each), then the output PNG")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--scale", type=int, default=2)
    args = parser.parse_args(argv)
    *videos, output = args.videos
    rows = [make_strip(read_clip(v, probe(v).num_frames).frames.numpy(), args.frames, args.scale) for v in videos]
    width = max(row.shape[1] for row in rows)
    rows = [np.pad(row, ((0, 2), (0, width - row.shape[1]), (0, 0)), constant_values=255) for row in rows]
    Image.fromarray(np.concatenate(rows)).save(output, optimize=True)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
