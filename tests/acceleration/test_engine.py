"""The distributed engine: 2 gloo processes on CPU train like 1 process, shard state, and checkpoint portably.

One module-scoped 2-process run (``_worker``) trains every plugin and records what the tests assert;
the single-process reference runs in the test process itself.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from opensora.acceleration.engine import Engine, build_engine
from opensora.acceleration.parallel import (
    TORCHRUN_ENV,
    ParallelDims,
    all_reduce_mean,
    destroy_distributed,
    init_distributed,
)
from opensora.errors import ConfigError
from opensora.models.stdit.stdit3 import STDiT3
from opensora.schedulers.rectified_flow import RectifiedFlow
from opensora.training.losses import rflow_loss

STEPS, MORE = 2, 2  # steps before and after a checkpoint
GLOBAL_BATCH, LR, CLIP = 4, 1e-3, 1.0  # the first gradient norms are ~2, so clipping is active
# Adam with a tiny eps moves a weight by ~lr whatever the sign of a ~0 gradient (the zero-initialised
# adaLN layers give the timestep embedder such gradients in the first steps), so a sum taken in
# another order could flip it; a large eps keeps the update continuous in the gradient
EPS = 1e-3
ACCUM = {"ddp": 1, "zero2": 2, "zero3": 2}  # micro-batches per step in the 2-process run
SINGLE = ParallelDims(1, 0, 0, 1, torch.device("cpu"), "none")


def tiny_model(seed: int) -> STDiT3:
    torch.manual_seed(seed)
    return STDiT3(depth=2, hidden_size=64, num_heads=4, caption_channels=32, model_max_length=8, class_dropout_prob=0)


def global_batch(step: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(step)
    B = GLOBAL_BATCH
    return dict(
        x=torch.randn(B, 4, 3, 8, 8, generator=gen),
        noise=torch.randn(B, 4, 3, 8, 8, generator=gen),
        t=torch.rand(B, generator=gen) * 1000,
        y=torch.randn(B, 1, 8, 32, generator=gen),
    )


def train(engine: Engine, steps: range, rank: int = 0, world_size: int = 1, accum: int = 1) -> list[float]:
    """Each rank takes its slice of the global batch, split into ``accum`` micro-batches; returns grad norms."""
    norms, scheduler = [], RectifiedFlow()
    for step in steps:
        local = {k: v.chunk(world_size)[rank] for k, v in global_batch(step).items()}
        micro = [{k: v.chunk(accum)[i] for k, v in local.items()} for i in range(accum)]
        for i, b in enumerate(micro):
            kwargs = dict(y=b["y"], mask=torch.ones(len(b["x"]), 8, dtype=torch.long))
            sync = engine.no_sync() if i < accum - 1 else contextlib.nullcontext()
            with sync, engine.autocast():
                loss = rflow_loss(engine.model, scheduler, b["x"], kwargs, noise=b["noise"], t=b["t"]).mean()
            engine.backward(loss / accum)
        grad_norm, stepped = engine.clip_and_step(CLIP)
        assert stepped
        norms.append(grad_norm)
    return norms


def local_state_numel(optimizer: torch.optim.Optimizer) -> int:
    """Elements of exp_avg/exp_avg_sq this rank holds (its shard under FSDP)."""
    total = 0
    for state in optimizer.state.values():
        for key in ("exp_avg", "exp_avg_sq"):
            value = state[key]
            total += (value.to_local() if hasattr(value, "to_local") else value).numel()
    return total


# ---- the 2-process run ----------------------------------------------------------------------------
def _fp16_skip(dims: ParallelDims) -> dict:
    """A non-finite gradient on one rank's shard only: every rank must skip the step and back off alike."""
    engine = build_engine(tiny_model(0), dims, "zero2", "fp16", lr=LR)
    b = {k: v.chunk(dims.world_size)[dims.rank] for k, v in global_batch(0).items()}
    loss = rflow_loss(engine.model, RectifiedFlow(), b["x"], dict(y=b["y"]), noise=b["noise"], t=b["t"]).mean()
    engine.backward(loss)
    before = [p.to_local().clone() for p in engine.model.parameters()]
    if dims.rank == 1:
        next(p for p in engine.model.parameters() if p.grad is not None).grad.to_local().fill_(float("inf"))
    _, stepped = engine.clip_and_step(CLIP)
    unchanged = all(torch.equal(a, p.to_local()) for a, p in zip(before, engine.model.parameters()))
    return {"stepped": stepped, "unchanged": unchanged, "scale": engine.scaler.get_scale()}


def _bf16_dtypes(dims: ParallelDims) -> dict:
    engine = build_engine(tiny_model(0), dims, "zero2", "bf16", lr=LR)
    seen = []
    engine.model.final_layer.register_forward_pre_hook(lambda m, _: seen.append(next(m.parameters()).dtype))
    train(engine, range(1), dims.rank, dims.world_size)
    return {"compute": seen[0], "master": {p.dtype for p in engine.model.parameters()}}


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dims = init_distributed()
    report: dict = {"dims": (dims.world_size, dims.rank, dims.dp_size, dims.dp_rank, dims.backend)}
    report["mean"] = all_reduce_mean(torch.tensor([float(rank), 1.0]), dims.dp_group).tolist()
    for plugin in ("ddp", "zero2", "zero3"):
        # each rank starts from other random weights: the engine must start all from rank 0's
        engine = build_engine(tiny_model(rank), dims, plugin, "fp32", lr=LR, eps=EPS)
        norms = train(engine, range(STEPS), rank, world_size, ACCUM[plugin])
        report[plugin] = {"weights": engine.model_state_dict(), "norms": norms}
        report[plugin]["optim"] = engine.optimizer_state_dict()
        report[plugin]["optim_numel"] = local_state_numel(engine.optimizer)
    # resume zero2's checkpoint under zero3; only rank 0 holds the dicts, as after a rank-0 load
    engine = build_engine(tiny_model(rank), dims, "zero3", "fp32", lr=LR, eps=EPS)
    engine.load_model_state_dict(report["zero2"]["weights"])
    engine.load_optimizer_state_dict(report["zero2"]["optim"])
    train(engine, range(STEPS, STEPS + MORE), rank, world_size)
    report["resumed_zero3"] = engine.model_state_dict()
    del engine  # before the process group goes (see destroy_distributed)
    report["fp16_skip"] = _fp16_skip(dims)
    report["bf16"] = _bf16_dtypes(dims)
    sp = init_distributed(sp_size=2)
    report["sp"] = (sp.sp_size, sp.dp_size, sp.dp_rank, sp.sp_group is not None)
    try:
        init_distributed(sp_size=3)
    except ConfigError as err:
        report["bad_sp"] = str(err)
    torch.save(report, Path(out) / f"rank{rank}.pt")
    destroy_distributed(dims)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(fn, nprocs: int, *args, timeout: float = 180) -> None:
    ctx = mp.start_processes(fn, args=(nprocs, _free_port(), *args), nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for process in ctx.processes:
                process.kill()
            pytest.fail(f"{nprocs}-process run did not finish in {timeout} s")


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("engine")
    spawn(_worker, 2, str(out))
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.fixture(scope="module")
def one() -> dict:
    engine = build_engine(tiny_model(0), SINGLE, "none", "fp32", lr=LR, eps=EPS)
    norms = train(engine, range(STEPS))
    at_checkpoint = engine.model_state_dict()
    train(engine, range(STEPS, STEPS + MORE))
    return {"norms": norms, "weights": at_checkpoint, "final": engine.model_state_dict()}


def assert_same_weights(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, rtol=1e-4, atol=1e-5, msg=key)


# ---- tests ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("plugin", ["ddp", "zero2", "zero3"])
def test_two_processes_train_like_one(two, one, plugin) -> None:
    assert two[0]["dims"] == (2, 0, 2, 0, "gloo") and two[1]["dims"] == (2, 1, 2, 1, "gloo")
    assert_same_weights(two[0][plugin]["weights"], one["weights"])
    # the clipping norm is the norm of the whole model, not of one rank's shard
    assert two[0][plugin]["norms"] == pytest.approx(one["norms"], rel=1e-4)
    assert two[1][plugin]["norms"] == pytest.approx(one["norms"], rel=1e-4)
    assert two[1][plugin]["weights"] == {}  # full state dicts gather to rank 0 only


def test_zero2_holds_half_the_optimizer_state(two) -> None:
    ddp = two[0]["ddp"]["optim_numel"]
    shards = [two[r]["zero2"]["optim_numel"] for r in range(2)]
    assert sum(shards) == ddp
    assert all(abs(n / ddp - 0.5) < 0.05 for n in shards)


def test_zero2_checkpoint_continues_in_one_process(two, one) -> None:
    engine = build_engine(tiny_model(seed=7), SINGLE, "none", "fp32", lr=LR, eps=EPS)
    engine.load_model_state_dict(two[0]["zero2"]["weights"])
    engine.load_optimizer_state_dict(two[0]["zero2"]["optim"])
    train(engine, range(STEPS, STEPS + MORE))
    assert_same_weights(engine.model_state_dict(), one["final"])


def test_rank0_checkpoint_broadcasts_into_another_plugin(two, one) -> None:
    assert_same_weights(two[0]["resumed_zero3"], one["final"])


def test_bf16_computes_in_bf16_and_keeps_fp32_master_weights(two) -> None:
    for rank in range(2):
        assert two[rank]["bf16"] == {"compute": torch.bfloat16, "master": {torch.float32}}
    engine = build_engine(tiny_model(0), SINGLE, "none", "bf16", lr=LR)
    with engine.autocast():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    train(engine, range(1))
    assert {p.dtype for p in engine.model.parameters()} == {torch.float32}


def test_fp16_nonfinite_gradient_skips_the_step(two) -> None:
    # 2 processes: only rank 1's shard overflowed, yet both skip and back off alike
    for rank in range(2):
        assert two[rank]["fp16_skip"] == {"stepped": False, "unchanged": True, "scale": 2.0**15}
    engine = build_engine(tiny_model(0), SINGLE, "none", "fp16", lr=LR)
    assert isinstance(engine.scaler, torch.amp.GradScaler)
    before = engine.model_state_dict()
    b = global_batch(0)
    with engine.autocast():
        loss = rflow_loss(engine.model, RectifiedFlow(), b["x"], dict(y=b["y"]), noise=b["noise"], t=b["t"]).mean()
    engine.backward(loss)
    engine.model.t_block[1].weight.grad[0, 0] = float("nan")
    grad_norm, stepped = engine.clip_and_step(CLIP)
    assert not stepped and grad_norm != grad_norm
    assert_same_weights(engine.model_state_dict(), before)
    assert engine.state_dict()["scaler"]["scale"] == 2.0**15 and not engine.optimizer.state
    train(engine, range(1))  # and the next finite step goes through
    assert engine.optimizer.state


def test_init_distributed_without_torchrun_is_one_process(monkeypatch) -> None:
    for key in TORCHRUN_ENV:
        monkeypatch.delenv(key, raising=False)
    dims = init_distributed()
    assert (dims.world_size, dims.rank, dims.dp_size, dims.dp_rank, dims.is_main) == (1, 0, 1, 0, True)
    assert dims.backend == "none" and dims.dp_group is None and dims.sp_group is None
    value = torch.tensor([2.0])
    mean = all_reduce_mean(value, dims.dp_group)
    assert mean.tolist() == [2.0] and mean is not value
    with pytest.raises(ConfigError, match="sp_size=2"):
        init_distributed(sp_size=2)
    with pytest.raises(ConfigError, match="sp_size=0"):
        init_distributed(sp_size=0)


def test_all_reduce_mean(two) -> None:
    assert two[0]["mean"] == two[1]["mean"] == [0.5, 1.0]


def test_sequence_parallel_groups(two) -> None:
    assert two[0]["sp"] == (2, 1, 0, True) and two[1]["sp"] == (2, 1, 0, True)
    assert "sp_size=3" in two[0]["bad_sp"] and "world size 2" in two[0]["bad_sp"]


def test_bad_choices_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown plugin 'fsdp'"):
        build_engine(tiny_model(0), SINGLE, "fsdp")
    with pytest.raises(ConfigError, match="unknown precision 'fp8'"):
        build_engine(tiny_model(0), SINGLE, "ddp", "fp8")
    two_ranks = ParallelDims(2, 0, 0, 1, torch.device("cpu"), "gloo")
    with pytest.raises(ConfigError, match="plugin 'none' is for one process, not 2"):
        build_engine(tiny_model(0), two_ranks, "none")


@pytest.mark.skipif(importlib.util.find_spec("colossalai") is not None, reason="colossalai is installed")
def test_colossalai_missing_is_one_line_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        build_engine(tiny_model(0), SINGLE, "colossalai")
    assert str(info.value) == (
        "plugin 'colossalai' needs the colossalai package "
        "(pip install -r requirements/requirements-colossalai.txt; it pins torch<=2.5.1)"
    )
