"""The ColossalAI path: a Booster with the LowLevelZero (ZeRO-2) plugin, as Open-Sora 1.2 trained.

Optional: colossalai pins torch<=2.5.1 and CUDA, so it lives in an environment of its own and this
module is not exercised by the CPU test suite. The engine keeps the interface of ``Engine``:

- the model holds bf16 working weights; the fp32 master copies live sharded in the optimizer,
  which clips inside ``step()``. The clip threshold is a constructor argument of the plugin, so it
  is fixed when the engine is built;
- fp16 is refused: on an overflow LowLevelZero skips the step without saying so (its reported
  gradient norm is then the previous step's, and scaled), so a skipped step could not be told
  from an applied one and the EMA would average it in. bf16 never skips;
- a step counts as applied only when the optimizer reports a finite gradient norm
  (``get_grad_norm``): versions that do not report it are refused. A bf16 step with a non-finite
  norm is counted as skipped, so the EMA keeps the last finite weights and the trainer stops after
  ``max_bad_steps`` such steps;
- ``model_state_dict`` returns the working weights cast to fp32, so after bf16 training they carry
  bf16 rounding; ``load_model_state_dict`` refreshes the master copies from the loaded weights;
- optimizer state dicts are gathered in full and keyed by parameter name, like ``Engine``'s.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from opensora.acceleration.engine import Engine, enable_grad_checkpointing
from opensora.acceleration.parallel import ParallelDims
from opensora.errors import ConfigError, OpenSoraError

MISSING = (
    "plugin 'colossalai' needs the colossalai package "
    "(pip install -r requirements/requirements-colossalai.txt; it pins torch<=2.5.1)"
)


@dataclass
class ColossalEngine(Engine):
    booster: Any = None
    names: tuple[str, ...] = ()  # trainable parameter names in optimizer order
    max_norm: float | None = None  # the plugin's clip threshold, fixed at construction

    def autocast(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # the plugin casts weights and inputs itself

    def backward(self, loss: torch.Tensor) -> None:
        self.booster.backward(loss, self.optimizer)  # reduce-scatters gradients

    def clip_and_step(self, max_norm: float | None) -> tuple[float, bool]:
        if (max_norm or None) != (self.max_norm or None):
            raise ConfigError(
                f"plugin 'colossalai' clips gradients at the threshold it was built with ({self.max_norm}), "
                f"not {max_norm}: pass grad_clip when the engine is built"
            )
        self.optimizer.step()
        self.optimizer.zero_grad()
        norm = self.optimizer.get_grad_norm()
        if norm is None:
            raise OpenSoraError("colossalai reported no gradient norm for this step: cannot tell if it was applied")
        norm = float(norm)
        return norm, math.isfinite(norm)

    def no_sync(self) -> contextlib.AbstractContextManager:
        raise ConfigError("gradient accumulation does not work with colossalai ZeRO-2; use plugin zero2")

    def sharded_state(self) -> tuple[dict, dict]:
        # LowLevelZero's shards are flat buffers, not DTensors: checkpoints hold rank 0's full state
        return self.model_state_dict(), self.optimizer_state_dict()

    def load_sharded_state(self, model_state: dict, optimizer_state: dict | None) -> None:
        self.load_model_state_dict(model_state)
        if optimizer_state is not None:
            self.load_optimizer_state_dict(optimizer_state)

    def model_state_dict(self) -> dict[str, torch.Tensor]:
        module = self.model.unwrap()
        full = {k: v.detach().float().cpu() for k, v in module.state_dict().items()}
        return full if self.dims.is_main else {}

    def load_model_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        module = self.model.unwrap()
        module.load_state_dict(_from_rank0(state_dict))
        self.optimizer.update_master_params(module)

    def optimizer_state_dict(self) -> dict:
        packed = self.optimizer.state_dict()  # collective: every rank gathers the shards
        if not self.dims.is_main:
            return {}
        state = {self.names[i]: value for i, value in packed["state"].items()}
        groups = [{**g, "params": [self.names[i] for i in g["params"]]} for g in packed["param_groups"]]
        return {"state": state, "param_groups": groups}

    def load_optimizer_state_dict(self, state_dict: dict) -> None:
        state_dict = _from_rank0(state_dict)
        index = {name: i for i, name in enumerate(self.names)}
        state = {index[name]: value for name, value in state_dict["state"].items()}
        groups = [{**g, "params": [index[n] for n in g["params"]]} for g in state_dict["param_groups"]]
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})


def _from_rank0(obj: dict) -> dict:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_reports_grad_norm(optimizer: Any) -> None:
    if not callable(getattr(optimizer, "get_grad_norm", None)):
        raise ConfigError(
            "this colossalai's ZeRO optimizer does not report its gradient norm (get_grad_norm), so skipped "
            "steps cannot be told from applied ones; install a newer colossalai or use plugin zero2"
        )


def build_colossal_engine(
    model: nn.Module,
    dims: ParallelDims,
    precision: str,
    grad_checkpoint: bool,
    max_norm: float | None = None,
    **optim_args,
) -> ColossalEngine:
    """Boost ``model`` with LowLevelZero stage 2 (clipping at ``max_norm``) and an AdamW over its
    trainable parameters."""
    if precision == "fp16":
        raise ConfigError(
            "plugin 'colossalai' does not take fp16 here: its ZeRO optimizer skips overflowing steps without "
            "saying so, and the EMA would average them in; use bf16, or plugin zero2 for fp16"
        )
    try:
        from colossalai.booster import Booster
        from colossalai.booster.plugin import LowLevelZeroPlugin
    except ImportError as err:
        raise ConfigError(MISSING) from err
    if dims.device.type != "cuda":
        raise ConfigError("plugin 'colossalai' runs on CUDA only; use zero2 on CPU")
    if grad_checkpoint:
        enable_grad_checkpointing(model)
    names = tuple(name for name, p in model.named_parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], **optim_args)
    plugin = LowLevelZeroPlugin(stage=2, precision=precision, max_norm=max_norm or 0.0)
    booster = Booster(plugin=plugin)
    model, optimizer, *_ = booster.boost(model.to(dims.device), optimizer)
    check_reports_grad_norm(optimizer)
    return ColossalEngine(
        model, optimizer, dims, "colossalai", precision, booster=booster, names=names, max_norm=max_norm
    )
