"""Session-wide test settings: never reach the Hugging Face Hub, and start every test from one seed."""

import os

import pytest
import torch

# Set before any test imports transformers/diffusers/huggingface_hub, which read it at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(0)
