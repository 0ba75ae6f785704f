"""The Open-Sora 2.0 Video DC-AE (dc_ae): released layout, sizes and frame rules, the parameter-free
shortcuts, linear attention, tiling (and its release quirks), scaling, save/load and a training step
that learns. Golden values are in tests/conformance."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from opensora.errors import ConfigError
from opensora.models.vae.dc_ae import (
    ConvLayer,
    LinearAttention,
    SpaceToChannelAverage,
    VideoDCAE,
    channel_to_space,
    space_to_channel,
)
from opensora.registry import MODELS, build_module
from tests.conformance.golden import read_layout
from tests.tiny import fit_fixed_batch, one_torch_thread, randomise_weights  # noqa: F401 (autouse fixture)

# the sizes of golden_dcae_v2_tiny: 4 stages, 8x space, 4x time (after stages 1 and 2)
TINY = dict(latent_channels=16, width_list=[8, 16, 32, 32], encoder_depth_list=[1, 1, 1, 1],
            decoder_depth_list=[1, 1, 1, 1], encoder_block_types=["ResBlock", "ResBlock", "EViTS5_GLU", "EViTS5_GLU"],
            decoder_block_types=["ResBlock", "ResBlock", "EViTS5_GLU", "EViTS5_GLU"],
            temporal_downsample=[False, True, True, False], temporal_upsample=[False, True, True, False],
            time_compression_ratio=4, spatial_compression_ratio=8)  # fmt: skip
# the ae dict of the release's configs/diffusion/inference/high_compression.py
RELEASE = dict(type="dc_ae", from_scratch=True, model_name="dc-ae-f32t4c128", from_pretrained=None,
               use_spatial_tiling=True, use_temporal_tiling=True, spatial_tile_size=256, temporal_tile_size=32,
               tile_overlap_factor=0.25)  # fmt: skip


def tiny_dcae(**overrides) -> VideoDCAE:
    return randomise_weights(VideoDCAE(**{**TINY, **overrides})).eval()


def video(T: int, H: int = 16, W: int = 16, B: int = 1) -> torch.Tensor:
    return torch.rand(B, 3, T, H, W) * 2 - 1


# --------------------------------------------------------------------------- the release model


def test_release_layout_matches():
    with torch.device("meta"):
        model = build_module(RELEASE, MODELS)
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert ours == read_layout("layout_dcae_v2.tsv")
    assert sum(p.numel() for p in model.parameters()) == 459_462_147
    assert sum(p.numel() for p in model.encoder.parameters()) == 220_439_936
    assert sum(p.numel() for p in model.decoder.parameters()) == 239_022_211


def test_release_config_builds_with_its_settings():
    assert "dc_ae" in MODELS and "VideoDCAE" in MODELS
    with torch.device("meta"):
        model = build_module({**RELEASE, "device_map": "cuda", "torch_dtype": "bf16"}, MODELS)
        trained = build_module({**RELEASE, "scaling_factor": 0.493}, MODELS)  # the train config's
    assert (model.out_channels, model.temporal_compression, model.spatial_compression) == (128, 4, 32)
    assert not model.causal and model.scaling_factor is None and trained.scaling_factor == 0.493
    tiling = model.tiling
    assert tiling.spatial and tiling.temporal and (tiling.spatial_tile_size, tiling.temporal_tile_size) == (256, 32)
    assert (tiling.latent_spatial_tile_size, tiling.latent_temporal_tile_size, tiling.overlap) == (8, 8, 0.25)
    assert model.get_latent_size([128, 256, 256]) == [32, 8, 8]
    assert model.get_latent_size([1, 768, 1360]) == [1, 24, 43]  # ceil: decoding covers the frame
    assert model.get_latent_size([None, 192, 336]) == [None, 6, 11]


def test_release_factory_checks_its_own_keys():
    with pytest.raises(ConfigError, match="model_name 'dc-ae-f64'"):
        build_module({**RELEASE, "model_name": "dc-ae-f64"}, MODELS)
    with pytest.raises(ConfigError, match="from_scratch=False"):
        build_module({**RELEASE, "from_scratch": False}, MODELS)
    with pytest.raises(ConfigError, match="is_training"):  # a training-only release key: not taken silently
        build_module({**RELEASE, "is_training": True}, MODELS)


# --------------------------------------------------------------------------- shapes and frame rules


@pytest.mark.parametrize("T", [1, 4, 32])
def test_shapes(T):
    model = tiny_dcae()
    with torch.no_grad():
        z = model.encode(video(T))
        assert list(z.shape) == [1, 16, *model.get_latent_size([T, 16, 16])] == [1, 16, max(T // 4, 1), 2, 2]
        out = model.decode(z)
    # one latent frame is never upsampled in time: 4 frames code to 1 latent frame and decode to 1 frame
    assert list(out.shape) == [1, 3, 4 * z.shape[2] if z.shape[2] > 1 else 1, 16, 16]
    assert torch.isfinite(out).all()


def test_sizes_the_encoder_cannot_take_are_padded_with_the_last_frame_row_and_column():
    model = tiny_dcae()
    for T in (5, 33, 129, 6):  # the release fails these (an assertion in its 3-D pixel unshuffle)
        assert not model.codable_frames(T)
        x = video(T, 8, 8)
        padded = model.pad_to_codable(x)
        assert padded.shape[2] == -(-T // 4) * 4 and torch.equal(padded[:, :, :T], x)
        assert (padded[:, :, T:] == x[:, :, -1:]).all()
        with torch.no_grad():
            assert torch.equal(model.encode(x), model.encode(padded))
            assert model(x).x_rec.shape == x.shape  # the training pass cuts its reconstruction back
    assert all(model.codable_frames(T) for T in (1, 2, 4, 8, 16))
    x = video(4, 20, 12)  # 8x model: 20 -> 24 rows, 12 -> 16 columns
    padded = model.pad_to_codable(x)
    assert padded.shape[3:] == (24, 16) and torch.equal(padded[:, :, :, :20, :12], x)
    assert (padded[:, :, :, 20:, :12] == x[:, :, :, -1:]).all() and (padded[..., 12:] == padded[..., 11:12]).all()
    with torch.no_grad():
        z = model.encode(x)
        assert list(z.shape[2:]) == model.get_latent_size([4, 20, 12]) == [1, 3, 2]
        assert model(x).x_rec.shape == x.shape
    with pytest.raises(ValueError, match=r"expected a video \[B, 3"):
        model.encode(torch.zeros(1, 4, 4, 16, 16))
    with torch.no_grad():
        assert model.encode(video(2)).shape[2] == 1  # 2 frames: halved once, then a single frame stays
        # 5 / 33 / 129 frames: latents that decode to 4 * that many frames, cut on request
        assert [model.get_latent_size([T, 8, 8])[0] for T in (5, 33, 129)] == [2, 9, 33]
        z = torch.randn(1, 16, 9, 1, 1)
        assert model.decode(z).shape[2] == 36 and model.decode(z, num_frames=33).shape[2] == 33
        with pytest.raises(ValueError, match="decode to 36 frames, not 37"):
            model.decode(z, num_frames=37)


def test_samples_are_coded_one_at_a_time_with_the_batched_result():
    model = tiny_dcae()
    x = video(8, B=2)
    with torch.no_grad():
        z = model.encode(x)
        assert torch.allclose(z[1:], model.encode(x[1:]), atol=1e-5)
        assert torch.allclose(z, model(x).z, atol=1e-5)  # the training pass codes the batch at once


def test_scaling_factor_divides_on_encode_and_multiplies_on_decode():
    plain = tiny_dcae()
    scaled = VideoDCAE(**TINY, scaling_factor=0.493).eval()
    scaled.load_state_dict(plain.state_dict())
    x, z = video(4), torch.randn(1, 16, 2, 2, 2)
    with torch.no_grad():
        assert torch.allclose(scaled.encode(x), plain.encode(x) / 0.493)
        assert torch.allclose(scaled.decode(z), plain.decode(z * 0.493))


# --------------------------------------------------------------------------- layers


def test_shortcuts_move_pixels_into_channels_and_back():
    x = torch.randn(2, 3, 4, 6, 8)
    for factors in ((2, 2, 2), (1, 2, 2)):
        moved = space_to_channel(x, factors)
        assert list(moved.shape) == [2, 3 * factors[0] * 4, 4 // factors[0], 3, 4]
        assert torch.equal(channel_to_space(moved, factors), x)
    # channel c * 8 + (t * 2 + h) * 2 + w holds position (t, h, w) of each 2x2x2 block
    assert torch.equal(space_to_channel(x, (2, 2, 2))[:, 8 + 5], x[:, 1, 1::2, 0::2, 1::2])
    # the averaging shortcut: 3 x 8 values per output position, averaged in groups of 4
    average = SpaceToChannelAverage(3, 6, factor=2, temporal=True)
    expected = space_to_channel(x, (2, 2, 2)).unflatten(1, (6, 4)).mean(dim=2)
    assert torch.allclose(average(x), expected)
    # a single frame is never resampled in time
    assert list(average(x[:, :, :1]).shape) == [2, 6, 1, 3, 4]


def test_convolutions_are_not_causal():
    conv = ConvLayer(2, 3)
    x = torch.randn(1, 2, 6, 5, 5)
    changed = x.clone()
    changed[:, :, 4] += 1
    with torch.no_grad():
        y, y_changed = conv(x), conv(changed)
        assert not torch.equal(y[:, :, 3], y_changed[:, :, 3]) and torch.equal(y[:, :, :3], y_changed[:, :, :3])
        # zero padding by 1 on every side of T, H and W
        assert torch.allclose(y, F.conv3d(F.pad(x, (1,) * 6), conv.conv.weight, conv.conv.bias), atol=1e-6)


def test_linear_attention_is_the_normalised_relu_kernel_attention():
    qkv = torch.randn(1, 2 * 3 * 32, 2, 3, 3)  # two heads
    out = LinearAttention.attend(qkv)
    q, k, v = qkv.reshape(1, 2, 3, 32, 18).unbind(2)  # (B, heads, d, N) each
    scores = F.relu(k).transpose(-1, -2) @ F.relu(q)  # (B, heads, N_key, N_query)
    expected = (v @ scores) / (scores.sum(dim=2, keepdim=True) + 1e-15)
    assert torch.allclose(out, expected.reshape(1, 64, 2, 3, 3), atol=1e-5)


# --------------------------------------------------------------------------- tiling


def test_set_tiling_switches_and_restores():
    model = tiny_dcae(use_spatial_tiling=True, spatial_tile_size=64)
    assert model.tiling.latent_spatial_tile_size == 8 and model.tiling.latent_temporal_tile_size == 8
    model.set_tiling(False)
    assert not model.tiling.spatial and not model.tiling.temporal
    model.set_tiling(temporal=True, temporal_tile_size=16)
    assert model.tiling.spatial and model.tiling.temporal and model.tiling.latent_temporal_tile_size == 4
    assert model.tiling.spatial_tile_size == 64  # what is not given returns to the constructor's
    model.set_tiling()
    assert model.tiling == model.default_tiling
    # the release factory's latent tiles, which stay at 256 / 32 // compression whatever the pixel sizes
    model.set_tiling(spatial_tile_size=32, latent_spatial_tile_size=32, latent_temporal_tile_size=8)
    assert (model.tiling.spatial_tile_size, model.tiling.latent_spatial_tile_size) == (32, 32)
    with pytest.raises(ValueError, match="too short to advance"):
        model.set_tiling(True, spatial_tile_size=8)  # a one-latent tile cannot advance
    with pytest.raises(ValueError, match="multiples of the compression 8"):
        model.set_tiling(True, spatial_tile_size=40)  # tiles every 30 px would not start on the latent grid


class _LocalEncoder(torch.nn.Module):
    """A local operator with the tiny encoder's sizes: (B, 3, T, H, W) -> (B, 16, T/4, H/8, W/8)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(x, (min(4, x.shape[2]), 8, 8)).repeat(1, 6, 1, 1, 1)[:, :16]


class _LocalDecoder(torch.nn.Module):
    """Repeating latents: (B, 16, T', h, w) -> (B, 3, 4T', 8h, 8w), a single latent frame into one frame."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        frames = z[:, :3].repeat_interleave(4 if z.shape[2] > 1 else 1, dim=2)
        return frames.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)


def _local_stand_ins(model: VideoDCAE) -> VideoDCAE:
    """The model with local operators for encoder and decoder, for which tiling is exact."""
    model.encoder, model.decoder = _LocalEncoder(), _LocalDecoder()
    return model


def test_tiles_blend_back_to_the_untiled_result_for_local_operators():
    model, tiled_model = _local_stand_ins(tiny_dcae()), _local_stand_ins(tiny_dcae())
    x, z = video(32, 56, 48), torch.randn(1, 16, 8, 7, 6)  # 3 temporal and 3 x 2 spatial tiles, short last ones
    tiled_model.set_tiling(True, spatial_tile_size=32, temporal_tile_size=16)
    for untiled, tiled in ((model.encode(x), tiled_model.encode(x)), (model.decode(z), tiled_model.decode(z))):
        assert tiled.shape == untiled.shape and torch.allclose(tiled, untiled, atol=1e-6)


def test_a_trailing_temporal_tile_of_one_latent_frame_still_decodes_to_four_frames():
    model = tiny_dcae()
    z = torch.randn(1, 16, 7, 1, 1)  # tiles of 4 latent frames every 3: [0:4], [3:7], [6:7]
    with torch.no_grad():
        assert model.decode(z).shape[2] == 28
        model.set_tiling(temporal=True, temporal_tile_size=16)
        assert model.decode(z).shape[2] == 28  # the release gives 12 + 12 + 1
        for n in range(5, 30):  # every length, whatever its last tile
            assert model.decode(torch.randn(1, 16, n, 1, 1)).shape[2] == 4 * n, n


def test_tiled_model_keeps_sizes_and_waits_for_inputs_beyond_the_tile():
    model = tiny_dcae()
    x = video(16, 32, 32)
    with torch.no_grad():
        z, out = model.encode(x), model.decode(torch.randn(1, 16, 4, 4, 4))
        model.set_tiling(True, spatial_tile_size=32, temporal_tile_size=16)  # nothing exceeds a tile
        assert torch.equal(model.encode(x), z) and model.decode(torch.randn(1, 16, 4, 4, 4)).shape == out.shape
        x = video(24, 40, 40)  # 2 temporal x 2 x 2 spatial tiles
        assert list(model.encode(x).shape) == [1, 16, *model.get_latent_size([24, 40, 40])]


# --------------------------------------------------------------------------- persistence and training


def test_save_and_load_round_trip(tmp_path):
    model = tiny_dcae(use_temporal_tiling=False, scaling_factor=0.5)
    model.save_pretrained(tmp_path / "dcae")
    loaded = VideoDCAE.from_pretrained(tmp_path / "dcae")
    assert "use_temporal_tiling" not in loaded.config and loaded.tiling.temporal  # runtime switches stay out
    assert loaded.config == model.config and loaded.scaling_factor == 0.5
    x = video(4)
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), model.encode(x))
    built = build_module({"type": "dc_ae", "from_pretrained": str(tmp_path / "dcae"), "use_spatial_tiling": False},
                         MODELS)  # fmt: skip
    assert built.config == model.config and not built.tiling.spatial
    # a release-style single weights file (no config.json): the sizes come from the preset and overrides
    save_file(model.state_dict(), tmp_path / "ae.safetensors")
    single = build_module({"type": "dc_ae", "from_pretrained": str(tmp_path / "ae.safetensors"), **TINY}, MODELS)
    assert torch.equal(single.decoder.project_out.op_list[2].conv.weight, model.last_decoder_layer())


def test_constructor_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="compress space 8x, not spatial_compression_ratio=32"):
        VideoDCAE(**{**TINY, "spatial_compression_ratio": 32})
    with pytest.raises(ValueError, match="compresses time 2x"):
        VideoDCAE(**{**TINY, "temporal_downsample": [False, False, True, False]})
    with pytest.raises(ValueError, match="its entry must be False"):
        VideoDCAE(**{**TINY, "temporal_upsample": [False, True, False, True]})
    with pytest.raises(ValueError, match=r"width \[16\] are not multiples"):
        VideoDCAE(**{**TINY, "encoder_block_types": ["ResBlock", "EViT_GLU", "EViTS5_GLU", "EViTS5_GLU"]})
    with pytest.raises(ValueError, match="not among"):
        VideoDCAE(**{**TINY, "decoder_block_types": "MBConv"})
    with pytest.raises(ValueError, match="3 entries for 4 stages"):
        VideoDCAE(**{**TINY, "decoder_depth_list": [1, 1, 1]})


def test_checkpointing_keeps_gradients():
    model = tiny_dcae().train()
    x = video(1)
    grads = []
    for enabled in (False, True):
        model.set_grad_checkpointing(enabled)
        model.zero_grad()
        model(x).x_rec.square().mean().backward()
        grads.append(model.encoder.project_in.conv.weight.grad.clone())
    assert torch.allclose(*grads, atol=1e-6)


def test_training_step_lowers_the_reconstruction_loss():
    model = tiny_dcae().train()
    # a smooth video (8 frames, 16 x 16): what 128 latent values can hold, unlike noise
    t, h, w = (torch.linspace(0, 1, n).view(shape) for n, shape in ((8, (8, 1, 1)), (16, (1, 16, 1)), (16, (1, 1, 16))))
    x = torch.stack([torch.sin(3 * h + 2 * w + t), torch.cos(2 * h - w + 2 * t), 0.5 * torch.sin(4 * h * w - t)])[None]

    def loss_at(_step):
        return F.mse_loss(model(x).x_rec, x)

    first, last = fit_fixed_batch(model, loss_at, steps=12, lr=3e-3)
    assert last < 0.6 * first
