"""The Open-Sora 2.0 causal VAE (hunyuan_vae): released layout, sizes, causality, tiling, sampling,
slicing, save/load and a training step that learns. Golden values are in tests/conformance."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from opensora.models.vae.hunyuan import AutoencoderKLCausal3D, CausalConv3d, FrameCausalAttention
from opensora.models.vae.tiling import tile_spatially
from opensora.registry import MODELS, build_module
from tests.conformance.golden import read_layout
from tests.tiny import fit_fixed_batch, one_torch_thread, randomise_weights  # noqa: F401 (autouse fixture)

TINY = dict(latent_channels=4, block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4)
# the ae dict of the release's configs/diffusion/inference/256px.py
RELEASE_256PX = dict(type="hunyuan_vae", from_pretrained=None, in_channels=3, out_channels=3, layers_per_block=2,
                     latent_channels=16, use_spatial_tiling=True, use_temporal_tiling=False)  # fmt: skip


def tiny_vae(**overrides) -> AutoencoderKLCausal3D:
    return randomise_weights(AutoencoderKLCausal3D(**{**TINY, **overrides})).eval()


def video(T: int, H: int, W: int, B: int = 1) -> torch.Tensor:
    return torch.rand(B, 3, T, H, W) * 2 - 1


def test_release_layout_matches():
    with torch.device("meta"):
        model = build_module(RELEASE_256PX, MODELS)
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert ours == read_layout("layout_hunyuan_vae_v2.tsv")
    assert sum(p.numel() for p in model.parameters()) == 246_478_803


def test_release_config_builds_with_its_defaults():
    assert "hunyuan_vae" in MODELS and "AutoencoderKLCausal3D" in MODELS
    with torch.device("meta"):
        model = build_module({**RELEASE_256PX, "device_map": "cuda", "torch_dtype": "bf16", "channel": False}, MODELS)
    assert (model.out_channels, model.temporal_compression, model.spatial_compression) == (16, 4, 8)
    assert model.causal and model.scale_factor == 0.476986 and model.shift_factor == 0
    assert model.tiling.spatial and not model.tiling.temporal
    assert (model.tiling.sample_size, model.tiling.sample_tsize, model.tiling.overlap) == (256, 64, 0.25)
    assert model.get_latent_size([129, 192, 336]) == [33, 24, 42]
    assert model.get_latent_size([1, 256, 256]) == [1, 32, 32]
    assert model.get_latent_size([None, 100, 60]) == [None, 13, 8]


@pytest.mark.parametrize("T", [1, 5, 9, 17])
def test_shapes(T):
    model = tiny_vae()
    x = video(T, 20, 28)  # not multiples of 8: the strided convs round up
    with torch.no_grad():
        z = model.encode(x)
        assert list(z.shape) == [1, 4, *model.get_latent_size([T, 20, 28])]
        out = model.decode(z)
    assert list(out.shape) == [1, 3, 4 * (z.shape[2] - 1) + 1, 24, 32]
    assert torch.isfinite(out).all()


def test_decode_crops_to_num_frames():
    model = tiny_vae()
    z = torch.randn(1, 4, 3, 2, 2)
    with torch.no_grad():
        full = model.decode(z)
        assert torch.equal(model.decode(z, num_frames=7), full[:, :, :7])
        with pytest.raises(ValueError, match="decode to 9 frames"):
            model.decode(z, num_frames=10)


def test_convolutions_are_causal_with_replicate_padding():
    conv = CausalConv3d(2, 3, 3)
    x = torch.randn(1, 2, 6, 5, 5)
    changed = x.clone()
    changed[:, :, 4:] += 1
    with torch.no_grad():
        y, y_changed = conv(x), conv(changed)
        assert torch.equal(y[:, :, :4], y_changed[:, :, :4]) and not torch.equal(y[:, :, 4:], y_changed[:, :, 4:])
        # the front of T and the borders of H, W repeat the edge values
        padded = F.pad(x, (1, 1, 1, 1, 2, 0), mode="replicate")
        assert torch.allclose(y, conv.conv(padded))
        assert torch.allclose(padded[:, :, 0], padded[:, :, 2]) and torch.allclose(padded[..., 0], padded[..., 1])


def test_mid_attention_sees_its_own_and_earlier_frames():
    attention = FrameCausalAttention(8, 4)
    attention.group_norm = torch.nn.Identity()  # its statistics span all frames
    x = torch.randn(1, 8, 3, 2, 2)
    changed = x.clone()
    changed[:, :, 2, 1, 1] += 1  # one position of the last frame
    with torch.no_grad():
        y, y_changed = attention(x), attention(changed)
    assert torch.equal(y[:, :, :2], y_changed[:, :, :2])
    assert not torch.allclose(y[:, :, 2, 0, 0], y_changed[:, :, 2, 0, 0])  # the whole last frame sees it


def test_encode_samples_from_the_posterior():
    model = tiny_vae()
    x = video(5, 16, 16)
    with torch.no_grad():
        posterior = model.posterior(x)
        noise = torch.randn_like(posterior.mean)
        z = model.encode(x, noise=noise)
        assert torch.allclose(z, model.scale_factor * (posterior.mean + posterior.std * noise - model.shift_factor))
        assert torch.allclose(model.encode(x, sample=False), model.scale_factor * posterior.mean)
        draws = [model.encode(x, generator=torch.Generator().manual_seed(1)) for _ in range(2)]
        assert torch.equal(*draws)
    assert posterior.logvar.min() >= -30 and posterior.logvar.max() <= 20
    with pytest.raises(ValueError, match="sample=False"):
        model.encode(x, sample=False, noise=noise)
    with pytest.raises(ValueError, match=r"expected a video \[B, 3"):
        model.encode(torch.zeros(1, 4, 5, 16, 16))


def test_slicing_gives_the_batched_result():
    model = tiny_vae()
    x, z = video(2, 16, 16, B=2), torch.randn(2, 4, 2, 2, 2)
    with torch.no_grad():
        batched = model.encode(x, sample=False), model.decode(z)
        model.set_slicing(True)
        sliced = model.encode(x, sample=False), model.decode(z)
    for a, b in zip(sliced, batched):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())  # round-off only


# --------------------------------------------------------------------------- tiling


def test_set_tiling_switches_and_restores():
    model = tiny_vae(use_spatial_tiling=True, sample_size=64)
    model.set_tiling(False)
    assert not model.tiling.spatial and not model.tiling.temporal
    model.set_tiling(temporal=True, sample_tsize=16)
    assert model.tiling.spatial and model.tiling.temporal and model.tiling.sample_tsize == 16
    assert model.tiling.sample_size == 64  # what is not given returns to the constructor's
    model.set_tiling()
    assert model.tiling == model.default_tiling
    with pytest.raises(ValueError, match="too short to advance"):
        model.set_tiling(True, sample_size=8)  # a one-latent tile cannot advance


def _local_stand_ins(model: AutoencoderKLCausal3D) -> None:
    """Replace the encoder and decoder by local operators with the VAE's sizes (8x8 pooling and
    keeping every 4th frame; nearest upsampling and repeating frames), for which tiling is exact."""

    def moments(x):  # (B, 3, T, H, W) -> (B, 8, (T-1)//4+1, H/8, W/8)
        mean = F.avg_pool3d(x[:, :, ::4], (1, 8, 8))
        mean = torch.cat([mean, mean[:, :1] * 2], dim=1)
        return torch.cat([mean, torch.zeros_like(mean)], dim=1)

    def decode(z):  # (B, 4, T', h, w) -> (B, 3, 4(T'-1)+1, 8h, 8w)
        frames = torch.cat([z[:, :3, :1], z[:, :3, 1:].repeat_interleave(4, dim=2)], dim=2)
        return frames.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)

    model._moments_whole, model._decode_whole = moments, decode


@pytest.mark.parametrize("kind", ["spatial", "both"])
def test_tiles_blend_back_to_the_untiled_result_for_local_operators(kind):
    model = tiny_vae()
    _local_stand_ins(model)
    x, z = video(37, 56, 48), torch.randn(1, 4, 10, 7, 6)  # 3 temporal, 3 x 2 spatial tiles, partial ones at the ends
    untiled = model.encode(x, sample=False), model.decode(z)
    model.set_tiling(spatial=True, temporal=kind == "both", sample_size=32, sample_tsize=16)
    tiled = model.encode(x, sample=False), model.decode(z)
    for a, b in zip(tiled, untiled):
        assert torch.allclose(a, b, atol=1e-6)


def test_tile_seams_are_cross_faded():
    x = torch.arange(12.0).repeat(1, 1, 1, 12, 1)  # (1, 1, 1, 12, 12), columns 0..11
    offsets = iter(range(100))
    out = tile_spatially(lambda tile: tile + 10 * next(offsets), x, tile=8, stride=6, extent=2, keep=6)
    # two columns of tiles: the second (offset +10) fades in from the first over 2 columns
    assert torch.allclose(out[0, 0, 0, 0], torch.tensor([0, 1, 2, 3, 4, 5, 6, 12, 18, 19, 20, 21.0]))


def test_tiling_waits_for_inputs_beyond_the_tile():
    model = tiny_vae()
    x = video(17, 32, 32)
    with torch.no_grad():
        z = model.encode(x, sample=False)
        out = model.decode(z)
        model.set_tiling(True, sample_size=32, sample_tsize=20)  # 32 px, 20 frames, 5 latent frames: no tiles
        assert torch.equal(model.encode(x, sample=False), z) and torch.equal(model.decode(z), out)


def test_tiled_model_keeps_sizes():
    model = tiny_vae()
    x = video(21, 40, 40)
    model.set_tiling(True, sample_size=32, sample_tsize=16)
    with torch.no_grad():
        z = model.encode(x)
        assert list(z.shape) == [1, 4, *model.get_latent_size([21, 40, 40])]
        assert list(model.decode(z).shape) == list(x.shape)


# --------------------------------------------------------------------------- persistence and training


def test_save_and_load_round_trip(tmp_path):
    model = tiny_vae(use_spatial_tiling=False, sample_size=64)
    model.save_pretrained(tmp_path / "vae")
    loaded = AutoencoderKLCausal3D.from_pretrained(tmp_path / "vae")
    assert "use_spatial_tiling" not in loaded.config and loaded.tiling.spatial  # runtime switches stay out
    x = video(5, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.encode(x, sample=False), model.encode(x, sample=False))
    assert (
        build_module({"type": "hunyuan_vae", "from_pretrained": str(tmp_path / "vae")}, MODELS).config == model.config
    )


def test_constructor_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="powers of 2"):
        AutoencoderKLCausal3D(**{**TINY, "spatial_compression_ratio": 6})
    with pytest.raises(ValueError, match="divisible by norm_num_groups"):
        AutoencoderKLCausal3D(**{**TINY, "norm_num_groups": 3})
    with pytest.raises(ValueError, match="act_fn"):
        AutoencoderKLCausal3D(**{**TINY, "act_fn": "tanh"})


def test_checkpointing_keeps_gradients():
    model = tiny_vae().train()
    x = video(1, 16, 16)
    grads = []
    for enabled in (False, True):
        model.set_grad_checkpointing(enabled)
        model.zero_grad()
        model(x, sample=False).x_rec.square().mean().backward()
        grads.append(model.encoder.conv_in.conv.weight.grad.clone())
    assert torch.allclose(*grads, atol=1e-6)


def test_training_step_lowers_the_loss():
    model = tiny_vae().train()
    x = video(1, 16, 16)

    def loss_at(_step):
        out = model(x, generator=torch.Generator().manual_seed(0))
        return F.mse_loss(out.x_rec, x) + 1e-6 * out.posterior.kl().mean()

    first, last = fit_fixed_batch(model, loss_at, steps=12, lr=3e-3)
    assert last < 0.8 * first
