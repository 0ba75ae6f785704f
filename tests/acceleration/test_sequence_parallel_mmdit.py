"""MMDiT sequence parallelism: 2 and 3 gloo processes reproduce one process's outputs and gradients,
with token counts that leave padding and head counts that do not divide (gather-KV attention)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
from torch import nn

from opensora.acceleration.sequence_parallel import apply_sequence_parallel
from opensora.acceleration.sequence_parallel_mmdit import apply_mmdit_sequence_parallel
from opensora.errors import ConfigError
from opensora.models.mmdit import MMDiT
from tests.acceleration.test_sequence_parallel import _run_distributed
from tests.tiny import randomise_weights

# the tiny MMDiT of configs/_base_/tiny.py and the golden files: 4 heads, head_dim 16 = 4 + 6 + 6
TINY = dict(
    in_channels=64, vec_in_dim=32, context_in_dim=32, hidden_size=64, mlp_ratio=4.0, num_heads=4, depth=2,
    depth_single_blocks=2, axes_dim=[4, 6, 6], theta=10000, qkv_bias=True, patch_size=2, cond_embed=True,
    guidance_embed=False, fused_qkv=False, use_liger_rope=True,
)  # fmt: skip
# (N_txt, latent grid (T, H, W) of packed tokens): 7 text tokens are padded to 8 on 2 processes
# and to 9 on 3, 15 image tokens to 16 on 2, 20 to 21 on 3; with 1 + 1 tokens the other processes
# hold only padding
CASES = [(7, (1, 3, 5)), (7, (2, 2, 5)), (1, (1, 1, 1))]


def _model(seed: int) -> MMDiT:
    """Every weight redrawn (the release initialisation zeroes cond_in)."""
    return randomise_weights(MMDiT(**TINY), seed=seed)


def _ids(B: int, T: int, H: int, W: int) -> torch.Tensor:
    grid = torch.stack(torch.meshgrid(torch.arange(T), torch.arange(H), torch.arange(W), indexing="ij"), dim=-1)
    return grid.reshape(1, -1, 3).float().expand(B, -1, -1)


def _inputs(L: int, grid: tuple[int, int, int], B: int = 2) -> dict:
    N = grid[0] * grid[1] * grid[2]
    return dict(
        img=torch.randn(B, N, 64), img_ids=_ids(B, *grid), txt=torch.randn(B, L, 32), txt_ids=torch.zeros(B, L, 3),
        timesteps=torch.rand(B), y_vec=torch.randn(B, 32), cond=torch.randn(B, N, 68),
    )  # fmt: skip


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str, rtol: float = 1e-5) -> None:
    """Within float32 round-off of the largest value (lighter to start than torch.testing in a spawned process)."""
    error = (actual - expected).abs().max().item()
    assert error <= rtol * max(expected.abs().max().item(), 1.0), f"{what}: max abs diff {error:.3g}"


def _forward_backward(model: nn.Module, inputs: dict, weight: torch.Tensor) -> torch.Tensor:
    model.zero_grad()
    out = model(**inputs)
    (out * weight).mean().backward()
    return out.detach()


def _check_matches_single_process(group: dist.ProcessGroup, mode: str) -> None:
    n = dist.get_world_size(group)
    for seed, (L, grid) in enumerate(CASES):
        torch.manual_seed(seed)  # every process draws the same model and batch
        reference, inputs = _model(seed), _inputs(L, grid)
        sp_model = copy.deepcopy(reference)
        apply_mmdit_sequence_parallel(sp_model, group, mode)
        weight = torch.randn(inputs["img"].shape)

        expected = _forward_backward(reference, inputs, weight)
        out = _forward_backward(sp_model, inputs, weight)
        _assert_close(out, expected, f"output, case {seed}")
        with torch.no_grad():
            _assert_close(sp_model.eval()(**inputs), expected, f"output without autograd, case {seed}")

        names = [name for name, param in reference.named_parameters() if param.grad is not None]
        assert names == [name for name, param in sp_model.named_parameters() if param.grad is not None]
        # the mean over the SP group is the single-process gradient (sequence_parallel's rule)
        grads = torch.cat([param.grad.flatten() for param in sp_model.parameters() if param.grad is not None])
        dist.all_reduce(grads, group=group)  # one collective for all of them
        parts = (grads / n).split([param.grad.numel() for param in sp_model.parameters() if param.grad is not None])
        for name, mean in zip(names, parts):
            ref = reference.get_parameter(name).grad
            _assert_close(mean.view_as(ref), ref, f"gradient of {name}, case {seed}", rtol=1e-4)


def _check_installation(group: dist.ProcessGroup) -> None:
    n = dist.get_world_size(group)
    model = _model(0)
    keys, config = list(model.state_dict()), dict(model.config)
    apply_sequence_parallel(model, group)  # the inference runner's call
    assert list(model.state_dict()) == keys and model.config == config  # nothing persisted changes
    assert copy.deepcopy(model).sequence_parallel is model.sequence_parallel  # an EMA copy shares the group
    assert model.sequence_parallel.ulysses == (n == 2)  # 4 heads: Ulysses on 2 processes, gather KV on 3
    if n == 3:
        with pytest.raises(ConfigError, match="num_heads divisible by 3, got 4"):
            apply_mmdit_sequence_parallel(model, group, "ulysses")
    with pytest.raises(ConfigError, match="attention_mode must be one of"):
        apply_mmdit_sequence_parallel(model, group, "ring")


def _check_all(rank: int) -> None:
    world = dist.group.WORLD  # 3 processes: 4 heads do not divide, so keys and values are gathered
    _check_matches_single_process(world, "auto")
    _check_installation(world)
    pair = dist.new_group([0, 1])  # every process takes part in creating it
    if rank < 2:  # 2 processes: both attentions
        _check_matches_single_process(pair, "auto")
        _check_matches_single_process(pair, "gather_kv")
        _check_installation(pair)
    dist.barrier()


def test_two_and_three_processes_match_one():
    # one launch of 3 processes, 2 of which also form a group of their own: the launch costs most
    _run_distributed(_check_all, world_size=3)


def test_rejects_models_other_than_mmdit():
    with pytest.raises(ConfigError, match="needs an MMDiT model, not Linear"):
        apply_mmdit_sequence_parallel(nn.Linear(2, 2), None)


def test_model_without_sequence_parallel_runs_no_collectives():
    model = _model(0).eval()
    assert model.sequence_parallel is None and not dist.is_initialized()
    with torch.no_grad():
        out = model(**_inputs(7, (1, 3, 5)))
    assert out.shape == (2, 15, 64) and torch.isfinite(out).all()
