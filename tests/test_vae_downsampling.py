"""A spatial VAE with three down blocks halves the frame twice (4x), and the pipeline follows it."""

from __future__ import annotations

import torch

from opensora.registry import MODELS, build_module
from tests.tiny import TINY_VAE_TEMPORAL


def test_three_block_vae_is_4x_spatially():
    vae_2d = dict(type="VideoAutoencoderKL", AutoencoderKL_config=dict(
        block_out_channels=[8, 16, 16], down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3, layers_per_block=1, norm_num_groups=4, latent_channels=4))  # fmt: skip
    vae = build_module(dict(type="VideoAutoencoderPipeline", vae_2d=vae_2d, vae_temporal=TINY_VAE_TEMPORAL), MODELS)
    assert vae.get_latent_size((17, 64, 96)) == [5, 16, 24]
    with torch.no_grad():
        z = vae.encode(torch.rand(1, 3, 17, 64, 96) * 2 - 1, sample=False)
        assert z.shape == (1, 4, 5, 16, 24)
        assert vae.decode(z, num_frames=17).shape == (1, 3, 17, 64, 96)
        vae.set_tiling(True, tile=8, overlap=2)  # tiles in latent positions of 4 pixels each
        assert vae.decode(z, num_frames=17).shape == (1, 3, 17, 64, 96)
