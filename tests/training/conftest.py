"""One small real dataset per test session, as media files and as extracted features; tests run on
one intra-op thread (tests/tiny.py::one_torch_thread)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny import one_torch_thread as one_torch_thread  # autouse: tiny models run on one thread
from tests.training.helpers import extract_features, write_dataset


@pytest.fixture(scope="session")
def media_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 videos of 20 frames and 2 images, 192 x 192, with captions: meta.csv."""
    return write_dataset(tmp_path_factory.mktemp("train_media"))


@pytest.fixture(scope="session")
def features_dir(media_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same samples encoded once by the tiny VAE at 5 frames of 64 x 64 (latents 4 x 2 x 8 x 8)."""
    return extract_features(media_csv, tmp_path_factory.mktemp("train_features") / "features")
