"""A DataLoader that saves and restores its position in the epoch, and the sampler to go with a dataset.

The sampler runs ahead of the trainer (workers prefetch batches), so the loader counts the batches
it has actually handed out and saves the sampler's state at that point: a resume neither skips
nor repeats a batch.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from opensora.datasets.bucket import Bucket
from opensora.datasets.sampler import BucketBatchSampler, StatefulDistributedSampler

Sampler = BucketBatchSampler | StatefulDistributedSampler


def collate(items: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Stack videos and numbers into tensors, keep texts and paths as lists; None items are dropped."""
    items = [item for item in items if item is not None]
    if not items:
        return None
    return torch.utils.data.default_collate(items)


def seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in a worker from torch's per-worker seed (base seed + worker id)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class ResumableDataLoader(DataLoader):
    """A DataLoader with ``set_epoch``, ``state_dict`` and ``load_state_dict`` that act on its sampler.

    ``resumable`` is the sampler (a :class:`BucketBatchSampler` as the batch sampler, or a
    :class:`StatefulDistributedSampler` as the sampler). Each pass also tells the dataset the epoch,
    before workers copy it, so random crops change with the epoch.
    """

    def __init__(self, dataset: Dataset, resumable: Sampler, **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.resumable = resumable
        self._delivered: int | None = None  # batches handed out in the current pass; None: none running

    def set_epoch(self, epoch: int) -> None:
        self.resumable.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.resumable.epoch)
        return self._counted(super().__iter__())

    def _counted(self, batches: Iterator[Any]) -> Iterator[Any]:
        self._delivered = 0
        for batch in batches:
            self._delivered += 1
            yield batch
        self._delivered = None  # finished: the sampler's own count is exact

    def state_dict(self) -> dict[str, Any]:
        """The sampler's state as of the last batch this loader handed out."""
        yielded = self._delivered
        if yielded is not None and isinstance(self.resumable, StatefulDistributedSampler):
            yielded *= self.batch_size  # that sampler counts samples
        return self.resumable.state_dict(yielded=yielded)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.resumable.load_state_dict(state)
        self._delivered = None


def build_dataloader(
    dataset: Dataset,
    sampler: Sampler,
    batch_size: int | None = None,
    num_workers: int = 0,
    pin_memory: bool | None = None,
    prefetch_factor: int | None = None,
    seed: int = 0,
    drop_last: bool = True,
) -> ResumableDataLoader:
    """A loader over ``dataset`` in the order of ``sampler``; batches come from :func:`collate`.

    A :class:`BucketBatchSampler` forms the batches itself; a :class:`StatefulDistributedSampler`
    needs ``batch_size`` (and ``drop_last`` for the last partial batch). ``pin_memory`` defaults to
    whether CUDA is available. ``seed`` seeds the workers' numpy and torch generators.
    """
    kwargs: dict[str, Any] = {
        "num_workers": num_workers,
        "collate_fn": collate,
        "pin_memory": torch.cuda.is_available() if pin_memory is None else pin_memory,
        "worker_init_fn": seed_worker,
        "generator": torch.Generator().manual_seed(seed),
    }
    if num_workers > 0 and prefetch_factor is not None:
        kwargs["prefetch_factor"] = prefetch_factor
    if isinstance(sampler, BucketBatchSampler):
        if batch_size is not None:
            raise ValueError("a BucketBatchSampler sets batch sizes per bucket; do not pass batch_size")
        return ResumableDataLoader(dataset, sampler, batch_sampler=sampler, **kwargs)
    if batch_size is None or batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 with a per-sample sampler, got {batch_size}")
    return ResumableDataLoader(dataset, sampler, sampler=sampler, batch_size=batch_size, drop_last=drop_last, **kwargs)


def build_sampler(
    dataset: Any,
    bucket_config: Mapping[str, Any] | None = None,
    num_replicas: int = 1,
    rank: int = 0,
    seed: int = 0,
    restart_epoch: bool = False,
) -> Sampler:
    """The sampler a dataset needs: bucketed when ``bucket_config`` is given, else per-sample shuffled.

    Bucketed sampling uses the dataset's ``metadata`` (num_frames, height, width) and ``frame_interval``.
    """
    if bucket_config is not None:
        bucket = Bucket(bucket_config, seed=seed)
        interval = getattr(dataset, "frame_interval", 1)
        return BucketBatchSampler(bucket, dataset.metadata, num_replicas, rank, seed, drop_last=True,
                                  frame_interval=interval, restart_epoch=restart_epoch)  # fmt: skip
    fingerprint = getattr(dataset, "fingerprint", "")
    return StatefulDistributedSampler(len(dataset), num_replicas, rank, seed=seed, dataset_hash=fingerprint,
                                      restart_epoch=restart_epoch)  # fmt: skip
