"""Conformance of the 2.0 VAEs with tiling on, as it is by default: the records made with tiling off
come out unchanged, since tiling engages only beyond a tile (the tiled records, with their own tile
settings, are replayed in test_golden.py)."""

from __future__ import annotations

import pytest
import torch

from tests.conformance.golden import Fixture, assert_matches, missing_reference, reference_dir
from tests.conformance.replay_vae_v2 import REPLAYS_VAE_V2, build_dcae, build_hunyuan_vae

FIXTURES = {"golden_hunyuan_vae_v2_tiny": ("AutoencoderKLCausal3D", build_hunyuan_vae),
            "golden_dcae_v2_tiny": ("DCAE", build_dcae)}  # fmt: skip


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_untiled_records_match_with_tiling_on_by_default(name):
    path = reference_dir() / f"{name}.safetensors"
    if not path.exists():
        missing_reference(f"{path} is missing (set OPENSORA_REFERENCE_DIR)")
    fixture = Fixture.load(path)
    family, build = FIXTURES[name]
    # the recorded model had tiling off: built here with the constructors' defaults, both tilings on
    model = build(fixture)
    model.default_tiling = type(model)(**model.config).default_tiling
    assert model.default_tiling.spatial and model.default_tiling.temporal
    untiled = [call for call in fixture.calls if not call.get("config_override")]
    assert len(untiled) >= 3  # encode, decode, a single frame
    for call in untiled:
        with torch.no_grad():
            results = REPLAYS_VAE_V2[family, call["method"]](model, fixture, call)
        for output, actual in results.items():
            assert_matches(actual, fixture.tensors[output], f"{path.name}:{output} (tiling on by default)")
