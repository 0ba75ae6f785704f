"""FLUX.1's image autoencoder (flux_ae / autoencoder_2d): BFL's released layout and parameter count,
loading a BFL-named file, per-frame shapes, latent normalisation, sampling and errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from opensora.config import read_config
from opensora.errors import CheckpointError
from opensora.models.vae.flux_ae import FluxAutoencoder, convert_bfl_state_dict
from opensora.registry import MODELS, build_module
from tests.tiny import one_torch_thread, randomise_weights  # noqa: F401 (autouse fixture)

ROOT = Path(__file__).resolve().parents[1]
# the img_flux_ae dict of the release's configs/diffusion/inference/t2i2v_256px.py
RELEASE = dict(type="autoencoder_2d", from_pretrained=None, resolution=256, in_channels=3, ch=128, out_ch=3,
               ch_mult=[1, 2, 4, 4], num_res_blocks=2, z_channels=16,
               scale_factor=0.3611, shift_factor=0.1159)  # fmt: skip
ARCH = ("in_channels", "ch", "out_ch", "ch_mult", "num_res_blocks", "z_channels")
# four levels as released (8x down), a few channels
TINY = dict(ch=8, ch_mult=[1, 2, 2, 2], num_res_blocks=1, z_channels=16, norm_num_groups=4)
FLUX1_AE_PARAMETERS = 83_819_683


def tiny_ae(**overrides) -> FluxAutoencoder:
    return randomise_weights(FluxAutoencoder(**{**TINY, **overrides})).eval()


def video(T: int, H: int, W: int, B: int = 1) -> torch.Tensor:
    return torch.rand(B, 3, T, H, W) * 2 - 1


# --------------------------------------------------------------------------- BFL's layout, written out


def bfl_layout(in_channels: int, ch: int, out_ch: int, ch_mult: list[int], num_res_blocks: int,
               z_channels: int) -> dict[str, list[int]]:  # fmt: skip
    """Name -> shape of every tensor of BFL's AutoEncoder (flux/modules/autoencoder.py), in its order."""
    shapes: dict[str, list[int]] = {}

    def conv(name: str, cin: int, cout: int, k: int) -> None:
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = [cout, cin, k, k], [cout]

    def norm(name: str, c: int) -> None:
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = [c], [c]

    def resnet(name: str, cin: int, cout: int) -> None:
        norm(f"{name}.norm1", cin)
        conv(f"{name}.conv1", cin, cout, 3)
        norm(f"{name}.norm2", cout)
        conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cin, cout, 1)

    def mid(coder: str, c: int) -> None:
        resnet(f"{coder}.mid.block_1", c, c)
        norm(f"{coder}.mid.attn_1.norm", c)
        for proj in ("q", "k", "v", "proj_out"):
            conv(f"{coder}.mid.attn_1.{proj}", c, c, 1)
        resnet(f"{coder}.mid.block_2", c, c)

    levels = len(ch_mult)
    conv("encoder.conv_in", in_channels, ch, 3)
    width = ch
    for i, m in enumerate(ch_mult):
        for j in range(num_res_blocks):
            resnet(f"encoder.down.{i}.block.{j}", width, ch * m)
            width = ch * m
        if i != levels - 1:
            conv(f"encoder.down.{i}.downsample.conv", width, width, 3)
    mid("encoder", width)
    norm("encoder.norm_out", width)
    conv("encoder.conv_out", width, 2 * z_channels, 3)

    width = ch * ch_mult[-1]
    conv("decoder.conv_in", z_channels, width, 3)
    mid("decoder", width)
    for i in reversed(range(levels)):
        for j in range(num_res_blocks + 1):
            resnet(f"decoder.up.{i}.block.{j}", width, ch * ch_mult[i])
            width = ch * ch_mult[i]
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv", width, width, 3)
    norm("decoder.norm_out", width)
    conv("decoder.conv_out", width, out_ch, 3)
    return shapes


# ours -> BFL, written independently of the module's BFL -> ours rules
TO_BFL = [
    (r"^autoencoder\.", ""),
    (r"\.mid_block\.resnets\.0\.", ".mid.block_1."),
    (r"\.mid_block\.resnets\.1\.", ".mid.block_2."),
    (r"\.mid_block\.attentions\.0\.group_norm\.", ".mid.attn_1.norm."),
    (r"\.mid_block\.attentions\.0\.to_([qkv])\.", r".mid.attn_1.\1."),
    (r"\.mid_block\.attentions\.0\.to_out\.0\.", ".mid.attn_1.proj_out."),
    (r"\.down_blocks\.(\d+)\.resnets\.", r".down.\1.block."),
    (r"\.down_blocks\.(\d+)\.downsamplers\.0\.", r".down.\1.downsample."),
    (r"\.up_blocks\.(\d+)\.resnets\.", r".up.<\1>.block."),
    (r"\.up_blocks\.(\d+)\.upsamplers\.0\.", r".up.<\1>.upsample."),
    (r"\.conv_shortcut\.", ".nin_shortcut."),
    (r"\.conv_norm_out\.", ".norm_out."),
]


def to_bfl_name(name: str, levels: int) -> str:
    for pattern, replacement in TO_BFL:
        name = re.sub(pattern, replacement, name)
    return re.sub(r"<(\d+)>", lambda m: str(levels - 1 - int(m[1])), name)  # diffusers' up order -> BFL's


def to_bfl(state_dict: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in state_dict.items():
        bfl = to_bfl_name(name, levels)
        if ".attn_1." in bfl and ".norm." not in bfl and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # Linear -> 1x1 conv
        out[bfl] = tensor.contiguous()
    return out


# --------------------------------------------------------------------------- the release


def test_release_layout_is_bfl_ae():
    with torch.device("meta"):
        model = build_module(RELEASE, MODELS)
    assert isinstance(model, FluxAutoencoder)
    assert sum(p.numel() for p in model.parameters()) == FLUX1_AE_PARAMETERS
    expected = bfl_layout(**{key: RELEASE[key] for key in ARCH})
    assert sum(torch.Size(shape).numel() for shape in expected.values()) == FLUX1_AE_PARAMETERS
    ours = {name: list(t.shape) for name, t in to_bfl(model.state_dict(), 4).items()}
    assert len(ours) == len(expected) == 244
    assert ours == expected
    assert ours["decoder.up.0.block.2.conv2.weight"] == [128, 128, 3, 3]
    assert ours["decoder.up.3.upsample.conv.weight"] == [512, 512, 3, 3]
    assert "decoder.up.0.upsample.conv.weight" not in ours and "encoder.down.3.downsample.conv.weight" not in ours
    assert ours["encoder.mid.attn_1.q.weight"] == [512, 512, 1, 1]
    assert ours["decoder.conv_in.weight"] == [512, 16, 3, 3]
    assert ours["encoder.conv_out.weight"] == [32, 512, 3, 3]
    assert ours["encoder.down.1.block.0.nin_shortcut.weight"] == [256, 128, 1, 1]
    # and the loader's direction: BFL's names and shapes become exactly the model's
    released = {name: torch.empty(shape, device="meta") for name, shape in expected.items()}
    converted = {name: list(t.shape) for name, t in convert_bfl_state_dict(released, 4).items()}
    assert converted == {name: list(t.shape) for name, t in model.state_dict().items()}


def test_release_config_builds_with_its_defaults():
    assert {"autoencoder_2d", "flux_ae", "FluxAutoencoder"} <= set(MODELS.names())
    with torch.device("meta"):
        bare = build_module(dict(type="flux_ae"), MODELS)
        release = build_module({**RELEASE, "device_map": "cuda", "torch_dtype": torch.bfloat16, "cache_dir": None},
                               MODELS)  # fmt: skip
    assert bare.config == release.config
    assert (bare.out_channels, bare.spatial_compression) == (16, 8)
    assert (bare.scale_factor, bare.shift_factor) == (0.3611, 0.1159)
    assert not hasattr(bare, "causal")  # an image coder: the flag belongs to the video VAEs
    assert bare.get_latent_size([1, 768, 768]) == [1, 96, 96]
    assert bare.get_latent_size([None, 100, 60]) == [None, 13, 8]


def test_t2i2v_config_vae_builds():
    path = ROOT / "configs/opensora-v2/inference/t2i2v_256px.py"
    if not path.is_file():
        pytest.skip(f"{path} is not in this checkout")
    cfg = dict(read_config(path)["t2i"]["vae"], from_pretrained=None)  # the weights are not here
    with torch.device("meta"):
        model = build_module(cfg, MODELS)
    reference = {key: value for key, value in RELEASE.items() if key not in ("type", "from_pretrained")}
    assert {key: model.config[key] for key in reference} == reference


# --------------------------------------------------------------------------- shapes and coding


@pytest.mark.parametrize("T", [1, 3])
def test_shapes(T):
    model = tiny_ae()
    with torch.no_grad():
        z = model.encode(video(T, 32, 48, B=2))
        assert list(z.shape) == [2, 16, *model.get_latent_size([T, 32, 48])] == [2, 16, T, 4, 6]
        out = model.decode(z, num_frames=T)
    assert list(out.shape) == [2, 3, T, 32, 48]
    assert torch.isfinite(out).all()


def test_frames_are_coded_independently():
    model = tiny_ae()
    x = video(3, 16, 16)
    with torch.no_grad():
        z = model.encode(x, sample=False)
        assert torch.allclose(z[:, :, 1:2], model.encode(x[:, :, 1:2], sample=False), atol=1e-5)
        assert torch.allclose(model.decode(z)[:, :, 2:], model.decode(z[:, :, 2:]), atol=1e-5)


def test_sides_off_the_8_grid():
    """Encoding drops an odd last row at each stride-2 conv (floor); get_latent_size is the size
    whose decoding covers the frame (ceil), which the pipeline crops back."""
    model = tiny_ae()
    with torch.no_grad():
        z = model.encode(video(1, 20, 28))
    assert list(z.shape[-2:]) == [2, 3]
    T, h, w = model.get_latent_size([1, 20, 28])
    assert (h, w) == (3, 4)
    with torch.no_grad():
        out = model.decode(torch.randn(1, 16, T, h, w))
    assert out.shape[-2] >= 20 and out.shape[-1] >= 28


def test_scale_and_shift_normalise_latents():
    model = tiny_ae(scale_factor=0.5, shift_factor=0.25)
    x = video(2, 16, 24)
    with torch.no_grad():
        frames = x.transpose(1, 2).flatten(0, 1)  # (B*T, 3, H, W)
        raw = model.autoencoder.encode(frames).latent_dist.mode()  # (B*T, 16, h, w)
        z = model.encode(x, sample=False)
        assert torch.allclose(z, (0.5 * (raw - 0.25)).unflatten(0, (1, 2)).transpose(1, 2), atol=1e-6)
        decoded = model.autoencoder.decode(raw).sample.unflatten(0, (1, 2)).transpose(1, 2)
        assert torch.allclose(model.decode(z), decoded, atol=1e-5)  # decode undoes the normalisation
        plain = FluxAutoencoder(**TINY, scale_factor=1.0, shift_factor=0.0).eval()
        plain.load_state_dict(model.state_dict())
        assert not torch.allclose(plain.encode(x, sample=False), z)
        assert torch.allclose(plain(x, sample=False), model(x, sample=False), atol=1e-5)


def test_sampling_follows_the_generator():
    model = tiny_ae()
    x = video(1, 16, 16)
    with torch.no_grad():
        a = model.encode(x, generator=torch.Generator().manual_seed(1))
        b = model.encode(x, generator=torch.Generator().manual_seed(1))
        c = model.encode(x, generator=torch.Generator().manual_seed(2))
        mean = model.encode(x, sample=False)
    assert torch.equal(a, b) and not torch.allclose(a, c) and not torch.allclose(a, mean)


def test_errors_name_the_numbers():
    with pytest.raises(ValueError, match="norm_num_groups=32"):
        FluxAutoencoder(ch=8, ch_mult=[1, 2])
    model = tiny_ae()
    with pytest.raises(ValueError, match=r"\[B, 3, T, H, W\]"):
        model.encode(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="not 5"):
        model.decode(torch.zeros(1, 16, 2, 2, 2), num_frames=5)


# --------------------------------------------------------------------------- loading


def test_bfl_checkpoint_loads(tmp_path):
    model = tiny_ae()
    path = tmp_path / "ae.safetensors"
    save_file(to_bfl(model.state_dict(), len(TINY["ch_mult"])), path)
    via_class = FluxAutoencoder.from_pretrained(path, **TINY)
    via_config = build_module(dict(type="autoencoder_2d", from_pretrained=str(path), device_map="cpu", **TINY), MODELS)
    expected = model.state_dict()
    x = video(2, 16, 16)
    for loaded in (via_class, via_config):
        assert not loaded.training
        assert all(torch.equal(t, expected[name]) for name, t in loaded.state_dict().items())
        with torch.no_grad():
            z = loaded.encode(x, sample=False)
            assert torch.equal(z, model.encode(x, sample=False))
            assert torch.equal(loaded.decode(z), model.decode(z))


def test_bfl_checkpoint_loads_in_a_dtype(tmp_path):
    path = tmp_path / "ae.safetensors"
    save_file(to_bfl(tiny_ae().state_dict(), len(TINY["ch_mult"])), path)
    model = FluxAutoencoder.from_pretrained(path, dtype="bf16", **TINY)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_diffusers_and_own_layouts_load(tmp_path):
    model = tiny_ae()
    save_file(model.autoencoder.state_dict(), tmp_path / "diffusers.safetensors")
    save_file(model.state_dict(), tmp_path / "own.safetensors")
    model.save_pretrained(tmp_path / "saved")
    for source in (tmp_path / "diffusers.safetensors", tmp_path / "own.safetensors"):
        loaded = FluxAutoencoder.from_pretrained(source, **TINY)
        assert all(torch.equal(t, model.state_dict()[name]) for name, t in loaded.state_dict().items())
    loaded = FluxAutoencoder.from_pretrained(tmp_path / "saved")  # config.json gives the tiny sizes
    assert loaded.config == model.config
    assert all(torch.equal(t, model.state_dict()[name]) for name, t in loaded.state_dict().items())


def test_incomplete_bfl_checkpoint_is_refused(tmp_path):
    state = to_bfl(tiny_ae().state_dict(), len(TINY["ch_mult"]))
    del state["decoder.mid.attn_1.q.weight"]
    state["encoder.mid.attn_2.q.weight"] = torch.zeros(1)
    save_file(state, tmp_path / "ae.safetensors")
    with pytest.raises(CheckpointError, match="decoder.mid_block.attentions.0.to_q.weight"):
        FluxAutoencoder.from_pretrained(tmp_path / "ae.safetensors", **TINY)
    with pytest.raises(CheckpointError, match="subfolder"):
        FluxAutoencoder.from_pretrained(tmp_path / "ae.safetensors", subfolder="vae", **TINY)
