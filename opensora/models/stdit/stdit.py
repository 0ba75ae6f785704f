"""STDiT: the spatial-temporal diffusion transformer of Open-Sora 1.0.

Tokens are frame-major patches [B, T*S, C] of a latent of one fixed size (``input_size``): the
sin-cos position tables are buffers built for that size. Each block runs spatial attention
(within a frame, adaLN-modulated), temporal attention (across frames), cross-attention to the
caption and an MLP. As released, the temporal branch has neither a norm nor its own modulation
and reuses the spatial gate, and the temporal position table is added only before block 0's
temporal attention; the released weights were trained that way.
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
    tile_rows,
)
from opensora.models.layers.embed import (
    CaptionEmbedder,
    Mlp,
    PatchEmbed3D,
    PositionEmbedding2D,
    TimestepEmbedder,
    sincos_1d,
)
from opensora.models.layers.norm import layer_norm
from opensora.models.stdit.base import DiffusionTransformer, drop_path_rates, linears


class STDiTBlock(nn.Module):
    """Spatial attention, temporal attention, cross-attention to text, MLP."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        layernorm_kernel: bool = False,
    ) -> None:
        super().__init__()
        # creation order fixes the state-dict order of the released checkpoints
        self.norm1 = layer_norm(hidden_size, eps=1e-6, affine=False, use_kernel=layernorm_kernel)
        self.attn = SelfAttention(hidden_size, num_heads, qkv_bias=True)
        self.cross_attn = CrossAttention(hidden_size, num_heads)
        self.norm2 = layer_norm(hidden_size, eps=1e-6, affine=False, use_kernel=layernorm_kernel)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.attn_temp = SelfAttention(hidden_size, num_heads, qkv_bias=True)
        self.drop_path = DropPath(drop_path)
        self.scale_shift_table = nn.Parameter(torch.randn(6, hidden_size) / hidden_size**0.5)

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor,
        y_mask: torch.Tensor | None,
        temporal_pos: torch.Tensor | None,
        T: int,
        S: int,
    ) -> torch.Tensor:
        """``temporal_pos`` [1, T, C] is added to the temporal attention's input only (block 0)."""
        B, _, C = x.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + t.view(B, 6, C)
        ).chunk(6, dim=1)  # six (B, 1, C)

        h = attend_within_frames(self.attn, modulate(self.norm1(x), shift_msa, scale_msa), T, S)
        x = x + self.drop_path(gate_msa * h)

        h = x
        if temporal_pos is not None:
            h = (h.view(B, T, S, C) + temporal_pos[:, :, None]).view(B, T * S, C)
        h = attend_across_frames(self.attn_temp, h, T, S)
        x = x + self.drop_path(gate_msa * h)  # the spatial gate, as released

        x = x + self.cross_attn(x, y, y_mask)
        h = self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x + self.drop_path(gate_mlp * h)


class STDiT(DiffusionTransformer):
    """Open-Sora 1.0 diffusion transformer; arguments are the fields of the release configs.

    ``dtype`` and the kernel/parallelism switches of the release are runtime settings and are
    not saved: the model computes in the dtype of its weights (``model.to(dtype)``).
    """

    RUNTIME_KEYS = ("dtype", "enable_flashattn", "enable_flash_attn", "enable_layernorm_kernel",
                    "enable_sequence_parallelism")  # fmt: skip

    def __init__(
        self,
        input_size: tuple[int, int, int] = (1, 32, 32),
        in_channels: int = 4,
        patch_size: tuple[int, int, int] = (1, 2, 2),
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        pred_sigma: bool = True,
        drop_path: float = 0.0,
        no_temporal_pos_emb: bool = False,
        caption_channels: int = 4096,
        model_max_length: int = 120,
        space_scale: float = 1.0,
        time_scale: float = 1.0,
        freeze: str | None = None,
        dtype: str | torch.dtype | None = None,
        enable_flashattn: bool = False,
        enable_flash_attn: bool = False,
        enable_layernorm_kernel: bool = False,
        enable_sequence_parallelism: bool = False,
    ) -> None:
        super().__init__()
        self.register_arguments(locals())
        if enable_sequence_parallelism:
            raise ConfigError("STDiT (v1.0): sequence parallelism is not supported for this model")
        if freeze not in FREEZE_CHOICES:
            raise ConfigError(f"STDiT: freeze must be one of {FREEZE_CHOICES}, got {freeze!r}")
        self.input_size = tuple(int(s) for s in input_size)
        self.patch_size = tuple(int(p) for p in patch_size)
        if any(s % p for s, p in zip(self.input_size, self.patch_size)):
            raise ConfigError(f"STDiT: input_size {list(self.input_size)} is not a multiple of patch_size "
                              f"{list(self.patch_size)}")  # fmt: skip
        self.grid = tuple(s // p for s, p in zip(self.input_size, self.patch_size))  # patches along T, H, W
        self.out_channels = in_channels * 2 if pred_sigma else in_channels
        self.no_temporal_pos_emb = no_temporal_pos_emb

        # fixed sin-cos tables saved in the checkpoints: (1, H*W, C) and (1, T, C)
        T, H, W = self.grid
        self.register_buffer("pos_embed", PositionEmbedding2D(hidden_size)(H, W, scale=space_scale))
        self.register_buffer("pos_embed_temporal", sincos_1d(torch.arange(T) / time_scale, hidden_size)[None])
        self.x_embedder = PatchEmbed3D(self.patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))
        self.y_embedder = CaptionEmbedder(caption_channels, hidden_size, class_dropout_prob, model_max_length)
        self.blocks = nn.ModuleList(
            STDiTBlock(hidden_size, num_heads, mlp_ratio, p, layernorm_kernel=enable_layernorm_kernel)
            for p in drop_path_rates(drop_path, depth)
        )
        self.final_layer = FinalLayer(hidden_size, math.prod(self.patch_size), self.out_channels)

        self.initialize_weights()
        self.set_attention_backend("flash" if enable_flashattn or enable_flash_attn else "sdpa")
        freeze_parameters(self, freeze)

    def initialize_weights(self) -> None:
        """The release's initialisation; text and time start switched off (zero output projections),
        so a pretrained image model is a valid start."""
        self.init_weights(
            normal=linears(self.t_embedder, self.t_block, self.y_embedder),
            zero=[*(m for b in self.blocks for m in (b.cross_attn.proj, b.attn_temp.proj)), self.final_layer.linear],
        )

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor | None = None,
        x_mask: torch.Tensor | None = None,
        height: torch.Tensor | None = None,
        width: torch.Tensor | None = None,
        num_frames: torch.Tensor | None = None,
        ar: torch.Tensor | None = None,
        fps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict [B, out_channels, T, H, W] from a noisy latent ``x`` [B, C, T, H, W] of ``input_size``.

        ``y`` [B, 1, L, caption_channels] and its ``mask`` [B, L] (tiled when it has fewer rows).
        Frame conditioning did not exist in 1.0: an ``x_mask`` other than all-True is refused. The
        size arguments the shared sampling and training code pass (``height``, ``width``,
        ``num_frames``, ``ar``, ``fps``) are accepted and ignored: 1.0 was trained at one size.
        """
        if tuple(x.shape[2:]) != self.input_size:
            raise ConfigError(f"STDiT (v1.0) was built for latents of size {list(self.input_size)} (T, H, W) "
                              f"but got {list(x.shape[2:])}; it does not pad or resize")  # fmt: skip
        if x_mask is not None and not bool(x_mask.all()):
            raise ConfigError("STDiT (v1.0) cannot condition on frames (x_mask); use STDiT2 or STDiT3")
        dtype = self.x_embedder.proj.weight.dtype
        B = x.shape[0]
        T, H, W = self.grid
        S = H * W
        x, timestep, y = x.to(dtype), timestep.to(dtype), y.to(dtype)

        x = self.x_embedder(x)  # (B, T*S, hidden)
        x = (x.view(B, T, S, -1) + self.pos_embed[:, None].to(dtype)).view(B, T * S, -1)
        t = self.t_embedder(timestep)  # (B, hidden)
        t_mod = self.t_block(t)  # (B, 6*hidden)
        y = self.y_embedder(y, self.training).squeeze(1)  # (B, L, hidden)
        mask = tile_rows(mask, B)

        temporal_pos = None if self.no_temporal_pos_emb else self.pos_embed_temporal.to(dtype)
        for i, block in enumerate(self.blocks):
            x = self.run_block(block, x, y, t_mod, mask, temporal_pos if i == 0 else None, T, S)

        x = self.final_layer(x, t)  # (B, T*S, patch_volume*out_channels)
        return self.unpatchify(x, self.grid).float()


STDIT_PRESETS: dict[str, dict] = {
    "STDiT-XL/2": dict(depth=28, hidden_size=1152, patch_size=(1, 2, 2), num_heads=16),
}

STDiT.register_presets(STDIT_PRESETS)
