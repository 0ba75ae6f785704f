"""Buckets of samples that share a resolution, a frame count and an aspect ratio, so a batch stacks.

A bucket config has the release's format ``{resolution: {num_frames: (keep_prob, batch_size)}}``, where
``keep_prob`` is a probability or a pair ``(keep_prob, frame_keep_prob)``::

    {"240p": {1: (1.0, 64), 51: ((1.0, 0.5), 8), 102: (0.5, 4)}, "480p": {51: (0.4, 4)}}

:meth:`Bucket.assign` places every sample by the release's rule: resolutions are tried from the largest
pixel count down, and a sample qualifies for one when it has at least 80% of its pixels. An image
(1 frame) goes to the resolution's 1-frame bucket if there is one. A video takes the largest frame
count ``t`` (never 1) with ``num_frames > t * frame_interval`` that passes its ``frame_keep_prob`` draw;
the entry's ``keep_prob`` draw then keeps it at this resolution, or it falls to the next smaller one.
The aspect ratio is the closest key of the resolution's table.

Every draw is a hash of (seed, epoch, sample index, bucket), not a sequential RNG, so all ranks agree
without communicating and a sample's place does not depend on the other rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from opensora.datasets.aspect import BUCKET_RESOLUTIONS, check_bucket_resolution, get_num_frames
from opensora.errors import ConfigError, OpenSoraError

MIN_PIXEL_FRACTION = 0.8  # a sample qualifies for a resolution with this fraction of its pixels
KEPT, INVALID, TOO_SMALL, TOO_SHORT, DROPPED_BY_PROB = "", "invalid", "too_small", "too_short", "dropped_by_prob"
_REASON_DTYPE = "<U16"
_HASH_VERSION = 1  # bump when the draw changes, so config hashes of old assignments stop matching


@dataclasses.dataclass(frozen=True, order=True)
class BucketId:
    """One bucket: a resolution name, a frame count and a ratio key of that resolution's table."""

    resolution: str
    num_frames: int
    ratio: str

    def __str__(self) -> str:
        return f"{self.resolution}/{self.num_frames}/{self.ratio}"


@dataclasses.dataclass(frozen=True)
class BucketEntry:
    """One ``(resolution, num_frames)`` entry of a bucket config."""

    keep_prob: float
    frame_keep_prob: float
    batch_size: int


@dataclasses.dataclass
class Assignment:
    """Where each sample went: ``buckets[bucket_index[i]]``, or -1 with a ``reason`` code when dropped."""

    bucket_index: np.ndarray  # (N,) int64
    reason: np.ndarray  # (N,) str: "" kept, else invalid / too_small / too_short / dropped_by_prob
    buckets: list[BucketId]

    def __len__(self) -> int:
        return len(self.bucket_index)

    def ids(self) -> list[BucketId | None]:
        """The bucket of every sample, None where it was dropped."""
        return [self.buckets[i] if i >= 0 else None for i in self.bucket_index.tolist()]

    def counts(self) -> np.ndarray:
        """(len(buckets),) samples per bucket."""
        kept = self.bucket_index[self.bucket_index >= 0]
        return np.bincount(kept, minlength=len(self.buckets))

    def drop_counts(self) -> dict[str, int]:
        """{reason: samples} for the dropped samples, most frequent first."""
        reasons, counts = np.unique(self.reason[self.bucket_index < 0], return_counts=True)
        order = np.argsort(-counts, kind="stable")
        return {str(reasons[i]): int(counts[i]) for i in order}


def parse_bucket_config(config: Any) -> dict[str, dict[int, BucketEntry]]:
    """Validate a bucket config; resolutions ordered by pixel count and frame counts descending."""
    if not isinstance(config, Mapping) or not config:
        raise ConfigError(
            f"bucket_config must be a non-empty dict {{resolution: {{num_frames: entry}}}}, got {config!r}"
        )
    parsed = {}
    for resolution, frames in config.items():
        try:
            check_bucket_resolution(resolution)
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"bucket_config: {exc}") from None
        if not isinstance(frames, Mapping) or not frames:
            raise ConfigError(f"bucket_config[{resolution!r}] must be a non-empty dict {{num_frames: entry}}")
        entries = {}
        for key, entry in frames.items():
            where = f"bucket_config[{resolution!r}][{key!r}]"
            try:
                num_frames = get_num_frames(key)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            if num_frames in entries:
                raise ConfigError(f"{where}: frame count {num_frames} appears twice")
            entries[num_frames] = _parse_entry(where, entry, is_image=num_frames == 1)
        parsed[resolution] = dict(sorted(entries.items(), reverse=True))
    names = list(BUCKET_RESOLUTIONS)
    # Ties in pixel count (4k and 2880) keep the table's order so the result never depends on dict order.
    order = sorted(parsed, key=lambda name: (-BUCKET_RESOLUTIONS[name][0], names.index(name)))
    return {name: parsed[name] for name in order}


def _parse_entry(where: str, entry: Any, is_image: bool) -> BucketEntry:
    if not isinstance(entry, list | tuple) or len(entry) != 2:
        raise ConfigError(f"{where}: expected (keep_prob, batch_size), got {entry!r}")
    prob, batch_size = entry
    if isinstance(prob, list | tuple):
        if len(prob) != 2:
            raise ConfigError(f"{where}: expected keep_prob or (keep_prob, frame_keep_prob), got {prob!r}")
        if is_image:
            raise ConfigError(f"{where}: frame_keep_prob does not apply to the 1-frame (image) bucket")
        keep, frame_keep = _probability(where, "keep_prob", prob[0]), _probability(where, "frame_keep_prob", prob[1])
    else:
        keep, frame_keep = _probability(where, "keep_prob", prob), 1.0
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ConfigError(f"{where}: batch size must be an integer >= 1, got {batch_size!r}")
    return BucketEntry(keep, frame_keep, int(batch_size))


def _probability(where: str, name: str, value: Any) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0.0 <= value <= 1.0
    if not ok:
        raise ConfigError(f"{where}: {name} must be a number in [0, 1], got {value!r}")
    return float(value)


class Bucket:
    """The buckets of one bucket config, and the rule that assigns samples to them."""

    def __init__(self, config: Mapping[str, Mapping[int, float | tuple]], seed: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ConfigError(f"bucket seed must be an integer, got {seed!r}")
        self.config = parse_bucket_config(config)
        self.seed = int(seed)
        self.buckets = sorted(
            BucketId(name, num_frames, ratio)
            for name, entries in self.config.items()
            for num_frames in entries
            for ratio in BUCKET_RESOLUTIONS[name][1]
        )
        self._position = {bucket: i for i, bucket in enumerate(self.buckets)}

    def __len__(self) -> int:
        return len(self.buckets)

    def __repr__(self) -> str:
        return f"Bucket({len(self.buckets)} buckets, resolutions {list(self.config)}, seed={self.seed})"

    def index(self, bucket: BucketId) -> int:
        """Position of ``bucket`` in :attr:`buckets`."""
        if bucket not in self._position:
            raise KeyError(f"{bucket} is not a bucket of this config")
        return self._position[bucket]

    def entry(self, bucket: BucketId) -> BucketEntry:
        """The config entry (probabilities and batch size) of ``bucket``."""
        self.index(bucket)
        return self.config[bucket.resolution][bucket.num_frames]

    def batch_size(self, bucket: BucketId) -> int:
        return self.entry(bucket).batch_size

    def image_size(self, bucket: BucketId) -> tuple[int, int]:
        """(H, W) that samples of ``bucket`` are resized and cropped to."""
        self.index(bucket)
        return BUCKET_RESOLUTIONS[bucket.resolution][1][bucket.ratio]

    def config_hash(self) -> str:
        """A short digest of the parsed config and seed: equal hashes give equal assignments."""
        entries = [
            [name, t, entry.keep_prob, entry.frame_keep_prob, entry.batch_size]
            for name, frames in self.config.items()
            for t, entry in frames.items()
        ]
        text = json.dumps({"version": _HASH_VERSION, "seed": self.seed, "entries": entries}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def assign(
        self,
        num_frames: Any,
        height: Any,
        width: Any,
        frame_interval: int = 1,
        epoch: int = 0,
        index: Any = None,
    ) -> Assignment:
        """Assign every sample (equal-length arrays or Series) to a bucket for ``epoch``.

        ``index`` holds the samples' ids for the random draws (default ``0..N-1``): a sample with the
        same id, seed and epoch lands in the same bucket whatever the other rows are.
        """
        if isinstance(frame_interval, bool) or not isinstance(frame_interval, numbers.Integral) or frame_interval < 1:
            raise ConfigError(f"frame_interval must be an integer >= 1, got {frame_interval!r}")
        frames, heights, widths = _numeric_columns(num_frames=num_frames, height=height, width=width)
        keys = _sample_keys(self.seed, epoch, _sample_ids(index, len(frames)))
        valid = np.isfinite(frames) & np.isfinite(heights) & np.isfinite(widths)
        valid &= (frames >= 1) & (heights > 0) & (widths > 0)
        area = np.where(valid, heights * widths, 0.0)
        chosen_res = np.full(len(frames), -1, np.int64)
        chosen_t = np.zeros(len(frames), np.int64)
        size_ok, length_ok = np.zeros_like(valid), np.zeros_like(valid)
        pending = valid.copy()
        for position, (name, entries) in enumerate(self.config.items()):
            rows = np.flatnonzero(pending & (area >= MIN_PIXEL_FRACTION * BUCKET_RESOLUTIONS[name][0]))
            size_ok[rows] = True
            t, fits = _choose_frames(name, entries, frames[rows], keys[rows], frame_interval)
            length_ok[rows[fits]] = True
            kept = rows[t > 0]
            chosen_res[kept], chosen_t[kept] = position, t[t > 0]
            pending[kept] = False
        bucket_index = self._bucket_positions(chosen_res, chosen_t, heights, widths)
        reason = np.full(len(frames), KEPT, _REASON_DTYPE)
        dropped = bucket_index < 0
        reason[dropped] = DROPPED_BY_PROB
        reason[dropped & ~length_ok] = TOO_SHORT
        reason[dropped & ~size_ok] = TOO_SMALL
        reason[~valid] = INVALID
        return Assignment(bucket_index, reason, list(self.buckets))

    def _bucket_positions(
        self, chosen_res: np.ndarray, chosen_t: np.ndarray, heights: np.ndarray, widths: np.ndarray
    ) -> np.ndarray:
        """(N,) position in :attr:`buckets` of each kept sample's (resolution, frames, closest ratio)."""
        result = np.full(len(chosen_res), -1, np.int64)
        for position, (name, entries) in enumerate(self.config.items()):
            rows = np.flatnonzero(chosen_res == position)
            if len(rows) == 0:
                continue
            table = BUCKET_RESOLUTIONS[name][1]
            ratio = _closest_ratio_index(heights[rows] / widths[rows], [float(key) for key in table])
            frame_list = sorted(entries)
            lookup = np.array([[self._position[BucketId(name, t, key)] for key in table] for t in frame_list])
            result[rows] = lookup[np.searchsorted(frame_list, chosen_t[rows]), ratio]
        return result


def _choose_frames(
    name: str, entries: Mapping[int, BucketEntry], frames: np.ndarray, keys: np.ndarray, frame_interval: int
) -> tuple[np.ndarray, np.ndarray]:
    """For samples that qualify for ``name`` by size: (frame count kept at, 0 if none; whether any fit by length)."""
    is_image = frames == 1
    chosen = np.zeros(len(frames), np.int64)
    fits_any = np.zeros(len(frames), bool)
    if 1 in entries:
        chosen[is_image] = 1
        fits_any |= is_image
    undecided = ~is_image
    for t, entry in entries.items():  # largest first
        if t == 1:
            continue
        fits = undecided & (frames > t * frame_interval)
        fits_any |= fits
        passed = _draw(fits, keys, entry.frame_keep_prob, (name, t, "frame"))
        chosen[passed] = t
        undecided &= ~passed
    for t, entry in entries.items():
        at_t = chosen == t
        chosen[at_t & ~_draw(at_t, keys, entry.keep_prob, (name, t, "keep"))] = 0
    return chosen, fits_any


def _closest_ratio_index(aspect: np.ndarray, keys: Sequence[float]) -> np.ndarray:
    """(N,) position of the key nearest each H/W; ties go to the earlier key, as in get_closest_ratio."""
    best = np.zeros(len(aspect), np.int64)
    best_distance = np.abs(keys[0] - aspect)
    for position, key in enumerate(keys[1:], start=1):
        distance = np.abs(key - aspect)
        closer = distance < best_distance
        best[closer], best_distance[closer] = position, distance[closer]
    return best


# ---------------------------------------------------------------------------------------------
# Reports: samples and full batches per bucket
# ---------------------------------------------------------------------------------------------


def bucket_table(assignment: Assignment, bucket: Bucket, num_ranks: int = 1) -> list[dict[str, Any]]:
    """One row per bucket: its id, image size, batch size, samples and full batches.

    ``batches_per_rank`` is the bucket's expected share on each of ``num_ranks`` ranks (batches of all
    buckets are pooled and dealt out round-robin, so only the total is exact).
    """
    if num_ranks < 1:
        raise ConfigError(f"num_ranks must be >= 1, got {num_ranks}")
    rows = []
    for bucket_id, samples in zip(assignment.buckets, assignment.counts().tolist()):
        height, width = bucket.image_size(bucket_id)
        batch_size = bucket.batch_size(bucket_id)
        rows.append(
            {
                "bucket": bucket_id,
                "height": height,
                "width": width,
                "batch_size": batch_size,
                "samples": samples,
                "batches": samples // batch_size,
                "batches_per_rank": samples // batch_size / num_ranks,
                "num_ranks": num_ranks,
            }
        )
    return rows


def format_bucket_table(table: Sequence[Mapping[str, Any]], drops: Mapping[str, int] | None = None) -> str:
    """The non-empty rows of :func:`bucket_table` as aligned text, with totals and drop reasons."""
    lines = [("bucket", "size", "batch", "samples", "batches", "per rank")]
    for row in table:
        if row["samples"] > 0:
            size = f"{row['height']}x{row['width']}"
            counts = (row["batch_size"], row["samples"], row["batches"], f"{row['batches_per_rank']:.1f}")
            lines.append((str(row["bucket"]), size, *map(str, counts)))
    widths = [max(len(cell) for cell in column) for column in zip(*lines)]
    text = [
        "  ".join([line[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(line[1:], widths[1:])]) for line in lines
    ]
    samples = sum(row["samples"] for row in table)
    batches = sum(row["batches"] for row in table)
    num_ranks = table[0]["num_ranks"] if table else 1
    text.append(f"{len(lines) - 1} of {len(table)} buckets hold samples")
    text.append(
        f"total: {samples} samples, {batches} full batches, {batches // num_ranks} per rank ({num_ranks} ranks)"
    )
    if drops:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in drops.items())
        text.append(f"dropped: {sum(drops.values())} samples ({reasons})")
    return "\n".join(text)


def check_nonempty(table: Sequence[Mapping[str, Any]], limit: int = 8) -> None:
    """ConfigError (one line) unless every rank gets at least one full batch from ``table``."""
    batches = sum(row["batches"] for row in table)
    num_ranks = table[0]["num_ranks"] if table else 1
    if batches >= num_ranks and batches > 0:
        return
    partial = sorted((row for row in table if row["samples"] > 0), key=lambda row: -row["samples"])
    details = [f"{row['bucket']} has {row['samples']} < batch size {row['batch_size']}" for row in partial[:limit]]
    if len(partial) > limit:
        details.append(f"and {len(partial) - limit} more partly filled buckets")
    if not partial:
        configured = sorted({f"{row['bucket'].resolution}/{row['bucket'].num_frames}" for row in table})
        details.append(f"no sample was assigned to any of {', '.join(configured) or 'no buckets'}")
    if batches == 0:
        raise ConfigError("no full batch in any bucket: " + "; ".join(details))
    full = [f"{row['bucket']} has {row['batches']}" for row in table if row["batches"] > 0]
    raise ConfigError(
        f"only {batches} full batches for {num_ranks} ranks ({', '.join(full[:limit])}): some ranks get none"
    )


# ---------------------------------------------------------------------------------------------
# Counter-based draws: uniform(seed, epoch, sample id, bucket) via splitmix64
# ---------------------------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1
_GAMMA, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # wrap-around multiplication is the point
        z = x + _GAMMA
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def _sample_keys(seed: int, epoch: int, ids: np.ndarray) -> np.ndarray:
    """(N,) uint64 keys, one per sample, from which every draw of that sample is derived."""
    prefix = _splitmix64(np.array([seed & _MASK64], np.uint64))
    prefix = _splitmix64(prefix ^ np.uint64(int(epoch) & _MASK64))
    return _splitmix64(ids ^ prefix)


def _bucket_key(parts: tuple[object, ...]) -> np.uint64:
    # hashlib, not hash(): Python salts str hashes per process, and ranks must agree
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "little"))


def _draw(rows: np.ndarray, keys: np.ndarray, prob: float, parts: tuple[object, ...]) -> np.ndarray:
    """Boolean mask: ``rows`` whose uniform draw for bucket ``parts`` is below ``prob``."""
    if prob >= 1.0 or not rows.any():
        return rows.copy()
    passed = np.zeros_like(rows)
    if prob > 0.0:
        bits = _splitmix64(keys[rows] ^ _bucket_key(parts)) >> np.uint64(11)
        passed[rows] = bits.astype(np.float64) * 2.0**-53 < prob
    return passed


def _sample_ids(index: Any, length: int) -> np.ndarray:
    if index is None:
        return np.arange(length, dtype=np.uint64)
    ids = np.asarray(index)
    if ids.shape != (length,) or not np.issubdtype(ids.dtype, np.integer) or (ids < 0).any():
        raise ValueError(f"index must be {length} non-negative integers, got shape {ids.shape} of {ids.dtype}")
    return ids.astype(np.uint64)


def _numeric_columns(**columns: Any) -> list[np.ndarray]:
    arrays = []
    for name, column in columns.items():
        try:
            arrays.append(np.asarray(column, dtype=np.float64).reshape(-1))
        except (TypeError, ValueError):
            raise OpenSoraError(f"metadata column '{name}' must be numeric") from None
    lengths = {len(array) for array in arrays}
    if len(lengths) > 1:
        raise ValueError(f"num_frames, height and width differ in length: {[len(a) for a in arrays]}")
    return arrays
