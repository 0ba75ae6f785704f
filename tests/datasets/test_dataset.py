"""Datasets and the resumable loader on tiny real videos and images, including a corrupt and a missing file."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from opensora.datasets.bucket import Bucket, BucketId
from opensora.datasets.dataloader import build_dataloader, build_sampler
from opensora.datasets.dataset import VariableVideoTextDataset, VideoTextDataset
from opensora.datasets.sampler import BucketBatchSampler
from opensora.errors import OpenSoraError
from opensora.registry import DATASETS, build_module
from tests.datasets.media import metadata_table, write_sample

BUCKETS = {"144p": {1: (1.0, 2), 4: (1.0, 2)}}
VIDEO_BUCKET, IMAGE_BUCKET = BucketId("144p", 4, "0.56"), BucketId("144p", 1, "1.00")
BAD = ("corrupt.mp4", "missing.mp4")


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(5):
        frames = rng.integers(0, 256, (12, 9, 16, 3), np.uint8).repeat(16, axis=1).repeat(16, axis=2)
        rows.append(write_sample(root / f"video{i}.mp4", frames, f"a video number {i}"))
    for i in range(4):
        gray = np.full((192, 192, 3), 40 * i, np.uint8)
        rows.append(write_sample(root / f"image{i}.png", gray, f"an image number {i}"))
    (root / "corrupt.mp4").write_bytes(b"not a video at all" * 100)
    rows += [(name, "broken", 12, 144, 256) for name in BAD]
    path = root / "meta.csv"
    metadata_table(rows).to_csv(path, index=False)
    return path


def bad_indices(dataset: VariableVideoTextDataset) -> set[int]:
    return {i for i, path in enumerate(dataset.metadata["path"]) if Path(path).name in BAD}


def bucket_loader(data_csv: Path, num_workers: int, **sampler_kwargs):
    dataset = build_module({"type": "VariableVideoTextDataset", "data_path": str(data_csv)}, DATASETS, seed=1)
    sampler = BucketBatchSampler(Bucket(BUCKETS), dataset.metadata, drop_last=False, **sampler_kwargs)
    return dataset, sampler, build_dataloader(dataset, sampler, num_workers=num_workers, seed=1)


def check_bucket_batches(dataset: VariableVideoTextDataset, expected: list, batches: list) -> None:
    assert len(batches) == len(expected) == 4 + 2  # 7 video samples padded to 8, 4 images
    requested_bad = 0
    for batch, pairs in zip(batches, expected):
        bucket = pairs[0][1]
        height, width = Bucket(BUCKETS).image_size(bucket)
        assert batch["video"].shape == (2, 3, bucket.num_frames, height, width)
        assert batch["video"].dtype == torch.float32 and batch["video"].abs().max() <= 1
        assert not any(Path(p).name in BAD for p in batch["path"])
        assert batch["height"].tolist() == [height] * 2 and batch["num_frames"].tolist() == [bucket.num_frames] * 2
        assert len(batch["text"]) == 2 and all(isinstance(t, str) for t in batch["text"])
        requested_bad += sum(index in bad_indices(dataset) for index, _ in pairs)
    assert requested_bad >= 2
    # a replacement may itself be the other bad file: counted too
    assert requested_bad <= sum(int(batch["num_skipped"].sum()) for batch in batches) <= 2 * requested_bad


def test_bucket_batches_are_full_bad_files_replaced_and_workers_agree(data_csv: Path) -> None:
    runs = []
    for num_workers in (0, 2):
        dataset, sampler, loader = bucket_loader(data_csv, num_workers, seed=5)
        expected = list(sampler)
        runs.append(list(loader))
        check_bucket_batches(dataset, expected, runs[-1])
    for main, workers in zip(*runs):
        assert main["path"] == workers["path"]
        assert torch.equal(main["video"], workers["video"])


def test_bad_file_is_logged_once_and_counted(data_csv: Path, caplog: pytest.LogCaptureFixture) -> None:
    dataset = VariableVideoTextDataset(data_csv)
    bad = sorted(bad_indices(dataset))
    with caplog.at_level(logging.WARNING, logger="opensora.datasets.dataset"):
        for epoch in range(2):
            dataset.set_epoch(epoch)
            assert [dataset[(i, VIDEO_BUCKET)]["num_skipped"] >= 1 for i in bad] == [True, True]
    messages = [r.getMessage() for r in caplog.records]
    for name in BAD:
        assert sum(name in m for m in messages) == 1
    assert all("\n" not in m for m in messages)
    assert dataset.num_skipped >= 4


def test_crops_are_seeded_by_epoch_and_index(data_csv: Path) -> None:
    dataset = VariableVideoTextDataset(data_csv, seed=3)
    first = [dataset[(i, VIDEO_BUCKET)]["video"] for i in range(5)]
    assert all(torch.equal(a, dataset[(i, VIDEO_BUCKET)]["video"]) for i, a in enumerate(first))
    dataset.set_epoch(1)
    assert any(not torch.equal(a, dataset[(i, VIDEO_BUCKET)]["video"]) for i, a in enumerate(first))


def test_every_candidate_bad_names_the_bucket(tmp_path: Path) -> None:
    (tmp_path / "bad.mp4").write_bytes(b"junk")
    pd.DataFrame({"path": ["bad.mp4", "gone.mp4"], "num_frames": 12, "height": 144, "width": 256}).to_csv(
        tmp_path / "meta.csv", index=False
    )
    dataset = VariableVideoTextDataset(tmp_path / "meta.csv")
    with pytest.raises(OpenSoraError, match="144p/4/0.56"):
        dataset[(0, VIDEO_BUCKET)]
    assert dataset.num_skipped == 2
    assert VariableVideoTextDataset(tmp_path / "meta.csv", replace_bad=False)[(1, VIDEO_BUCKET)] is None
    with pytest.raises(TypeError, match="BucketId"):
        dataset[0]


def test_image_bucket_and_replacement_stay_in_bucket(data_csv: Path) -> None:
    dataset = VariableVideoTextDataset(data_csv)
    image = dataset[(5, IMAGE_BUCKET)]
    assert image["video"].shape == (3, 1, 192, 192) and image["fps"] == 120.0
    bad = sorted(bad_indices(dataset))[0]
    replaced = dataset[(bad, VIDEO_BUCKET)]
    assert replaced["num_skipped"] == 1 and Path(replaced["path"]).name.startswith("video")
    assert replaced["fps"] == 24.0 and replaced["ar"] == pytest.approx(144 / 256)
    sampler = build_sampler(dataset, BUCKETS, num_replicas=2, rank=1)
    assert isinstance(sampler, BucketBatchSampler) and len(sampler) == (3 + 2) // 2  # full batches: 3 video, 2 image


def test_fixed_size_dataset_with_resumable_loader(data_csv: Path) -> None:
    cfg = {"type": "VideoTextDataset", "data_path": str(data_csv), "num_frames": 4, "image_size": (32, 48)}
    dataset = build_module(cfg, DATASETS)
    assert isinstance(dataset, VideoTextDataset)

    def loader():
        return build_dataloader(dataset, build_sampler(dataset, seed=2), batch_size=3, num_workers=2, seed=2)

    full = list(loader())
    assert [b["video"].shape for b in full] == [(3, 3, 4, 32, 48)] * (len(dataset) // 3)
    assert all(Path(p).name not in BAD for b in full for p in b["path"])
    assert sum(int(b["num_skipped"].sum()) for b in full) >= 1  # 11 files in 3 full batches of 3
    interrupted = loader()
    head = list(itertools.islice(iter(interrupted), 1))  # the workers have prefetched further
    state = interrupted.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert [b["path"] for b in head + rest] == [b["path"] for b in full]


def test_bucket_loader_resumes_after_prefetch(data_csv: Path) -> None:
    _, _, full_loader = bucket_loader(data_csv, 2, seed=9)
    full = [b["path"] for b in full_loader]
    _, _, interrupted = bucket_loader(data_csv, 2, seed=9)
    head = [b["path"] for b in itertools.islice(iter(interrupted), 2)]
    _, _, resumed = bucket_loader(data_csv, 0, seed=9)
    resumed.load_state_dict(interrupted.state_dict())
    assert head + [b["path"] for b in resumed] == full
