"""STDiT2: the spatial-temporal diffusion transformer of Open-Sora 1.1.

Latents of any size and length (padded to the patch size inside). Each block runs spatial
attention, temporal attention (rotary positions), cross-attention to the caption and an MLP.
The spatial branch and the MLP are modulated by the timestep plus the picture size and aspect
ratio; the temporal branch has its own norm and modulation from the timestep plus frame count
and fps. Conditioning frames (``x_mask`` False) take the modulation of timestep 0.

Released behaviours kept because the 1.1 weights were trained with them:
- rotary embedding is applied before the q/k RMSNorm (``qk_norm_legacy``, on by default);
- the final layer modulates with the plain timestep embedding, but its timestep-0 branch with
  the timestep-0 embedding plus the size embedding, and it normalises twice on that branch.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from opensora.errors import ConfigError
from opensora.models.layers.attention import CrossAttention, SelfAttention
from opensora.models.layers.blocks import (
    FREEZE_CHOICES,
    DropPath,
    FinalLayer,
    attend_across_frames,
    attend_within_frames,
    freeze_parameters,
    modulate,
    select_frames,
    tile_rows,
)
from opensora.models.layers.embed import (
    CaptionEmbedder,
    Mlp,
    PatchEmbed3D,
    PositionEmbedding2D,
    SizeEmbedder,
    TimestepEmbedder,
)
from opensora.models.layers.norm import layer_norm
from opensora.models.layers.rotary import RotaryEmbedding
from opensora.models.stdit.base import DiffusionTransformer, drop_path_rates, linears

SIZE_ARGUMENTS = ("num_frames", "height", "width", "ar", "fps")


class STDiT2Block(nn.Module):
    """Spatial attention, temporal attention, cross-attention to text, MLP; per-frame adaLN."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        qk_norm: bool = False,
        qk_norm_legacy: bool = True,
        rope: nn.Module | None = None,
        layernorm_kernel: bool = False,
    ) -> None:
        super().__init__()
        attn_args = dict(qkv_bias=True, qk_norm=qk_norm, rope_before_norm=qk_norm_legacy)

        def norm() -> nn.Module:
            return layer_norm(hidden_size, eps=1e-6, affine=False, use_kernel=layernorm_kernel)

        # creation order fixes the state-dict order of the released checkpoints
        self.norm1 = norm()
        self.attn = SelfAttention(hidden_size, num_heads, **attn_args)
        self.scale_shift_table = nn.Parameter(torch.randn(6, hidden_size) / hidden_size**0.5)
        self.cross_attn = CrossAttention(hidden_size, num_heads)
        self.norm2 = norm()
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.drop_path = DropPath(drop_path)
        self.norm_temp = norm()
        self.attn_temp = SelfAttention(hidden_size, num_heads, rope=rope, **attn_args)
        self.scale_shift_table_temporal = nn.Parameter(torch.randn(3, hidden_size) / hidden_size**0.5)

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        t_spatial: torch.Tensor,
        t_temporal: torch.Tensor,
        y_mask: torch.Tensor | None,
        x_mask: torch.Tensor | None,
        t0_spatial: torch.Tensor | None,
        t0_temporal: torch.Tensor | None,
        T: int,
        S: int,
    ) -> torch.Tensor:
        """``t_spatial`` [B, 6C] and ``t_temporal`` [B, 3C] modulate; the ``t0_*`` ones do so for
        the conditioning frames (``x_mask`` [B, T] False)."""
        B, _, C = x.shape

        def table(params: torch.Tensor, t: torch.Tensor | None) -> tuple | None:
            n = params.shape[0]
            return None if t is None else (params[None] + t.view(B, n, C)).chunk(n, dim=1)  # n x (B, 1, C)

        spatial, temporal = table(self.scale_shift_table, t_spatial), table(self.scale_shift_table_temporal, t_temporal)
        spatial0 = table(self.scale_shift_table, t0_spatial) if x_mask is not None else None
        temporal0 = table(self.scale_shift_table_temporal, t0_temporal) if x_mask is not None else None

        def per_frame(fn, mods, mods0, h: torch.Tensor) -> torch.Tensor:
            out = fn(h, mods)
            return out if mods0 is None else select_frames(x_mask, out, fn(h, mods0), T, S)

        def pre(i: int):
            return lambda h, m: modulate(h, m[i], m[i + 1])

        def gate(i: int):
            return lambda h, m: m[i] * h

        h = attend_within_frames(self.attn, per_frame(pre(0), spatial, spatial0, self.norm1(x)), T, S)
        x = x + self.drop_path(per_frame(gate(2), spatial, spatial0, h))
        h = attend_across_frames(self.attn_temp, per_frame(pre(0), temporal, temporal0, self.norm_temp(x)), T, S)
        x = x + self.drop_path(per_frame(gate(2), temporal, temporal0, h))
        x = x + self.cross_attn(x, y, y_mask)
        h = self.mlp(per_frame(pre(3), spatial, spatial0, self.norm2(x)))
        return x + self.drop_path(per_frame(gate(5), spatial, spatial0, h))


class STDiT2(DiffusionTransformer):
    """Open-Sora 1.1 diffusion transformer; arguments are the fields of the release's config.json.

    ``qk_norm_legacy`` (default True, as released) rotates q/k before their RMSNorm. The release's
    ``no_temporal_pos_emb`` had no effect (positions along time come from the rotary embedding):
    it is accepted in configs and dropped. The kernel switches are runtime settings, not saved.
    """

    RUNTIME_KEYS = ("enable_flash_attn", "enable_layernorm_kernel")
    IGNORED_CONFIG_KEYS = ("no_temporal_pos_emb",)

    def __init__(
        self,
        input_size: tuple | None = (None, None, None),
        input_sq_size: int = 32,
        in_channels: int = 4,
        patch_size: tuple[int, int, int] = (1, 2, 2),
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        pred_sigma: bool = True,
        drop_path: float = 0.0,
        caption_channels: int = 4096,
        model_max_length: int = 120,
        freeze: str | None = None,
        qk_norm: bool = False,
        qk_norm_legacy: bool = True,
        enable_flash_attn: bool = False,
        enable_layernorm_kernel: bool = False,
    ) -> None:
        super().__init__()
        self.register_arguments(locals())
        if hidden_size % 3 != 0:
            raise ConfigError(f"STDiT2: hidden_size {hidden_size} must be divisible by 3 (size embeddings)")
        if freeze not in FREEZE_CHOICES:
            raise ConfigError(f"STDiT2: freeze must be one of {FREEZE_CHOICES}, got {freeze!r}")
        self.out_channels = in_channels * 2 if pred_sigma else in_channels
        self.patch_size = tuple(patch_size)
        self.input_sq_size = input_sq_size

        self.pos_embed = PositionEmbedding2D(hidden_size)
        self.x_embedder = PatchEmbed3D(self.patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))
        self.t_block_temp = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 3 * hidden_size))
        self.y_embedder = CaptionEmbedder(caption_channels, hidden_size, class_dropout_prob, model_max_length)
        self.rope = RotaryEmbedding(hidden_size // num_heads)
        block_args = dict(mlp_ratio=mlp_ratio, qk_norm=qk_norm, qk_norm_legacy=qk_norm_legacy,
                          rope=self.rope, layernorm_kernel=enable_layernorm_kernel)  # fmt: skip
        self.blocks = nn.ModuleList(
            STDiT2Block(hidden_size, num_heads, drop_path=p, **block_args) for p in drop_path_rates(drop_path, depth)
        )
        self.final_layer = FinalLayer(hidden_size, math.prod(self.patch_size), self.out_channels, norm_twice=True)
        # size conditioning: (height, width) and aspect ratio share the spatial embedding; frame
        # count and fps condition the temporal branch
        self.csize_embedder = SizeEmbedder(hidden_size // 3)
        self.ar_embedder = SizeEmbedder(hidden_size // 3)
        self.fl_embedder = SizeEmbedder(hidden_size)
        self.fps_embedder = SizeEmbedder(hidden_size)

        self.initialize_weights()
        self.set_attention_backend("flash" if enable_flash_attn else "sdpa")
        freeze_parameters(self, freeze)
        self.rope.freqs.requires_grad_(False)

    def initialize_weights(self) -> None:
        """The release's initialisation; text and time start switched off (zero output projections),
        so a pretrained image model is a valid start."""
        embedders = (self.t_embedder, self.csize_embedder, self.ar_embedder, self.fl_embedder, self.fps_embedder)
        self.init_weights(
            normal=linears(*embedders, self.t_block, self.t_block_temp, self.y_embedder),
            zero=[*(m for b in self.blocks for m in (b.cross_attn.proj, b.attn_temp.proj)), self.final_layer.linear],
        )

    def _size_embeddings(self, B: int, sizes: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(spatial [B, hidden], temporal [B, hidden]) conditioning from the [B] size tensors."""
        missing = [name for name in SIZE_ARGUMENTS if sizes[name] is None]
        if missing:
            raise ConfigError(f"STDiT2 needs [B] tensors {', '.join(SIZE_ARGUMENTS)}; missing: {', '.join(missing)}")
        hw = torch.stack([sizes["height"], sizes["width"]], dim=1)  # (B, 2)
        spatial = torch.cat([self.csize_embedder(hw, B), self.ar_embedder(sizes["ar"], B)], dim=1)
        temporal = self.fl_embedder(sizes["num_frames"], B) + self.fps_embedder(sizes["fps"], B)
        return spatial, temporal

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor | None = None,
        x_mask: torch.Tensor | None = None,
        num_frames: torch.Tensor | None = None,
        height: torch.Tensor | None = None,
        width: torch.Tensor | None = None,
        ar: torch.Tensor | None = None,
        fps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict [B, out_channels, T, H, W] from a noisy latent ``x`` [B, C, T, H, W].

        ``num_frames``, ``height``, ``width`` (pixels), ``ar`` (height / width) and ``fps`` are
        [B] tensors (tiled when the batch is doubled for guidance); all are required.
        """
        dtype = self.x_embedder.proj.weight.dtype
        B, _, Tx, Hx, Wx = x.shape
        x, timestep, y = x.to(dtype), timestep.to(dtype), y.to(dtype)
        sizes = dict(num_frames=num_frames, height=height, width=width, ar=ar, fps=fps)
        data_info, frame_info = self._size_embeddings(B, sizes)
        T, H, W = self.patch_grid(x)
        S = H * W

        # the position table is stretched by the pixel resolution of the first sample
        pixels = height[0].item() * width[0].item()
        pos_emb = self.pos_embed.for_resolution(H, W, pixels, self.input_sq_size, device=x.device, dtype=dtype)
        x = self.x_embedder(x)  # (B, T*S, hidden)
        x = (x.view(B, T, S, -1) + pos_emb[:, None]).view(B, T * S, -1)

        t = self.t_embedder(timestep)  # (B, hidden)
        t_spatial, t_temporal = self.t_block(t + data_info), self.t_block_temp(t + frame_info)  # (B, 6C), (B, 3C)
        t0_info = t0_spatial = t0_temporal = None
        if x_mask is not None:
            t0 = self.t_embedder(torch.zeros_like(timestep))
            t0_info = t0 + data_info
            t0_spatial, t0_temporal = self.t_block(t0_info), self.t_block_temp(t0 + frame_info)

        y = self.y_embedder(y, self.training).squeeze(1)  # (B, L, hidden)
        mask = tile_rows(mask, B)

        x = self.run_blocks(self.blocks, x, y, t_spatial, t_temporal, mask, x_mask, t0_spatial, t0_temporal, T, S)

        # as released: plain t on the normal branch, t0 + size embedding on the timestep-0 branch
        x = self.final_layer(x, t, x_mask, t0_info, T, S)  # (B, T*S, patch_volume*out_channels)
        return self.unpatchify(x, (T, H, W))[:, :, :Tx, :Hx, :Wx].float()


STDIT2_PRESETS: dict[str, dict] = {
    "STDiT2-XL/2": dict(depth=28, hidden_size=1152, patch_size=(1, 2, 2), num_heads=16),
}

STDiT2.register_presets(STDIT2_PRESETS)
