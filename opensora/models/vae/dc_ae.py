"""Open-Sora 2.0's Video DC-AE (``dc_ae``, model ``dc-ae-f32t4c128``): a deep-compression autoencoder.

Videos [B, 3, T, H, W] in [-1, 1] become latents [B, 128, T / 4, H / 32, W / 32] and back, with no
posterior: the encoder's output is the latent. The network is a stack of stages at halving
resolutions: residual convolution blocks in the wide early stages and EfficientViT blocks (ReLU
linear attention, then a gated MLP of convolutions) in the late ones. Every resampling step is a
learned convolution plus a parameter-free shortcut that moves pixels into channels and averages
them (down), or repeats channels and moves them back into pixels (up), so the convolutions only
learn a residual. Convolutions are non-causal (zero padding on every side of T, H and W); a
one-frame tensor is never resampled in time, so an image is a one-frame video.

Large inputs can be processed in overlapping tiles, in time and in space, whose seams are
cross-faded as the release does (:meth:`VideoDCAE.set_tiling`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from opensora.errors import ConfigError
from opensora.models.modeling import ModelMixin
from opensora.models.presets import preset_factory
from opensora.models.vae.tiling import cross_fade, tile_spatially
from opensora.registry import MODELS

NORM_EPS = 1e-5  # every RMSNorm of the release
HEAD_DIM = 32  # channels per head of the linear attention
MLP_EXPANSION = 4  # hidden width of the gated MLP, times the block width
ATTENTION_EPS = 1e-15  # added to the linear attention's normaliser
# block type -> kernel sizes of the attention's aggregated copies of q, k, v ("S5": one 5x5x5)
BLOCK_TYPES: dict[str, tuple[int, ...] | None] = {"ResBlock": None, "EViT_GLU": (), "EViTS5_GLU": (5,)}
Factors = tuple[int, int, int]  # (T, H, W)


# --------------------------------------------------------------------------- layers


class RMSNorm3d(nn.Module):
    """RMSNorm over the channels of [B, C, T, H, W], statistics in float32, then weight and bias."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = torch.sqrt(x.float().square().mean(dim=1, keepdim=True) + NORM_EPS)
        x = (x / rms).to(x.dtype)
        return x * self.weight.view(1, -1, 1, 1, 1) + self.bias.view(1, -1, 1, 1, 1)


class ConvLayer(nn.Module):
    """A zero-padded ('same' at stride 1) 3-D convolution ``conv``, then optional ``norm`` and activation."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: Factors | int = 1, *,
        groups: int = 1, bias: bool = True, norm: bool = False, act: type[nn.Module] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.conv = nn.Conv3d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups, bias=bias
        )
        self.norm = RMSNorm3d(out_channels) if norm else None
        self.act = act() if act is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return x if self.act is None else self.act(x)


class Residual(nn.Module):
    """``main(x) + shortcut(x)``; the shortcuts here have no parameters (identity, or resampling)."""

    def __init__(self, main: nn.Module, shortcut: nn.Module | None = None) -> None:
        super().__init__()
        self.main = main
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.shortcut(x)


class OpSequence(nn.Module):
    """Modules run in order, held in ``op_list`` (the release's name)."""

    def __init__(self, ops: Sequence[nn.Module]) -> None:
        super().__init__()
        self.op_list = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.op_list:
            x = op(x)
        return x


# --------------------------------------------------------------------------- parameter-free shortcuts


def space_to_channel(x: torch.Tensor, factors: Factors) -> torch.Tensor:
    """[B, C, T, H, W] -> [B, C * ft * fh * fw, T / ft, H / fh, W / fw]; channel c * ft*fh*fw +
    (i * fh + j) * fw + k holds position (i, j, k) of each block (pixel unshuffle in 3-D)."""
    ft, fh, fw = factors
    B, C, T, H, W = x.shape
    x = x.reshape(B, C, T // ft, ft, H // fh, fh, W // fw, fw)
    x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)  # (B, C, ft, fh, fw, T', H', W')
    return x.reshape(B, C * ft * fh * fw, T // ft, H // fh, W // fw)


def channel_to_space(x: torch.Tensor, factors: Factors) -> torch.Tensor:
    """The inverse of :func:`space_to_channel`."""
    ft, fh, fw = factors
    B, C, T, H, W = x.shape
    c = C // (ft * fh * fw)
    x = x.reshape(B, c, ft, fh, fw, T, H, W)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)  # (B, c, T, ft, H, fh, W, fw)
    return x.reshape(B, c, T * ft, H * fh, W * fw)


def _resample_factors(x: torch.Tensor, space: int, temporal: bool) -> Factors:
    """(T, H, W) factors of one resampling step: time too if asked for and there is more than one frame."""
    return (space if temporal and x.shape[2] != 1 else 1, space, space)


class SpaceToChannelAverage(nn.Module):
    """Down-sampling shortcut: space-to-channel by ``factor`` in H, W (and T), then the mean of each
    group of consecutive channels, giving ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, factor: int = 2, temporal: bool = False) -> None:
        super().__init__()
        for moved in {factor**2, factor**3 if temporal else factor**2}:
            if in_channels * moved % out_channels:
                raise ValueError(f"cannot average {in_channels} x {moved} channels into {out_channels}")
        self.out_channels, self.factor, self.temporal = out_channels, factor, temporal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = space_to_channel(x, _resample_factors(x, self.factor, self.temporal))
        B, C, T, H, W = x.shape
        return x.reshape(B, self.out_channels, C // self.out_channels, T, H, W).mean(dim=2)


class ChannelToSpaceRepeat(nn.Module):
    """Up-sampling shortcut: each channel repeated, then channel-to-space by ``factor`` in H, W (and T)."""

    def __init__(self, in_channels: int, out_channels: int, factor: int = 2, temporal: bool = False) -> None:
        super().__init__()
        for moved in {factor**2, factor**3 if temporal else factor**2}:
            if out_channels * moved % in_channels:
                raise ValueError(f"cannot repeat {in_channels} channels into {out_channels} x {moved}")
        self.in_channels, self.out_channels, self.factor, self.temporal = in_channels, out_channels, factor, temporal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factors = _resample_factors(x, self.factor, self.temporal)
        repeats = self.out_channels * math.prod(factors) // self.in_channels
        return channel_to_space(x.repeat_interleave(repeats, dim=1), factors)


class InterpolateConv(nn.Module):
    """Nearest up-sampling by 2 in H, W (and T unless there is one frame), then a 3x3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int, temporal: bool) -> None:
        super().__init__()
        self.temporal = temporal
        self.conv = ConvLayer(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=_resample_factors(x, 2, self.temporal), mode="nearest")
        return self.conv(x)


def downsample_block(in_channels: int, out_channels: int, temporal: bool) -> Residual:
    """A stride-2 conv (stride 1 in T unless ``temporal``) plus the averaging shortcut."""
    conv = ConvLayer(in_channels, out_channels, 3, stride=(2 if temporal else 1, 2, 2))
    return Residual(conv, SpaceToChannelAverage(in_channels, out_channels, 2, temporal))


def upsample_block(in_channels: int, out_channels: int, temporal: bool) -> Residual:
    return Residual(InterpolateConv(in_channels, out_channels, temporal),
                    ChannelToSpaceRepeat(in_channels, out_channels, 2, temporal))  # fmt: skip


# --------------------------------------------------------------------------- blocks


class ResConvs(nn.Module):
    """The residual branch of a ResBlock: conv (bias) -> SiLU -> conv (no bias) -> RMSNorm."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, act=nn.SiLU)
        self.conv2 = ConvLayer(channels, channels, bias=False, norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class LinearAttention(nn.Module):
    """ReLU linear attention over all T*H*W positions (the release's LiteMLA).

    q, k, v come from a 1x1x1 conv, in heads of ``HEAD_DIM`` channels laid out [q | k | v] per head.
    Each aggregation scale adds a copy of them mixed locally (a depthwise k x k x k conv, then a
    1x1x1 conv within each head's q, k or v), so there are (1 + scales) times the heads. Per head,
    out = V K^T Q / (1^T K^T Q + eps) with Q = relu(q), K = relu(k); the heads are then projected
    back (1x1x1 conv, no bias, RMSNorm).
    """

    def __init__(self, channels: int, scales: tuple[int, ...]) -> None:
        super().__init__()
        heads = channels // HEAD_DIM
        inner = heads * HEAD_DIM
        self.qkv = ConvLayer(channels, 3 * inner, 1, bias=False)
        self.aggreg = nn.ModuleList(
            nn.Sequential(
                nn.Conv3d(3 * inner, 3 * inner, k, padding=k // 2, groups=3 * inner, bias=False),
                nn.Conv3d(3 * inner, 3 * inner, 1, groups=3 * heads, bias=False),
            )
            for k in scales
        )
        self.proj = ConvLayer(inner * (1 + len(scales)), channels, 1, bias=False, norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        qkv = torch.cat([qkv, *(aggregate(qkv) for aggregate in self.aggreg)], dim=1)
        return self.proj(self.attend(qkv).to(qkv.dtype))

    @staticmethod
    def attend(qkv: torch.Tensor) -> torch.Tensor:
        B, _, T, H, W = qkv.shape
        if qkv.dtype == torch.float16:
            qkv = qkv.float()
        qkv = qkv.reshape(B, -1, 3 * HEAD_DIM, T * H * W)  # (B, heads, 3 * d, N)
        q, k, v = qkv.split(HEAD_DIM, dim=2)  # (B, heads, d, N) each
        q, k = F.relu(q), F.relu(k)
        v = F.pad(v, (0, 0, 0, 1), value=1.0)  # a row of ones: its output is the normaliser
        out = (v @ k.transpose(-1, -2)) @ q  # (B, heads, d + 1, N)
        out = out.float()
        out = out[:, :, :-1] / (out[:, :, -1:] + ATTENTION_EPS)
        return out.reshape(B, -1, T, H, W)  # (B, heads * d, T, H, W)


class GLUMBConv(nn.Module):
    """Gated MLP of convolutions: 1x1x1 up to 2 x hidden (SiLU), depthwise 3x3x3, split into value and
    gate, value * SiLU(gate), 1x1x1 down (no bias, RMSNorm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = channels * MLP_EXPANSION
        self.inverted_conv = ConvLayer(channels, 2 * hidden, 1, act=nn.SiLU)
        self.depth_conv = ConvLayer(2 * hidden, 2 * hidden, 3, groups=2 * hidden)
        self.point_conv = ConvLayer(hidden, channels, 1, bias=False, norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.depth_conv(self.inverted_conv(x)).chunk(2, dim=1)
        return self.point_conv(value * F.silu(gate))


class EViTBlock(nn.Module):
    """x + attention(x), then x + gated MLP(x)."""

    def __init__(self, channels: int, scales: tuple[int, ...]) -> None:
        super().__init__()
        self.context_module = Residual(LinearAttention(channels, scales))
        self.local_module = Residual(GLUMBConv(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_module(self.context_module(x))


def make_block(block_type: str, channels: int) -> nn.Module:
    scales = BLOCK_TYPES[block_type]
    return Residual(ResConvs(channels)) if scales is None else EViTBlock(channels, scales)


# --------------------------------------------------------------------------- encoder and decoder


class _Coder(nn.Module):
    """Runs its parts in order, each recomputed in the backward pass when checkpointing is on."""

    grad_checkpointing = False

    def _run(self, parts: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
        for part in parts:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(part, x, use_reentrant=False)
            else:
                x = part(x)
        return x


class Encoder(_Coder):
    """project_in conv, stages (blocks, then a downsample block in all but the last), then a conv to
    the latent channels plus the mean over groups of consecutive channels of its input."""

    def __init__(
        self, in_channels: int, latent_channels: int, widths: Sequence[int], depths: Sequence[int],
        block_types: Sequence[str], temporal: Sequence[bool],
    ) -> None:  # fmt: skip
        super().__init__()
        self.project_in = ConvLayer(in_channels, widths[0])
        stages = []
        for i, (width, depth, kind) in enumerate(zip(widths, depths, block_types)):
            ops = [make_block(kind, width) for _ in range(depth)]
            if i < len(widths) - 1:
                ops.append(downsample_block(width, widths[i + 1], temporal[i]))
            stages.append(OpSequence(ops))
        self.stages = nn.ModuleList(stages)
        self.project_out = Residual(OpSequence([ConvLayer(widths[-1], latent_channels)]),
                                    SpaceToChannelAverage(widths[-1], latent_channels, factor=1))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run([self.project_in, *self.stages, self.project_out], x)


class Decoder(_Coder):
    """The mirror image: a conv from the latent plus each latent channel repeated, stages from the
    deepest (an upsample block first in all but the deepest, then blocks), then RMSNorm, ReLU, conv."""

    def __init__(
        self, out_channels: int, latent_channels: int, widths: Sequence[int], depths: Sequence[int],
        block_types: Sequence[str], temporal: Sequence[bool],
    ) -> None:  # fmt: skip
        super().__init__()
        self.project_in = Residual(ConvLayer(latent_channels, widths[-1]),
                                   ChannelToSpaceRepeat(latent_channels, widths[-1], factor=1))  # fmt: skip
        stages = []
        for i, (width, depth, kind) in enumerate(zip(widths, depths, block_types)):
            ops = [upsample_block(widths[i + 1], width, temporal[i])] if i < len(widths) - 1 else []
            stages.append(OpSequence(ops + [make_block(kind, width) for _ in range(depth)]))
        self.stages = nn.ModuleList(stages)  # indexed like the encoder's: stage 0 runs last
        self.project_out = OpSequence([RMSNorm3d(widths[0]), nn.ReLU(), ConvLayer(widths[0], out_channels)])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self._run([self.project_in, *reversed(self.stages), self.project_out], z)


# --------------------------------------------------------------------------- tiling


@dataclass(frozen=True)
class Tiling:
    """When and how the DC-AE tiles (the release's rule; its configs turn both tilings on).

    Encode: a video longer than ``temporal_tile_size`` frames is cut into tiles of that many frames
    at a stride of (1 - overlap) tiles, each tile's latent cross-faded into the previous one over
    ``int(latent tile * overlap)`` frames and cut to latent tile - that; within each temporal tile
    (or the whole video), frames wider or taller than ``spatial_tile_size`` are tiled the same way
    in H and W (raster order, each tile faded into its upper and left neighbours). Decode mirrors
    it: latent tiles of ``latent_*_tile_size`` positions, fades and cuts in pixels and frames.
    There is no special first tile. A trailing temporal tile of one latent frame would decode to one
    frame (the release's videos are 3 frames short there); here the last latent frame is repeated so
    that it decodes to its 4 frames. The latent tile sizes are the pixel ones divided by the compression unless given.
    """

    spatial: bool
    temporal: bool
    spatial_tile_size: int  # pixels
    temporal_tile_size: int  # frames
    overlap: float
    latent_spatial_tile_size: int
    latent_temporal_tile_size: int


def tile_time(fn: Callable, x: torch.Tensor, tile: int, stride: int, extent: int, keep: int) -> torch.Tensor:
    """``fn`` on windows of ``tile`` frames every ``stride``; each output fades into the previous one
    over ``extent`` frames and is cut to its first ``keep``."""
    parts, prev = [], None
    for start in range(0, x.shape[2], stride):
        out = fn(x[:, :, start : start + tile])
        if prev is not None:
            cross_fade(prev, out, extent, dim=2)
        parts.append(out[:, :, :keep])
        prev = out
    return torch.cat(parts, dim=2)


# --------------------------------------------------------------------------- the model


@dataclass
class DCAEOutput:
    """One training pass: the latent (unscaled) and the reconstruction."""

    z: torch.Tensor  # [B, latent_channels, T / 4, H / 32, W / 32]
    x_rec: torch.Tensor  # [B, 3, T, H, W]


def _as_list(value: str | Sequence, n: int, name: str) -> list:
    values = [value] * n if isinstance(value, str) else list(value)
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries for {n} stages (width_list has {n})")
    return values


class VideoDCAE(ModelMixin):
    """Open-Sora 2.0's Video DC-AE (the release's ``DCAE``); the defaults are ``dc-ae-f32t4c128``.

    Stage i has width ``width_list[i]`` and ``*_depth_list[i]`` blocks of type ``*_block_types[i]``
    ("ResBlock", "EViT_GLU" or "EViTS5_GLU"); between stage i and i + 1 space is halved (doubled in
    the decoder), and time too where ``temporal_downsample[i]`` / ``temporal_upsample[i]`` is set.
    So ``spatial_compression_ratio`` must be 2^(stages - 1) and ``time_compression_ratio`` 2^(number
    of temporal steps); both are checked. ``scaling_factor`` (None: 1) divides the latent on encode
    and multiplies it on decode.

    The attribute ``out_channels`` is the latent channel count, as on every VAE of this package.
    Tiling is a runtime switch (not saved with the weights): the constructor's tile settings are
    the defaults of :meth:`set_tiling`. Both tilings are on by default (the release's class has them
    off and its configs turn them on): they engage only beyond a tile (256 px, 32 frames), so small
    inputs are coded whole and large ones in bounded memory.
    """

    RUNTIME_KEYS = ("use_spatial_tiling", "use_temporal_tiling", "spatial_tile_size", "temporal_tile_size",
                    "tile_overlap_factor")  # fmt: skip
    IGNORED_CONFIG_KEYS = ("device_map", "torch_dtype")
    causal = False

    def __init__(
        self,
        in_channels: int = 3,
        latent_channels: int = 128,
        width_list: Sequence[int] = (128, 256, 512, 512, 1024, 1024),
        encoder_depth_list: Sequence[int] = (2, 2, 2, 3, 3, 3),
        decoder_depth_list: Sequence[int] = (3, 3, 3, 3, 3, 3),
        encoder_block_types: str | Sequence[str] = ("ResBlock",) * 3 + ("EViTS5_GLU",) * 3,
        decoder_block_types: str | Sequence[str] = ("ResBlock",) * 3 + ("EViTS5_GLU",) * 3,
        temporal_downsample: Sequence[bool] = (False, False, False, True, True, False),
        temporal_upsample: Sequence[bool] = (False, False, False, True, True, False),
        time_compression_ratio: int = 4,
        spatial_compression_ratio: int = 32,
        scaling_factor: float | None = None,
        use_spatial_tiling: bool = True,
        use_temporal_tiling: bool = True,
        spatial_tile_size: int = 256,
        temporal_tile_size: int = 32,
        tile_overlap_factor: float = 0.25,
    ) -> None:
        super().__init__()
        n = len(width_list)
        encoder_block_types = _as_list(encoder_block_types, n, "encoder_block_types")
        decoder_block_types = _as_list(decoder_block_types, n, "decoder_block_types")
        lists = dict(encoder_depth_list=encoder_depth_list, decoder_depth_list=decoder_depth_list,
                     temporal_downsample=temporal_downsample, temporal_upsample=temporal_upsample)  # fmt: skip
        lists = {name: _as_list(values, n, name) for name, values in lists.items()}
        self.register_config(
            in_channels=in_channels, latent_channels=latent_channels, width_list=list(width_list),
            encoder_block_types=encoder_block_types, decoder_block_types=decoder_block_types, **lists,
            time_compression_ratio=time_compression_ratio, spatial_compression_ratio=spatial_compression_ratio,
            scaling_factor=scaling_factor,
        )  # fmt: skip
        self._check_architecture()
        cfg = self.config
        self.encoder = Encoder(in_channels, latent_channels, width_list, cfg["encoder_depth_list"],
                               encoder_block_types, cfg["temporal_downsample"])  # fmt: skip
        self.decoder = Decoder(in_channels, latent_channels, width_list, cfg["decoder_depth_list"],
                               decoder_block_types, cfg["temporal_upsample"])  # fmt: skip

        self.out_channels = latent_channels
        self.image_channels = in_channels
        self.temporal_compression = time_compression_ratio
        self.spatial_compression = spatial_compression_ratio
        self.scaling_factor = scaling_factor
        self.default_tiling = self._resolve_tiling(
            use_spatial_tiling, use_temporal_tiling, spatial_tile_size, temporal_tile_size, tile_overlap_factor
        )
        self.tiling = self.default_tiling

    def _check_architecture(self) -> None:
        cfg = self.config
        widths = cfg["width_list"]
        if not widths:
            raise ValueError("width_list must name at least one stage")
        for part in ("encoder", "decoder"):
            depths, kinds = cfg[f"{part}_depth_list"], cfg[f"{part}_block_types"]
            if any(depth < 1 for depth in depths):
                raise ValueError(f"{part}_depth_list {depths}: every stage needs at least one block")
            unknown = sorted(set(kinds) - set(BLOCK_TYPES))
            if unknown:
                raise ValueError(f"{part}_block_types {unknown} are not among {list(BLOCK_TYPES)}")
            narrow = [w for w, kind in zip(widths, kinds) if BLOCK_TYPES[kind] is not None and w % HEAD_DIM]
            if narrow:
                raise ValueError(f"{part} attention stages of width {narrow} are not multiples of the head size "
                                 f"{HEAD_DIM}")  # fmt: skip
        if cfg["spatial_compression_ratio"] != 2 ** (len(widths) - 1):
            raise ValueError(f"{len(widths)} stages compress space {2 ** (len(widths) - 1)}x, "
                             f"not spatial_compression_ratio={cfg['spatial_compression_ratio']}")  # fmt: skip
        for name in ("temporal_downsample", "temporal_upsample"):
            steps = cfg[name]
            if steps[-1]:
                raise ValueError(f"{name} {steps}: the last stage has no resampling, its entry must be False")
            if cfg["time_compression_ratio"] != 2 ** sum(map(bool, steps)):
                raise ValueError(f"{name} {steps} compresses time {2 ** sum(map(bool, steps))}x, "
                                 f"not time_compression_ratio={cfg['time_compression_ratio']}")  # fmt: skip
        if cfg["scaling_factor"] is not None and not cfg["scaling_factor"] > 0:
            raise ValueError(f"scaling_factor must be positive or None, got {cfg['scaling_factor']}")

    # ---- runtime settings ---------------------------------------------------------------------
    def set_tiling(
        self,
        enabled: bool | None = None,
        *,
        spatial: bool | None = None,
        temporal: bool | None = None,
        spatial_tile_size: int | None = None,
        temporal_tile_size: int | None = None,
        overlap_factor: float | None = None,
        latent_spatial_tile_size: int | None = None,
        latent_temporal_tile_size: int | None = None,
    ) -> None:
        """Switch tiling: ``enabled`` turns spatial and temporal tiling on or off together,
        ``spatial``/``temporal`` each alone; tile sizes in pixels / frames. What is not given returns
        to the constructor's setting, so ``set_tiling()`` restores it.

        The latent tile sizes follow the pixel ones (divided by the compression) unless given. The
        release's ``dc_ae`` factory sets the pixel sizes on a model built with 256 px / 32 frames,
        so its latent tiles stay 8 x 8 positions and 8 frames whatever sizes it is given (the same
        for its 256 / 32 defaults); ``latent_spatial_tile_size=8, latent_temporal_tile_size=8``
        reproduces that for other sizes.
        """
        base = self.default_tiling
        switches = dict(spatial=base.spatial, temporal=base.temporal)
        if enabled is not None:
            switches = dict(spatial=enabled, temporal=enabled)
        switches = {key: value if given is None else given
                    for (key, value), given in zip(switches.items(), (spatial, temporal))}  # fmt: skip
        self.tiling = self._resolve_tiling(
            switches["spatial"], switches["temporal"],
            base.spatial_tile_size if spatial_tile_size is None else spatial_tile_size,
            base.temporal_tile_size if temporal_tile_size is None else temporal_tile_size,
            base.overlap if overlap_factor is None else overlap_factor,
            latent_spatial_tile_size, latent_temporal_tile_size,
        )  # fmt: skip

    def _resolve_tiling(
        self, spatial: bool, temporal: bool, size: int, frames: int, overlap: float,
        latent_size: int | None = None, latent_frames: int | None = None,
    ) -> Tiling:  # fmt: skip
        tiling = Tiling(
            bool(spatial), bool(temporal), size, frames, overlap,
            size // self.spatial_compression if latent_size is None else latent_size,
            frames // self.temporal_compression if latent_frames is None else latent_frames,
        )  # fmt: skip
        if not 0 <= overlap < 1:
            raise ValueError(f"tile overlap factor must be in [0, 1), got {overlap}")
        lengths = (("spatial_tile_size", size), ("temporal_tile_size", frames),
                   ("latent spatial tile", tiling.latent_spatial_tile_size),
                   ("latent temporal tile", tiling.latent_temporal_tile_size))  # fmt: skip
        for what, length in lengths:
            if int(length * (1 - overlap)) < 1:
                raise ValueError(f"a {what} of {length} with overlap {overlap} is too short to advance "
                                 f"by {1 - overlap:g} of it")  # fmt: skip
        # every encoded tile must start on the latent grid (the encoder needs whole blocks)
        grids = ((spatial, "spatial_tile_size", size, self.spatial_compression),
                 (temporal, "temporal_tile_size", frames, self.temporal_compression))  # fmt: skip
        for on, what, length, ratio in grids:
            stride = int(length * (1 - overlap))
            if on and (length % ratio or stride % ratio):
                raise ValueError(f"{what} {length} with overlap {overlap} gives tiles of {length} every {stride}; "
                                 f"both must be multiples of the compression {ratio}")  # fmt: skip
        return tiling

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each stage's activations in the backward pass instead of storing them (training)."""
        self.encoder.grad_checkpointing = self.decoder.grad_checkpointing = enabled

    def freeze_encoder(self) -> None:
        """Train the decoder only: latents of the encoder, and anything trained on them, stay valid."""
        self.encoder.requires_grad_(False)

    def last_decoder_layer(self) -> torch.Tensor:
        """The weight of the decoder's output convolution (where a GAN loss is balanced)."""
        return self.decoder.project_out.op_list[2].conv.weight

    # ---- sizes --------------------------------------------------------------------------------
    def get_latent_size(self, size: Sequence[int | None]) -> list[int | None]:
        """Latent (T, H, W) of a video (T, H, W): the release's [(T-1)//4+1, (H-1)//32+1, (W-1)//32+1],
        i.e. ceil(n / ratio); None stays None.

        This is the encoded size of every video: sizes the encoder cannot take (5, 33 or 129 frames,
        336 px) are padded first (:meth:`pad_to_codable`), and ``decode(z, num_frames=T)`` cuts the
        decoded video back to T frames (the caller crops H and W).
        """
        ratios = (self.temporal_compression, self.spatial_compression, self.spatial_compression)
        return [None if n is None else (n - 1) // r + 1 for n, r in zip(size, ratios, strict=True)]

    def check_encodable(self, x: torch.Tensor) -> None:
        """ValueError unless ``x`` is a video [B, C, T, H, W] of the model's image channels."""
        if x.ndim != 5 or x.shape[1] != self.image_channels:
            raise ValueError(f"expected a video [B, {self.image_channels}, T, H, W], got {list(x.shape)}")

    def codable_frames(self, frames: int) -> bool:
        """Whether the encoder takes ``frames`` as they are: every temporal step halves the count
        unless it is 1, so it must stay whole (1, 2 or a multiple of 4 for the 4x models)."""
        for temporal in self.config["temporal_downsample"][:-1]:
            if temporal and frames != 1:
                if frames % 2:
                    return False
                frames //= 2
        return True

    def pad_to_codable(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B, C, T, H, W] with its last frame, row and column repeated up to sizes the encoder
        takes: T up to the next multiple of the time compression when the count cannot be halved
        down (5, 33, 129), H and W up to multiples of the space compression (336 -> 352 for 32x), so
        that every size has the latent :meth:`get_latent_size` gives. The release fails on such sizes."""
        T, H, W = x.shape[2:]
        t, s = self.temporal_compression, self.spatial_compression
        pad_t = 0 if self.codable_frames(T) else -(-T // t) * t - T
        pad_h, pad_w = -H % s, -W % s
        if not (pad_t or pad_h or pad_w):
            return x
        return F.pad(x, (0, pad_w, 0, pad_h, 0, pad_t), mode="replicate")

    # ---- encode -------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Video [B, 3, T, H, W] in [-1, 1] -> latent [B, C, T/4, H/32, W/32], divided by ``scaling_factor``.

        T, H and W are any sizes: 1 frame (an image) and 2 give one latent frame, other counts that
        are not multiples of 4 and sides that are not multiples of 32 are padded with the last
        frame, row or column (:meth:`pad_to_codable`). The DC-AE has no posterior: ``sample`` and
        ``generator`` are accepted (the VAE interface of the pipelines) and ignored. Samples are
        coded one at a time, each tiled if tiling is on.
        """
        self.check_encodable(x)
        x = self.pad_to_codable(x)
        z = torch.cat([self._encode_tiled(clip) for clip in x.split(1)])
        return z if self.scaling_factor is None else z / self.scaling_factor

    def _encode_tiled(self, x: torch.Tensor) -> torch.Tensor:
        tiling = self.tiling
        if tiling.temporal and x.shape[2] > tiling.temporal_tile_size:
            stride = int(tiling.temporal_tile_size * (1 - tiling.overlap))
            extent = int(tiling.latent_temporal_tile_size * tiling.overlap)
            keep = tiling.latent_temporal_tile_size - extent
            return tile_time(self._encode_in_space, x, tiling.temporal_tile_size, stride, extent, keep)
        return self._encode_in_space(x)

    def _encode_in_space(self, x: torch.Tensor) -> torch.Tensor:
        tiling = self.tiling
        if tiling.spatial and max(x.shape[-2:]) > tiling.spatial_tile_size:
            stride = int(tiling.spatial_tile_size * (1 - tiling.overlap))
            extent = int(tiling.latent_spatial_tile_size * tiling.overlap)
            keep = tiling.latent_spatial_tile_size - extent
            return tile_spatially(self.encoder, x, tiling.spatial_tile_size, stride, extent, keep)
        return self.encoder(x)

    # ---- decode -------------------------------------------------------------------------------
    def decode(self, z: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Latent [B, C, T', h, w] -> video [B, 3, 4T', 32h, 32w] (one latent frame alone: one frame),
        after multiplying by ``scaling_factor``; cut to the first ``num_frames`` frames if given."""
        if z.ndim != 5 or z.shape[1] != self.out_channels:
            raise ValueError(f"expected a latent [B, {self.out_channels}, T, H, W], got {list(z.shape)}")
        if self.scaling_factor is not None:
            z = z * self.scaling_factor
        x = torch.cat([self._decode_tiled(latent) for latent in z.split(1)])
        if num_frames is not None:
            if num_frames > x.shape[2]:
                raise ValueError(f"{z.shape[2]} latent frames decode to {x.shape[2]} frames, not {num_frames}")
            x = x[:, :, :num_frames]
        return x

    def _decode_tiled(self, z: torch.Tensor) -> torch.Tensor:
        tiling = self.tiling
        tile = tiling.latent_temporal_tile_size
        if tiling.temporal and z.shape[2] > tile:
            stride = int(tile * (1 - tiling.overlap))
            extent = int(tiling.temporal_tile_size * tiling.overlap)
            n = z.shape[2]
            if (n - 1) % stride == 0:
                # the last tile would hold one latent frame, which decodes to one frame, not 4 (the
                # release's videos come out 3 frames short there): a repeated last latent makes it two
                z = F.pad(z, (0, 0, 0, 0, 0, 1), mode="replicate")
            x = tile_time(self._decode_in_space, z, tile, stride, extent, tiling.temporal_tile_size - extent)
            return x[:, :, : n * self.temporal_compression]
        return self._decode_in_space(z)

    def _decode_in_space(self, z: torch.Tensor) -> torch.Tensor:
        tiling = self.tiling
        tile = tiling.latent_spatial_tile_size
        if tiling.spatial and max(z.shape[-2:]) > tile:
            stride = int(tile * (1 - tiling.overlap))
            extent = int(tiling.spatial_tile_size * tiling.overlap)
            return tile_spatially(self.decoder, z, tile, stride, extent, tiling.spatial_tile_size - extent)
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> DCAEOutput:
        """The training pass: the whole batch through the encoder and the decoder (no scaling, no
        tiling); sizes the encoder cannot take are padded and the reconstruction cut back.

        A single latent frame decodes to a single frame, so clips of 2 to 4 frames (which code to
        one) are padded to 8 here, that every frame has a reconstruction to be compared with.
        """
        self.check_encodable(x)
        T, H, W = x.shape[2:]
        if 1 < T <= self.temporal_compression:
            x = F.pad(x, (0, 0, 0, 0, 0, 2 * self.temporal_compression - T), mode="replicate")
        z = self.encoder(self.pad_to_codable(x))
        return DCAEOutput(z, self.decoder(z)[:, :, :T, :H, :W])


# --------------------------------------------------------------------------- presets and the release factory

DCAE_PRESETS: dict[str, dict] = {
    # Open-Sora 2.0's high-compression autoencoder: 32x space, 4x time, 128 channels
    "dc-ae-f32t4c128": dict(
        in_channels=3, latent_channels=128, width_list=[128, 256, 512, 512, 1024, 1024],
        encoder_depth_list=[2, 2, 2, 3, 3, 3], decoder_depth_list=[3, 3, 3, 3, 3, 3],
        encoder_block_types=["ResBlock"] * 3 + ["EViTS5_GLU"] * 3,
        decoder_block_types=["ResBlock"] * 3 + ["EViTS5_GLU"] * 3,
        temporal_downsample=[False, False, False, True, True, False],
        temporal_upsample=[False, False, False, True, True, False],
        time_compression_ratio=4, spatial_compression_ratio=32, scaling_factor=None,
    ),
}  # fmt: skip


def _release_factory() -> Callable[..., VideoDCAE]:
    """``dc_ae``: the release config's factory. ``model_name`` picks a preset; ``from_scratch=True``
    builds it (then loads ``from_pretrained`` if given), as the release configs do. Tile sizes given
    here also size the latent tiles, which the release's factory leaves at 8 (see ``set_tiling``)."""
    builders = {name: preset_factory(VideoDCAE, preset) for name, preset in DCAE_PRESETS.items()}
    default = "dc-ae-f32t4c128"

    def dc_ae(model_name: str = default, from_scratch: bool = True, **kwargs) -> VideoDCAE:
        if model_name not in builders:
            raise ConfigError(f"dc_ae model_name {model_name!r} is not one of {sorted(builders)}")
        if not from_scratch and not kwargs.get("from_pretrained"):
            raise ConfigError(f"dc_ae from_scratch=False asks for published weights named {model_name!r}, which "
                              "do not exist: set from_pretrained to a checkpoint (and from_scratch=True)")  # fmt: skip
        return builders[model_name](**kwargs)

    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("model_name", keyword, default=default),
              inspect.Parameter("from_scratch", keyword, default=True),
              *inspect.signature(builders[default]).parameters.values()]  # fmt: skip
    dc_ae.__signature__ = inspect.Signature(params)
    return dc_ae


MODELS.register("VideoDCAE", preset_factory(VideoDCAE))
MODELS.register("dc_ae", _release_factory())
