"""Video-text datasets: a metadata table in, transformed clips with their captions out.

:class:`VideoTextDataset` gives every sample one clip length and size; :class:`VariableVideoTextDataset`
takes ``(sample_index, BucketId)`` pairs from :class:`~opensora.datasets.sampler.BucketBatchSampler`
and reads the bucket's frame count and size. Randomness (the temporal crop, a random spatial crop)
comes from a generator seeded by (seed, epoch, sample index), so any worker gives the same item.

Open-Sora 2.0 trained on captions that end in the clip's frame rate and motion score
(``caption_fps``, ``caption_motion_score``): ``"a cat on a sofa 24 FPS, 3 motion score."``
(:func:`append_caption_scores`).

A file that cannot be read is logged once, counted, and replaced by another sample chosen
deterministically (for buckets: one that fits the same bucket), so batches stay full. Workers
are separate processes, so each item reports ``num_skipped`` for the trainer to sum.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from opensora.datasets.aspect import BUCKET_RESOLUTIONS, get_num_frames
from opensora.datasets.bucket import MIN_PIXEL_FRACTION, BucketId
from opensora.datasets.metadata import read_metadata
from opensora.datasets.sampler import dataset_fingerprint
from opensora.datasets.transforms import video_transform
from opensora.datasets.video_io import VideoReadError, read_clip
from opensora.errors import ConfigError, OpenSoraError
from opensora.registry import DATASETS

logger = logging.getLogger(__name__)

IMAGE_FPS = 120  # the frame rate the release conditions images on
MOTION_SCORE_COLUMN = "score_vmafmotion"  # the release's metadata column (VMAF's motion feature)


def append_caption_scores(text: str, fps: float | None, motion_score: float | None) -> str:
    """The 2.0 training caption: ``text`` + ``" {fps} FPS, {m} motion score."``, either part optional.

    The frame rate is left out when unknown or 0 (images); the motion score when missing or NaN,
    and is rounded half up to an integer, as the release's dataset does.
    """
    parts = []
    if fps and math.isfinite(fps):
        parts.append(f"{fps:g} FPS")
    if motion_score is not None and math.isfinite(motion_score):
        parts.append(f"{int(motion_score + 0.5)} motion score")
    return f"{text} {', '.join(parts)}." if parts else text


class _ClipDataset(Dataset):
    """Metadata, reading, seeding and bad-file replacement shared by both datasets."""

    repeat_images = False  # whether an image fills a clip of several frames (else it is a bad sample)

    def __init__(self, data_path: str | os.PathLike[str], frame_interval: int, transform_name: str, seed: int,
                 replace_bad: bool, caption_fps: bool = False, caption_motion_score: bool = False) -> None:  # fmt: skip
        if frame_interval < 1:
            raise ConfigError(f"frame_interval must be >= 1, got {frame_interval}")
        self.data_path, self.frame_interval, self.transform_name = data_path, frame_interval, transform_name
        self.seed, self.replace_bad, self.epoch = seed, replace_bad, 0
        self.metadata = read_metadata(data_path)
        self._paths = self.metadata["path"].tolist()
        self._texts = self.metadata["text"].fillna("").astype(str).tolist() if "text" in self.metadata else None
        self.caption_fps = caption_fps
        self._motion = self._column(MOTION_SCORE_COLUMN) if caption_motion_score else None
        if caption_motion_score and self._motion is None:
            raise ConfigError(f"caption_motion_score needs a '{MOTION_SCORE_COLUMN}' column in {data_path}")
        self.num_skipped = 0  # in this process; items carry their own count for the trainer
        self._bad: set[tuple[str, int]] = set()  # (path, frames): too short for 51 frames may still give 17
        self._logged: set[str] = set()

    def __len__(self) -> int:
        return len(self._paths)

    @property
    def fingerprint(self) -> str:
        """sha256 of the metadata's paths and sizes, for a sampler to detect a changed dataset on resume."""
        return dataset_fingerprint(self.metadata)

    def set_epoch(self, epoch: int) -> None:
        """Reseed the random crops for ``epoch`` (workers pick this up when the DataLoader next iterates)."""
        self.epoch = epoch

    def _rng(self, index: int, *stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index, *stream])

    def _read(self, index: int, num_frames: int, size: tuple[int, int]) -> dict[str, Any]:
        path = self._paths[index]
        rng = self._rng(index)
        clip = read_clip(path, num_frames, self.frame_interval, rng=rng)
        frames = clip.frames  # (T, H, W, 3) uint8
        if frames.shape[0] != num_frames:
            if not self.repeat_images:
                raise VideoReadError(f"'{path}': an image, but the bucket needs {num_frames} frames")
            frames = frames.expand(num_frames, -1, -1, -1)
        video = video_transform(frames, size, self.transform_name, rng=rng)  # (3, T, H, W)
        height, width = size
        return {
            "video": video,
            "text": self._caption(index, clip.fps),
            "num_frames": num_frames,
            "height": height,
            "width": width,
            "ar": height / width,
            "fps": clip.fps if clip.fps > 0 else float(IMAGE_FPS),
            "path": path,
            "index": index,
        }

    def _caption(self, index: int, fps: float) -> str:
        text = self._texts[index] if self._texts is not None else ""
        if not (self.caption_fps or self._motion is not None):
            return text
        motion = float(self._motion[index]) if self._motion is not None else None
        return append_caption_scores(text, fps if self.caption_fps else None, motion)

    def _pool(self, bucket: BucketId | None) -> np.ndarray:
        """Indices that may replace a bad sample of ``bucket`` (None: a fixed-size dataset)."""
        return np.arange(len(self))

    def _fetch(self, index: int, num_frames: int, size: tuple[int, int], bucket: BucketId | None = None
               ) -> dict[str, Any] | None:  # fmt: skip
        """Sample ``index``, or the first readable replacement; None if bad and ``replace_bad`` is off."""
        skipped = 0
        for candidate in self._candidates(index, bucket):
            key = (self._paths[candidate], num_frames)
            if key not in self._bad:
                try:
                    sample = self._read(candidate, num_frames, size)
                    sample["num_skipped"] = skipped
                    return sample
                except VideoReadError as exc:
                    self._mark_bad(key, exc)
            skipped += 1
            self.num_skipped += 1
            if not self.replace_bad:
                return None
        what = "the dataset" if bucket is None else f"bucket {bucket}"
        raise OpenSoraError(f"no readable sample for {what}: all {skipped} candidates failed (see the log)")

    def _candidates(self, index: int, bucket: BucketId | None) -> Iterator[int]:
        """``index``, then the replacement pool in an order seeded by (seed, epoch, index)."""
        yield index
        for candidate in self._rng(index, 1).permutation(self._pool(bucket)).tolist():
            if candidate != index:
                yield candidate

    def _mark_bad(self, key: tuple[str, int], exc: VideoReadError) -> None:
        self._bad.add(key)
        if key[0] not in self._logged:
            self._logged.add(key[0])
            logger.warning("skipping unreadable sample: %s", " ".join(str(exc).split()))

    def _column(self, name: str) -> np.ndarray | None:
        if name not in self.metadata:
            return None
        return pd.to_numeric(self.metadata[name], errors="coerce").to_numpy(dtype=np.float64)


@DATASETS.register("VideoTextDataset")
class VideoTextDataset(_ClipDataset):
    """Clips of ``num_frames`` frames every ``frame_interval``, all resized to ``image_size`` (H, W).

    Images are repeated to ``num_frames`` frames. Indexed by sample index (a ``(index, bucket)``
    pair also works; the bucket is ignored). ``caption_fps`` and ``caption_motion_score`` end each
    caption as 2.0 trained (:func:`append_caption_scores`; the score is the ``score_vmafmotion`` column).
    """

    repeat_images = True

    def __init__(
        self,
        data_path: str | os.PathLike[str],
        num_frames: int | str = 16,
        frame_interval: int = 1,
        image_size: tuple[int, int] = (256, 256),
        transform_name: str = "resize_crop",
        seed: int = 0,
        replace_bad: bool = True,
        caption_fps: bool = False,
        caption_motion_score: bool = False,
    ) -> None:
        super().__init__(data_path, frame_interval, transform_name, seed, replace_bad, caption_fps,
                         caption_motion_score)  # fmt: skip
        self.num_frames = get_num_frames(num_frames)
        if len(image_size) != 2 or min(image_size) < 1:
            raise ConfigError(f"image_size must be (height, width) in pixels, got {image_size!r}")
        self.image_size = (int(image_size[0]), int(image_size[1]))

    def __getitem__(self, item: int | tuple[int, Any]) -> dict[str, Any] | None:
        index = int(item[0] if isinstance(item, tuple) else item)
        return self._fetch(index, self.num_frames, self.image_size)


@DATASETS.register("VariableVideoTextDataset")
class VariableVideoTextDataset(_ClipDataset):
    """Indexed by ``(sample_index, BucketId)``: the bucket sets the frame count and the (H, W) size.

    Use the same ``frame_interval`` as the sampler's bucket assignment. A bad file is replaced by
    a sample whose metadata fits the bucket (ratio, size and length), tried in a seeded order.
    ``caption_fps`` / ``caption_motion_score``: as :class:`VideoTextDataset`'s.
    """

    def __init__(
        self,
        data_path: str | os.PathLike[str],
        frame_interval: int = 1,
        transform_name: str = "resize_crop",
        seed: int = 0,
        replace_bad: bool = True,
        caption_fps: bool = False,
        caption_motion_score: bool = False,
    ) -> None:
        super().__init__(data_path, frame_interval, transform_name, seed, replace_bad, caption_fps,
                         caption_motion_score)  # fmt: skip
        self._pools: dict[BucketId, np.ndarray] = {}

    def __getitem__(self, item: tuple[int, BucketId]) -> dict[str, Any] | None:
        if not isinstance(item, tuple) or len(item) != 2:
            raise TypeError(f"{type(self).__name__} takes (sample_index, BucketId) pairs from a bucket sampler, "
                            f"got {item!r}")  # fmt: skip
        index, bucket = int(item[0]), item[1]
        size = BUCKET_RESOLUTIONS[bucket.resolution][1][bucket.ratio]
        return self._fetch(index, bucket.num_frames, size, bucket)

    def _pool(self, bucket: BucketId | None) -> np.ndarray:
        """Indices of samples whose metadata fits ``bucket`` (all samples when sizes are unknown)."""
        if bucket not in self._pools:
            self._pools[bucket] = np.flatnonzero(self._fits(bucket))
        return self._pools[bucket]

    def _fits(self, bucket: BucketId) -> np.ndarray:
        frames, height, width = self._column("num_frames"), self._column("height"), self._column("width")
        if frames is None or height is None or width is None:
            return np.ones(len(self), bool)
        pixels, table = BUCKET_RESOLUTIONS[bucket.resolution]
        with np.errstate(divide="ignore", invalid="ignore"):  # a zero width is just a row that fits nothing
            fits = _closest_key(height / width, list(table)) == bucket.ratio
        fits &= height * width >= MIN_PIXEL_FRACTION * pixels
        if bucket.num_frames == 1:
            return fits & (frames == 1)
        return fits & (frames >= (bucket.num_frames - 1) * self.frame_interval + 1)


def _closest_key(aspect: np.ndarray, keys: list[str]) -> np.ndarray:
    """(N,) the ratio key nearest each H/W (ties to the earlier key, as bucket assignment does); "" for NaN."""
    best = np.full(len(aspect), "", dtype=object)
    best_distance = np.full(len(aspect), np.inf)
    for key in keys:
        distance = np.abs(float(key) - aspect)
        closer = distance < best_distance  # NaN compares False: such rows keep ""
        best[closer], best_distance[closer] = key, distance[closer]
    return best
