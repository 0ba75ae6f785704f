"""STDiT2 (Open-Sora 1.1): layout of the released model, size conditioning, release switches, save/load.

Padding, text masking and gradient checkpointing are tested for all three STDiTs in test_stdit3.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from opensora.errors import ConfigError
from opensora.models.stdit.stdit2 import STDiT2
from opensora.registry import MODELS, build_module
from tests.conformance.golden import read_layout
from tests.tiny import TINY_STDIT2, randomise_weights

TINY = {k: v for k, v in TINY_STDIT2.items() if k != "type"}


def _inputs(B=2, T=3, H=8, W=8, L=8, caption_channels=32):
    return dict(
        x=torch.randn(B, 4, T, H, W),
        timestep=torch.rand(B) * 1000,
        y=torch.randn(B, 1, L, caption_channels),
        mask=torch.ones(B, L, dtype=torch.long),
        num_frames=torch.full((B,), 16.0),
        height=torch.full((B,), H * 8.0),
        width=torch.full((B,), W * 8.0),
        ar=torch.full((B,), H / W),
        fps=torch.full((B,), 8.0),
    )


def _model(**overrides) -> STDiT2:
    return randomise_weights(STDiT2(**{**TINY, **overrides})).eval()


def test_xl2_layout_matches_release():
    cfg = {"type": "STDiT2-XL/2", "caption_channels": 4096, "model_max_length": 200, "input_sq_size": 512,
           "qk_norm": True}  # fmt: skip
    with torch.device("meta"):
        model = build_module(cfg, MODELS)
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert ours == read_layout("layout_stdit2_xl2.tsv")


def test_release_config_json_fields_load(tmp_path: Path):
    """The hub config.json of 1.1 carries transformers boilerplate and runtime switches."""
    import json

    model = STDiT2(**TINY)
    model.save_pretrained(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert "enable_flash_attn" not in config and config["qk_norm_legacy"] is True
    config.update(architectures=["STDiT2"], model_type="STDiT2", enable_flash_attn=True, enable_layernorm_kernel=True)
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    loaded = STDiT2.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == model.config


def test_release_no_temporal_pos_emb_is_accepted_and_dropped(tmp_path: Path):
    """The 1.1 release configs carry ``no_temporal_pos_emb``, which had no effect; it is not saved."""
    import json

    model = build_module({**TINY_STDIT2, "no_temporal_pos_emb": False}, MODELS)
    assert "no_temporal_pos_emb" not in model.config
    model.save_pretrained(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({**config, "no_temporal_pos_emb": True}))
    assert STDiT2.from_pretrained(tmp_path / "ckpt").config == model.config
    with pytest.raises(ConfigError, match="no_temporal_pos_emd"):
        build_module({**TINY_STDIT2, "no_temporal_pos_emd": False}, MODELS)


def test_size_tensors_are_required():
    inputs = _inputs()
    del inputs["ar"], inputs["fps"]
    with pytest.raises(ConfigError, match="missing: ar, fps"):
        _model()(**inputs)


def test_every_size_conditions_the_output_and_unknown_keys_are_refused():
    model = _model()
    inputs = _inputs()
    with torch.no_grad():
        out = model(**inputs)
        for key, value in dict(num_frames=32.0, height=32.0, width=128.0, ar=0.5, fps=24.0).items():
            changed = model(**dict(inputs, **{key: torch.full((2,), value)}))
            assert not torch.allclose(out, changed, atol=1e-4), key
    with pytest.raises(TypeError, match="some_other_key"):  # no catch-all swallows a misspelt key
        model(**inputs, some_other_key=1)


def test_x_mask_all_true_equals_no_mask_and_false_frames_differ():
    model = _model()
    inputs = _inputs()
    with torch.no_grad():
        out = model(**inputs)
        assert torch.allclose(out, model(**inputs, x_mask=torch.ones(2, 3, dtype=torch.bool)), atol=1e-6)
        masked = model(**inputs, x_mask=torch.tensor([[False, True, True]] * 2))
    assert not torch.allclose(masked[:, :, 0], out[:, :, 0], atol=1e-4)


def test_rope_order_switch_changes_the_attention():
    legacy = _model(qk_norm=True)
    modern = STDiT2(**TINY, qk_norm=True, qk_norm_legacy=False).eval()
    modern.load_state_dict(legacy.state_dict())
    inputs = _inputs()
    with torch.no_grad():
        assert not torch.allclose(legacy(**inputs), modern(**inputs), atol=1e-4)


def test_freeze_not_temporal_and_attention_backends():
    frozen = STDiT2(**TINY, freeze="not_temporal")
    trainable = {n for n, p in frozen.named_parameters() if p.requires_grad}
    assert trainable and all(".attn_temp." in n for n in trainable)
    model = _model()
    inputs = _inputs()
    with torch.no_grad():
        out = model(**inputs)
        model.set_attention_backend("math")
        assert torch.allclose(model(**inputs), out, atol=1e-5)


def test_save_and_load_round_trip_bit_exact(tmp_path: Path):
    model = _model()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = STDiT2.from_pretrained(tmp_path / "ckpt")
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    inputs = _inputs()
    with torch.no_grad():
        assert torch.equal(model(**inputs), loaded(**inputs))
