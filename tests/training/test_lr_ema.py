"""Learning-rate warmup and the EMA of trainable weights, with their state round trips."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from opensora.training.ema import EMA, unwrap
from opensora.training.lr_schedule import WarmupConstantLR


def optimizer(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.AdamW([nn.Parameter(torch.zeros(2))], lr=lr)


def test_warmup_is_linear_then_constant() -> None:
    schedule = WarmupConstantLR(optimizer(0.1), warmup_steps=4)
    lrs = []
    for _ in range(6):
        lrs.append(schedule.get_lr())
        schedule.step()
    assert lrs == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    assert WarmupConstantLR(optimizer(0.1), warmup_steps=0).get_lr() == 0.1


def test_schedule_resumes_its_step_with_the_configured_lr() -> None:
    schedule = WarmupConstantLR(optimizer(0.1), warmup_steps=10)
    for _ in range(3):
        schedule.step()
    state = schedule.state_dict()
    resumed = WarmupConstantLR(optimizer(0.1), warmup_steps=10)
    resumed.load_state_dict(state)
    assert resumed.get_lr() == pytest.approx(schedule.get_lr()) == pytest.approx(0.04)
    changed = WarmupConstantLR(optimizer(1.0), warmup_steps=10)  # a new --lr applies on resume
    changed.load_state_dict(state)
    assert changed.get_lr() == pytest.approx(0.4)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trained = nn.Linear(2, 2)
        self.frozen = nn.Linear(2, 2).requires_grad_(False)


def test_ema_tracks_trainable_parameters_in_fp32() -> None:
    model = Tiny().to(torch.bfloat16)
    ema = EMA(model)
    assert set(ema.shadow) == {"trained.weight", "trained.bias"}
    assert all(t.dtype == torch.float32 for t in ema.shadow.values())
    start = ema.shadow["trained.bias"].clone()
    with torch.no_grad():
        model.trained.bias.add_(1.0)
    ema.update(model, decay=0.75)
    torch.testing.assert_close(ema.shadow["trained.bias"], 0.75 * start + 0.25 * model.trained.bias.float())
    ema.update(model, decay=0.0)
    assert torch.equal(ema.shadow["trained.bias"], model.trained.bias.float())


def test_ema_state_round_trip_and_copy_to() -> None:
    model = Tiny()
    ema = EMA(model)
    with torch.no_grad():
        model.trained.weight.mul_(3)
    ema.update(model, decay=0.5)
    restored = EMA(Tiny())
    restored.load_state_dict(ema.state_dict())
    assert all(torch.equal(restored.shadow[k], ema.shadow[k]) for k in ema.shadow)
    target = Tiny()
    restored.copy_to(target)
    assert torch.equal(target.trained.weight, ema.shadow["trained.weight"])
    with pytest.raises(KeyError, match="lacks 1 parameters"):
        restored.load_state_dict({"trained.weight": torch.zeros(2, 2)})


class Compiled(nn.Module):
    """Stands in for torch.compile's wrapper, which holds the model as ``_orig_mod`` (importing dynamo is slow)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._orig_mod = model


def test_ema_names_ignore_wrappers() -> None:
    model = Tiny()
    compiled = Compiled(model)
    assert unwrap(compiled) is model
    assert set(EMA(compiled).shadow) == set(EMA(model).shadow)
