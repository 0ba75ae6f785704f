"""Embedders: patches, positions, timesteps and sizes, captions."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from opensora.errors import ConfigError


class Mlp(nn.Module):
    """Two linear layers with an activation between them (tanh-approximated GELU by default)."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class PatchEmbed3D(nn.Module):
    """Cuts a [B, C, T, H, W] latent into patches and projects each to a token: [B, N, hidden].

    Sizes that are not multiples of the patch size are zero-padded at the end.
    """

    def __init__(self, patch_size: tuple[int, int, int], in_channels: int, hidden_size: int) -> None:
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.proj = nn.Conv3d(in_channels, hidden_size, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pt, ph, pw = self.patch_size
        T, H, W = x.shape[-3:]
        x = F.pad(x, (0, -W % pw, 0, -H % ph, 0, -T % pt))
        x = self.proj(x)  # (B, hidden, T', H', W')
        return x.flatten(2).transpose(1, 2)  # (B, T'*H'*W', hidden)


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """[cos | sin] features of the scalar ``t`` [N] at geometric frequencies: [N, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float32) / half).to(t.device)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """[sin | cos] features of positions [N] at ``dim // 2`` geometric frequencies: [N, dim]."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2, device=positions.device).float() / dim))
    angles = positions[:, None] * inv_freq[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class TimestepEmbedder(nn.Module):
    """Scalar per sample (diffusion timestep, fps, size) -> [B, hidden] through an MLP."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freq = sinusoidal_embedding(t, self.frequency_embedding_size)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))


class SizeEmbedder(TimestepEmbedder):
    """Embeds one or more scalars per sample ([B] or [B, D]) and concatenates: [B, D*hidden].

    A batch of conditions smaller than ``batch_size`` is tiled (guidance doubles the batch).
    """

    def forward(self, s: torch.Tensor, batch_size: int) -> torch.Tensor:
        if s.ndim == 1:
            s = s[:, None]
        if s.shape[0] != batch_size:
            s = s.repeat(batch_size // s.shape[0], 1)
        B, D = s.shape
        emb = super().forward(s.reshape(B * D))  # (B*D, hidden)
        return emb.reshape(B, D * emb.shape[-1])


class PositionEmbedding2D(nn.Module):
    """2-D sin-cos position table for an H x W grid, stretched by resolution.

    Positions are divided by ``scale`` (the pixel resolution relative to the training base) and
    stretched to ``base_size`` so every aspect ratio spans the same range. The first half of the
    channels encodes the column (w) position, the second half the row, as released.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 4 != 0:
            raise ConfigError(f"2-D position embedding needs a hidden size divisible by 4, got {dim}")
        self.dim = dim

    def _sincos(self, positions: torch.Tensor) -> torch.Tensor:
        return sincos_1d(positions, self.dim // 2)

    def forward(
        self, h: int, w: int, scale: float = 1.0, base_size: int | None = None, device=None, dtype=None
    ) -> torch.Tensor:
        rows = torch.arange(h, device=device) / scale
        cols = torch.arange(w, device=device) / scale
        if base_size is not None:
            rows = rows * (base_size / h)
            cols = cols * (base_size / w)
        col_of_token = cols.repeat(h)  # token i*w + j -> column j
        row_of_token = rows.repeat_interleave(w)  # token i*w + j -> row i
        emb = torch.cat([self._sincos(col_of_token), self._sincos(row_of_token)], dim=-1)
        return emb[None].to(dtype or emb.dtype)  # (1, h*w, dim)

    def for_resolution(
        self, h: int, w: int, pixels: float, base_resolution: float, device=None, dtype=None
    ) -> torch.Tensor:
        """The table of an h x w patch grid of a picture of ``pixels`` pixels (height * width).

        Positions are divided by sqrt(pixels) / ``base_resolution`` (the training resolution's side)
        and stretched to the square grid of as many tokens, as the 1.1 and 1.2 models were trained.
        """
        scale = pixels**0.5 / base_resolution
        return self(h, w, scale=scale, base_size=round((h * w) ** 0.5), device=device, dtype=dtype)


class CaptionEmbedder(nn.Module):
    """Projects text-encoder states to the hidden size, with a learned null caption.

    ``y_embedding`` [L, C] is the unconditional caption: training replaces a caption with it at
    probability ``uncond_prob`` (caption dropout), and guidance uses it as the negative prompt.
    """

    def __init__(self, in_channels: int, hidden_size: int, uncond_prob: float, token_num: int) -> None:
        super().__init__()
        self.y_proj = Mlp(in_channels, hidden_size, hidden_size)
        self.register_buffer("y_embedding", torch.randn(token_num, in_channels) / in_channels**0.5)
        self.uncond_prob = uncond_prob

    def null(self, n: int) -> torch.Tensor:
        """The unconditional caption for ``n`` samples: [n, 1, L, C]."""
        return self.y_embedding[None, None].expand(n, 1, -1, -1)

    def drop(self, caption: torch.Tensor, drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Replace the captions of ``drop_ids`` (random at ``uncond_prob`` if None) by the null one."""
        if drop_ids is None:
            drop_ids = torch.rand(caption.shape[0], device=caption.device) < self.uncond_prob
        return torch.where(drop_ids.bool()[:, None, None, None], self.y_embedding.to(caption.dtype), caption)

    def forward(self, caption: torch.Tensor, train: bool, drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        if (train and self.uncond_prob > 0) or drop_ids is not None:
            caption = self.drop(caption, drop_ids)
        return self.y_proj(caption)
