"""MMDiT: the multimodal diffusion transformer of Open-Sora 2.0 (the Flux design, for video).

The latent arrives packed into tokens outside the model (2x2 patches, channel-major:
``b c t (h 2) (w 2) -> b (t h w) (c 2 2)``) with its (t, h, w) grid positions; the text arrives as
T5 states with all-zero positions, plus a pooled CLIP vector. ``depth`` double-stream blocks keep
separate weights for the text and image streams but attend over the joint sequence [txt ; img];
``depth_single_blocks`` single-stream blocks then run on the joint sequence with one set of
weights (attention and MLP in parallel). Text tokens are dropped after the last single block.
Every block is modulated by ``vec`` = embedding(timestep) [+ embedding(guidance)] + MLP(CLIP).

Order of operations inside attention: q/k/v projections -> per-head RMSNorm of q and k -> rope
(:mod:`opensora.models.layers.rope_nd`) -> attention without mask, scale 1/sqrt(head_dim).

Sequence parallelism is installed from outside (:mod:`opensora.acceleration.sequence_parallel_mmdit`)
as ``model.sequence_parallel``: its ``shard(N_txt, N_img)`` splits each stream's tokens after
embedding (and the position ids, so the rope is encoded once, for this process's tokens only),
supplies the joint attention that each block's ``_attend`` calls on rotated [B, heads, L_local,
head_dim] tensors, and gathers the image tokens after the final layer. Every other operation is
per token.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from opensora.errors import ConfigError
from opensora.models.layers.attention import attention
from opensora.models.layers.blocks import modulate
from opensora.models.layers.embed import sinusoidal_embedding
from opensora.models.layers.rope_nd import RopeND, RopeTable, interleave_permutation
from opensora.models.stdit.base import DiffusionTransformer

TIME_EMBED_DIM = 256


def timestep_embedding(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[cos | sin] features of 1000*t [B] -> [B, 256] in ``dtype``.

    As released: 1000*t is computed in the model dtype (bfloat16 in release inference), the
    sinusoid in float32, and the result cast back.
    """
    return sinusoidal_embedding(1000 * t.to(dtype), TIME_EMBED_DIM).to(dtype)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, L, heads*D] -> [B, heads, L, D]."""
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, heads, L, D] -> [B, L, heads*D]."""
    return x.transpose(1, 2).flatten(2)


def split_fused_qkv(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fused projection [B, L, 3*heads*D] (q, then k, then v) -> three [B, heads, L, D]."""
    return qkv.unflatten(-1, (3, num_heads, -1)).permute(2, 0, 3, 1, 4).unbind(0)


def layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)


def feed_forward(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


class ScaledRMSNorm(nn.Module):
    """RMSNorm over the last axis with a learned ``scale``; statistics in float32, eps 1e-6."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def reset_parameters(self) -> None:
        nn.init.ones_(self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.scale


class QKNorm(nn.Module):
    """Per-head RMSNorm of queries and keys (results in the dtype of the values)."""

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.query_norm = ScaledRMSNorm(head_dim)
        self.key_norm = ScaledRMSNorm(head_dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.query_norm(q).to(v.dtype), self.key_norm(k).to(v.dtype)


class MLPEmbedder(nn.Module):
    """Linear, SiLU, Linear: a timestep sinusoid or the CLIP vector -> [B, hidden]."""

    def __init__(self, in_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden_size)
        self.out_layer = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(F.silu(self.in_layer(x)))


class ZeroLinear(nn.Linear):
    """A linear layer that starts (and re-initialises) at zero, so a new input changes nothing at first."""

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class Modulation(nn.Module):
    """``sets`` (shift, scale, gate) triples from SiLU(vec): each [B, 1, dim]."""

    def __init__(self, dim: int, sets: int) -> None:
        super().__init__()
        self.chunks = 3 * sets
        self.lin = nn.Linear(dim, self.chunks * dim)

    def forward(self, vec: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.lin(F.silu(vec))[:, None].chunk(self.chunks, dim=-1)


class StreamAttention(nn.Module):
    """The projections and QK norm of one stream of a double block (the attention itself is joint)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, fused_qkv: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.fused_qkv = fused_qkv
        if fused_qkv:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        else:
            self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
            self.k_proj = nn.Linear(dim, dim, bias=qkv_bias)
            self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.norm = QKNorm(dim // num_heads)
        self.proj = nn.Linear(dim, dim)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens [B, L, dim] -> normalised q, k and v, each [B, heads, L, head_dim] (not rotated)."""
        if self.fused_qkv:
            q, k, v = split_fused_qkv(self.qkv(x), self.num_heads)
        else:
            q, k, v = (split_heads(proj(x), self.num_heads) for proj in (self.q_proj, self.k_proj, self.v_proj))
        q, k = self.norm(q, k, v)
        return q, k, v


class DoubleStreamBlock(nn.Module):
    """Text and image streams with their own weights, attending over the joint [txt ; img] sequence."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, fused_qkv: bool) -> None:
        super().__init__()
        mlp_hidden = int(hidden_size * mlp_ratio)
        self.img_mod = Modulation(hidden_size, sets=2)
        self.img_norm1 = layer_norm(hidden_size)
        self.img_attn = StreamAttention(hidden_size, num_heads, qkv_bias, fused_qkv)
        self.img_norm2 = layer_norm(hidden_size)
        self.img_mlp = feed_forward(hidden_size, mlp_hidden)
        self.txt_mod = Modulation(hidden_size, sets=2)
        self.txt_norm1 = layer_norm(hidden_size)
        self.txt_attn = StreamAttention(hidden_size, num_heads, qkv_bias, fused_qkv)
        self.txt_norm2 = layer_norm(hidden_size)
        self.txt_mlp = feed_forward(hidden_size, mlp_hidden)
        self.backend = "sdpa"

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attend: Callable | None) -> torch.Tensor:
        """Joint attention of rotated q, k and v [B, heads, L, D] -> [B, heads, L, D]; ``attend(q, k, v,
        backend)``, when given, attends over the tokens of every process (sequence parallelism)."""
        if attend is not None:
            return attend(q, k, v, self.backend)
        return attention(q, k, v, backend=self.backend)

    def forward(
        self, img: torch.Tensor, txt: torch.Tensor, vec: torch.Tensor, pe: RopeTable, attend: Callable | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        img_shift1, img_scale1, img_gate1, img_shift2, img_scale2, img_gate2 = self.img_mod(vec)
        txt_shift1, txt_scale1, txt_gate1, txt_shift2, txt_scale2, txt_gate2 = self.txt_mod(vec)
        img_q, img_k, img_v = self.img_attn.heads(modulate(self.img_norm1(img), img_shift1, img_scale1))
        txt_q, txt_k, txt_v = self.txt_attn.heads(modulate(self.txt_norm1(txt), txt_shift1, txt_scale1))

        q = pe.rotate(torch.cat((txt_q, img_q), dim=2))  # (B, heads, L_txt + L_img, D)
        k = pe.rotate(torch.cat((txt_k, img_k), dim=2))
        v = torch.cat((txt_v, img_v), dim=2)
        out = merge_heads(self._attend(q, k, v, attend))  # (B, L_txt + L_img, hidden)
        txt_out, img_out = out.split((txt.shape[1], img.shape[1]), dim=1)

        img = img + img_gate1 * self.img_attn.proj(img_out)
        img = img + img_gate2 * self.img_mlp(modulate(self.img_norm2(img), img_shift2, img_scale2))
        txt = txt + txt_gate1 * self.txt_attn.proj(txt_out)
        txt = txt + txt_gate2 * self.txt_mlp(modulate(self.txt_norm2(txt), txt_shift2, txt_scale2))
        return img, txt


class SingleStreamBlock(nn.Module):
    """One set of weights on the joint sequence: attention and MLP side by side, one output projection."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, fused_qkv: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.fused_qkv = fused_qkv
        self.mlp_hidden = int(hidden_size * mlp_ratio)
        if fused_qkv:
            self.linear1 = nn.Linear(hidden_size, 3 * hidden_size + self.mlp_hidden)  # q, k, v, MLP input
        else:
            self.q_proj = nn.Linear(hidden_size, hidden_size)
            self.k_proj = nn.Linear(hidden_size, hidden_size)
            self.v_mlp = nn.Linear(hidden_size, hidden_size + self.mlp_hidden)  # v, MLP input
        self.linear2 = nn.Linear(hidden_size + self.mlp_hidden, hidden_size)
        self.norm = QKNorm(hidden_size // num_heads)
        self.pre_norm = layer_norm(hidden_size)
        self.mlp_act = nn.GELU(approximate="tanh")
        self.modulation = Modulation(hidden_size, sets=1)
        self.backend = "sdpa"

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attend: Callable | None) -> torch.Tensor:
        """Joint attention of rotated q, k and v [B, heads, L, D] -> [B, heads, L, D]; ``attend(q, k, v,
        backend)``, when given, attends over the tokens of every process (sequence parallelism)."""
        if attend is not None:
            return attend(q, k, v, self.backend)
        return attention(q, k, v, backend=self.backend)

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Modulated tokens [B, L, hidden] -> q, k, v [B, heads, L, D] and the MLP input [B, L, mlp_hidden]."""
        if self.fused_qkv:
            qkv, mlp_in = self.linear1(x).split((self.linear2.out_features * 3, self.mlp_hidden), dim=-1)
            q, k, v = split_fused_qkv(qkv, self.num_heads)
        else:
            v, mlp_in = self.v_mlp(x).split((self.linear2.out_features, self.mlp_hidden), dim=-1)
            q, k, v = (split_heads(t, self.num_heads) for t in (self.q_proj(x), self.k_proj(x), v))
        return q, k, v, mlp_in

    def forward(
        self, x: torch.Tensor, vec: torch.Tensor, pe: RopeTable, attend: Callable | None = None
    ) -> torch.Tensor:
        shift, scale, gate = self.modulation(vec)
        q, k, v, mlp_in = self._project(modulate(self.pre_norm(x), shift, scale))
        q, k = self.norm(q, k, v)
        out = merge_heads(self._attend(pe.rotate(q), pe.rotate(k), v, attend))  # (B, L, hidden)
        return x + gate * self.linear2(torch.cat((out, self.mlp_act(mlp_in)), dim=-1))


class LastLayer(nn.Module):
    """adaLN-modulated LayerNorm, then hidden -> the packed latent channels of each token."""

    def __init__(self, hidden_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = layer_norm(hidden_size)
        self.linear = nn.Linear(hidden_size, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(vec)[:, None].chunk(2, dim=-1)  # each (B, 1, hidden)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class MMDiT(DiffusionTransformer):
    """Open-Sora 2.0 MMDiT; arguments are the keys of the release's model config (``type="flux"``).

    The defaults are the 11B release model. ``use_liger_rope`` picks the rope pair layout the
    weights were trained with (on: rotate-half, as all 2.0 release configs; off: interleaved, as
    the text-to-image Flux); :func:`convert_rope_layout` moves weights between the two.
    """

    # keys of the release configs that describe loading, not the architecture
    IGNORED_CONFIG_KEYS = ("cache_dir", "grad_ckpt_settings", "device_map", "torch_dtype")

    def __init__(
        self,
        in_channels: int = 64,
        vec_in_dim: int = 768,
        context_in_dim: int = 4096,
        hidden_size: int = 3072,
        mlp_ratio: float = 4.0,
        num_heads: int = 24,
        depth: int = 19,
        depth_single_blocks: int = 38,
        axes_dim: Sequence[int] = (16, 56, 56),
        theta: int = 10000,
        qkv_bias: bool = True,
        guidance_embed: bool = False,
        cond_embed: bool = True,
        fused_qkv: bool = False,
        use_liger_rope: bool = True,
        patch_size: int = 2,
    ) -> None:
        super().__init__()
        self.register_arguments(locals())
        if hidden_size % num_heads:
            raise ConfigError(f"MMDiT: hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        head_dim = hidden_size // num_heads
        if sum(axes_dim) != head_dim:
            raise ConfigError(
                f"MMDiT: axes_dim {list(axes_dim)} sums to {sum(axes_dim)}, but the head dimension is "
                f"{head_dim} (hidden_size {hidden_size} / num_heads {num_heads})"
            )
        self.in_channels = self.out_channels = in_channels
        self.patch_size = patch_size  # of the packing done outside: cond has in_channels + patch_size**2 channels
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.guidance_embed = guidance_embed
        self.cond_embed = cond_embed

        self.pe_embedder = RopeND(axes_dim, theta, interleaved=not use_liger_rope)
        self.img_in = nn.Linear(in_channels, hidden_size)
        self.time_in = MLPEmbedder(TIME_EMBED_DIM, hidden_size)
        self.vector_in = MLPEmbedder(vec_in_dim, hidden_size)
        self.guidance_in = MLPEmbedder(TIME_EMBED_DIM, hidden_size) if guidance_embed else None
        # mask channels + masked reference latent; zero at first, so an image model starts unconditioned
        self.cond_in = ZeroLinear(in_channels + patch_size**2, hidden_size) if cond_embed else None
        self.txt_in = nn.Linear(context_in_dim, hidden_size)
        self.double_blocks = nn.ModuleList(
            DoubleStreamBlock(hidden_size, num_heads, mlp_ratio, qkv_bias, fused_qkv) for _ in range(depth)
        )
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(hidden_size, num_heads, mlp_ratio, fused_qkv) for _ in range(depth_single_blocks)
        )
        self.final_layer = LastLayer(hidden_size, in_channels)
        # set by opensora.acceleration.sequence_parallel: shard(N_txt, N_img) -> split/attend/gather
        self.sequence_parallel = None

    # ---- embedding the inputs -------------------------------------------------------------------
    def embed_vector(
        self, timesteps: torch.Tensor, y_vec: torch.Tensor, guidance: torch.Tensor | None
    ) -> torch.Tensor:
        """vec = time_in(emb(t)) [+ guidance_in(emb(guidance))] + vector_in(y_vec): [B, hidden]."""
        dtype = self.img_in.weight.dtype
        vec = self.time_in(timestep_embedding(timesteps, dtype))
        if self.guidance_in is not None:
            if guidance is None:
                raise ValueError("MMDiT: this model embeds the guidance scale (guidance_embed), but guidance is None")
            vec = vec + self.guidance_in(timestep_embedding(guidance, dtype))
        return vec + self.vector_in(y_vec.to(dtype))

    def embed_image(self, img: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """Packed latent tokens [B, N, in_channels] (+ cond [B, N, in_channels + patch^2]) -> [B, N, hidden]."""
        dtype = self.img_in.weight.dtype
        x = self.img_in(img.to(dtype))
        if self.cond_in is not None:
            if cond is None:
                raise ValueError("MMDiT: this model is conditioned (cond_embed), but cond is None")
            x = x + self.cond_in(cond.to(dtype))
        return x

    def rope(self, txt_ids: torch.Tensor, img_ids: torch.Tensor) -> RopeTable:
        """The rotary table of the joint sequence [txt ; img]: the one place positions are encoded.

        Each sample uses its own ids (the release's liger kernel reads sample 0's for the whole
        batch; the official pipeline gives every sample the same ids, so the two agree there).
        """
        return self.pe_embedder(torch.cat((txt_ids, img_ids), dim=1))

    def forward(
        self,
        img: torch.Tensor,
        img_ids: torch.Tensor,
        txt: torch.Tensor,
        txt_ids: torch.Tensor,
        timesteps: torch.Tensor,
        y_vec: torch.Tensor,
        cond: torch.Tensor | None = None,
        guidance: torch.Tensor | None = None,
        **ignored,
    ) -> torch.Tensor:
        """Predict the velocity of packed latent tokens: [B, N_img, in_channels], in the model dtype.

        ``img`` [B, N_img, in_channels], ``img_ids`` [B, N_img, 3] (t, h, w); ``txt`` [B, N_txt,
        context_in_dim], ``txt_ids`` [B, N_txt, 3] (zeros); ``timesteps`` [B] in [0, 1]; ``y_vec``
        [B, vec_in_dim]; ``cond`` required iff cond_embed; ``guidance`` [B] used iff guidance_embed
        (ignored otherwise, as the 2.0 sampler always passes it). Other keywords are ignored.
        """
        vec = self.embed_vector(timesteps, y_vec, guidance)  # (B, hidden)
        img = self.embed_image(img, cond)  # (B, N_img, hidden)
        txt = self.txt_in(txt.to(img.dtype))  # (B, N_txt, hidden)

        # with sequence parallelism this process keeps N_txt_local text and N_img_local image tokens
        shard = self.sequence_parallel.shard(txt.shape[1], img.shape[1]) if self.sequence_parallel is not None else None
        if shard is not None:
            txt, img = shard.split_txt(txt), shard.split_img(img)  # (B, N_txt_local | N_img_local, hidden)
            txt_ids, img_ids = shard.split_txt(txt_ids), shard.split_img(img_ids)
        attend = shard.attend if shard is not None else None
        pe = self.rope(txt_ids, img_ids)  # cos/sin (B, 1, N_txt + N_img, head_dim/2) of the tokens held here

        for block in self.double_blocks:
            img, txt = self.run_block(block, img, txt, vec, pe, attend)
        x = torch.cat((txt, img), dim=1)  # (B, N_txt + N_img, hidden)
        for block in self.single_blocks:
            x = self.run_block(block, x, vec, pe, attend)
        img = x[:, txt.shape[1] :]  # text tokens are dropped
        img = self.final_layer(img, vec)  # (B, N_img, in_channels)
        return shard.gather_img(img) if shard is not None else img


# ---- moving weights between the two rope layouts ----------------------------------------------

# projections whose rows hold (some of) q and k, head after head, and how many of the two they hold
_QK_ROWS = {"q_proj": 1, "k_proj": 1, "qkv": 2, "linear1": 2}


def _permute_qk(tensor: torch.Tensor, perm: torch.Tensor, qk_rows: int) -> torch.Tensor:
    """Reorder each head's channels in the first ``qk_rows`` rows of a projection; later rows are kept."""
    head_dim = perm.numel()
    heads = tensor[:qk_rows].unflatten(0, (-1, head_dim))[:, perm].flatten(0, 1)
    return torch.cat((heads, tensor[qk_rows:]))


def convert_rope_layout(
    state_dict: Mapping[str, torch.Tensor], hidden_size: int, num_heads: int, *, to_interleaved: bool = True
) -> dict[str, torch.Tensor]:
    """The MMDiT weights for the other rope layout: the same outputs with ``use_liger_rope`` flipped.

    ``to_interleaved`` converts rotate-half weights (``use_liger_rope=True``, the 2.0 release) to
    interleaved ones (``use_liger_rope=False``): inside each head new channel 2j <- old j and new
    2j+1 <- old j + head_dim/2, applied to the q and k projection rows and to the QK-norm scales;
    ``to_interleaved=False`` is the inverse. Attention scores only see q.k, so the same
    permutation on q and k changes nothing else. Fused and unfused projections are both handled.
    """
    perm = interleave_permutation(hidden_size // num_heads)
    if not to_interleaved:
        perm = torch.argsort(perm)
    converted = {}
    for name, tensor in state_dict.items():
        module, _, _param = name.rpartition(".")
        kind = module.rpartition(".")[2]
        if kind in ("query_norm", "key_norm"):
            tensor = tensor[perm.to(tensor.device)]
        elif kind in _QK_ROWS:
            tensor = _permute_qk(tensor, perm.to(tensor.device), _QK_ROWS[kind] * hidden_size)
        converted[name] = tensor
    return converted


_RELEASE = dict(
    in_channels=64, vec_in_dim=768, context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0, num_heads=24,
    depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56], theta=10000, qkv_bias=True, patch_size=2,
)  # fmt: skip

MMDIT_PRESETS: dict[str, dict] = {
    # Open-Sora 2.0 (11B): text/image-to-video, conditioned on a masked reference latent
    "MMDiT-v2": dict(_RELEASE, guidance_embed=False, cond_embed=True, fused_qkv=False, use_liger_rope=True),
    # the guidance-distilled text-to-image Flux of the t2i2v pipeline
    "MMDiT-v2-t2i": dict(_RELEASE, guidance_embed=True, cond_embed=False, fused_qkv=True, use_liger_rope=False),
}
MMDIT_PRESETS["flux"] = MMDIT_PRESETS["MMDiT-v2"]  # the release config's type

MMDiT.register_presets(MMDIT_PRESETS)
