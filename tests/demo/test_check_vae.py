"""tools/demo_world/check_vae.py: a lossless VAE reads back every attribute, a destructive one does not."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "demo_world" / "check_vae.py"
check_vae = load_script(SCRIPT, "check_vae")


class Identity(torch.nn.Module):
    def encode(self, x, sample=False):
        return x

    def decode(self, z, num_frames=None):
        return z


class GreyOut(Identity):
    """Keeps brightness only: colours become grey, shapes and motion survive."""

    def decode(self, z, num_frames=None):
        return z.mean(dim=1, keepdim=True).expand_as(z)


def test_a_lossless_vae_reads_back_everything() -> None:
    report = check_vae.check(Identity(), (9, 48, 48), seed=0)
    assert report["clips"] == 75 and report["mean_abs_error_levels"] == 0
    assert report["colour_read_back"] == report["shape_read_back"] == report["motion_read_back"] == 1.0
    assert report["shape_kept_by_shape"] == {"circle": 25, "square": 25, "triangle": 25}


def test_a_vae_that_loses_colour_is_caught() -> None:
    report = check_vae.check(GreyOut(), (9, 48, 48), seed=0)
    assert report["colour_read_back"] <= 0.4 and report["mean_abs_error_levels"] > 5
