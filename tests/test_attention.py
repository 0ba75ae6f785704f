"""Attention kernels: agreement with the explicit formula, masking, and no N x N score matrix."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from opensora.errors import ConfigError, OpenSoraError
from opensora.models.layers.attention import CrossAttention, SelfAttention, attention
from opensora.models.layers.rotary import RotaryEmbedding


def _ops(fn) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {event.name for event in prof.events()}


def test_sdpa_matches_math_with_and_without_mask():
    q, k, v = (torch.randn(2, 4, 10, 16) for _ in range(3))
    mask = torch.rand(2, 1, 1, 10) > 0.3
    mask[..., 0] = True
    assert torch.allclose(attention(q, k, v), attention(q, k, v, backend="math"), atol=1e-5)
    assert torch.allclose(attention(q, k, v, mask), attention(q, k, v, mask, backend="math"), atol=1e-5)


def test_self_attention_never_builds_the_score_matrix():
    attn = SelfAttention(64, 4, qk_norm=True, rope=RotaryEmbedding(16))
    x = torch.randn(1, 1024, 64)
    with torch.no_grad():
        fused = _ops(lambda: attn(x))
        attn.backend = "math"
        explicit = _ops(lambda: attn(x))
    # the explicit formula shows up as a softmax over [B, heads, N, N]; the fused kernel does not
    assert any("softmax" in name for name in explicit)
    assert not any("softmax" in name for name in fused), sorted(fused)
    assert any("flash_attention" in name or "efficient_attention" in name for name in fused), sorted(fused)


def test_cross_attention_masks_padding_and_handles_empty_captions():
    cross = CrossAttention(32, 4).eval()
    x = torch.randn(3, 20, 32)
    y = torch.randn(3, 6, 32)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        out = cross(x, y, mask)
        # sample 1 equals attention to its two real tokens alone
        alone = cross(x[1:2], y[1:2, :2], None)
        assert torch.allclose(out[1], alone[0], atol=1e-5)
        # a sample with no real tokens receives only the output projection's bias
        assert torch.allclose(out[2], cross.proj.bias.expand(20, -1), atol=1e-6)
        assert torch.isfinite(out).all()
        ops = _ops(lambda: cross(x, y, mask))
    assert not any("softmax" in name for name in ops), sorted(ops)


def test_self_attention_normalises_then_rotates_q_and_k():
    rope = RotaryEmbedding(8)
    attn = SelfAttention(16, 2, qk_norm=True, rope=rope).eval()
    legacy = SelfAttention(16, 2, qk_norm=True, rope=rope, rope_before_norm=True).eval()
    with torch.no_grad():
        for layer in (attn, legacy):
            layer.load_state_dict(attn.state_dict())
            layer.q_norm.weight.copy_(torch.linspace(0.5, 1.5, 8))  # RMSNorm scales do not commute with rope
            layer.k_norm.weight.copy_(torch.linspace(1.5, 0.5, 8))
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        q, k, v = attn.qkv(x).view(2, 5, 3, 2, 8).permute(2, 0, 3, 1, 4)  # each (B, heads, N, head_dim)
        q, k = rope(attn.q_norm(q)), rope(attn.k_norm(k))
        weights = (q @ k.transpose(-2, -1) / 8**0.5).softmax(dim=-1)
        expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 5, 16))
        assert torch.allclose(attn(x), expected, atol=1e-5)
        assert not torch.allclose(legacy(x), expected, atol=1e-4)


def test_head_count_that_does_not_divide_the_width_is_a_config_error():
    for layer in (SelfAttention, CrossAttention):
        with pytest.raises(ConfigError, match="hidden size 30 is not divisible by num_heads 4") as err:
            layer(30, 4)
        assert isinstance(err.value, OpenSoraError)
