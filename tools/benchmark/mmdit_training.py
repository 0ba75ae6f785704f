"""What the MMDiT training benchmarks share (they run as scripts, so this sits beside them): the
model sizes, ``--set`` overrides, a synthetic batch and one training step through the engine."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import torch
from mmdit import make_inputs

from opensora.acceleration.engine import Engine
from opensora.config import parse_value, read_config
from opensora.errors import ConfigError
from opensora.models.mmdit import MMDIT_PRESETS, MMDiT

TINY_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "_base_" / "tiny.py"
STAGE1_LATENT = (16, 33, 32, 32)  # a 256x256, 129-frame clip through the 2.0 VAE: 8448 packed tokens


@dataclass(frozen=True)
class Size:
    """A model size and the per-sample input it is benchmarked with by default."""

    model: dict
    latent: tuple[int, int, int, int]  # C, T, H, W of the unpacked latent
    text_tokens: int
    about: str


def _tiny_model() -> dict:
    # the tiny MMDiT of the CPU configs and the tests, read from the one place it is defined
    return {k: v for k, v in read_config(TINY_CONFIG)["_tiny"]["mmdit"].items() if k != "type"}


_RELEASE = MMDIT_PRESETS["MMDiT-v2"]
SIZES = {
    "tiny": lambda: Size(_tiny_model(), (16, 2, 8, 8), 8, "the tiny test model: seconds on a CPU"),
    # fp32 weights of ~300 MB: big enough that sharding shows in a process's memory, small enough for a CPU
    "mid": lambda: Size(
        dict(_RELEASE, hidden_size=512, num_heads=8, axes_dim=[16, 24, 24], depth=4, depth_single_blocks=8),
        (16, 5, 16, 16), 128, "hidden 512, 4 double + 8 single blocks (~80M parameters)",
    ),
    # the release's layer shapes with 6 of its 57 blocks: its per-layer MFU on one GPU
    "wide": lambda: Size(
        dict(_RELEASE, depth=2, depth_single_blocks=4), STAGE1_LATENT, 512,
        "release widths, 2 double + 4 single blocks (~1.3B parameters; fits one 80 GB GPU)",
    ),
    "release": lambda: Size(
        dict(_RELEASE), STAGE1_LATENT, 512, "the 11.9B release (needs zero3 over several 80 GB GPUs)"
    ),
}  # fmt: skip


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are ConfigErrors, which :func:`opensora.config.run_cli` prints as one line."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message}")


def parse_sets(entries: list[str]) -> dict:
    """``["hidden_size=256", "axes_dim=[8,12,12]"]`` -> MMDiT arguments; an unknown name is an error."""
    known = [name for name in inspect.signature(MMDiT.__init__).parameters if name != "self"]
    overrides = {}
    for entry in entries:
        key, sep, text = entry.partition("=")
        if not sep or key not in known:
            raise ConfigError(f"--set {entry}: expected NAME=VALUE with NAME one of {', '.join(known)}")
        overrides[key] = parse_value(text)
    return overrides


def resolve_size(name: str, sets: list[str]) -> Size:
    """The size called ``name`` with ``--set`` overrides applied to its model."""
    if name not in SIZES:
        raise ConfigError(f"unknown size '{name}' (known: {', '.join(SIZES)})")
    size = SIZES[name]()
    return Size({**size.model, **parse_sets(sets)}, size.latent, size.text_tokens, size.about)


def parse_latent(text: str) -> tuple[int, int, int, int]:
    """The C,T,H,W of ``--latent`` ("16,5,16,16") as four positive integers."""
    try:
        latent = tuple(int(v) for v in text.split(","))
    except ValueError:
        latent = ()
    if len(latent) != 4 or min(latent) < 1:
        raise ConfigError(f"--latent {text}: expected four positive integers C,T,H,W")
    return latent


def synthetic_batch(
    config: Mapping, batch_size: int, latent: tuple[int, ...], text_tokens: int, device: torch.device
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Random fp32 inputs of an MMDiT of ``config`` (``model.config``) for ``batch_size`` samples,
    and a velocity target [B, N_img, in_channels]."""
    channels, patch = latent[0], config["patch_size"]
    if channels * patch**2 != config["in_channels"]:
        raise ConfigError(
            f"a latent of {channels} channels packs into {channels * patch**2}, but the model takes "
            f"in_channels={config['in_channels']}"
        )
    inputs = make_inputs([batch_size, *latent], text_tokens, config, device, torch.float32)
    return inputs, torch.randn_like(inputs["img"])


def train_step(engine: Engine, inputs: dict[str, torch.Tensor], target: torch.Tensor) -> float:
    """Forward, MSE to the target, backward, clip, AdamW step; the loss.

    The rectified-flow noising around it is elementwise and negligible next to the model.
    """
    with engine.autocast():
        prediction = engine.model(**inputs)  # (B, N_img, in_channels)
    loss = (prediction.float() - target).square().mean()
    engine.backward(loss)
    engine.clip_and_step(1.0)
    return loss.item()


def image_tokens(latent: tuple[int, ...], patch_size: int) -> int:
    """Packed tokens of a C, T, H, W latent: T * (H / p) * (W / p)."""
    _, T, H, W = latent
    return T * (H // patch_size) * (W // patch_size)
