"""Rotary position embedding along the sequence axis (temporal attention of STDiT2/3)."""

from __future__ import annotations

import torch
from torch import nn


def _rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    # channels are rotated in interleaved pairs (x0, x1) -> (-x1, x0)
    pairs = x.unflatten(-1, (-1, 2))
    first, second = pairs.unbind(-1)
    return torch.stack((-second, first), dim=-1).flatten(-2)


class RotaryEmbedding(nn.Module):
    """Rotates query/key channels by position-dependent angles.

    ``freqs`` is a non-trainable parameter (not a buffer) because the released checkpoints
    store it as ``rope.freqs``.
    """

    def __init__(self, dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
        self.freqs = nn.Parameter(freqs, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` [..., N, D] by the positions 0..N-1 of its second-to-last axis."""
        seq_len = x.shape[-2]
        positions = torch.arange(seq_len, device=x.device, dtype=x.dtype)
        angles = positions.to(self.freqs.dtype)[:, None] * self.freqs[None, :]  # (N, D/2)
        angles = angles.repeat_interleave(2, dim=-1)  # (N, D)
        rotated = x * angles.cos() + _rotate_pairs(x) * angles.sin()
        return rotated.to(x.dtype)
