"""An fp32 exponential moving average of a model's trainable parameters (what inference loads).

The average lives beside the training weights, tensor for tensor: under FSDP2 each rank averages
its own shards (DTensors), so the EMA costs no communication per step. Names are those of the
unwrapped model, whatever wrapper (DDP, torch.compile) the trainer holds.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.nn.parallel import DistributedDataParallel


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module under DDP, torch.compile and ColossalAI wrappers (FSDP2 shards in place)."""
    while True:
        if isinstance(model, DistributedDataParallel):
            inner = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            inner = model._orig_mod
        elif callable(getattr(model, "unwrap", None)):  # a ColossalAI booster's ModelWrapper
            inner = model.unwrap()
        else:
            return model
        if inner is model:
            return model
        model = inner


def trainable_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    return ((name, p) for name, p in unwrap(model).named_parameters() if p.requires_grad)


class EMA:
    """``shadow[name] = decay * shadow[name] + (1 - decay) * param`` after every optimizer step."""

    def __init__(self, model: nn.Module) -> None:
        self.shadow: dict[str, torch.Tensor] = {
            name: param.detach().to(torch.float32, copy=True) for name, param in trainable_parameters(model)
        }

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        """Move the average towards ``model``'s current weights (decay 0 copies them)."""
        params = dict(trainable_parameters(model))
        if params.keys() != self.shadow.keys():
            raise ValueError(f"EMA tracks {len(self.shadow)} parameters, the model has {len(params)} trainable ones")
        for name, average in self.shadow.items():
            average.lerp_(params[name].detach().to(torch.float32), 1.0 - decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Full fp32 tensors on the CPU (sharded ones are gathered: call this on every rank)."""
        return {name: _full(tensor).cpu() for name, tensor in self.shadow.items()}

    @torch.no_grad()
    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load full tensors (every rank passes the same dict); sharded averages keep their own shards."""
        missing = [name for name in self.shadow if name not in state_dict]
        if missing:
            raise KeyError(f"EMA state lacks {len(missing)} parameters, e.g. {missing[0]}")
        for name, average in self.shadow.items():
            value = state_dict[name].to(torch.float32)
            if isinstance(average, DTensor):
                value = distribute_tensor(value.to(average.device), average.device_mesh, average.placements)
            average.copy_(value)

    def copy_to(self, model: nn.Module) -> None:
        """Write the averages into ``model``'s parameters (e.g. to evaluate the EMA weights)."""
        params = dict(trainable_parameters(model))
        with torch.no_grad():
            for name, average in self.shadow.items():
                params[name].copy_(average)


def _full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
