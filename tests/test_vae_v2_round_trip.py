"""Both Open-Sora 2.0 video autoencoders round-trip videos of 1, 5, 33 and 129 frames with the
latent sizes they report, and with tiling on by default no encoder or decoder call ever sees more
than one tile, however long the video (the bounded-memory rule)."""

from __future__ import annotations

import pytest
import torch

from opensora.models.vae.dc_ae import VideoDCAE
from opensora.models.vae.hunyuan import AutoencoderKLCausal3D
from tests.test_dc_ae import TINY as TINY_DCAE
from tests.test_hunyuan_vae import TINY as TINY_HUNYUAN
from tests.tiny import one_torch_thread, randomise_weights  # noqa: F401 (autouse fixture)

FRAMES = (1, 5, 33, 129)
SIDE = 40  # two spatial tiles of 32 px in each direction


def hunyuan() -> AutoencoderKLCausal3D:
    # small tiles so that 33 and 129 frames and 40 px span several; tiling is on by default
    return randomise_weights(AutoencoderKLCausal3D(**TINY_HUNYUAN, sample_size=32, sample_tsize=16)).eval()


def dcae() -> VideoDCAE:
    return randomise_weights(VideoDCAE(**TINY_DCAE, spatial_tile_size=32, temporal_tile_size=16)).eval()


BUILDERS = {"hunyuan": hunyuan, "dc_ae": dcae}


class LargestInput:
    """Records the largest (frames, height, width) a module is called with."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.largest = (0, 0, 0)
        module.register_forward_pre_hook(self._record)

    def _record(self, module, args) -> None:
        self.largest = tuple(max(a, b) for a, b in zip(self.largest, args[0].shape[2:]))


def test_tiling_is_on_by_default():
    for build in (AutoencoderKLCausal3D, VideoDCAE):
        tiling = build().default_tiling
        assert tiling.spatial and tiling.temporal


@pytest.mark.parametrize("kind", sorted(BUILDERS))
@pytest.mark.parametrize("frames", FRAMES)
def test_round_trip_has_the_reported_latent_size(kind, frames):
    model = BUILDERS[kind]()
    x = torch.rand(1, 3, frames, SIDE, SIDE) * 2 - 1
    with torch.no_grad():
        z = model.encode(x, sample=False)
        assert list(z.shape) == [1, model.out_channels, *model.get_latent_size([frames, SIDE, SIDE])]
        assert z.shape[2] == (frames - 1) // 4 + 1
        decoded = model.decode(z, num_frames=frames)
    assert list(decoded.shape) == list(x.shape)
    assert torch.isfinite(decoded).all() and decoded.std() > 0


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_no_call_sees_more_than_a_tile_however_long_the_video(kind):
    model = BUILDERS[kind]()
    encoder, decoder = LargestInput(model.encoder), LargestInput(model.decoder)
    seen = {}
    for frames in (33, 129):
        with torch.no_grad():
            model.decode(model.encode(torch.rand(1, 3, frames, SIDE, SIDE), sample=False))
        seen[frames] = encoder.largest, decoder.largest
    # the hunyuan VAE's temporal tiles carry one causal frame more than sample_tsize
    tile_frames = 16 if kind == "dc_ae" else 17
    assert seen[33] == seen[129]  # four times the frames, the same largest call
    (enc_t, enc_h, enc_w), (dec_t, dec_h, dec_w) = seen[129]
    assert enc_t <= tile_frames and max(enc_h, enc_w) <= 32
    assert dec_t <= (tile_frames - 1) // 4 + 1 and max(dec_h, dec_w) <= 32 // 8


def test_dc_ae_round_trip_whose_last_temporal_tile_holds_one_latent_frame():
    model = dcae()  # latent tiles of 4 frames every 3: 25 latent frames leave one for the last tile
    x = torch.rand(1, 3, 100, 16, 16) * 2 - 1
    with torch.no_grad():
        z = model.encode(x)
        assert z.shape[2] == 25
        assert model.decode(z, num_frames=100).shape == x.shape
