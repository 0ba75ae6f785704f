"""The MMDiT FLOP count: its layer shapes are the model's, and it equals what torch's FLOP counter
measures on a real forward, training step and checkpointed training step."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from opensora.errors import ConfigError
from opensora.models.mmdit import MMDIT_PRESETS, MMDiT
from opensora.models.mmdit.flops import attention_flops, mmdit_matmuls, mmdit_train_flops
from tests.tiny import _TINY, one_torch_thread  # noqa: F401 (autouse)

TINY = {k: v for k, v in _TINY["mmdit"].items() if k != "type"}
B, T, H, W, TEXT = 2, 2, 2, 3, 5  # packed grid of 12 image tokens, 5 text tokens
N_IMG = T * H * W


def _inputs(model: MMDiT) -> dict:
    grid = torch.stack(torch.meshgrid(torch.arange(T), torch.arange(H), torch.arange(W), indexing="ij"), dim=-1)
    cfg = model.config
    return dict(
        img=torch.randn(B, N_IMG, cfg["in_channels"]),
        img_ids=grid.reshape(1, -1, 3).float().expand(B, -1, -1),
        txt=torch.randn(B, TEXT, cfg["context_in_dim"]),
        txt_ids=torch.zeros(B, TEXT, 3),
        timesteps=torch.rand(B),
        y_vec=torch.randn(B, cfg["vec_in_dim"]),
        cond=torch.randn(B, N_IMG, cfg["in_channels"] + cfg["patch_size"] ** 2),
        guidance=torch.full((B,), 4.0),
    )


def _measure(model: MMDiT, train: bool) -> int:
    # "math" attention is two counted matmuls; the fused CPU SDPA kernel has no FLOP formula in torch
    model.set_attention_backend("math")
    inputs = _inputs(model)
    with FlopCounterMode(display=False) as counter:
        if train:
            model(**inputs).square().mean().backward()
        else:
            with torch.no_grad():
                model(**inputs)
    return counter.get_total_flops()


def _linear_weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


@pytest.mark.parametrize("switches", [{}, dict(cond_embed=False, guidance_embed=True, fused_qkv=True)])
def test_counted_layers_are_the_models_linears(switches):
    config = {**TINY, **switches}
    assert sum(mm.weights for mm in mmdit_matmuls(config, N_IMG, TEXT)) == _linear_weights(MMDiT(**config))


def test_forward_count_equals_the_flop_counter():
    flops = mmdit_train_flops(TINY, N_IMG, TEXT)
    assert _measure(MMDiT(**TINY), train=False) == B * flops.forward


@pytest.mark.parametrize("grad_checkpoint", [False, True])
def test_training_count_equals_the_flop_counter_but_for_the_input_gradients(grad_checkpoint):
    model = MMDiT(**TINY).train()
    model.set_grad_checkpointing(grad_checkpoint)
    measured = _measure(model, train=True)
    flops = mmdit_train_flops(TINY, N_IMG, TEXT, grad_checkpoint=grad_checkpoint)
    # the layers reading the inputs compute no input gradient: their backward is 1x, not 2x
    no_input_grad = sum(mm.flops for mm in mmdit_matmuls(TINY, N_IMG, TEXT) if mm.reads_input)
    assert measured == B * (flops.hardware - no_input_grad)
    assert measured == pytest.approx(B * flops.hardware, rel=0.03)
    assert flops.hardware > flops.model if grad_checkpoint else flops.hardware == flops.model


def test_release_width_count_equals_the_flop_counter_on_meta():
    # the release's layer widths with 2 + 2 blocks (the count is linear in depth), shapes only
    config = {**MMDIT_PRESETS["MMDiT-v2"], "depth": 2, "depth_single_blocks": 2}
    with torch.device("meta"):
        model = MMDiT(**config)
        assert _measure(model, train=False) == B * mmdit_train_flops(config, N_IMG, TEXT).forward


def test_release_size_and_count_are_plausible():
    with torch.device("meta"):
        params = sum(p.numel() for p in MMDiT().parameters())  # the defaults are the 11B release
    assert params == 11_891_390_528
    # the stage-1 shape: 33 x 32 x 32 latent frames packed 2x2 -> 8448 image tokens, 512 T5 tokens
    n_img, n_txt = 33 * 16 * 16, 512
    flops = mmdit_train_flops({}, n_img, n_txt)
    dense = 3 * sum(mm.flops for mm in mmdit_matmuls({}, n_img, n_txt))
    # the "6 N tokens" rule bounds it: a token meets all single-block weights but only its own
    # stream's half of the double-block weights
    assert 0.5 * 6 * params * (n_img + n_txt) < dense < 6 * params * (n_img + n_txt)
    assert 3 * attention_flops({}, n_img, n_txt) / flops.model == pytest.approx(0.33, abs=0.01)
    assert flops.model == pytest.approx(5.16e14, rel=0.01)  # per 256px, 129-frame sample
    no_input_grad = sum(mm.flops for mm in mmdit_matmuls({}, n_img, n_txt) if mm.reads_input)
    assert no_input_grad / flops.model < 1e-3


def test_unknown_argument_is_a_config_error():
    with pytest.raises(ConfigError, match="hidden"):
        mmdit_train_flops({"hidden": 64}, N_IMG, TEXT)
