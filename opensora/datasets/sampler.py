"""Samplers that split each epoch evenly across ranks and resume mid-epoch exactly.

Both samplers build one global order per epoch from a generator seeded by (seed, epoch), so every
rank computes the same order without communicating; rank ``r`` takes positions ``r, r + R, ...``.
Their state records how many positions of the epoch all ranks together have consumed, so a run
resumes where it stopped, even with a different number of ranks. The state also fingerprints the
dataset (and the bucket config): resuming against different data would silently change the order,
so it fails in one line unless ``restart_epoch=True`` asks to start the epoch over.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from opensora.datasets.bucket import bucket_table, check_nonempty
from opensora.errors import OpenSoraError

if TYPE_CHECKING:
    from opensora.datasets.bucket import Assignment, BucketId

logger = logging.getLogger(__name__)

SIZE_COLUMNS = ("num_frames", "height", "width")


class BucketLike(Protocol):
    """What :class:`BucketBatchSampler` needs from :class:`opensora.datasets.bucket.Bucket`."""

    def batch_size(self, bucket: BucketId) -> int: ...

    def config_hash(self) -> str: ...

    def assign(
        self, num_frames: Any, height: Any, width: Any, frame_interval: int = 1, epoch: int = 0
    ) -> Assignment: ...


def dataset_fingerprint(metadata: pd.DataFrame) -> str:
    """sha256 of the paths and the num_frames/height/width columns present in ``metadata``.

    Paths are taken relative to their common folder, so moving the whole dataset keeps the hash.
    """
    digest = hashlib.sha256(f"rows={len(metadata)}".encode())
    if "path" in metadata and len(metadata):
        paths = metadata["path"].astype(str).tolist()
        root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
        digest.update("\n".join(os.path.relpath(p, root) if root else p for p in paths).encode())
    for column in SIZE_COLUMNS:
        if column in metadata:
            digest.update(column.encode())
            digest.update(np.ascontiguousarray(metadata[column].to_numpy(dtype=np.float64)).tobytes())
    return digest.hexdigest()


def rank_positions(total: int, start: int, num_replicas: int, rank: int, drop_last: bool) -> np.ndarray:
    """Positions of an epoch's global order (length ``total``) that ``rank`` takes after ``start`` are consumed.

    The remainder is split evenly: dropped, or padded with positions wrapped from the epoch's start,
    so every rank gets the same count.
    """
    remaining = max(total - start, 0)
    count = remaining // num_replicas if drop_last else -(-remaining // num_replicas)
    positions = start + rank + num_replicas * np.arange(count, dtype=np.int64)
    return positions % total if total else positions


class _ResumableSampler:
    """Epoch bookkeeping shared by both samplers; subclasses define the epoch's global order.

    ``_offset`` is the global position where the current pass began and ``_yielded`` how many items
    this rank has handed out in it. Iterating again replays the current pass; once a pass has run
    to its end, the next one replays the whole epoch (as torch samplers do) until :meth:`set_epoch`.
    """

    def __init__(self, num_replicas: int, rank: int, seed: int, drop_last: bool, restart_epoch: bool) -> None:
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas), got rank={rank}, num_replicas={num_replicas}")
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.drop_last, self.restart_epoch = drop_last, restart_epoch
        self.epoch = 0
        self._offset = self._yielded = 0
        self._finished = False

    # ---- subclass hooks -----------------------------------------------------------------------
    def _epoch_size(self) -> int:
        """Length of the current epoch's global order."""
        raise NotImplementedError

    def _item(self, position: int) -> Any:
        """The item at ``position`` of the current epoch's global order."""
        raise NotImplementedError

    def _fingerprint(self) -> dict[str, Any]:
        """Entries of the state that must match on resume (num_samples, dataset_hash, ...)."""
        raise NotImplementedError

    # ---- epochs and iteration -----------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch``; setting the epoch a loaded state is in keeps its position."""
        if epoch != self.epoch:
            self.epoch, self._offset, self._yielded, self._finished = epoch, 0, 0, False

    def _pass_start(self) -> int:
        return 0 if self._finished else self._offset

    def _positions(self) -> np.ndarray:
        return rank_positions(self._epoch_size(), self._pass_start(), self.num_replicas, self.rank, self.drop_last)

    def __len__(self) -> int:
        return len(self._positions())

    def __iter__(self) -> Iterator[Any]:
        positions = self._positions()  # eager, so a state_dict() before the first next() is right
        self._offset, self._yielded, self._finished = self._pass_start(), 0, False
        return self._generate(positions)

    def _generate(self, positions: np.ndarray) -> Iterator[Any]:
        for position in positions.tolist():
            self._yielded += 1
            yield self._item(position)
        self._finished = True

    # ---- state --------------------------------------------------------------------------------
    def consumed(self, yielded: int | None = None) -> int:
        """Global positions of this epoch consumed by all ranks, if this rank has used ``yielded`` items."""
        if yielded is None:
            yielded = self._yielded
        return min(self._offset + yielded * self.num_replicas, self._epoch_size())

    def state_dict(self, yielded: int | None = None) -> dict[str, Any]:
        """The position in the epoch, the seed and the fingerprint of the data.

        ``yielded``: how many items of the current pass this rank has actually used. A DataLoader
        fetches ahead of the trainer, so the sampler's own count (the default) can run ahead.
        """
        state = {"epoch": self.epoch, "consumed": self.consumed(yielded), "seed": self.seed}
        return {**state, "num_replicas": self.num_replicas, **self._fingerprint()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state``; a changed dataset or config raises OpenSoraError unless restart_epoch."""
        problem = self._mismatch(state)
        if problem is not None and not self.restart_epoch:
            raise OpenSoraError(f"{problem}; pass restart_epoch=True to start the epoch over")
        self.seed = int(state["seed"])  # the saved seed wins: the point is to reproduce the saved order
        self.epoch = int(state["epoch"])
        self._offset, self._yielded, self._finished = int(state["consumed"]), 0, False
        if problem is not None:
            logger.warning("%s; restarting epoch %d from the start", problem, self.epoch)
            self._offset = 0

    def _mismatch(self, state: Mapping[str, Any]) -> str | None:
        """Why ``state`` cannot be resumed here, or None."""
        current = self._fingerprint()
        if state.get("num_samples") == current["num_samples"] and state.get("dataset_hash") == current["dataset_hash"]:
            return None
        return (
            f"the dataset changed since the checkpoint ({current['num_samples']} samples, hash "
            f"{current['dataset_hash'][:12]} != {str(state.get('dataset_hash'))[:12]})"
        )


class BucketBatchSampler(_ResumableSampler):
    """Batches of (sample_index, BucketId) pairs, each batch from one bucket and of its batch size.

    Per epoch, a generator seeded by (seed, epoch) shuffles the samples within each bucket and then
    the order of the batches; a bucket's last partial batch is dropped (``drop_last``) or padded with
    repeats of that bucket's samples. Batches are then split evenly across ranks.

    ``bucket`` gives batch sizes and the config hash. Samples come from ``metadata`` (columns path,
    num_frames, height, width), assigned by ``bucket.assign`` (again each epoch when the assignment
    depends on the epoch), or from a precomputed ``assignment`` instead.
    """

    def __init__(
        self,
        bucket: BucketLike,
        metadata: pd.DataFrame | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        drop_last: bool = True,
        *,
        assignment: Assignment | None = None,
        frame_interval: int = 1,
        restart_epoch: bool = False,
    ) -> None:
        super().__init__(num_replicas, rank, seed, drop_last, restart_epoch)
        if (metadata is None) == (assignment is None):
            raise ValueError("pass exactly one of metadata and assignment")
        self.bucket, self.metadata, self.frame_interval = bucket, metadata, frame_interval
        self._static = assignment
        if metadata is not None:
            missing = [c for c in SIZE_COLUMNS if c not in metadata]
            if missing:
                raise OpenSoraError(
                    f"bucketed data needs metadata columns {', '.join(missing)} (probe the videos first)"
                )
            self._num_samples, self._dataset_hash = len(metadata), dataset_fingerprint(metadata)
        else:
            self._num_samples = len(assignment.bucket_index)
            self._dataset_hash = _assignment_fingerprint(assignment)
        self._config_hash = bucket.config_hash()
        if metadata is not None and not _depends_on_epoch(bucket):
            self._static = self.assignment(0)  # assign once: every epoch would give the same
        self._cache: tuple[tuple[int, int], _EpochBatches] | None = None

    def assignment(self, epoch: int | None = None) -> Assignment:
        """The bucket assignment of ``epoch`` (default: the current one)."""
        if self._static is not None:
            return self._static
        meta = self.metadata
        epoch = self.epoch if epoch is None else epoch
        return self.bucket.assign(meta["num_frames"], meta["height"], meta["width"], self.frame_interval, epoch=epoch)

    def _batches(self) -> _EpochBatches:
        if self._cache is None or self._cache[0] != (self.epoch, self.seed):
            self._cache = ((self.epoch, self.seed), self._build_batches())
        return self._cache[1]

    def _build_batches(self) -> _EpochBatches:
        assignment = self.assignment()
        rng = np.random.default_rng([self.seed, self.epoch])
        order = np.argsort(assignment.bucket_index, kind="stable")
        counts = np.bincount(assignment.bucket_index[assignment.bucket_index >= 0], minlength=len(assignment.buckets))
        groups = np.split(order[len(order) - counts.sum() :], np.cumsum(counts)[:-1])
        chunks, owners = [], []
        for position, members in enumerate(groups):
            if len(members) == 0:
                continue
            size = self.bucket.batch_size(assignment.buckets[position])
            if size < 1:
                raise OpenSoraError(f"bucket {assignment.buckets[position]} has batch size {size}; it must be >= 1")
            members = rng.permutation(members)
            keep = len(members) // size if self.drop_last else -(-len(members) // size)
            if keep == 0:
                continue
            members = np.resize(members, keep * size)  # np.resize repeats the bucket's samples to pad
            chunks.extend(np.split(members, keep))
            owners.extend([position] * keep)
        if len(chunks) < self.num_replicas and self.drop_last:
            # an epoch where some rank gets no batch would hang or silently train on nothing
            check_nonempty(bucket_table(assignment, self.bucket, self.num_replicas))
        permutation = rng.permutation(len(chunks))
        return _EpochBatches([chunks[i] for i in permutation], [owners[i] for i in permutation], assignment.buckets)

    def _epoch_size(self) -> int:
        return len(self._batches().indices)

    def _item(self, position: int) -> list[tuple[int, BucketId]]:
        batches = self._batches()
        bucket_id = batches.buckets[batches.owners[position]]
        return [(index, bucket_id) for index in batches.indices[position].tolist()]

    def _fingerprint(self) -> dict[str, Any]:
        return {"num_samples": self._num_samples, "dataset_hash": self._dataset_hash, "config_hash": self._config_hash}

    def _mismatch(self, state: Mapping[str, Any]) -> str | None:
        problem = super()._mismatch(state)
        if problem is None and state.get("config_hash") != self._config_hash:
            saved = str(state.get("config_hash"))[:12]
            problem = f"the bucket config changed since the checkpoint (hash {self._config_hash[:12]} != {saved})"
        return problem


def _depends_on_epoch(bucket: BucketLike) -> bool:
    """Whether ``bucket.assign`` draws at random (a keep probability below 1), so epochs differ."""
    entry = getattr(bucket, "entry", None)
    if entry is None:
        return True  # an unknown bucket type: reassigning each epoch is always correct
    return any(min(entry(b).keep_prob, entry(b).frame_keep_prob) < 1.0 for b in bucket.buckets)


class _EpochBatches:
    """One epoch's batches in order: sample indices per batch and the position of its bucket."""

    def __init__(self, indices: list[np.ndarray], owners: list[int], buckets: Sequence[BucketId]) -> None:
        self.indices, self.owners, self.buckets = indices, owners, list(buckets)


def _assignment_fingerprint(assignment: Assignment) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(assignment.bucket_index, dtype=np.int64).tobytes())
    digest.update(repr(list(assignment.buckets)).encode())
    return digest.hexdigest()


class StatefulDistributedSampler(_ResumableSampler):
    """Sample indices of a fixed-size dataset, shuffled per epoch and split evenly across ranks.

    Like ``torch.utils.data.DistributedSampler`` (``drop_last=False`` pads with samples from the
    epoch's start), with :meth:`state_dict` / :meth:`load_state_dict` to resume mid-epoch.
    ``dataset_hash`` (e.g. :func:`dataset_fingerprint` of the metadata) lets a resume detect a
    changed dataset even when its length is unchanged.
    """

    def __init__(
        self,
        dataset_len: int,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        *,
        dataset_hash: str = "",
        restart_epoch: bool = False,
    ) -> None:
        super().__init__(num_replicas, rank, seed, drop_last, restart_epoch)
        self.dataset_len, self.shuffle, self.dataset_hash = int(dataset_len), shuffle, dataset_hash
        self._cache: tuple[tuple[int, int], np.ndarray] | None = None

    def _order(self) -> np.ndarray:
        if self._cache is None or self._cache[0] != (self.epoch, self.seed):
            if self.shuffle:
                order = np.random.default_rng([self.seed, self.epoch]).permutation(self.dataset_len)
            else:
                order = np.arange(self.dataset_len)
            self._cache = ((self.epoch, self.seed), order)
        return self._cache[1]

    def _epoch_size(self) -> int:
        return self.dataset_len

    def _item(self, position: int) -> int:
        return int(self._order()[position])

    def _fingerprint(self) -> dict[str, Any]:
        return {"num_samples": self.dataset_len, "dataset_hash": self.dataset_hash}
