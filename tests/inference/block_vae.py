"""A weight-free video autoencoder for tests: exact on still images made of 8 x 8 blocks.

Encode averages 8 x 8 pixel blocks and groups of 4 frames (the first frame repeated in front, as
the 1.2 VAE pads causally), giving 4 latent channels (RGB and a zero channel); decode repeats.
Random tiny VAEs reconstruct nothing, so "the conditioned frame matches the reference within the
VAE's reconstruction error" can only be tested with a VAE whose error is known: here it is 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from opensora.registry import MODELS


class BlockVAE(nn.Module):
    out_channels = 4

    def get_latent_size(self, size: tuple) -> list:
        T, H, W = size
        return [-(-T // 4), -(-H // 8), -(-W // 8)]

    def encode(self, x: torch.Tensor, sample: bool = False) -> torch.Tensor:
        B, _, T, H, W = x.shape
        pad = -T % 4
        x = torch.cat([x[:, :, :1].expand(-1, -1, pad, -1, -1), x], dim=2)
        z = F.avg_pool3d(x, kernel_size=(4, 8, 8), ceil_mode=True)  # (B, 3, T', H', W')
        return torch.cat([z, torch.zeros_like(z[:, :1])], dim=1)

    def decode(self, z: torch.Tensor, num_frames: int) -> torch.Tensor:
        x = z[:, :3].repeat_interleave(4, dim=2).repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)
        return x[:, :, -num_frames:]


MODELS.register("TestBlockVAE", BlockVAE)
