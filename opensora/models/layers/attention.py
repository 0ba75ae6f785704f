"""Self- and cross-attention with a switchable kernel.

The kernel is chosen per module through its ``backend`` attribute:
``"sdpa"`` (default) uses ``torch.nn.functional.scaled_dot_product_attention``, which never
builds the [B, heads, N, N] score matrix when a fused kernel applies; ``"flash"`` uses the
flash-attn package when it is installed and the tensors are half precision on CUDA, and falls
back to SDPA otherwise; ``"math"`` is the explicit formula, kept as a readable reference.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from opensora.errors import ConfigError
from opensora.models.layers.norm import RMSNorm

BACKENDS = ("sdpa", "flash", "math")


def _flash_attn_func() -> Callable | None:
    try:
        from flash_attn import flash_attn_func
    except ImportError:
        return None
    return flash_attn_func


def _math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    # logits in float32 before softmax, as the released models were trained
    weights = scores.float().softmax(dim=-1).to(q.dtype)
    return weights @ v


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, backend: str = "sdpa"
) -> torch.Tensor:
    """Scaled dot-product attention on [B, heads, N, D] tensors.

    ``mask`` is boolean, broadcastable to [B, heads, Nq, Nk], True where a key may be attended.
    """
    if backend == "math":
        return _math_attention(q, k, v, mask)
    if backend == "flash" and mask is None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        flash = _flash_attn_func()
        if flash is not None:
            out = flash(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # (B, N, heads, D)
            return out.transpose(1, 2)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class SelfAttention(nn.Module):
    """Multi-head self-attention with optional q/k RMSNorm and rotary embedding.

    ``rope_before_norm`` reproduces Open-Sora 1.1, which rotated q/k before normalising them;
    1.2 normalises first.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        rope: nn.Module | None = None,
        rope_before_norm: bool = False,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ConfigError(f"hidden size {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        # a shared module held outside this one's parameters, so it is not saved once per block
        self._rope = [rope] if rope is not None else []
        self.rope_before_norm = rope_before_norm
        self.backend = "sdpa"

    def _rotate(self, x: torch.Tensor) -> torch.Tensor:
        return self._rope[0](x) if self._rope else x

    def forward(self, x: torch.Tensor, attend: Callable | None = None) -> torch.Tensor:
        """``attend(q, k, v, backend) -> out`` replaces the kernel when given; sequence parallelism
        passes one that runs attention over tokens held by other processes."""
        B, N, C = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
        if self.rope_before_norm:
            q, k = self.q_norm(self._rotate(q)), self.k_norm(self._rotate(k))
        else:
            q, k = self._rotate(self.q_norm(q)), self._rotate(self.k_norm(k))
        if attend is not None:
            out = attend(q, k, v, self.backend)
        else:
            out = attention(q, k, v, backend=self.backend)
        out = out.transpose(1, 2).reshape(B, N, C)
        return self.proj(out)


class CrossAttention(nn.Module):
    """Attention from video tokens to the text tokens of the same sample.

    Text arrives padded, [B, L, C], with a [B, L] mask of real tokens; padding keys are masked
    out, which equals attending to the packed variable-length sequences. A sample with no real
    token receives zeros.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ConfigError(f"hidden size {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q_linear = nn.Linear(dim, dim)
        self.kv_linear = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        self.backend = "sdpa"

    def forward(self, x: torch.Tensor, cond: torch.Tensor, cond_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, N, C = x.shape
        L = cond.shape[1]
        q = self.q_linear(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # (B, heads, N, hd)
        kv = self.kv_linear(cond).view(B, L, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)  # each (B, heads, L, hd)
        attn_mask = None
        empty = None
        if cond_mask is not None:
            keep = cond_mask.bool()
            empty = ~keep.any(dim=1)
            # an all-masked row would give NaN; let it see token 0 and zero its output below
            keep = keep | (empty[:, None] & (torch.arange(L, device=keep.device) == 0))
            attn_mask = keep[:, None, None, :]  # (B, 1, 1, L)
        out = attention(q, k, v, mask=attn_mask, backend=self.backend)
        out = out.transpose(1, 2).reshape(B, N, C)
        if empty is not None:
            out = out.masked_fill(empty[:, None, None], 0.0)
        return self.proj(out)


def set_attention_backend(model: nn.Module, backend: str) -> None:
    """Choose the kernel of every attention module in ``model``: "sdpa", "flash" or "math".

    An attention module is one with a ``backend`` attribute that it hands to :func:`attention`
    (:class:`SelfAttention`, :class:`CrossAttention`, the MMDiT blocks).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown attention backend '{backend}' (known: {', '.join(BACKENDS)})")
    for module in model.modules():
        if isinstance(module, SelfAttention | CrossAttention) or isinstance(getattr(module, "backend", None), str):
            module.backend = backend
