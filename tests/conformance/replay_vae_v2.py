"""Replays of the Open-Sora 2.0 VAE golden fixtures (Hunyuan causal 3-D VAE, Video DC-AE)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import torch

from opensora.registry import MODELS, build_module
from tests.conformance.golden import Fixture

# ---- shared by the 2.0 VAE records ------------------------------------------------------------

_INDEXED = re.compile(r"^(?P<name>(input|output)\.\w+)\[(?P<index>[^\]]*)\]$")


def _index_part(text: str) -> slice | int:
    text = text.strip()
    if ":" not in text:
        return int(text)
    return slice(*(int(bound) if bound.strip() else None for bound in text.split(":")))


def resolve(fixture: Fixture, value):
    """:meth:`Fixture.resolve`, plus indexed references such as ``"input.x[:, :, :1]"``."""
    match = _INDEXED.match(value) if isinstance(value, str) else None
    if match is None:
        return fixture.resolve(value)
    index = tuple(_index_part(part) for part in match["index"].split(","))
    return fixture.tensors[match["name"]][index]


def outputs(call: dict) -> list[str]:
    """The output names of a call; the 2.0 VAE records list several separated by commas."""
    return [name.strip() for name in re.split(r"[,/]", call.get("output", "")) if name.strip()]


# ---- Hunyuan VAE (AutoencoderKLCausal3D) ------------------------------------------------------

# a record's config_override (constructor names) -> the runtime switch set_tiling takes
_HUNYUAN_TILING = {
    "use_spatial_tiling": "spatial",
    "use_temporal_tiling": "temporal",
    "sample_size": "sample_size",
    "sample_tsize": "sample_tsize",
    "tile_overlap_factor": "overlap_factor",
}


def build_hunyuan_vae(fixture: Fixture) -> torch.nn.Module:
    model = build_module({"type": "hunyuan_vae", **fixture.config}, MODELS)
    model.load_state_dict(fixture.model_state(), strict=True)
    return model.eval()


def set_recorded_tiling(model, call: dict, names: dict[str, str]) -> None:
    """The recorded tiled calls rebuilt the model with the tile settings of ``config_override`` (the
    release's names); here they are set at runtime with ``set_tiling`` (``names`` maps them), which
    does the same, latent tiles following the pixel ones. An empty override restores the defaults."""
    override = call.get("config_override", {})
    unknown = sorted(set(override) - set(names))
    if unknown:
        pytest.fail(f"config_override {unknown} is not a tiling setting; replay it by rebuilding the model")
    model.set_tiling(**{names[key]: value for key, value in override.items()})


def replay_hunyuan_encode(model, fixture: Fixture, call: dict) -> dict[str, torch.Tensor]:
    """z (posterior mean or the sample with the recorded noise), plus mean and clamped logvar if recorded."""
    set_recorded_tiling(model, call, _HUNYUAN_TILING)
    kwargs = {key: resolve(fixture, value) for key, value in call.get("kwargs", {}).items()}
    x = kwargs.pop("x")
    sample = kwargs.pop("sample_posterior", True)
    with_posterior = kwargs.pop("return_posterior", False)
    if kwargs:
        pytest.fail(f"encode record has arguments this replay does not know: {sorted(kwargs)}")
    if sample and "noise" not in call:
        pytest.fail("a sampled encode record without its posterior noise cannot be replayed")
    noise = fixture.tensors["input.posterior_noise"] if sample else None
    values = [model.encode(x, sample=sample, noise=noise)]
    if with_posterior:
        posterior = model.posterior(x)
        values += [posterior.mean, posterior.logvar]
    names = outputs(call)
    assert len(names) == len(values), f"record names {names}, the replay made {len(values)} outputs"
    return dict(zip(names, values))


def replay_hunyuan_decode(model, fixture: Fixture, call: dict) -> dict[str, torch.Tensor]:
    set_recorded_tiling(model, call, _HUNYUAN_TILING)
    (z,) = [resolve(fixture, arg) for arg in call["args"]]
    return {outputs(call)[0]: model.decode(z)}


# ---- Video DC-AE (the release's DCAE; ours VideoDCAE) --------------------------------------------

# the only settings of the release's DCAEConfig that the Video DC-AE implements; a fixture with
# another value fails rather than replaying a different network
_DCAE_FIXED = {
    "encoder": dict(norm="rms3d", act="silu", downsample_block_type="Conv", downsample_match_channel=True,
                    downsample_shortcut="averaging", out_norm=None, out_act=None, out_shortcut="averaging",
                    double_latent=False, is_video=True),
    "decoder": dict(norm="rms3d", act="silu", upsample_block_type="InterpolateConv", upsample_match_channel=True,
                    upsample_shortcut="duplicating", in_shortcut="duplicating", out_norm="rms3d", out_act="relu",
                    is_video=True),
    "top": dict(use_quant_conv=False, is_image_model=False, is_training=False),
}  # fmt: skip
# a record's config_override (the release's names) -> the runtime switch set_tiling takes
_DCAE_TILING = {
    "use_spatial_tiling": "spatial",
    "use_temporal_tiling": "temporal",
    "spatial_tile_size": "spatial_tile_size",
    "temporal_tile_size": "temporal_tile_size",
    "tile_overlap_factor": "overlap_factor",
}


def dcae_kwargs(config: dict) -> dict:
    """The release's nested DCAEConfig (as the fixture stores it) -> VideoDCAE's constructor arguments."""
    encoder, decoder = config["encoder"], config["decoder"]
    for part, fixed in _DCAE_FIXED.items():
        given = config if part == "top" else config[part]
        other = {key: given.get(key) for key, value in fixed.items() if given.get(key) != value}
        if other:
            pytest.fail(f"DCAE {part} settings {other} are not implemented (only {fixed})")
    if encoder["width_list"] != decoder["width_list"]:
        pytest.fail("encoder and decoder widths differ; VideoDCAE takes one width_list")
    return dict(
        in_channels=config["in_channels"], latent_channels=config["latent_channels"],
        width_list=encoder["width_list"], encoder_depth_list=encoder["depth_list"],
        decoder_depth_list=decoder["depth_list"], encoder_block_types=encoder["block_type"],
        decoder_block_types=decoder["block_type"], temporal_downsample=encoder["temporal_downsample"],
        temporal_upsample=decoder["temporal_upsample"], time_compression_ratio=config["time_compression_ratio"],
        spatial_compression_ratio=config["spatial_compression_ratio"], scaling_factor=config["scaling_factor"],
        **{key: config[key] for key in _DCAE_TILING},
    )  # fmt: skip


def build_dcae(fixture: Fixture) -> torch.nn.Module:
    model = build_module({"type": "VideoDCAE", **dcae_kwargs(fixture.config)}, MODELS)
    model.load_state_dict(fixture.model_state(), strict=True)
    return model.eval()


def replay_dcae(model, fixture: Fixture, call: dict) -> dict[str, torch.Tensor]:
    """encode(x) or decode(z), as recorded (no keyword arguments: the DC-AE draws no noise)."""
    if call.get("kwargs"):
        pytest.fail(f"DCAE {call['method']} record has arguments this replay does not know: {sorted(call['kwargs'])}")
    set_recorded_tiling(model, call, _DCAE_TILING)
    (value,) = [resolve(fixture, arg) for arg in call["args"]]
    return {outputs(call)[0]: getattr(model, call["method"])(value)}


# family -> builder of the model a fixture was recorded with (replay.build_model defers to these)
BUILDERS_VAE_V2: dict[str, Callable[[Fixture], torch.nn.Module]] = {
    "AutoencoderKLCausal3D": build_hunyuan_vae,
    "DCAE": build_dcae,
}
# (model family, recorded method) -> replay, merged into replay.REPLAYS
REPLAYS_VAE_V2: dict[tuple[str, str], Callable] = {
    ("AutoencoderKLCausal3D", "encode"): replay_hunyuan_encode,
    ("AutoencoderKLCausal3D", "decode"): replay_hunyuan_decode,
    ("DCAE", "encode"): replay_dcae,
    ("DCAE", "decode"): replay_dcae,
}
