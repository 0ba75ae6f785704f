"""STDiT2 (Open-Sora 1.1): layout of the released model, dynamic sizes, release switches, save/load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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


@pytest.mark.parametrize("shape", [(3, 8, 8), (5, 7, 9), (1, 6, 10)])
def test_forward_pads_and_crops_dynamic_sizes(shape):
    model = _model()
    with torch.no_grad():
        out = model(**_inputs(T=shape[0], H=shape[1], W=shape[2]))
    assert out.shape == (2, 8, *shape) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_size_tensors_are_required():
    inputs = _inputs()
    del inputs["ar"], inputs["fps"]
    with pytest.raises(ValueError, match="missing: ar, fps"):
        _model()(**inputs)


def test_size_conditioning_and_extra_kwargs():
    model = _model()
    inputs = _inputs()
    with torch.no_grad():
        out = model(**inputs)
        assert torch.equal(out, model(**inputs, some_other_key=1))  # ignored, as sampling loops may pass it
        assert not torch.allclose(out, model(**dict(inputs, fps=torch.full((2,), 24.0))), atol=1e-4)
        assert not torch.allclose(out, model(**dict(inputs, ar=torch.full((2,), 0.5))), atol=1e-4)


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


def test_text_padding_is_ignored():
    model = _model()
    inputs = _inputs()
    inputs["mask"][1, 5:] = 0
    other = dict(inputs, y=inputs["y"].clone())
    other["y"][1, :, 5:] = 100.0
    with torch.no_grad():
        assert torch.allclose(model(**inputs), model(**other), atol=1e-5)


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
