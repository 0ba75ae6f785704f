"""Learning rate: linear warmup from ``lr / warmup_steps`` to ``lr``, then constant (as the release trained)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


class WarmupConstantLR:
    """Sets every param group's lr to ``base_lr * min(1, (step + 1) / warmup_steps)`` for the next step.

    ``base_lr`` is each group's lr when the schedule is built, i.e. the config's. A resumed run takes
    only the step count from the checkpoint, so a changed ``--lr`` applies from the first step.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int = 0) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.optimizer = optimizer
        self.warmup_steps = warmup_steps
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.last_step = 0
        self._apply()

    def factor(self, step: int) -> float:
        """The fraction of the base lr used by optimizer step ``step`` (counted from 0)."""
        if self.warmup_steps == 0:
            return 1.0
        return min(1.0, (step + 1) / self.warmup_steps)

    def step(self) -> None:
        """Advance after an optimizer step."""
        self.last_step += 1
        self._apply()

    def get_lr(self) -> float:
        """The lr of the first param group for the coming step."""
        return self.optimizer.param_groups[0]["lr"]

    def _apply(self) -> None:
        scale = self.factor(self.last_step)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * scale

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step, "warmup_steps": self.warmup_steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the step count (after loading the optimizer, whose saved lrs this overrides)."""
        self.last_step = int(state["last_step"])
        self._apply()
