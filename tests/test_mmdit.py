"""MMDiT (Open-Sora 2.0): release layout, shapes, positions from ids, the two rope layouts, runtime
switches, and training that learns."""

from __future__ import annotations

import pytest
import torch

from opensora.errors import ConfigError
from opensora.models.mmdit import MMDIT_PRESETS, MMDiT, convert_rope_layout
from opensora.registry import MODELS, build_module
from tests.conformance.golden import read_layout
from tests.tiny import fit_fixed_batch, one_torch_thread, randomise_weights  # noqa: F401 (autouse)

# the sizes of the golden fixtures: 2 double + 2 single blocks, head_dim 16 = 4 + 6 + 6
TINY = dict(
    in_channels=64, vec_in_dim=32, context_in_dim=32, hidden_size=64, mlp_ratio=4.0, num_heads=4, depth=2,
    depth_single_blocks=2, axes_dim=[4, 6, 6], theta=10000, qkv_bias=True, patch_size=2,
)  # fmt: skip
I2V = dict(guidance_embed=False, cond_embed=True, fused_qkv=False, use_liger_rope=True)
T2I = dict(guidance_embed=True, cond_embed=False, fused_qkv=True, use_liger_rope=False)


def _model(**switches) -> MMDiT:
    """Random weights: the release initialisation zeroes cond_in."""
    return randomise_weights(MMDiT(**{**TINY, **I2V, **switches})).eval()


def _ids(B: int, T: int, H: int, W: int) -> torch.Tensor:
    """(t, h, w) of each packed token, t-major: [B, T*H*W, 3]."""
    grid = torch.stack(torch.meshgrid(torch.arange(T), torch.arange(H), torch.arange(W), indexing="ij"), dim=-1)
    return grid.reshape(1, -1, 3).float().expand(B, -1, -1)


def _inputs(B: int = 2, T: int = 2, H: int = 2, W: int = 3, L: int = 5) -> dict:
    N = T * H * W
    return dict(
        img=torch.randn(B, N, 64),
        img_ids=_ids(B, T, H, W),
        txt=torch.randn(B, L, 32),
        txt_ids=torch.zeros(B, L, 3),
        timesteps=torch.rand(B),
        y_vec=torch.randn(B, 32),
        cond=torch.randn(B, N, 68),
        guidance=torch.full((B,), 4.0),
    )


def test_v2_layout_and_parameter_count_match_release():
    with torch.device("meta"):
        model = build_module({"type": "MMDiT-v2"}, MODELS)
    assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == read_layout("layout_mmdit_v2.tsv")
    assert sum(p.numel() for p in model.parameters()) == 11_891_390_528


def test_release_config_builds_through_the_flux_alias_and_t2i_preset():
    release = dict(
        type="flux", from_pretrained=None, cache_dir=None, grad_ckpt_settings=(8, 100), device_map="cuda",
        torch_dtype=torch.bfloat16, in_channels=64, vec_in_dim=768, context_in_dim=4096, hidden_size=3072,
        mlp_ratio=4.0, num_heads=24, depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56], theta=10_000,
        qkv_bias=True, guidance_embed=False, cond_embed=True, fused_qkv=False, use_liger_rope=True,
    )  # fmt: skip
    with torch.device("meta"):
        flux = build_module(release, MODELS)
        t2i = build_module({"type": "MMDiT-v2-t2i"}, MODELS)
    assert flux.config == MMDIT_PRESETS["MMDiT-v2"]  # the release keys that describe loading are dropped
    names = t2i.state_dict().keys()
    assert "guidance_in.in_layer.weight" in names and "cond_in.weight" not in names
    assert "double_blocks.0.img_attn.qkv.weight" in names and "single_blocks.0.linear1.weight" in names
    assert t2i.state_dict()["single_blocks.0.linear1.weight"].shape == (3 * 3072 + 4 * 3072, 3072)
    assert t2i.config["use_liger_rope"] is False and t2i.config["guidance_embed"] is True


@pytest.mark.parametrize("switches", [I2V, T2I], ids=["i2v", "t2i"])
def test_forward_shapes_and_ignored_arguments(switches):
    model = _model(**switches)
    inputs = _inputs()
    with torch.no_grad():
        out = model(**inputs, num_frames=9, height=32)  # extra sampler keys are ignored
    assert out.shape == (2, 12, 64) and out.dtype == torch.float32 and torch.isfinite(out).all()
    if switches["cond_embed"]:
        with pytest.raises(ValueError, match="cond"):
            model(**{**inputs, "cond": None})
    else:
        with pytest.raises(ValueError, match="guidance"):
            model(**{**inputs, "guidance": None})


def test_inputs_steer_the_output():
    """Every conditioning input changes the prediction; guidance is ignored without guidance_embed."""
    model = _model()
    inputs = _inputs()
    with torch.no_grad():
        out = model(**inputs)
        for key in ("txt", "y_vec", "cond", "timesteps"):
            assert not torch.allclose(model(**{**inputs, key: torch.rand_like(inputs[key])}), out, atol=1e-4), key
        assert torch.equal(model(**{**inputs, "guidance": torch.ones(2)}), out)


def test_image_tokens_are_placed_by_their_ids_only():
    """Reordering image tokens together with their ids and cond reorders the output; reordering the
    ids alone changes it (the rope sees positions, not the sequence index)."""
    model = _model()
    inputs = _inputs()
    perm = torch.randperm(inputs["img"].shape[1])
    shuffled = {**inputs, **{key: inputs[key][:, perm] for key in ("img", "img_ids", "cond")}}
    with torch.no_grad():
        out = model(**inputs)
        assert torch.allclose(model(**shuffled)[:, torch.argsort(perm)], out, atol=1e-5)
        moved = model(**{**inputs, "img_ids": inputs["img_ids"][:, perm]})
    assert not torch.allclose(moved, out, atol=1e-3)


@pytest.mark.parametrize("fused_qkv", [False, True], ids=["unfused", "fused"])
def test_rope_layout_conversion_keeps_outputs(fused_qkv):
    half = _model(fused_qkv=fused_qkv, use_liger_rope=True)
    inputs = _inputs()
    state = half.state_dict()
    interleaved = MMDiT(**{**TINY, **I2V, "fused_qkv": fused_qkv, "use_liger_rope": False}).eval()
    with torch.no_grad():
        out = half(**inputs)
        interleaved.load_state_dict(state)
        assert not torch.allclose(interleaved(**inputs), out, atol=1e-3)  # the layouts differ
        interleaved.load_state_dict(convert_rope_layout(state, 64, 4, to_interleaved=True))
        assert torch.allclose(interleaved(**inputs), out, atol=1e-5)
    back = convert_rope_layout(interleaved.state_dict(), 64, 4, to_interleaved=False)
    assert all(torch.equal(back[key], state[key]) for key in state)


def test_config_mismatch_names_the_numbers():
    with pytest.raises(ConfigError, match=r"axes_dim \[4, 6, 8\] sums to 18.*head dimension is 16"):
        MMDiT(**{**TINY, "axes_dim": [4, 6, 8]})
    with pytest.raises(ConfigError, match="hidden_size 64 is not divisible by num_heads 5"):
        MMDiT(**{**TINY, "num_heads": 5})


def test_attention_backends_agree():
    model = _model()
    inputs = _inputs()
    with torch.no_grad():
        out = model(**inputs)
        model.set_attention_backend("math")
        assert all(block.backend == "math" for block in [*model.double_blocks, *model.single_blocks])
        assert torch.allclose(model(**inputs), out, atol=1e-5)
        model.set_attention_backend("flash")  # no flash-attn on CPU: falls back to SDPA
        assert torch.allclose(model(**inputs), out, atol=1e-5)


def test_grad_checkpointing_recomputes_blocks_and_keeps_gradients():
    model = _model().train()
    inputs = _inputs()
    calls = []
    for block in [*model.double_blocks, *model.single_blocks]:
        block.register_forward_pre_hook(lambda *_: calls.append(1))

    def gradients() -> list[torch.Tensor]:
        model.zero_grad()
        calls.clear()
        model(**inputs).square().mean().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    plain = gradients()
    assert len(calls) == 4
    model.set_grad_checkpointing(True)
    checkpointed = gradients()
    assert len(calls) == 8  # each block recomputed once in the backward pass
    assert len(plain) == len(checkpointed) == len(list(model.parameters()))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, checkpointed))


def test_cond_in_starts_at_zero():
    model = MMDiT(**TINY, **I2V)
    assert not model.cond_in.weight.any() and not model.cond_in.bias.any()


def test_tiny_model_learns_a_fixed_batch():
    """A few AdamW steps of the flow-matching loss (velocity noise - x0 at x_t) on one batch."""
    torch.manual_seed(0)
    model = MMDiT(**TINY, **I2V).train()
    inputs = _inputs()
    x0 = inputs.pop("img")
    noise = torch.randn_like(x0)
    times = [torch.tensor([0.3, 0.8]), torch.tensor([0.6, 0.1])]

    def loss_at(step: int) -> torch.Tensor:
        t = times[step % 2]
        x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * noise
        return (model(img=x_t, **{**inputs, "timesteps": t}) - (noise - x0)).square().mean()

    first, last = fit_fixed_batch(model, loss_at, steps=30, lr=2e-3)
    assert last < 0.5 * first, f"loss did not fall enough: {first:.3f} -> {last:.3f}"
