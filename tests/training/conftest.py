"""One small real dataset per test session, as media files and as extracted features."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.training.helpers import extract_features, write_dataset


@pytest.fixture(scope="session")
def media_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 videos of 20 frames and 2 images, 192 x 192, with captions: meta.csv."""
    return write_dataset(tmp_path_factory.mktemp("train_media"))


@pytest.fixture(scope="session")
def features_dir(media_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same samples encoded once by the tiny VAE at 5 frames of 64 x 64 (latents 4 x 2 x 8 x 8)."""
    return extract_features(media_csv, tmp_path_factory.mktemp("train_features") / "features")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # the models here are tiny: on a busy machine a second intra-op thread only adds waiting (20x slower)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
