"""A tiny real training set written by the tests (videos, images, captions, extracted features) and configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from opensora.config import load_config
from opensora.training.config import TrainConfig
from tests.datasets.media import write_image, write_video
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
TINY_CONFIG = ROOT / "configs/opensora-v1-2/train/tiny.py"
WORDS = ["red", "blue", "green", "ball", "cat", "sea", "sky", "road", "tree", "snow"]


def write_dataset(root: Path, videos: int = 8, images: int = 2, frames: int = 20, size: int = 192) -> Path:
    """``videos`` clips of ``frames`` frames and ``images`` stills, all ``size`` x ``size``; returns the CSV.

    144p (192 x 192 for square frames) is the smallest bucket resolution, so the data fits it.
    Each sample is a coarse random pattern drifting sideways, captioned with a few words.
    """
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(videos):
        pattern = rng.integers(0, 256, (size // 16, size // 16 + frames, 3), np.uint8)
        clip = np.stack([pattern[:, t : t + size // 16] for t in range(frames)])  # (T, h, w, 3), moving
        clip = clip.repeat(16, axis=1).repeat(16, axis=2)
        write_video(root / f"video{i}.mp4", clip, fps=24)
        rows.append((f"video{i}.mp4", " ".join(rng.choice(WORDS, 3)), frames, size, size))
    for i in range(images):
        still = rng.integers(0, 256, (size // 16, size // 16, 3), np.uint8).repeat(16, axis=0).repeat(16, axis=1)
        write_image(root / f"image{i}.png", still)
        rows.append((f"image{i}.png", " ".join(rng.choice(WORDS, 3)), 1, size, size))
    path = root / "meta.csv"
    pd.DataFrame(rows, columns=["path", "text", "num_frames", "height", "width"]).to_csv(path, index=False)
    return path


def write_clips(root: Path, videos: int = 4, images: int = 2, frames: int = 12, size: int = 32) -> Path:
    """Smooth clips a tiny VAE learns quickly: per-sample colours, a ramp and a square moving 2 pixels a frame.

    ``videos`` clips of ``frames`` frames at 24 fps and ``images`` stills, ``size`` x ``size``; returns the CSV.
    """
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ramp = np.linspace(0.0, 1.0, size)[None, :, None]  # (1, W, 1)
    rows = []
    for i in range(videos + images):
        colour = rng.uniform(0.2, 0.8, 3)
        count = frames if i < videos else 1
        clip = np.empty((count, size, size, 3))
        for t in range(count):
            clip[t] = 0.6 * colour + 0.4 * ramp * colour[::-1]
            x = (2 * t + 4 * i) % (size - size // 4)
            clip[t, size // 4 : size // 2, x : x + size // 4] = 1.0 - colour
        clip = (clip * 255).round().astype(np.uint8)  # (T, H, W, 3)
        if i < videos:
            write_video(root / f"clip{i}.mp4", clip, fps=24)
            rows.append((f"clip{i}.mp4", "a clip", count, size, size))
        else:
            write_image(root / f"still{i}.png", clip[0])
            rows.append((f"still{i}.png", "a still", 1, size, size))
    path = root / "meta.csv"
    pd.DataFrame(rows, columns=["path", "text", "num_frames", "height", "width"]).to_csv(path, index=False)
    return path


def extract_features(csv: Path, output: Path, num_frames: int = 5, size: int = 64) -> Path:
    """Encode every sample once with the tiny config's VAE and text encoder (the extraction tool's path)."""
    tool = load_script(ROOT / "tools/datasets/extract_features.py", "extract_features")
    dataset = [
        "dataset.type=VideoTextDataset",
        f"dataset.num_frames={num_frames}",
        f"dataset.image_size=({size},{size})",
    ]
    argv = [str(TINY_CONFIG), "--data-path", str(csv), "--output", str(output), "--batch-size", "2",
            "--cfg-options", *dataset, "bucket_config=None"]  # fmt: skip
    tool.main(argv)
    return output


# trains from the stored latents, one process, fixed-size batches of 2
FEATURE_OPTIONS = ("use_features=True", "bucket_config=None", "batch_size=2", "plugin='none'", "num_workers=0")


def tiny_config(outputs: Path, data: Path, *options: str) -> TrainConfig:
    """configs/opensora-v1-2/train/tiny.py with ``--data-path data --outputs outputs --cfg-options *options``."""
    flags = {"dataset.data_path": str(data), "outputs": str(outputs)}
    return load_config(TINY_CONFIG, TrainConfig, flags, list(options))
