"""Rotary position embedding from N-dimensional position ids (the (t, h, w) rope of Open-Sora 2.0).

Each position axis ``i`` owns ``axes_dim[i]`` channels of a head: its ``axes_dim[i] / 2`` frequencies
are ``theta ** (-2j / axes_dim[i])``, and the angle lists of all axes are concatenated into the
``head_dim / 2`` angles of a token. Frequency ``j`` rotates one pair of q/k channels, in one of two
layouts that checkpoints are trained with:

* rotate-half: the pair (j, j + head_dim/2), as the liger-kernel rope of the 2.0 release;
* interleaved: the pair (2j, 2j + 1), as Flux's reference rope.

The layouts differ by a fixed permutation of the channels inside each head, so weights can be moved
from one to the other (:func:`interleave_permutation`). The rotation is computed in float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from opensora.errors import ConfigError


def rope_angles(ids: torch.Tensor, axes_dim: Sequence[int], theta: float) -> torch.Tensor:
    """Angles [B, L, sum(axes_dim)/2] (float32) of position ids [B, L, len(axes_dim)].

    Computed in float64 where the device has it, so large positions keep their precision.
    """
    wide = torch.float32 if ids.device.type == "mps" else torch.float64
    parts = []
    for axis, dim in enumerate(axes_dim):
        exponents = torch.arange(0, dim, 2, device=ids.device, dtype=wide) / dim
        freqs = 1.0 / theta**exponents  # (dim/2,)
        parts.append(ids[..., axis].to(wide)[..., None] * freqs)  # (B, L, dim/2)
    return torch.cat(parts, dim=-1).float()


@dataclass(frozen=True)
class RopeTable:
    """cos/sin [B, 1, L, head_dim/2] of a sequence's angles, and the pair layout they rotate."""

    cos: torch.Tensor
    sin: torch.Tensor
    interleaved: bool

    @property
    def length(self) -> int:
        return self.cos.shape[2]

    def narrow(self, start: int, length: int) -> RopeTable:
        """The rows of tokens ``start .. start + length`` (e.g. the share of one process)."""
        return RopeTable(self.cos.narrow(2, start, length), self.sin.narrow(2, start, length), self.interleaved)

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate q or k [B, heads, L, head_dim]; (a, b) -> (a cos - b sin, a sin + b cos), float32 inside."""
        x32 = x.float()
        if self.interleaved:
            pairs = x32.unflatten(-1, (-1, 2))  # (B, heads, L, D/2, 2)
            a, b = pairs[..., 0], pairs[..., 1]
        else:
            a, b = x32.chunk(2, dim=-1)  # each (B, heads, L, D/2)
        rotated_a = a * self.cos - b * self.sin
        rotated_b = a * self.sin + b * self.cos
        if self.interleaved:
            out = torch.stack((rotated_a, rotated_b), dim=-1).flatten(-2)
        else:
            out = torch.cat((rotated_a, rotated_b), dim=-1)
        return out.to(x.dtype)


class RopeND(nn.Module):
    """Position ids [B, L, len(axes_dim)] -> a :class:`RopeTable`; holds no tensors."""

    def __init__(self, axes_dim: Sequence[int], theta: float = 10000.0, interleaved: bool = False) -> None:
        super().__init__()
        odd = [dim for dim in axes_dim if dim % 2]
        if odd:
            raise ConfigError(f"rope axes_dim {list(axes_dim)} has odd sizes {odd}; each axis needs channel pairs")
        self.axes_dim = tuple(int(dim) for dim in axes_dim)
        self.theta = float(theta)
        self.interleaved = interleaved

    @property
    def head_dim(self) -> int:
        return sum(self.axes_dim)

    def forward(self, ids: torch.Tensor) -> RopeTable:
        if ids.shape[-1] != len(self.axes_dim):
            raise ValueError(f"position ids have {ids.shape[-1]} axes, the rope expects {len(self.axes_dim)}")
        angles = rope_angles(ids, self.axes_dim, self.theta)[:, None]  # (B, 1, L, head_dim/2)
        return RopeTable(angles.cos(), angles.sin(), self.interleaved)


def interleave_permutation(head_dim: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Channel order taking a head from the rotate-half layout to the interleaved one.

    ``new = old[..., perm]`` with new channel 2j <- old j and new 2j+1 <- old j + head_dim/2;
    ``argsort(perm)`` goes back.
    """
    if head_dim % 2:
        raise ConfigError(f"rope needs an even head dimension, got {head_dim}")
    half = torch.arange(head_dim // 2, device=device)
    return torch.stack((half, half + head_dim // 2), dim=-1).flatten()
