"""The 1.2 video VAE: released layout, latent sizes, round trips on a real video, tiling."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from torch import nn

from opensora.models.vae import VideoAutoencoderPipeline
from opensora.models.vae.spatial import SpatialVAE
from opensora.models.vae.tiling import TileSpec, tiled_apply
from opensora.registry import MODELS, build_module
from tests.conformance.golden import read_layout
from tests.tiny import TINY_VAE_2D, TINY_VAE_TEMPORAL

TINY_2D = TINY_VAE_2D
TINY_TEMPORAL = TINY_VAE_TEMPORAL


def tiny_vae() -> VideoAutoencoderPipeline:
    return VideoAutoencoderPipeline(vae_2d=TINY_2D, vae_temporal=TINY_TEMPORAL).eval()


def write_video(path, frames: np.ndarray, fps: int = 24, codec: str = "libx264") -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def read_video(path) -> torch.Tensor:
    """[3, T, H, W] in [-1, 1]."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    video = torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2).float()
    return video / 127.5 - 1


@pytest.fixture(scope="module")
def real_video(tmp_path_factory) -> torch.Tensor:
    """51 frames of a coloured square moving over a gradient, encoded with H.264 and decoded back."""
    T, H, W = 51, 32, 48
    yy, xx = np.mgrid[0:H, 0:W]
    frames = np.zeros((T, H, W, 3), dtype=np.uint8)
    for t in range(T):
        frames[t, ..., 0] = (xx * 5 + t * 3) % 256
        frames[t, ..., 1] = yy * 7
        frames[t, 8:20, (t % 30) : (t % 30) + 12, 2] = 255
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    write_video(path, frames)
    video = read_video(path)
    assert video.shape == (3, T, H, W)
    return video


def test_layout_matches_release():
    expected = read_layout("layout_vae_v1_2.tsv")
    with torch.device("meta"):
        vae = build_module({"type": "OpenSoraVAE_V1_2"}, MODELS)
    assert [(k, list(v.shape)) for k, v in vae.state_dict().items()] == expected


@pytest.mark.parametrize(("frames", "latent"), [(1, 1), (16, 4), (17, 5), (18, 6), (34, 10), (40, 12), (51, 15)])
def test_latent_size(frames, latent):
    with torch.device("meta"):
        vae = build_module({"type": "OpenSoraVAE_V1_2"}, MODELS)
    assert vae.get_latent_size((frames, 256, 200)) == [latent, 32, 25]
    assert vae.get_latent_size((None, 256, None)) == [None, 32, None]


@pytest.mark.parametrize("frames", [1, 16, 17, 34, 51])
def test_round_trip_on_a_real_video(real_video, frames):
    vae = tiny_vae()
    x = real_video[None, :, :frames]
    with torch.no_grad():
        z = vae.encode(x, sample=False)
        assert list(z.shape) == [1, 4, *vae.get_latent_size((frames, 32, 48))]
        recon = vae.decode(z, num_frames=frames)
        z_sampled = vae.encode(x, generator=torch.Generator().manual_seed(0))
    assert recon.shape == x.shape and torch.isfinite(recon).all()
    assert z_sampled.shape == z.shape and not torch.equal(z_sampled, z)
    # micro-clips are independent both ways: the first 17 frames encode to the same 5 latents alone as in a
    # longer clip, and those 5 latents decode to the same 17 frames alone as in the longer latent
    if frames > 17:
        with torch.no_grad():
            head = vae.encode(x[:, :, :17], sample=False)
            head_recon = vae.decode(z[:, :, :5], num_frames=17)
        assert torch.allclose(z[:, :, :5], head, atol=1e-5)
        assert torch.allclose(recon[:, :, :17], head_recon, atol=1e-5)


def test_tiling_is_exact_for_a_local_operator():
    """Blending and placement are exact when the receptive field fits in the ignored margin."""
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 3, 3, padding=1))

    def upsample(x):
        return conv(nn.functional.interpolate(x, scale_factor=8.0, mode="nearest"))

    def downsample(x):
        return conv(x)[..., ::8, ::8]

    with torch.no_grad():
        x = torch.randn(2, 4, 40, 56)
        assert torch.allclose(tiled_apply(upsample, x, TileSpec(16, 8), 8), upsample(x), atol=1e-5)
        pixels = torch.randn(2, 4, 160, 224)
        tiled = tiled_apply(downsample, pixels, TileSpec(64, 32, align=8), 1 / 8)
        assert torch.allclose(tiled, downsample(pixels), atol=1e-5)
    assert TileSpec(64, 16, align=8).starts(200) == [0, 48, 96, 136]


def test_tiled_vae_is_close_to_untiled():
    """GroupNorm and attention see a tile, not the frame: close, not equal (random tiny weights)."""
    spatial = SpatialVAE(**{k: v for k, v in TINY_2D.items() if k != "type"}).eval()
    z = torch.randn(1, 4, 2, 64, 64)
    pixels = torch.rand(1, 3, 2, 384, 384) * 2 - 1  # 48x48 latents: several 40-latent tiles
    with torch.no_grad():
        spatial.set_tiling(False)
        decoded, encoded = spatial.decode(z), spatial.encode(pixels, sample=False)
        spatial.set_tiling(None, tile=40, overlap=32, threshold=128 * 128)  # auto: these frames are above it
        tiled_decoded, tiled_encoded = spatial.decode(z), spatial.encode(pixels, sample=False)
    for tiled, full in ((tiled_decoded, decoded), (tiled_encoded, encoded)):
        assert tiled.shape == full.shape and not torch.equal(tiled, full)  # tiling really happened
        relative = ((tiled - full).abs().mean() / full.abs().mean()).item()
        assert relative < 0.1, relative
    spatial.set_tiling(None, threshold=512 * 512)  # below the threshold nothing is tiled
    with torch.no_grad():
        assert torch.equal(spatial.decode(z), decoded)


def test_loads_a_release_style_checkpoint_directory(tmp_path):
    """The released config.json names the PixArt SDXL VAE and VAE_Temporal_SD; no download is needed."""
    import json

    from safetensors.torch import save_file

    vae = tiny_vae()
    release_config = {
        "architectures": ["VideoAutoencoderPipeline"],
        "model_type": "VideoAutoencoderPipeline",
        "cal_loss": False,
        "freeze_vae_2d": False,
        "micro_frame_size": 17,
        "scale": [3.85, 2.32, 2.33, 3.06],
        "shift": [-0.1, 0.34, 0.27, 0.98],
        "vae_2d": {**TINY_2D, "from_pretrained": "PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers",
                   "subfolder": "vae", "local_files_only": True},
        "vae_temporal": {**TINY_TEMPORAL, "from_pretrained": None},
        "torch_dtype": "float32",
        "transformers_version": "4.36.2",
    }  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(release_config))
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(tmp_path / "model.safetensors"))
    loaded = build_module({"type": "OpenSoraVAE_V1_2", "from_pretrained": str(tmp_path)}, MODELS)
    for key, value in vae.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.encode(x, sample=False), vae.encode(x, sample=False))
