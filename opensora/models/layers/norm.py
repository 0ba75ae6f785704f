"""Normalisation layers."""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dimension, computed in float32 (q/k norm of STDiT2/3)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(in_dtype)


def layer_norm(dim: int, eps: float = 1e-6, affine: bool = False, use_kernel: bool = False) -> nn.Module:
    """A LayerNorm; with ``use_kernel`` apex's fused kernel when apex is installed.

    Both variants have the same (possibly empty) parameters, so checkpoints load either way.
    """
    if use_kernel:
        try:
            from apex.normalization import FusedLayerNorm
        except ImportError:
            pass
        else:
            return FusedLayerNorm(dim, elementwise_affine=affine, eps=eps)
    return nn.LayerNorm(dim, eps=eps, elementwise_affine=affine)
