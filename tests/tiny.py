"""Tiny model configs shared by the tests (seconds on a CPU, same code paths as the full models)."""

from pathlib import Path

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
