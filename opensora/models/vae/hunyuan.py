"""Open-Sora 2.0's video VAE: a HunyuanVideo-style causal 3-D autoencoder (``hunyuan_vae``).

Videos [B, 3, T, H, W] in [-1, 1] with T = 4k + 1 (or a single image) become latents
[B, 16, (T - 1) // 4 + 1, H / 8, W / 8]. Every convolution is causal in time: it pads T at the
front only, by repeating the first frame, so frame t of a latent depends on frames <= t of the
input (GroupNorm statistics aside) and an image is a one-frame video. The mid blocks attend
frame-causally. Large inputs can be processed in overlapping tiles (in space and in time) whose
seams are cross-faded, exactly as the release did (see :meth:`AutoencoderKLCausal3D.set_tiling`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from opensora.models.modeling import ModelMixin
from opensora.models.presets import preset_factory
from opensora.models.vae.distributions import DiagonalGaussian
from opensora.models.vae.tiling import cross_fade, tile_spatially
from opensora.registry import MODELS

ACTIVATIONS: dict[str, type[nn.Module]] = {"silu": nn.SiLU, "swish": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU}
NORM_EPS = 1e-6  # every GroupNorm of the release (resnets, attention, output heads)
Stride = tuple[int, int, int]  # (T, H, W)


# --------------------------------------------------------------------------- building blocks


class CausalConv3d(nn.Module):
    """Conv3d padded 'same' in H and W (k // 2 each side) and by k - 1 at the front of T, all by
    replicating the border; the release names the inner convolution ``conv``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: Stride | int = 1) -> None:
        super().__init__()
        k = kernel_size
        self.padding = (k // 2, k // 2, k // 2, k // 2, k - 1, 0)  # F.pad order: W, H, T
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.padding):
            x = F.pad(x, self.padding, mode="replicate")
        return self.conv(x)


class CausalResnet(nn.Module):
    """GroupNorm, act, conv, GroupNorm, act, dropout, conv, plus a 1x1x1 shortcut when channels change."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, act: str, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=NORM_EPS)
        self.conv1 = CausalConv3d(in_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=NORM_EPS)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = CausalConv3d(out_channels, out_channels)
        self.act = ACTIVATIONS[act]()
        self.conv_shortcut = CausalConv3d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = self.conv2(self.dropout(self.act(self.norm2(h))))
        return h + (x if self.conv_shortcut is None else self.conv_shortcut(x))


class FrameCausalAttention(nn.Module):
    """One-head self-attention over all T*H*W positions, a position seeing every position of its
    own and earlier frames; GroupNorm inside, residual outside (diffusers ``Attention`` names)."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=NORM_EPS)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x.shape
        h = self.group_norm(x).flatten(2).transpose(1, 2)  # (B, T*H*W, C)
        q, k, v = (proj(h).unsqueeze(1) for proj in (self.to_q, self.to_k, self.to_v))  # (B, 1, L, C)
        mask = None
        if T > 1:
            frame = torch.arange(T, device=x.device).repeat_interleave(H * W)  # (L,)
            mask = frame[None, :] <= frame[:, None]  # (L_query, L_key): key frame <= query frame
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).squeeze(1)  # (B, L, C)
        h = self.to_out[1](self.to_out[0](h))
        return x + h.transpose(1, 2).reshape(B, C, T, H, W)


class MidBlock(nn.Module):
    """resnet, then (attention, resnet); attentions are registered first, as in the release."""

    def __init__(self, channels: int, groups: int, act: str, dropout: float, add_attention: bool) -> None:
        super().__init__()
        self.attentions = nn.ModuleList([FrameCausalAttention(channels, groups)] if add_attention else [])
        self.resnets = nn.ModuleList([CausalResnet(channels, channels, groups, act, dropout) for _ in range(2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        for attention in self.attentions:
            x = attention(x)
        return self.resnets[1](x)


class Downsample(nn.Module):
    """A strided causal conv: T -> (T - 1) // 2 + 1 when the time stride is 2, H -> (H - 1) // 2 + 1."""

    def __init__(self, channels: int, stride: Stride) -> None:
        super().__init__()
        self.conv = CausalConv3d(channels, channels, 3, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest upsampling, then a causal conv. The first frame is upsampled in H, W only and the
    others by the full factor, so a time factor of 2 maps T -> 2T - 1 (the encoder's inverse)."""

    def __init__(self, channels: int, factor: Stride) -> None:
        super().__init__()
        self.factor = factor
        self.conv = CausalConv3d(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = F.interpolate(x[:, :, 0], scale_factor=self.factor[1:], mode="nearest").unsqueeze(2)
        if x.shape[2] > 1:
            rest = F.interpolate(x[:, :, 1:], scale_factor=self.factor, mode="nearest")
            first = torch.cat([first, rest], dim=2)
        return self.conv(first)


class CoderBlock(nn.Module):
    """Resnets, then an optional down- or upsampler (``downsamplers.0`` / ``upsamplers.0``)."""

    def __init__(
        self, in_channels: int, out_channels: int, num_layers: int, groups: int, act: str, dropout: float,
        resample: Stride | None, up: bool,
    ) -> None:  # fmt: skip
        super().__init__()
        widths = [in_channels] + [out_channels] * num_layers
        self.resnets = nn.ModuleList(
            [CausalResnet(widths[i], out_channels, groups, act, dropout) for i in range(num_layers)]
        )
        sampler = None if resample is None else (Upsample if up else Downsample)(out_channels, resample)
        self.upsamplers = nn.ModuleList([sampler]) if up and sampler else None
        self.downsamplers = nn.ModuleList([sampler]) if not up and sampler else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        for sampler in self.upsamplers or self.downsamplers or ():
            x = sampler(x)
        return x


def resample_factors(num_blocks: int, time_ratio: int, space_ratio: int) -> list[Stride | None]:
    """Per block, the (T, H, W) factor of its down/upsampler (None: none). Space is resampled in
    the first log2(space_ratio) blocks, time in the log2(time_ratio) blocks before the last one."""
    space_steps, time_steps = int(math.log2(space_ratio)), int(math.log2(time_ratio))
    if 2**space_steps != space_ratio or 2**time_steps != time_ratio:
        raise ValueError(f"compression ratios must be powers of 2, got time {time_ratio}, space {space_ratio}")
    if space_steps > num_blocks or time_steps > num_blocks - 1:
        raise ValueError(
            f"{num_blocks} blocks cannot compress space {space_ratio}x (needs {space_steps} blocks) and "
            f"time {time_ratio}x (needs {time_steps} blocks before the last)"
        )
    factors = []
    for i in range(num_blocks):
        space = i < space_steps
        time = num_blocks - 1 - time_steps <= i < num_blocks - 1
        factors.append((2 if time else 1, 2 if space else 1, 2 if space else 1) if space or time else None)
    return factors


@dataclass(frozen=True)
class CoderShape:
    """What the encoder and decoder share: widths, depth, norms, activation, resampling."""

    block_out_channels: tuple[int, ...]
    layers_per_block: int
    groups: int
    act: str
    dropout: float
    mid_attention: bool
    factors: tuple[Stride | None, ...]


class _Coder(nn.Module):
    """Runs blocks in order, each recomputed in the backward pass when checkpointing is on."""

    grad_checkpointing = False

    def _run(self, blocks: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
        for block in blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x

    def _head(self, channels: int, out_channels: int, shape: CoderShape) -> None:
        self.conv_norm_out = nn.GroupNorm(shape.groups, channels, eps=NORM_EPS)
        self.conv_act = ACTIVATIONS[shape.act]()
        self.conv_out = CausalConv3d(channels, out_channels)


class Encoder(_Coder):
    def __init__(self, in_channels: int, out_channels: int, shape: CoderShape) -> None:
        super().__init__()
        widths = shape.block_out_channels
        self.conv_in = CausalConv3d(in_channels, widths[0])
        self.down_blocks = nn.ModuleList(
            CoderBlock(widths[max(i - 1, 0)], widths[i], shape.layers_per_block, shape.groups, shape.act,
                       shape.dropout, shape.factors[i], up=False)
            for i in range(len(widths))
        )  # fmt: skip
        self.mid_block = MidBlock(widths[-1], shape.groups, shape.act, shape.dropout, shape.mid_attention)
        self._head(widths[-1], out_channels, shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._run([self.conv_in, *self.down_blocks, self.mid_block], x)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))


class Decoder(_Coder):
    def __init__(self, in_channels: int, out_channels: int, shape: CoderShape) -> None:
        super().__init__()
        widths = shape.block_out_channels[::-1]
        self.conv_in = CausalConv3d(in_channels, widths[0])
        self.up_blocks = nn.ModuleList(
            CoderBlock(widths[max(i - 1, 0)], widths[i], shape.layers_per_block + 1, shape.groups, shape.act,
                       shape.dropout, shape.factors[i], up=True)
            for i in range(len(widths))
        )  # fmt: skip
        self.mid_block = MidBlock(widths[0], shape.groups, shape.act, shape.dropout, shape.mid_attention)
        self._head(widths[-1], out_channels, shape)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self._run([self.conv_in, self.mid_block, *self.up_blocks], z)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))


# --------------------------------------------------------------------------- tiling


@dataclass(frozen=True)
class Tiling:
    """When and how the VAE tiles (the release's rule; its 256px config has spatial tiling on).

    Spatial: an input wider or taller than ``sample_size`` pixels (a latent beyond sample_size / 8)
    is cut into tiles of that size at a stride of ``(1 - overlap)`` tiles; each tile's output is
    cross-faded into its upper and left neighbours over ``overlap`` of an output tile and cropped.
    Temporal: a video longer than ``sample_tsize`` frames (a latent beyond sample_tsize / 4 frames)
    is cut into tiles of sample_tsize + 1 frames, each tile after the first dropping its first
    output frame (its causal start). Temporal tiling is checked first; within a temporal tile the
    spatial rule applies again.
    """

    spatial: bool = False
    temporal: bool = False
    sample_size: int = 256
    sample_tsize: int = 64
    overlap: float = 0.25

    def __post_init__(self) -> None:
        if not 0 <= self.overlap < 1:
            raise ValueError(f"tile overlap factor must be in [0, 1), got {self.overlap}")
        if self.sample_size < 1 or self.sample_tsize < 1:
            raise ValueError(f"tile sizes must be positive, got {self.sample_size} px, {self.sample_tsize} frames")


def tile_temporally(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, stride: int, extent: int, keep: int
) -> torch.Tensor:
    """``fn`` on windows of ``tile + 1`` frames at ``stride``; every window but the first drops its
    first output frame, is blended over ``extent`` frames into the previous one and cropped to
    ``keep`` frames (the first window keeps ``keep + 1``)."""
    parts, prev = [], None
    for start in range(0, x.shape[2], stride):
        out = fn(x[:, :, start : start + tile + 1])
        if prev is None:
            parts.append(out[:, :, : keep + 1])
        else:
            out = out[:, :, 1:]
            cross_fade(prev, out, extent, dim=2)
            parts.append(out[:, :, :keep])
        prev = out
    return torch.cat(parts, dim=2)


# --------------------------------------------------------------------------- the model


@dataclass
class CausalVAEOutput:
    """One training pass: the posterior, the latent drawn from it (unscaled) and the reconstruction."""

    posterior: DiagonalGaussian
    z: torch.Tensor  # [B, latent_channels, T', h, w]
    x_rec: torch.Tensor  # [B, 3, 4 (T' - 1) + 1, 8h, 8w]


class AutoencoderKLCausal3D(ModelMixin):
    """Open-Sora 2.0's causal video VAE; the arguments are the release config's keys.

    ``out_channels`` is the number of image channels the decoder produces; the *attribute*
    ``out_channels`` is the latent channel count, as on every VAE of this package (what a
    diffusion model's input must match). Tiling and slicing are runtime switches (not saved with
    the weights): the constructor's flags are the defaults of :meth:`set_tiling`. Both tilings are
    on by default (the release's class has them off; its 256px config turns spatial tiling on): they
    engage only beyond a tile (``sample_size`` px, ``sample_tsize`` frames), so small inputs are
    coded whole and large ones in bounded memory, flat in the number of frames but for the output.
    """

    RUNTIME_KEYS = ("use_spatial_tiling", "use_temporal_tiling", "use_slicing", "sample_size", "sample_tsize",
                    "tile_overlap_factor")  # fmt: skip
    # "channel" is in the release's config but unused by its model
    IGNORED_CONFIG_KEYS = ("channel", "device_map", "torch_dtype")
    causal = True

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        latent_channels: int = 16,
        block_out_channels: Sequence[int] = (128, 256, 512, 512),
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        act_fn: str = "silu",
        time_compression_ratio: int = 4,
        spatial_compression_ratio: int = 8,
        mid_block_add_attention: bool = True,
        dropout: float = 0.0,
        scale_factor: float = 0.476986,
        shift_factor: float = 0.0,
        sample_size: int = 256,
        sample_tsize: int = 64,
        tile_overlap_factor: float = 0.25,
        use_spatial_tiling: bool = True,
        use_temporal_tiling: bool = True,
        use_slicing: bool = False,
    ) -> None:
        super().__init__()
        self.register_config(
            in_channels=in_channels, out_channels=out_channels, latent_channels=latent_channels,
            block_out_channels=list(block_out_channels), layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups, act_fn=act_fn, time_compression_ratio=time_compression_ratio,
            spatial_compression_ratio=spatial_compression_ratio, mid_block_add_attention=mid_block_add_attention,
            dropout=dropout, scale_factor=scale_factor, shift_factor=shift_factor, sample_size=sample_size,
            sample_tsize=sample_tsize, tile_overlap_factor=tile_overlap_factor, use_spatial_tiling=use_spatial_tiling,
            use_temporal_tiling=use_temporal_tiling, use_slicing=use_slicing,
        )  # fmt: skip
        if act_fn not in ACTIVATIONS:
            raise ValueError(f"act_fn {act_fn!r} is not one of {sorted(ACTIVATIONS)}")
        bad = [width for width in block_out_channels if width % norm_num_groups]
        if bad:
            raise ValueError(f"block_out_channels {bad} are not divisible by norm_num_groups={norm_num_groups}")
        factors = resample_factors(len(block_out_channels), time_compression_ratio, spatial_compression_ratio)
        shape = CoderShape(tuple(block_out_channels), layers_per_block, norm_num_groups, act_fn, dropout,
                           mid_block_add_attention, tuple(factors))  # fmt: skip
        self.encoder = Encoder(in_channels, 2 * latent_channels, shape)
        self.decoder = Decoder(latent_channels, out_channels, shape)
        self.quant_conv = nn.Conv3d(2 * latent_channels, 2 * latent_channels, kernel_size=1)
        self.post_quant_conv = nn.Conv3d(latent_channels, latent_channels, kernel_size=1)

        self.out_channels = latent_channels
        self.image_channels = in_channels
        self.temporal_compression = time_compression_ratio
        self.spatial_compression = spatial_compression_ratio
        self.scale_factor = scale_factor
        self.shift_factor = shift_factor
        self.default_tiling = Tiling(use_spatial_tiling, use_temporal_tiling, sample_size, sample_tsize,
                                     tile_overlap_factor)  # fmt: skip
        self._check_tiling(self.default_tiling)
        self.tiling = self.default_tiling
        self.use_slicing = use_slicing

    # ---- runtime settings ---------------------------------------------------------------------
    def set_tiling(
        self,
        enabled: bool | None = None,
        *,
        spatial: bool | None = None,
        temporal: bool | None = None,
        sample_size: int | None = None,
        sample_tsize: int | None = None,
        overlap_factor: float | None = None,
    ) -> None:
        """Switch tiling: ``enabled`` turns spatial and temporal tiling on or off together,
        ``spatial``/``temporal`` each alone; sizes in pixels / frames. What is not given returns
        to the constructor's setting, so ``set_tiling()`` restores it."""
        base = self.default_tiling
        if enabled is not None:
            base = replace(base, spatial=enabled, temporal=enabled)
        given = dict(spatial=spatial, temporal=temporal, sample_size=sample_size, sample_tsize=sample_tsize,
                     overlap=overlap_factor)  # fmt: skip
        tiling = replace(base, **{key: value for key, value in given.items() if value is not None})
        self._check_tiling(tiling)
        self.tiling = tiling

    def _check_tiling(self, tiling: Tiling) -> None:
        space, time = tiling.sample_size // self.spatial_compression, tiling.sample_tsize // self.temporal_compression
        for what, length in (("sample_size", tiling.sample_size), ("latent tile", space),
                             ("sample_tsize", tiling.sample_tsize), ("latent tile length", time)):  # fmt: skip
            if int(length * (1 - tiling.overlap)) < 1:
                raise ValueError(
                    f"tiles of {tiling.sample_size} px / {tiling.sample_tsize} frames with overlap {tiling.overlap}: "
                    f"a {what} of {length} is too short to advance by {1 - tiling.overlap:g} of it"
                )

    def set_slicing(self, enabled: bool = True) -> None:
        """Encode and decode the samples of a batch one at a time (same results, less memory)."""
        self.use_slicing = enabled

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them (training)."""
        self.encoder.grad_checkpointing = self.decoder.grad_checkpointing = enabled

    def freeze_encoder(self) -> None:
        """Train the decoder only: latents of the encoder, and anything trained on them, stay valid."""
        self.encoder.requires_grad_(False)
        self.quant_conv.requires_grad_(False)

    def last_decoder_layer(self) -> torch.Tensor:
        """The weight of the decoder's output convolution (where a GAN loss is balanced)."""
        return self.decoder.conv_out.conv.weight

    # ---- sizes --------------------------------------------------------------------------------
    def get_latent_size(self, size: Sequence[int | None]) -> list[int | None]:
        """Latent (T, H, W) of a video (T, H, W): [(T-1)//4+1, (H-1)//8+1, (W-1)//8+1]; None stays None."""
        ratios = (self.temporal_compression, self.spatial_compression, self.spatial_compression)
        return [None if n is None else (n - 1) // r + 1 for n, r in zip(size, ratios, strict=True)]

    def _latent_tile(self) -> tuple[int, int]:
        """Tile (H/W, T) sizes in latent positions."""
        return (
            self.tiling.sample_size // self.spatial_compression,
            self.tiling.sample_tsize // self.temporal_compression,
        )

    # ---- encode -------------------------------------------------------------------------------
    def posterior(self, x: torch.Tensor) -> DiagonalGaussian:
        """Video [B, 3, T, H, W] in [-1, 1] -> the diagonal Gaussian posterior (logvar clamped to [-30, 20])."""
        if x.ndim != 5 or x.shape[1] != self.image_channels:
            raise ValueError(f"expected a video [B, {self.image_channels}, T, H, W], got {list(x.shape)}")
        return DiagonalGaussian(self._moments(x))

    def encode(
        self,
        x: torch.Tensor,
        sample: bool = True,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Video [B, 3, T, H, W] -> scaled latent [B, C, (T-1)//4+1, (H-1)//8+1, (W-1)//8+1].

        The latent is a posterior sample (``noise`` given, or drawn with ``generator``), or its mean
        when ``sample`` is False; then ``scale_factor * (z - shift_factor)``.
        """
        posterior = self.posterior(x)
        if noise is not None:
            if not sample:
                raise ValueError("noise was given with sample=False: the mean has no noise")
            z = posterior.mean + posterior.std * noise
        else:
            z = posterior.sample(generator) if sample else posterior.mode()
        return self.scale_factor * (z - self.shift_factor)

    def _moments(self, x: torch.Tensor) -> torch.Tensor:
        tiling = self.tiling
        if tiling.temporal and x.shape[2] > tiling.sample_tsize:
            _, tile = self._latent_tile()
            stride = int(tiling.sample_tsize * (1 - tiling.overlap))
            extent = int(tile * tiling.overlap)
            return tile_temporally(self._moments_in_space, x, tiling.sample_tsize, stride, extent, tile - extent)
        return self._moments_in_space(x)

    def _moments_in_space(self, x: torch.Tensor) -> torch.Tensor:
        tiling = self.tiling
        if tiling.spatial and max(x.shape[-2:]) > tiling.sample_size:
            tile, _ = self._latent_tile()
            stride = int(tiling.sample_size * (1 - tiling.overlap))
            extent = int(tile * tiling.overlap)
            return tile_spatially(self._moments_whole, x, tiling.sample_size, stride, extent, tile - extent)
        if self.use_slicing and x.shape[0] > 1:
            return torch.cat([self._moments_whole(sample) for sample in x.split(1)])
        return self._moments_whole(x)

    def _moments_whole(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(x))  # (B, 2C, T', h, w): mean | logvar

    # ---- decode -------------------------------------------------------------------------------
    def decode(self, z: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Scaled latent [B, C, T', h, w] -> video [B, 3, 4(T'-1)+1, 8h, 8w], cut to ``num_frames`` if given."""
        if z.ndim != 5 or z.shape[1] != self.out_channels:
            raise ValueError(f"expected a latent [B, {self.out_channels}, T, H, W], got {list(z.shape)}")
        z = z / self.scale_factor + self.shift_factor
        if self.use_slicing and z.shape[0] > 1:
            x = torch.cat([self._decode_raw(sample) for sample in z.split(1)])
        else:
            x = self._decode_raw(z)
        if num_frames is not None:
            if num_frames > x.shape[2]:
                raise ValueError(f"{z.shape[2]} latent frames decode to {x.shape[2]} frames, not {num_frames}")
            x = x[:, :, :num_frames]
        return x

    def _decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        tiling = self.tiling
        _, tile = self._latent_tile()
        if tiling.temporal and z.shape[2] > tile:
            stride = int(tile * (1 - tiling.overlap))
            extent = int(tiling.sample_tsize * tiling.overlap)
            return tile_temporally(self._decode_in_space, z, tile, stride, extent, tiling.sample_tsize - extent)
        return self._decode_in_space(z)

    def _decode_in_space(self, z: torch.Tensor) -> torch.Tensor:
        tiling = self.tiling
        tile, _ = self._latent_tile()
        if tiling.spatial and max(z.shape[-2:]) > tile:
            stride = int(tile * (1 - tiling.overlap))
            extent = int(tiling.sample_size * tiling.overlap)
            return tile_spatially(self._decode_whole, z, tile, stride, extent, tiling.sample_size - extent)
        return self._decode_whole(z)

    def _decode_whole(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))

    def forward(
        self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None
    ) -> CausalVAEOutput:
        """The training pass: encode ``x``, draw z (or take the mean) and reconstruct it (no scaling)."""
        posterior = self.posterior(x)
        z = posterior.sample(generator) if sample else posterior.mode()
        return CausalVAEOutput(posterior, z, self._decode_raw(z))


MODELS.register("AutoencoderKLCausal3D", preset_factory(AutoencoderKLCausal3D))
MODELS.register("hunyuan_vae", preset_factory(AutoencoderKLCausal3D))
