"""STDiT3: the spatial-temporal diffusion transformer of Open-Sora 1.2.

Tokens are frame-major patches [B, T*S, C]. Each of ``depth`` layers is a spatial block
(attention within a frame) followed by a temporal block (attention across frames at one
position, with rotary embedding); both cross-attend to the caption and are modulated by the
timestep (adaLN-single: one shared projection ``t_block`` plus a table per block).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from opensora.errors import ConfigError
from opensora.models.layers.attention import CrossAttention, SelfAttention
from opensora.models.layers.blocks import DropPath, FinalLayer, modulate, select_frames, tile_rows
from opensora.models.layers.embed import (
    CaptionEmbedder,
    Mlp,
    PatchEmbed3D,
    PositionEmbedding2D,
    SizeEmbedder,
    TimestepEmbedder,
    sincos_1d,
)
from opensora.models.layers.norm import layer_norm
from opensora.models.layers.rotary import RotaryEmbedding
from opensora.models.stdit.base import DiffusionTransformer, drop_path_rates, linears


class STDiT3Block(nn.Module):
    """Self-attention (spatial or temporal), cross-attention to text, MLP; adaLN-modulated."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        qk_norm: bool = False,
        temporal: bool = False,
        rope: nn.Module | None = None,
        layernorm_kernel: bool = False,
    ) -> None:
        super().__init__()
        self.temporal = temporal
        self.norm1 = layer_norm(hidden_size, eps=1e-6, affine=False, use_kernel=layernorm_kernel)
        self.attn = SelfAttention(hidden_size, num_heads, qkv_bias=True, qk_norm=qk_norm, rope=rope)
        self.cross_attn = CrossAttention(hidden_size, num_heads)
        self.norm2 = layer_norm(hidden_size, eps=1e-6, affine=False, use_kernel=layernorm_kernel)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.drop_path = DropPath(drop_path)
        self.scale_shift_table = nn.Parameter(torch.randn(6, hidden_size) / hidden_size**0.5)

    def _attend(self, x: torch.Tensor, T: int, S: int, attend: Callable | None) -> torch.Tensor:
        B, _, C = x.shape
        if self.temporal:  # each position holds all of its frames, so ``attend`` is never needed here
            x = x.view(B, T, S, C).transpose(1, 2).reshape(B * S, T, C)  # (B*S, T, C)
            x = self.attn(x)
            return x.view(B, S, T, C).transpose(1, 2).reshape(B, T * S, C)
        x = self.attn(x.reshape(B * T, S, C), attend)  # (B*T, S, C)
        return x.view(B, T * S, C)

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor,
        y_mask: torch.Tensor | None,
        x_mask: torch.Tensor | None,
        t0: torch.Tensor | None,
        T: int,
        S: int,
        attend: Callable | None = None,
    ) -> torch.Tensor:
        """``S`` counts the positions held here; ``attend`` replaces the spatial attention kernel."""
        B, _, C = x.shape
        mod = (self.scale_shift_table[None] + t.view(B, 6, C)).chunk(6, dim=1)  # six (B, 1, C)
        mod0 = (self.scale_shift_table[None] + t0.view(B, 6, C)).chunk(6, dim=1) if x_mask is not None else None

        def per_frame(fn, i: int, h: torch.Tensor) -> torch.Tensor:
            # conditioning frames (x_mask False) take the timestep-0 modulation
            out = fn(h, mod, i)
            return out if mod0 is None else select_frames(x_mask, out, fn(h, mod0, i), T, S)

        def pre(h, m, i):
            return modulate(h, m[i], m[i + 1])

        def gate(h, m, i):
            return m[i] * h

        h = self._attend(per_frame(pre, 0, self.norm1(x)), T, S, attend)
        x = x + self.drop_path(per_frame(gate, 2, h))
        x = x + self.cross_attn(x, y, y_mask)
        h = self.mlp(per_frame(pre, 3, self.norm2(x)))
        return x + self.drop_path(per_frame(gate, 5, h))


class STDiT3(DiffusionTransformer):
    """Open-Sora 1.2 diffusion transformer; arguments are the fields of the release's config.json."""

    RUNTIME_KEYS = ("enable_flash_attn", "enable_layernorm_kernel", "enable_sequence_parallelism")

    def __init__(
        self,
        input_size: tuple | None = (None, None, None),
        input_sq_size: int = 512,
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
        model_max_length: int = 300,
        qk_norm: bool = True,
        only_train_temporal: bool = False,
        freeze_y_embedder: bool = False,
        skip_y_embedder: bool = False,
        temporal_pos_embed: bool = False,
        enable_flash_attn: bool = False,
        enable_layernorm_kernel: bool = False,
        enable_sequence_parallelism: bool = False,
    ) -> None:
        super().__init__()
        self.register_arguments(locals())
        if enable_sequence_parallelism:
            raise ConfigError("STDiT3: sequence parallelism is applied by opensora.acceleration, not by the model")
        self.out_channels = in_channels * 2 if pred_sigma else in_channels
        self.patch_size = tuple(patch_size)
        self.hidden_size = hidden_size
        self.input_sq_size = input_sq_size
        self.skip_y_embedder = skip_y_embedder
        # Rotary embedding gives frames only relative positions, so a token has no direct way to tell
        # the first frame from the last, which the mean path of a moving object needs. Off as in the
        # release; the demo model turns it on (a fixed sin-cos table over latent frames, no weights).
        self.temporal_pos_embed = temporal_pos_embed
        # set by opensora.acceleration.sequence_parallel: shard(T, S) -> an object with split/attend/gather
        self.sequence_parallel = None

        self.pos_embed = PositionEmbedding2D(hidden_size)
        self.rope = RotaryEmbedding(hidden_size // num_heads)
        self.x_embedder = PatchEmbed3D(self.patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.fps_embedder = SizeEmbedder(hidden_size)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))
        self.y_embedder = CaptionEmbedder(caption_channels, hidden_size, class_dropout_prob, model_max_length)
        drop_rates = drop_path_rates(drop_path, depth)
        block_args = dict(qk_norm=qk_norm, layernorm_kernel=enable_layernorm_kernel, mlp_ratio=mlp_ratio)
        self.spatial_blocks = nn.ModuleList(
            STDiT3Block(hidden_size, num_heads, drop_path=p, **block_args) for p in drop_rates
        )
        self.temporal_blocks = nn.ModuleList(
            STDiT3Block(hidden_size, num_heads, drop_path=p, temporal=True, rope=self.rope, **block_args)
            for p in drop_rates
        )
        self.final_layer = FinalLayer(hidden_size, math.prod(self.patch_size), self.out_channels)

        self.initialize_weights()
        self.set_attention_backend("flash" if enable_flash_attn else "sdpa")
        self._freeze(only_train_temporal, freeze_y_embedder)

    def _freeze(self, only_train_temporal: bool, freeze_y_embedder: bool) -> None:
        if only_train_temporal:
            for name, param in self.named_parameters():
                param.requires_grad_(name.startswith("temporal_blocks."))
        if freeze_y_embedder:
            self.y_embedder.requires_grad_(False)
        self.rope.freqs.requires_grad_(False)

    def initialize_weights(self) -> None:
        """The release's initialisation; temporal blocks start as the identity and text switched off
        (zero output projections), so a spatial (image) model is a valid start."""
        temporal = (m for b in self.temporal_blocks for m in (b.attn.proj, b.cross_attn.proj, b.mlp.fc2))
        self.init_weights(
            normal=linears(self.t_embedder, self.fps_embedder, self.t_block, self.y_embedder),
            zero=[*temporal, *(b.cross_attn.proj for b in self.spatial_blocks)],
        )

    def encode_text(self, y: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Caption [B, 1, L, C_text] -> tokens [B, L, hidden] and their mask [B, L] (tiled to B)."""
        if not self.skip_y_embedder:
            y = self.y_embedder(y, self.training)
        return y.squeeze(1), tile_rows(mask, y.shape[0])  # (B, L, hidden), (B, L)

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor | None = None,
        x_mask: torch.Tensor | None = None,
        fps: torch.Tensor | None = None,
        height: torch.Tensor | None = None,
        width: torch.Tensor | None = None,
        num_frames: torch.Tensor | None = None,
        ar: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict [B, out_channels, T, H, W] from a noisy latent ``x`` [B, C, T, H, W].

        ``fps`` [B] (default 24) conditions the timestep embedding and ``height``/``width`` [B]
        (pixels; default 8x the latent's) stretch the position table. ``num_frames`` and ``ar``,
        which the shared sampling and training code pass, are accepted and ignored, as released.
        """
        dtype = self.x_embedder.proj.weight.dtype
        B, _, Tx, Hx, Wx = x.shape
        x, timestep, y = x.to(dtype), timestep.to(dtype), y.to(dtype)
        T, H, W = self.patch_grid(x)
        S = H * W

        # the position table is stretched by the pixel resolution of the first sample
        pixels = height[0].item() * width[0].item() if height is not None else (Hx * 8) * (Wx * 8)
        pos_emb = self.pos_embed.for_resolution(H, W, pixels, self.input_sq_size, device=x.device, dtype=dtype)

        fps = fps if fps is not None else torch.full((B,), 24.0, device=x.device)
        fps_emb = self.fps_embedder(fps.to(dtype), B)
        t = self.t_embedder(timestep) + fps_emb  # (B, hidden)
        t_mod = self.t_block(t)  # (B, 6*hidden)
        t0 = t0_mod = None
        if x_mask is not None:
            t0 = self.t_embedder(torch.zeros_like(timestep)) + fps_emb
            t0_mod = self.t_block(t0)

        y, y_mask = self.encode_text(y, mask)

        x = self.x_embedder(x)  # (B, T*S, hidden)
        x = x.view(B, T, S, -1) + pos_emb[:, None]
        if self.temporal_pos_embed:
            frames = torch.arange(T, device=x.device, dtype=torch.float32)
            x = x + sincos_1d(frames, self.hidden_size).to(dtype)[None, :, None]
        x = x.view(B, T * S, -1)

        # with sequence parallelism this process keeps S_local of the S positions of every frame
        shard = self.sequence_parallel.shard(T, S) if self.sequence_parallel is not None else None
        x = shard.split(x) if shard is not None else x  # (B, T*S_local, hidden)
        S_local = x.shape[1] // T
        attend = shard.attend if shard is not None else None
        for spatial, temporal in zip(self.spatial_blocks, self.temporal_blocks):
            x = self.run_block(spatial, x, y, t_mod, y_mask, x_mask, t0_mod, T, S_local, attend)
            x = self.run_block(temporal, x, y, t_mod, y_mask, x_mask, t0_mod, T, S_local)

        x = self.final_layer(x, t, x_mask, t0, T, S_local)  # (B, T*S_local, patch_volume*out_channels)
        x = shard.gather(x) if shard is not None else x  # (B, T*S, patch_volume*out_channels)
        return self.unpatchify(x, (T, H, W))[:, :, :Tx, :Hx, :Wx].float()


STDIT3_PRESETS: dict[str, dict] = {
    "STDiT3-XL/2": dict(depth=28, hidden_size=1152, patch_size=(1, 2, 2), num_heads=16),
    "STDiT3-3B/2": dict(depth=28, hidden_size=1872, patch_size=(1, 2, 2), num_heads=26),
}

STDiT3.register_presets(STDIT3_PRESETS)
