"""STDiT (Open-Sora 1.0): layout of the released model, fixed input size, release quirks, save/load.

Text masking and gradient checkpointing are tested for all three STDiTs in test_stdit3.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from opensora.errors import ConfigError
from opensora.models.stdit.stdit import STDiT
from opensora.registry import MODELS, build_module
from tests.conformance.golden import read_layout
from tests.tiny import TINY_STDIT, randomise_weights

TINY = {k: v for k, v in TINY_STDIT.items() if k != "type"}


def _inputs(B=2, T=3, H=8, W=8, L=8, caption_channels=32):
    return dict(
        x=torch.randn(B, 4, T, H, W),
        timestep=torch.rand(B) * 1000,
        y=torch.randn(B, 1, L, caption_channels),
        mask=torch.ones(B, L, dtype=torch.long),
    )


def test_xl2_layout_matches_release():
    cfg = {"type": "STDiT-XL/2", "input_size": (16, 64, 64), "caption_channels": 4096, "model_max_length": 120}
    with torch.device("meta"):
        model = build_module(cfg, MODELS)
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert ours == read_layout("layout_stdit_xl2.tsv")


def test_presets_are_registered_and_release_fields_accepted():
    assert "STDiT" in MODELS and "STDiT-XL/2" in MODELS
    release_fields = dict(dtype="bf16", enable_flashattn=True, enable_layernorm_kernel=True, space_scale=0.5,
                          time_scale=1.0, freeze=None, no_temporal_pos_emb=False)  # fmt: skip
    model = build_module({**TINY_STDIT, **release_fields}, MODELS)
    # runtime switches are not part of the saved architecture
    assert "dtype" not in model.config and "enable_flashattn" not in model.config
    assert model.config["space_scale"] == 0.5


def test_forward_shape_and_the_sampling_keys_it_ignores():
    model = randomise_weights(STDiT(**TINY)).eval()
    inputs = _inputs()
    sizes = dict(height=torch.full((2,), 64.0), width=torch.full((2,), 64.0), num_frames=torch.full((2,), 3.0),
                 ar=torch.ones(2), fps=torch.full((2,), 8.0))  # fmt: skip
    with torch.no_grad():
        out = model(**inputs)
        # what the shared sampling and training code pass for the newer models is accepted and ignored
        extra = model(**inputs, **sizes, x_mask=torch.ones(2, 3, dtype=torch.bool))
    assert out.shape == (2, 8, 3, 8, 8) and out.dtype == torch.float32
    assert torch.equal(out, extra)
    with pytest.raises(TypeError, match="x_masks"):  # a misspelt key is not swallowed
        model(**inputs, x_masks=torch.ones(2, 3, dtype=torch.bool))


def test_wrong_input_size_names_both_sizes():
    model = STDiT(**TINY).eval()
    with pytest.raises(ConfigError, match=r"\[3, 8, 8\].*\[3, 8, 10\]") as err:
        model(**_inputs(W=10))
    assert "\n" not in str(err.value)


def test_frame_conditioning_is_refused():
    model = STDiT(**TINY).eval()
    with pytest.raises(ConfigError, match="x_mask"):
        model(**_inputs(), x_mask=torch.tensor([[False, True, True]] * 2))


def test_temporal_position_table_is_the_only_thing_no_temporal_pos_emb_removes():
    model = randomise_weights(STDiT(**TINY)).eval()
    without = STDiT(**TINY, no_temporal_pos_emb=True).eval()
    without.load_state_dict(model.state_dict())
    inputs = _inputs()
    with torch.no_grad():
        assert not torch.allclose(model(**inputs), without(**inputs), atol=1e-4)
        model.pos_embed_temporal.zero_()
        assert torch.allclose(model(**inputs), without(**inputs), atol=1e-6)


def test_attention_backends_agree_and_freeze_options():
    model = randomise_weights(STDiT(**TINY)).eval()
    inputs = _inputs()
    with torch.no_grad():
        out = model(**inputs)
        model.set_attention_backend("math")
        assert torch.allclose(model(**inputs), out, atol=1e-5)
    frozen = STDiT(**TINY, freeze="not_temporal")
    trainable = {n for n, p in frozen.named_parameters() if p.requires_grad}
    assert trainable and all(".attn_temp." in n for n in trainable)
    with pytest.raises(ConfigError, match="freeze"):
        STDiT(**TINY, freeze="spatial")


def test_save_and_load_round_trip_bit_exact(tmp_path: Path):
    model = randomise_weights(STDiT(**TINY)).eval()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = STDiT.from_pretrained(tmp_path / "ckpt")
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    inputs = _inputs()
    with torch.no_grad():
        assert torch.equal(model(**inputs), loaded(**inputs))
