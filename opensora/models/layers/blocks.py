"""Pieces shared by the diffusion transformers: modulation, frame selection, final layer."""

from __future__ import annotations

import torch
from torch import nn


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation: x * (1 + scale) + shift."""
    return x * (1 + scale) + shift


def select_frames(x_mask: torch.Tensor, x: torch.Tensor, x_cond: torch.Tensor, T: int, S: int) -> torch.Tensor:
    """Per frame, take ``x`` where ``x_mask`` [B, T] is True and ``x_cond`` elsewhere.

    ``x`` and ``x_cond`` are token sequences [B, T*S, C] (frame-major).
    """
    B, N, C = x.shape
    keep = x_mask[:, :, None, None]
    out = torch.where(keep, x.view(B, T, S, C), x_cond.view(B, T, S, C))
    return out.view(B, N, C)


def tile_rows(x: torch.Tensor | None, batch_size: int) -> torch.Tensor | None:
    """Repeat ``x`` [b, ...] along the batch to [batch_size, ...] (guidance doubles the batch of
    the latents but may pass the text mask once); None stays None."""
    if x is None or x.shape[0] == batch_size:
        return x
    return x.repeat(batch_size // x.shape[0], *([1] * (x.ndim - 1)))


def attend_within_frames(attn: nn.Module, x: torch.Tensor, T: int, S: int) -> torch.Tensor:
    """Spatial self-attention: each frame's ``S`` tokens of ``x`` [B, T*S, C] attend to each other."""
    B, N, C = x.shape
    return attn(x.reshape(B * T, S, C)).view(B, N, C)  # via (B*T, S, C)


def attend_across_frames(attn: nn.Module, x: torch.Tensor, T: int, S: int) -> torch.Tensor:
    """Temporal self-attention: the ``T`` tokens of each position of ``x`` [B, T*S, C] attend to each other."""
    B, N, C = x.shape
    x = x.view(B, T, S, C).transpose(1, 2).reshape(B * S, T, C)  # (B*S, T, C)
    x = attn(x)
    return x.view(B, S, T, C).transpose(1, 2).reshape(B, N, C)


def unpatchify(
    x: torch.Tensor, grid: tuple[int, int, int], patch_size: tuple[int, int, int], out_channels: int
) -> torch.Tensor:
    """Tokens [B, T*H*W, pt*ph*pw*C] of a (T, H, W) patch grid -> a latent [B, C, T*pt, H*ph, W*pw]."""
    T, H, W = grid
    pt, ph, pw = patch_size
    B = x.shape[0]
    x = x.view(B, T, H, W, pt, ph, pw, out_channels)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)  # (B, C, T, pt, H, ph, W, pw)
    return x.reshape(B, out_channels, T * pt, H * ph, W * pw)


class DropPath(nn.Module):
    """Stochastic depth: drops a residual branch per sample during training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class FinalLayer(nn.Module):
    """Modulated LayerNorm and a linear map from tokens to patches of the output.

    With ``x_mask``, conditioning frames are modulated by ``t0`` (timestep 0). The released 1.1
    and 1.2 models normalised the already-modulated tokens on that branch; ``norm_twice`` keeps
    that behaviour, which their weights were trained with.
    """

    def __init__(self, hidden_size: int, num_patch: int, out_channels: int, norm_twice: bool = True) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, num_patch * out_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(2, hidden_size) / hidden_size**0.5)
        self.norm_twice = norm_twice

    def _modulated(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.scale_shift_table[None] + t[:, None]).chunk(2, dim=1)  # each (B, 1, C)
        return modulate(self.norm_final(x), shift, scale)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        x_mask: torch.Tensor | None = None,
        t0: torch.Tensor | None = None,
        T: int = 1,
        S: int = 1,
    ) -> torch.Tensor:
        out = self._modulated(x, t)
        if x_mask is not None:
            out_cond = self._modulated(out if self.norm_twice else x, t0)
            out = select_frames(x_mask, out, out_cond, T, S)
        return self.linear(out)


FREEZE_CHOICES = (None, "not_temporal", "text")


def freeze_parameters(model: nn.Module, freeze: str | None) -> None:
    """The 1.0/1.1 ``freeze`` option: "not_temporal" trains only temporal attention, "text" freezes cross-attention."""
    for name, param in model.named_parameters():
        if freeze == "not_temporal" and "attn_temp" not in name:
            param.requires_grad_(False)
        if freeze == "text" and "cross_attn" in name:
            param.requires_grad_(False)
