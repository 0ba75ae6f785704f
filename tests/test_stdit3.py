"""STDiT3: layout of the released model, shapes, runtime switches, and training that learns; and the
behaviours all three STDiTs share (text masking, padding, checkpointing through the base class)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from opensora.errors import ConfigError
from opensora.models.stdit.stdit import STDiT
from opensora.models.stdit.stdit2 import STDiT2
from opensora.models.stdit.stdit3 import STDiT3
from opensora.registry import MODELS, build_module
from opensora.schedulers.rectified_flow import RectifiedFlow
from opensora.training.losses import rflow_loss
from tests.conformance.golden import read_layout
from tests.tiny import TINY_STDIT, TINY_STDIT2, TINY_STDIT3, randomise_weights

TINY = {k: v for k, v in TINY_STDIT3.items() if k != "type"}
# STDiT is built for latents of one size: (3, 8, 8) in its tiny config, the default of _inputs
FAMILY = {
    "STDiT": (STDiT, {k: v for k, v in TINY_STDIT.items() if k != "type"}),
    "STDiT2": (STDiT2, {k: v for k, v in TINY_STDIT2.items() if k != "type"}),
    "STDiT3": (STDiT3, TINY),
}


def _inputs(B=2, T=3, H=8, W=8, L=8, caption_channels=32):
    """What the sampling loops pass; STDiT3 ignores ``num_frames`` and ``ar``, STDiT all sizes."""
    return dict(
        x=torch.randn(B, 4, T, H, W),
        timestep=torch.rand(B) * 1000,
        y=torch.randn(B, 1, L, caption_channels),
        mask=torch.ones(B, L, dtype=torch.long),
        fps=torch.full((B,), 24.0),
        height=torch.full((B,), H * 8.0),
        width=torch.full((B,), W * 8.0),
        num_frames=torch.full((B,), 16.0),
        ar=torch.full((B,), H / W),
    )


def _model(name: str = "STDiT3", **overrides):
    """Random weights: the release initialisations zero the text and temporal output layers."""
    cls, spec = FAMILY[name]
    return randomise_weights(cls(**{**spec, **overrides})).eval()


def test_xl2_layout_matches_release():
    with torch.device("meta"):
        model = build_module({"type": "STDiT3-XL/2", "caption_channels": 4096, "model_max_length": 300}, MODELS)
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert ours == read_layout("layout_stdit3_xl2.tsv")


def test_presets_are_registered():
    assert "STDiT3-XL/2" in MODELS and "STDiT3-3B/2" in MODELS and "STDiT3" in MODELS
    with torch.device("meta"):
        model = MODELS.get("STDiT3-3B/2")()
    assert model.config["hidden_size"] == 1872 and model.config["num_heads"] == 26


@pytest.mark.parametrize("name", ["STDiT2", "STDiT3"])
@pytest.mark.parametrize("shape", [(3, 8, 8), (5, 7, 9), (1, 6, 10)])
def test_forward_pads_with_zeros_and_crops_dynamic_sizes(name, shape):
    """A latent off the patch grid gives the output of its zero-padded latent, cropped back."""
    model = _model(name)
    inputs = _inputs(T=shape[0], H=shape[1], W=shape[2])
    padded = dict(inputs, x=F.pad(inputs["x"], (0, shape[2] % 2, 0, shape[1] % 2)))  # patches are (1, 2, 2)
    with torch.no_grad():
        out = model(**inputs)
        out_padded = model(**padded)
    assert out.shape == (2, 8, *shape) and out.dtype == torch.float32
    assert torch.allclose(out, out_padded[..., : shape[1], : shape[2]], atol=1e-5)


@pytest.mark.parametrize("name", list(FAMILY))
def test_text_padding_is_ignored_and_real_tokens_are_not(name):
    """Padding tokens must not change the output, whatever their values; real tokens must."""
    model = _model(name)
    inputs = _inputs()
    inputs["mask"][1, 5:] = 0
    padding_changed = dict(inputs, y=inputs["y"].clone())
    padding_changed["y"][1, :, 5:] = 100.0
    token_changed = dict(inputs, y=inputs["y"].clone())
    token_changed["y"][1, :, 4] = 100.0
    with torch.no_grad():
        out = model(**inputs)
        assert torch.allclose(out, model(**padding_changed), atol=1e-5)
        changed = model(**token_changed)
        attended = model(**dict(padding_changed, mask=torch.ones_like(inputs["mask"])))
    assert not torch.allclose(out[1], changed[1], atol=1e-3)
    assert torch.equal(out[0], changed[0])  # sample 0's caption did not change
    assert not torch.allclose(out[1], attended[1], atol=1e-3)  # the same padding, attended to, counts


def test_sampling_keys_are_accepted_by_name_and_others_refused():
    model = _model()
    inputs = _inputs()
    with torch.no_grad():
        out = model(**inputs)
        # what the shared sampling and training code pass for STDiT2 is accepted and ignored
        assert torch.equal(out, model(**dict(inputs, num_frames=torch.full((2,), 4.0), ar=torch.ones(2) * 2)))
        assert not torch.allclose(out, model(**dict(inputs, fps=torch.full((2,), 8.0))), atol=1e-4)
        assert not torch.allclose(out, model(**dict(inputs, height=torch.full((2,), 128.0))), atol=1e-4)
    with pytest.raises(TypeError, match="heigth"):
        model(**inputs, heigth=torch.full((2,), 64.0))


@pytest.mark.parametrize("temporal_pos_embed", [False, True])
def test_temporal_position_embedding_tells_frames_apart(temporal_pos_embed: bool, tmp_path: Path):
    """Identical frames come out identical unless frames carry an absolute position (temporal attention
    over equal values returns them, whatever its weights); the option survives save and load."""
    model = _model(temporal_pos_embed=temporal_pos_embed)
    inputs = _inputs(B=1, T=4)
    inputs["x"] = inputs["x"][:, :, :1].repeat(1, 1, 4, 1, 1)
    with torch.no_grad():
        out = model(**inputs)
    frames_differ = (out[:, :, 1:] - out[:, :, :1]).abs().amax().item() > 1e-4
    assert frames_differ == temporal_pos_embed
    model.save_pretrained(tmp_path)
    assert STDiT3.from_pretrained(tmp_path).temporal_pos_embed == temporal_pos_embed


def test_attention_backends_agree():
    model = _model()
    inputs = _inputs(H=6, W=6)
    with torch.no_grad():
        out_sdpa = model(**inputs)
        model.set_attention_backend("math")
        assert torch.allclose(model(**inputs), out_sdpa, atol=1e-5)
        model.set_attention_backend("flash")  # no flash-attn on CPU: falls back to SDPA
        assert torch.allclose(model(**inputs), out_sdpa, atol=1e-5)
    with pytest.raises(ConfigError, match="unknown attention backend 'xformers'"):
        model.set_attention_backend("xformers")


@pytest.mark.parametrize("name", list(FAMILY))
def test_grad_checkpointing_recomputes_blocks_and_keeps_gradients(name):
    model = _model(name, class_dropout_prob=0.0).train()
    inputs = _inputs(H=8 if name == "STDiT" else 6, W=8 if name == "STDiT" else 6)
    calls = []
    for block in model.temporal_blocks if name == "STDiT3" else model.blocks:
        block.register_forward_pre_hook(lambda *_: calls.append(1))

    def gradients() -> list[torch.Tensor]:
        model.zero_grad()
        calls.clear()
        model(**inputs).square().mean().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    plain = gradients()
    assert len(calls) == 2  # one forward call per block
    model.set_grad_checkpointing(True)
    checkpointed = gradients()
    assert len(calls) == 4  # and one recomputation per block in the backward pass
    assert len(plain) == len(checkpointed) > 0
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, checkpointed))
    with torch.no_grad():
        calls.clear()
        model(**inputs)
    assert len(calls) == 2  # nothing to recompute without gradients


def test_only_train_temporal_freezes_the_rest():
    model = STDiT3(**TINY, only_train_temporal=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("temporal_blocks.") for n in trainable)


def test_tiny_model_overfits_a_fixed_batch():
    torch.manual_seed(0)
    model = STDiT3(**TINY, class_dropout_prob=0.0)
    scheduler = RectifiedFlow(sample_method="logit-normal")
    inputs = _inputs(T=2, H=4, W=4)
    x0 = inputs.pop("x")
    inputs.pop("timestep")
    model_kwargs = dict(inputs, num_frames=torch.full((2,), 2.0))
    noise = torch.randn_like(x0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for step in range(40):
        t = torch.tensor([250.0, 750.0]) if step % 2 else torch.tensor([500.0, 100.0])
        loss = rflow_loss(model, scheduler, x0, model_kwargs, noise=noise, t=t).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.3 * first, f"loss did not fall enough: {first:.3f} -> {last:.3f}"


def test_model_refuses_the_sequence_parallel_flag():
    with pytest.raises(ConfigError, match="opensora.acceleration"):
        build_module({**TINY_STDIT3, "enable_sequence_parallelism": True}, MODELS)


def test_save_and_load_round_trip_bit_exact(tmp_path: Path):
    model = _model()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = STDiT3.from_pretrained(tmp_path / "ckpt").eval()
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    inputs = _inputs()
    with torch.no_grad():
        assert torch.equal(model(**inputs), loaded(**inputs))


def test_preset_from_pretrained_file_and_shape_mismatch(tmp_path: Path):
    from safetensors.torch import save_file

    from opensora.errors import CheckpointError

    model = STDiT3(**TINY)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    loaded = build_module({"type": "STDiT3", "from_pretrained": str(tmp_path / "w.safetensors"), **TINY}, MODELS)
    assert torch.equal(loaded.t_block[1].weight, model.t_block[1].weight)
    with pytest.raises(CheckpointError) as err:
        build_module(
            {"type": "STDiT3", "from_pretrained": str(tmp_path / "w.safetensors"), **TINY, "hidden_size": 32}, MODELS
        )
    message = str(err.value)
    assert "\n" not in message and "shape" in message
    assert re.search(r"'(x_embedder|t_embedder|y_embedder|spatial_blocks|rope)[\w.]*'", message), message
