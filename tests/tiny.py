"""Tiny model configs shared by the tests (seconds on a CPU, same code paths as the full models)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from opensora.config import read_config

# the tiny models of the CPU configs (configs/_base_/tiny.py), so tests and configs share one source
_TINY = read_config(Path(__file__).parents[1] / "configs" / "_base_" / "tiny.py")["_tiny"]

TINY_TEXT_ENCODER = _TINY["text_encoder"]
TINY_STDIT = {**_TINY["stdit"], "input_size": (3, 8, 8)}
TINY_STDIT2 = _TINY["stdit2"]
TINY_STDIT3 = _TINY["stdit3"]
TINY_VAE_2D = _TINY["vae_2d"]
TINY_VAE_TEMPORAL = _TINY["vae_temporal"]
TINY_VAE = _TINY["vae"]


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a busy machine: a second intra-op thread only adds waiting (20x slower).
    Autouse in each folder whose conftest imports it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def randomise_weights(model, seed: int = 0):
    """Redraw every parameter as the golden fixtures did (matrices N(0, 1/fan_in), norm scales
    1 + N(0, 0.1), biases N(0, 0.1)): the release initialisations zero several output layers,
    which would make outputs constant and tests of them vacuous. Returns the model."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not param.requires_grad and name.endswith("freqs"):
                continue  # rotary frequencies are constants, not weights
            noise = torch.randn(param.shape, generator=generator)
            if param.ndim >= 2:
                param.copy_(noise / (param[0].numel() ** 0.5))
            elif "norm" in name:
                param.copy_(1 + 0.1 * noise)
            else:
                param.copy_(0.1 * noise)
    return model


def fit_fixed_batch(model, loss_at, steps: int, lr: float) -> tuple[float, float]:
    """Train ``model`` with AdamW for ``steps`` steps on ``loss_at(step)``, the scalar loss of one
    fixed batch; returns the mean loss of the first four steps and of the last four."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        loss = loss_at(step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return sum(losses[:4]) / 4, sum(losses[-4:]) / 4
