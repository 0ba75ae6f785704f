"""The ColossalAI engine's step bookkeeping, on a stand-in for its ZeRO optimizer (colossalai pins
torch<=2.5.1 and CUDA, so the package itself is not installed here): a step counts as applied only
with a finite reported gradient norm, and the engine writes nothing into the optimizer."""

from __future__ import annotations

import importlib.util
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from opensora.acceleration.colossal import ColossalEngine, build_colossal_engine, check_reports_grad_norm
from opensora.acceleration.parallel import ParallelDims
from opensora.errors import ConfigError, OpenSoraError
from opensora.training.base import BaseTrainer
from opensora.training.ema import EMA


class StandInZeroOptimizer:
    """Steps like LowLevelZero in bf16 (it never skips): the norm of the step it just took, NaN or inf
    when the gradients were not finite."""

    def __init__(self, norms: list[float | None]) -> None:
        object.__setattr__(self, "norms", list(norms))
        object.__setattr__(self, "steps", 0)
        object.__setattr__(self, "param_groups", [{"params": []}])

    def __setattr__(self, name, value):  # the engine must configure the optimizer through its constructor only
        raise AssertionError(f"engine wrote optimizer attribute {name!r}")

    def step(self) -> None:
        object.__setattr__(self, "steps", self.steps + 1)

    def zero_grad(self) -> None:
        pass

    def get_grad_norm(self) -> float | None:
        return self.norms[self.steps - 1]


SINGLE = ParallelDims(1, 0, 0, 1, torch.device("cpu"), "none")


def engine(norms: list[float | None], max_norm: float | None = 1.0) -> ColossalEngine:
    optimizer = StandInZeroOptimizer(norms)
    return ColossalEngine(nn.Linear(2, 2), optimizer, SINGLE, "colossalai", "bf16", max_norm=max_norm)


def test_only_finite_norms_count_as_applied_steps():
    colossal = engine([0.5, float("nan"), float("inf")])
    assert colossal.clip_and_step(1.0) == (0.5, True)
    norm, stepped = colossal.clip_and_step(1.0)
    assert math.isnan(norm) and not stepped
    assert colossal.clip_and_step(1.0) == (float("inf"), False)


def test_an_unreported_norm_is_an_error_not_a_step():
    with pytest.raises(OpenSoraError, match="no gradient norm"):
        engine([None]).clip_and_step(1.0)


def test_the_clip_threshold_is_fixed_at_construction():
    with pytest.raises(ConfigError, match=r"threshold it was built with \(1.0\), not 2.0"):
        engine([0.5]).clip_and_step(2.0)
    assert engine([0.5], max_norm=None).clip_and_step(None) == (0.5, True)


def test_an_optimizer_that_hides_its_norm_is_refused():
    with pytest.raises(ConfigError, match="get_grad_norm"):
        check_reports_grad_norm(SimpleNamespace(step=lambda: None))
    check_reports_grad_norm(StandInZeroOptimizer([]))


def test_ema_skips_the_steps_colossalai_skipped():
    model = nn.Linear(2, 2)
    colossal = engine([0.5, float("nan")])
    colossal.model = model
    ema = EMA(model)
    trainer = SimpleNamespace(engine=colossal, ema=ema, cfg=SimpleNamespace(grad_clip=1.0, ema_decay=0.0),
                              lr_schedule=SimpleNamespace(step=lambda: None), timer=lambda _phase: _Null())  # fmt: skip
    with torch.no_grad():
        model.weight.fill_(1.0)
    assert BaseTrainer.optimizer_step(trainer) == (0.5, True)
    assert torch.equal(ema.state_dict()["weight"], model.weight)  # decay 0: the EMA is the weights
    with torch.no_grad():
        model.weight.fill_(7.0)  # what a skipped step must not bring into the EMA
    _, stepped = BaseTrainer.optimizer_step(trainer)
    assert not stepped and torch.all(ema.state_dict()["weight"] == 1.0)


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *_):
        return False


def test_fp16_is_refused_since_its_skipped_steps_are_not_reported():
    # LowLevelZero's fp16 overflow path returns without updating its reported norm: the previous
    # step's finite norm would count the skipped step as applied
    with pytest.raises(ConfigError, match="does not take fp16 here"):
        build_colossal_engine(nn.Linear(2, 2), SINGLE, "fp16", False)


def test_without_colossalai_the_plugin_says_how_to_install_it():
    if importlib.util.find_spec("colossalai") is not None:
        pytest.skip("colossalai is installed: the missing-package message cannot be shown")
    with pytest.raises(ConfigError, match="needs the colossalai package"):
        build_colossal_engine(nn.Linear(2, 2), SINGLE, "bf16", False)
