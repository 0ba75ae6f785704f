"""Shared layers: position tables, rotary embedding, embedders, final layer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from opensora.errors import ConfigError
from opensora.models.layers.blocks import FinalLayer, select_frames, tile_rows
from opensora.models.layers.embed import CaptionEmbedder, PatchEmbed3D, PositionEmbedding2D, SizeEmbedder
from opensora.models.layers.norm import RMSNorm
from opensora.models.layers.rotary import RotaryEmbedding


def test_position_table_first_half_encodes_columns():
    emb = PositionEmbedding2D(16)(3, 4)[0].view(3, 4, 16)  # (rows, cols, dim)
    cols, rows = emb[..., :8], emb[..., 8:]
    assert torch.allclose(cols[0], cols[2]) and not torch.allclose(cols[:, 0], cols[:, 1])
    assert torch.allclose(rows[:, 0], rows[:, 3]) and not torch.allclose(rows[0], rows[1])


def test_position_table_is_stretched_to_base_size_and_scaled():
    table = PositionEmbedding2D(8)
    # a 2x8 grid stretched to base size 4 spans the same range as a 4x4 grid
    wide = table(2, 8, base_size=4)[0].view(2, 8, 8)
    square = table(4, 4, base_size=4)[0].view(4, 4, 8)
    assert torch.allclose(wide[0, 2, :4], square[0, 1, :4])
    # scale 2 halves positions: column 2 of the scaled table is column 1 of the plain one
    assert torch.allclose(table(4, 4, scale=2.0)[0, 2, :4], table(4, 4)[0, 1, :4])
    assert not torch.allclose(table(4, 4, scale=2.0)[0, 2, :4], table(4, 4)[0, 2, :4])


def test_rotary_scores_depend_only_on_relative_position():
    rope = RotaryEmbedding(8)
    q = torch.randn(8).expand(6, 8)  # the same vector at every position
    k = torch.randn(8).expand(6, 8)
    rq, rk = rope(q.clone()), rope(k.clone())
    scores = rq @ rk.T
    assert torch.allclose(scores[0, 1], scores[3, 4], atol=1e-5)
    assert torch.allclose(scores[2, 0], scores[5, 3], atol=1e-5)
    assert torch.allclose(rope.freqs, 1.0 / 10000 ** (torch.arange(0, 8, 2).float() / 8))


def test_rmsnorm_normalises_in_float32():
    norm = RMSNorm(16)
    x = torch.randn(3, 16, dtype=torch.bfloat16) * 100
    out = norm(x)
    assert out.dtype == torch.float32  # the weight is float32, as released
    assert torch.allclose(out.pow(2).mean(-1), torch.ones(3), atol=1e-2)


def test_position_table_for_a_resolution_scales_and_stretches():
    table = PositionEmbedding2D(8)
    # a 2x8 grid of a 256x1024 picture, trained at 512: scale 1, stretched to the 4x4 grid of 16 tokens
    assert torch.equal(table.for_resolution(2, 8, 256 * 1024, 512), table(2, 8, scale=1.0, base_size=4))
    assert torch.equal(table.for_resolution(4, 4, 1024 * 1024, 512), table(4, 4, scale=2.0, base_size=4))
    with pytest.raises(ConfigError, match="divisible by 4, got 6"):
        PositionEmbedding2D(6)


def test_patch_embed_zero_pads_at_the_end():
    embed = PatchEmbed3D((1, 2, 2), 4, 8)
    x = torch.randn(2, 4, 3, 5, 7)
    out = embed(x)
    assert out.shape == (2, 3 * 3 * 4, 8)
    # the same as the zero-padded latent; a patch wholly inside is the projection of its pixels
    assert torch.equal(out, embed(F.pad(x, (0, 1, 0, 1))))
    first = torch.einsum("octhw,cthw->o", embed.proj.weight, x[0, :, :1, :2, :2]) + embed.proj.bias
    assert torch.allclose(out[0, 0], first, atol=1e-5)


def test_size_embedder_embeds_each_column_and_tiles_a_smaller_batch():
    embed = SizeEmbedder(8)
    out = embed(torch.tensor([24.0]), batch_size=3)
    assert out.shape == (3, 8) and torch.equal(out[0], out[2])
    pairs = embed(torch.tensor([[64.0, 32.0], [16.0, 32.0]]), batch_size=2)  # (height, width) per sample
    assert pairs.shape == (2, 16)
    assert torch.allclose(pairs[:, 8:], embed(torch.tensor([32.0, 32.0]), batch_size=2))
    assert torch.allclose(pairs[:, :8], embed(torch.tensor([64.0, 16.0]), batch_size=2))
    assert not torch.allclose(pairs[0, :8], pairs[1, :8])


def test_tile_rows_repeats_the_batch():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert torch.equal(tile_rows(mask, 4), torch.cat([mask, mask]))
    assert tile_rows(mask, 2) is mask and tile_rows(None, 4) is None


def test_caption_dropout_uses_the_null_caption():
    embed = CaptionEmbedder(4, 8, uncond_prob=1.0, token_num=3)
    caption = torch.randn(2, 1, 3, 4)
    dropped = embed(caption, train=True)
    null = embed(embed.null(2), train=False)
    assert torch.allclose(dropped, null)
    kept = embed(caption, train=False)
    assert not torch.allclose(kept, null)
    forced = embed(caption, train=False, drop_ids=torch.tensor([1, 0]))
    assert torch.allclose(forced[0], null[0]) and torch.allclose(forced[1], kept[1])


def test_final_layer_uses_t0_on_conditioning_frames():
    layer = FinalLayer(8, 4, 2)
    x = torch.randn(1, 2 * 3, 8)  # T=2 frames of S=3 tokens
    t, t0 = torch.randn(1, 8), torch.randn(1, 8)
    plain = layer(x, t)
    mixed = layer(x, t, x_mask=torch.tensor([[True, False]]), t0=t0, T=2, S=3)
    assert torch.allclose(mixed[:, :3], plain[:, :3]) and not torch.allclose(mixed[:, 3:], plain[:, 3:])
    assert torch.equal(select_frames(torch.tensor([[False, True]]), x, -x, 2, 3)[:, :3], -x[:, :3])
