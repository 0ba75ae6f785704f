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


def _hunyuan_tiling(model, call: dict) -> None:
    """The recorded tiled calls rebuilt the model with tile settings; here they are set at runtime."""
    override = call.get("config_override", {})
    unknown = sorted(set(override) - set(_HUNYUAN_TILING))
    if unknown:
        pytest.fail(f"config_override {unknown} is not a tiling setting; replay it by rebuilding the model")
    model.set_tiling(**{_HUNYUAN_TILING[key]: value for key, value in override.items()})


def replay_hunyuan_encode(model, fixture: Fixture, call: dict) -> dict[str, torch.Tensor]:
    """z (posterior mean or the sample with the recorded noise), plus mean and clamped logvar if recorded."""
    _hunyuan_tiling(model, call)
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
    _hunyuan_tiling(model, call)
    (z,) = [resolve(fixture, arg) for arg in call["args"]]
    return {outputs(call)[0]: model.decode(z)}


# family -> builder of the model a fixture was recorded with (replay.build_model defers to these)
BUILDERS_VAE_V2: dict[str, Callable[[Fixture], torch.nn.Module]] = {
    "AutoencoderKLCausal3D": build_hunyuan_vae,
}
# (model family, recorded method) -> replay, merged into replay.REPLAYS
REPLAYS_VAE_V2: dict[tuple[str, str], Callable] = {
    ("AutoencoderKLCausal3D", "encode"): replay_hunyuan_encode,
    ("AutoencoderKLCausal3D", "decode"): replay_hunyuan_decode,
}
