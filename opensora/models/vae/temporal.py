"""The temporal VAE of Open-Sora 1.2: causal 3-D convolutions compressing time 4x.

It works on the latents of the per-frame spatial VAE. Convolutions are causal in time (padded
only at the front), so frame t of the output depends on frames <= t; clips whose length is not
a multiple of the compression are zero-padded at the front.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from opensora.models.modeling import ModelMixin
from opensora.models.vae.distributions import DiagonalGaussian

ACTIVATIONS = {"swish": nn.SiLU, "silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU}


class CausalConv3d(nn.Module):
    """3-D convolution padded 'same' in space and only at the front in time."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int],
        time_stride: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        kt, kh, kw = (kernel_size,) * 3 if isinstance(kernel_size, int) else kernel_size
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"spatial kernel sizes must be odd, got {kh}x{kw}")
        time_pad = kt - time_stride
        self.padding = (kw // 2, kw // 2, kh // 2, kh // 2, time_pad, 0)  # F.pad order: W, H, T
        self.conv = nn.Conv3d(in_channels, out_channels, (kt, kh, kw), stride=(time_stride, 1, 1), bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.padding))


class ResBlock(nn.Module):
    """GroupNorm -> act -> conv, twice, plus a (1x1x1-projected when channels change) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, num_groups: int, activation: type[nn.Module]) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups, in_channels)
        self.conv1 = CausalConv3d(in_channels, out_channels, 3, bias=False)
        self.norm2 = nn.GroupNorm(num_groups, out_channels)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3, bias=False)
        self.act = activation()
        if in_channels != out_channels:
            self.conv3 = CausalConv3d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = self.conv2(self.act(self.norm2(h)))
        shortcut = self.conv3(x) if hasattr(self, "conv3") else x
        return h + shortcut


@dataclass(frozen=True)
class TemporalShape:
    """The sizes the encoder and the decoder are both built from; level i has
    ``filters * channel_multipliers[i]`` channels and ``num_res_blocks`` residual blocks."""

    filters: int
    num_res_blocks: int
    channel_multipliers: tuple[int, ...]
    temporal_downsample: tuple[bool, ...]  # per level transition, from fine to coarse
    num_groups: int
    activation: type[nn.Module]

    def width(self, level: int) -> int:
        return self.filters * self.channel_multipliers[level]


class _TemporalCoder(nn.Module):
    """What the encoder and the decoder share: stacks of residual blocks, run with optional
    activation checkpointing, and a GroupNorm -> activation -> conv output."""

    def __init__(self, shape: TemporalShape) -> None:
        super().__init__()
        self.shape = shape
        self.grad_checkpointing = False

    def _res_stack(self, in_channels: int, out_channels: int) -> nn.ModuleList:
        shape = self.shape
        return nn.ModuleList(
            ResBlock(in_channels if i == 0 else out_channels, out_channels, shape.num_groups, shape.activation)
            for i in range(shape.num_res_blocks)
        )

    def _set_output(self, channels: int, out_channels: int, kernel_size: int) -> CausalConv3d:
        self.norm1 = nn.GroupNorm(self.shape.num_groups, channels)
        self.act = self.shape.activation()
        return CausalConv3d(channels, out_channels, kernel_size)

    def _run(self, blocks: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        """Apply ``blocks`` in turn; with checkpointing (and gradients on) each one's activations are
        recomputed in the backward pass instead of stored."""
        for block in blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


class TemporalEncoder(_TemporalCoder):
    def __init__(self, in_channels: int, out_channels: int, shape: TemporalShape) -> None:
        super().__init__(shape)
        self.conv_in = CausalConv3d(in_channels, shape.filters, 3, bias=False)
        self.block_res_blocks = nn.ModuleList()
        self.conv_blocks = nn.ModuleList()
        channels = shape.filters
        levels = len(shape.channel_multipliers)
        for level in range(levels):
            width = shape.width(level)
            self.block_res_blocks.append(self._res_stack(channels, width))
            channels = width
            if level < levels - 1:
                # levels without time compression keep an Identity so checkpoint indices line up
                down = shape.temporal_downsample[level]
                self.conv_blocks.append(CausalConv3d(width, width, 3, time_stride=2) if down else nn.Identity())
        self.res_blocks = self._res_stack(channels, channels)
        self.conv2 = self._set_output(channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for level, blocks in enumerate(self.block_res_blocks):
            x = self._run(blocks, x)
            if level < len(self.conv_blocks):
                x = self.conv_blocks[level](x)
        x = self._run(self.res_blocks, x)
        return self.conv2(self.act(self.norm1(x)))


class TemporalDecoder(_TemporalCoder):
    def __init__(self, in_channels: int, out_channels: int, shape: TemporalShape) -> None:
        super().__init__(shape)
        self.time_strides = [2 if down else 1 for down in shape.temporal_downsample]
        levels = len(shape.channel_multipliers)
        channels = shape.width(levels - 1)
        self.conv1 = CausalConv3d(in_channels, channels, 3)
        self.res_blocks = self._res_stack(channels, channels)
        stacks, convs = [None] * levels, [None] * (levels - 1)
        for level in reversed(range(levels)):
            width = shape.width(level)
            stacks[level] = self._res_stack(channels, width)
            channels = width
            if level > 0:
                # time upsampling: predict `stride` frames per frame as channels, then unfold them
                stride = self.time_strides[level - 1]
                convs[level - 1] = CausalConv3d(width, width * stride, 3) if stride > 1 else nn.Identity()
        self.block_res_blocks = nn.ModuleList(stacks)
        self.conv_blocks = nn.ModuleList(convs)
        self.conv_out = self._set_output(channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self._run(self.res_blocks, x)
        for level in reversed(range(len(self.block_res_blocks))):
            x = self._run(self.block_res_blocks[level], x)
            if level > 0:
                x = self.conv_blocks[level - 1](x)
                stride = self.time_strides[level - 1]
                B, C, T, H, W = x.shape
                # channels (C', stride) -> time (T, stride): depth-to-time
                x = x.view(B, C // stride, stride, T, H, W).permute(0, 1, 3, 2, 4, 5).reshape(B, -1, T * stride, H, W)
        return self.conv_out(self.act(self.norm1(x)))


class TemporalVAE(ModelMixin):
    """Compresses [B, C, T, H, W] latents in time by 2^(number of downsampling levels)."""

    def __init__(
        self,
        in_out_channels: int = 4,
        latent_embed_dim: int = 4,
        embed_dim: int = 4,
        filters: int = 128,
        num_res_blocks: int = 4,
        channel_multipliers: tuple[int, ...] = (1, 2, 2, 4),
        temporal_downsample: tuple[bool, ...] = (False, True, True),
        num_groups: int = 32,
        activation_fn: str = "swish",
    ) -> None:
        super().__init__()
        self.register_config(
            in_out_channels=in_out_channels, latent_embed_dim=latent_embed_dim, embed_dim=embed_dim, filters=filters,
            num_res_blocks=num_res_blocks, channel_multipliers=channel_multipliers,
            temporal_downsample=temporal_downsample, num_groups=num_groups, activation_fn=activation_fn,
        )  # fmt: skip
        if len(temporal_downsample) != len(channel_multipliers) - 1:
            raise ValueError(
                f"temporal_downsample needs {len(channel_multipliers) - 1} entries, got {len(temporal_downsample)}"
            )
        activation = ACTIVATIONS[activation_fn]
        self.time_factor = 2 ** sum(bool(d) for d in temporal_downsample)
        self.out_channels = embed_dim  # channels of the latent it produces
        shape = TemporalShape(
            filters, num_res_blocks, tuple(channel_multipliers), tuple(temporal_downsample), num_groups, activation
        )
        self.encoder = TemporalEncoder(in_out_channels, latent_embed_dim * 2, shape)
        self.quant_conv = CausalConv3d(2 * latent_embed_dim, 2 * embed_dim, 1)
        self.post_quant_conv = CausalConv3d(embed_dim, latent_embed_dim, 1)
        self.decoder = TemporalDecoder(latent_embed_dim, in_out_channels, shape)

    def freeze_encoder(self) -> None:
        """Train the decoder only: the latents it produces stay as they are."""
        self.encoder.requires_grad_(False)
        self.quant_conv.requires_grad_(False)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute residual blocks' activations in the backward pass instead of storing them."""
        self.encoder.grad_checkpointing = self.decoder.grad_checkpointing = enabled

    def front_padding(self, num_frames: int) -> int:
        return -num_frames % self.time_factor

    def latent_frames(self, num_frames: int) -> int:
        return (num_frames + self.front_padding(num_frames)) // self.time_factor

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        x = F.pad(x, (0, 0, 0, 0, self.front_padding(x.shape[2]), 0))
        return DiagonalGaussian(self.quant_conv(self.encoder(x)))

    def decode(self, z: torch.Tensor, num_frames: int) -> torch.Tensor:
        x = self.decoder(self.post_quant_conv(z))
        return x[:, :, self.front_padding(num_frames) :]
