"""Ulysses sequence parallelism: two gloo processes reproduce one process's outputs and gradients."""

from __future__ import annotations

import copy
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from opensora.acceleration.sequence_parallel import apply_sequence_parallel
from opensora.errors import ConfigError
from opensora.models.stdit.stdit3 import STDiT3

TINY = dict(depth=2, hidden_size=64, num_heads=4, caption_channels=32, model_max_length=8, class_dropout_prob=0.0)
# latent (T, H, W) with patch (1, 2, 2): S = 16; S = 9, padded to 10; S = 1, so process 1 holds only padding
CASES = [(3, 8, 8), (2, 6, 5), (1, 2, 2)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entry(rank: int, world_size: int, port: int, fn) -> None:
    torch.set_num_threads(1)  # two processes share two cores
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        fn(rank)
    finally:
        dist.destroy_process_group()


def _run_distributed(fn, world_size: int = 2, timeout: float = 120.0) -> None:
    context = mp.start_processes(
        _entry, args=(world_size, _free_port(), fn), nprocs=world_size, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1.0):  # raises with the worker's traceback when one fails
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"distributed test did not finish in {timeout:.0f} s")


def _inputs(T: int, H: int, W: int, B: int = 2, L: int = 8) -> dict:
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1, 5:] = 0
    x_mask = torch.ones(B, T, dtype=torch.bool)
    x_mask[0, 0] = False  # a conditioning frame
    return dict(
        x=torch.randn(B, 4, T, H, W),
        timestep=torch.rand(B) * 1000,
        y=torch.randn(B, 1, L, 32),
        mask=mask,
        x_mask=x_mask,
        fps=torch.full((B,), 24.0),
        height=torch.full((B,), H * 8.0),
        width=torch.full((B,), W * 8.0),
    )


def _model(seed: int) -> STDiT3:
    torch.manual_seed(seed)
    model = STDiT3(**TINY)
    # temporal blocks and cross-attention start at zero; move every weight so every path carries gradient
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.05)
    return model


def _grads_after_loss(model: nn.Module, inputs: dict, weight: torch.Tensor) -> torch.Tensor:
    model.zero_grad()
    out = model(**inputs)
    (out * weight).mean().backward()
    return out.detach()


def _check_matches_single_process(rank: int) -> None:
    world = dist.group.WORLD
    n = dist.get_world_size(world)
    for seed, (T, H, W) in enumerate(CASES):
        reference = _model(seed)
        inputs = _inputs(T, H, W)
        sp_model = copy.deepcopy(reference)
        apply_sequence_parallel(sp_model, world)
        if seed == 0:  # the recomputation in the backward pass repeats the collectives
            sp_model.set_grad_checkpointing(True)
        weight = torch.randn(2, 8, T, H, W)

        expected = _grads_after_loss(reference, inputs, weight)
        out = _grads_after_loss(sp_model, inputs, weight)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)

        for (name, ref), param in zip(reference.named_parameters(), sp_model.parameters()):
            assert (ref.grad is None) == (param.grad is None), name
            if ref.grad is None:
                continue
            # the module docstring's rule: the mean over the SP group is the single-process gradient
            mean = param.grad.clone()
            dist.all_reduce(mean, group=world)
            torch.testing.assert_close(mean / n, ref.grad, atol=1e-5, rtol=0, msg=lambda m, name=name: f"{name}: {m}")


def _check_installation(rank: int) -> None:
    world = dist.group.WORLD
    model = _model(0)
    keys, config = list(model.state_dict()), dict(model.config)
    apply_sequence_parallel(model, world)
    assert list(model.state_dict()) == keys and model.config == config  # nothing persisted changes
    assert copy.deepcopy(model).sequence_parallel is model.sequence_parallel  # an EMA copy shares the group

    with pytest.raises(ConfigError, match="num_heads divisible by 2"):
        apply_sequence_parallel(STDiT3(**dict(TINY, num_heads=1)), world)


def _check_all(rank: int) -> None:
    _check_matches_single_process(rank)
    _check_installation(rank)


def test_two_processes_match_one_and_installation_keeps_the_model():
    # one launch for both checks: starting the processes costs more than the checks
    _run_distributed(_check_all)


def test_rejects_models_other_than_stdit3():
    with pytest.raises(ConfigError, match="STDiT3"):
        apply_sequence_parallel(nn.Linear(2, 2), None)


def test_model_without_sequence_parallel_runs_no_collectives():
    model = _model(0).eval()
    assert model.sequence_parallel is None and not dist.is_initialized()
    with torch.no_grad():
        out = model(**_inputs(2, 6, 5))
    assert out.shape == (2, 8, 2, 6, 5) and torch.isfinite(out).all()
