"""Wrap a model for data parallelism and mixed precision, and own its optimizer.

Plugins: ``none`` (one process, plain module), ``ddp`` (DistributedDataParallel), ``zero2`` and
``zero3`` (FSDP2 ``fully_shard`` per transformer block, then the root; ``zero2`` keeps parameters
gathered between forward and backward, ``zero3`` frees them), ``colossalai`` (LowLevelZero, see
``colossal.py``). Master weights and optimizer state are always fp32; bf16/fp16 exist only in
compute (autocast for ``none``/``ddp``, ``MixedPrecisionPolicy`` for FSDP2, whose all-gathers then
move half the bytes).

Gradients are averaged over every rank. With sequence parallelism the ranks of one SP group see
the same samples, so the SP layer must make the mean of their local gradients equal the gradient
of their shared loss.

Full state dicts are gathered to rank 0 on CPU (other ranks get ``{}``), keyed by the names of the
unwrapped model, so a checkpoint written under one plugin and world size loads under any other;
loading reads rank 0's dict and broadcasts it, so other ranks may pass ``{}``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from opensora.acceleration.materialize import InitTape, init_tape, load_sharded, materialize
from opensora.acceleration.parallel import ParallelDims
from opensora.errors import ConfigError
from opensora.models.checkpoint_io import parse_dtype

PLUGINS = ("none", "ddp", "zero2", "zero3", "colossalai")
PRECISIONS = ("fp32", "bf16", "fp16")
FSDP_PLUGINS = ("zero2", "zero3")


@dataclass
class Engine:
    """The wrapped model, its optimizer and the step mechanics the trainer calls."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    dims: ParallelDims
    plugin: str
    precision: str
    scaler: torch.amp.GradScaler | None = None
    _params: list[nn.Parameter] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._params = [p for group in self.optimizer.param_groups for p in group["params"]]

    # ---- the step -----------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        """Half-precision compute for the forward; FSDP2 casts parameters itself, so it needs none."""
        if self.precision == "fp32" or isinstance(self.model, FSDPModule):
            return contextlib.nullcontext()
        return torch.autocast(self.dims.device.type, dtype=parse_dtype(self.precision))

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def clip_and_step(self, max_norm: float | None) -> tuple[float, bool]:
        """Unscale, measure the global gradient norm, clip to ``max_norm``, step, zero the gradients.

        Returns ``(grad_norm, stepped)``; a non-finite norm skips the step on every rank alike
        (the norm is global, so all ranks see the same verdict) and backs off the fp16 loss scale.
        """
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in self._params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.dims.device)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()  # a Partial norm of the shards -> the norm of the whole model
        grad_norm = float(norm)
        stepped = bool(torch.isfinite(norm))
        if stepped and max_norm is not None and grads:
            torch.nn.utils.clip_grads_with_norm_(self._params, max_norm, norm)
        if self.scaler is None:
            if stepped:
                self.optimizer.step()
        elif stepped:
            self.scaler.step(self.optimizer)  # local grads are finite because the global norm is
            self.scaler.update()
        else:
            _back_off(self.scaler)
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm, stepped

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Accumulate gradients locally; the first backward outside the context reduces them all."""
        if isinstance(self.model, DistributedDataParallel):
            with self.model.no_sync():
                yield
        elif isinstance(self.model, FSDPModule):
            self.model.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                self.model.set_requires_gradient_sync(True)
        else:
            yield

    # ---- state --------------------------------------------------------------------------------
    def _options(self, loading: bool) -> StateDictOptions:
        broadcast = loading and dist.is_initialized() and self.dims.world_size > 1
        return StateDictOptions(full_state_dict=True, cpu_offload=not loading, broadcast_from_rank0=broadcast)

    def model_state_dict(self) -> dict[str, torch.Tensor]:
        """Full fp32 weights on CPU on rank 0 (``{}`` elsewhere), keyed like the unwrapped model.

        A snapshot: later steps do not change it.
        """
        state_dict = get_model_state_dict(self.model, options=self._options(loading=False))
        return _snapshot(state_dict, self.dims.device)

    def load_model_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        set_model_state_dict(self.model, _snapshot(state_dict), options=self._options(loading=True))

    def optimizer_state_dict(self) -> dict:
        """Full optimizer state on rank 0 (``{}`` elsewhere), keyed by parameter name, so any world size loads it."""
        state_dict = get_optimizer_state_dict(self.model, self.optimizer, options=self._options(loading=False))
        return _snapshot(state_dict, self.dims.device)

    def load_optimizer_state_dict(self, state_dict: dict) -> None:
        state_dict = _snapshot(state_dict, torch.device("cpu"))
        set_optimizer_state_dict(self.model, self.optimizer, state_dict, options=self._options(loading=True))

    def sharded_state(self) -> tuple[dict, dict]:
        """(model, optimizer) state dicts of this rank's shards (whole tensors when unsharded), keyed like
        the unwrapped model: what sharded checkpoints write, and the destinations they are read into."""
        return get_model_state_dict(self.model), get_optimizer_state_dict(self.model, self.optimizer)

    def load_sharded_state(self, model_state: dict, optimizer_state: dict | None) -> None:
        """Adopt what a checkpoint read into :meth:`sharded_state`'s dicts (``None``: keep the optimizer)."""
        set_model_state_dict(self.model, model_state)
        if optimizer_state is not None:
            set_optimizer_state_dict(self.model, self.optimizer, optimizer_state)

    def state_dict(self) -> dict:
        return {"scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state_dict: dict) -> None:
        # a checkpoint from another precision carries no (or an unused) scaler state
        if self.scaler is not None and state_dict.get("scaler"):
            self.scaler.load_state_dict(state_dict["scaler"])


def _snapshot(obj, device: torch.device | None = None, key: str = ""):
    """A copy of a state-dict tree that shares no container and no live tensor with the original.

    Loading writes shards into the dicts it is given, so the dicts and lists are always copied.
    Tensors are copied where they may be live state: all of them on a CPU ``device`` (gathering to
    the CPU hands CPU tensors back as they are), and the optimizer's ``step`` counters, which stay
    on the CPU beside CUDA weights and which an optimizer adopts from a loaded dict and increments.
    """
    if isinstance(obj, dict):
        return {k: _snapshot(v, device, k) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_snapshot(v, device) for v in obj)
    copy = isinstance(obj, torch.Tensor) and (key == "step" or (device is not None and device.type == "cpu"))
    return obj.detach().clone() if copy else obj


def _back_off(scaler: torch.amp.GradScaler) -> None:
    # GradScaler.update() trusts each rank's own inf check, which only saw its gradient shard;
    # set the same smaller scale everywhere instead and restart the growth count, as a skip would
    state = scaler.state_dict()
    scaler.update(state["scale"] * state["backoff_factor"])
    scaler.load_state_dict({**scaler.state_dict(), "_growth_tracker": 0})


# ---- building -----------------------------------------------------------------------------------
def _check_choices(plugin: str, precision: str, dims: ParallelDims) -> None:
    if plugin not in PLUGINS:
        raise ConfigError(f"unknown plugin '{plugin}' (known: {', '.join(PLUGINS)})")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}' (known: {', '.join(PRECISIONS)})")
    if plugin == "none" and dims.world_size > 1:
        raise ConfigError(f"plugin 'none' is for one process, not {dims.world_size}; use ddp, zero2 or zero3")
    if plugin != "none" and dims.world_size > 1 and not dist.is_initialized():
        raise ConfigError(f"plugin '{plugin}' needs the process group that init_distributed creates")


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks: every entry of a ``ModuleList`` child of the model."""
    return [block for child in model.children() if isinstance(child, nn.ModuleList) for block in child]


def _broadcast_from_rank0(model: nn.Module) -> None:
    # FSDP2 shards whatever each rank holds; make that rank 0's initialisation, whatever the seeds
    for tensor in [*model.parameters(), *model.buffers()]:
        dist.broadcast(tensor.data, src=0)


def _shard(model: nn.Module, dims: ParallelDims, plugin: str, precision: str) -> nn.Module:
    if init_tape(model) is None:
        _broadcast_from_rank0(model)  # a model built on meta starts from the same values everywhere
    mesh = dims.fsdp_mesh or DeviceMesh.from_group(dist.group.WORLD, dims.device.type)
    compute = parse_dtype(precision)
    # reductions stay fp32: summing many bf16 gradients loses the small ones
    policy = MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32)
    reshard = plugin == "zero3"
    for block in transformer_blocks(model):
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard)
    return fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard)


def _wrap(model: nn.Module, dims: ParallelDims, plugin: str, precision: str) -> nn.Module:
    """Shard (FSDP2, before materialising: a meta model stays meta until its shards exist) or replicate."""
    tape = init_tape(model)
    if plugin in FSDP_PLUGINS and dist.is_initialized():
        model = _shard(model, dims, plugin, precision)
        if tape is not None:
            _materialize(model, dims.device, tape)
        return model
    if tape is not None:
        _materialize(model, dims.device, tape)
    if plugin == "ddp" and dist.is_initialized():
        device_ids = [dims.device.index] if dims.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)
    return model  # a single process without a process group: nothing to synchronise


def _materialize(model: nn.Module, device: torch.device, tape: InitTape) -> None:
    materialize(model, device, tape)
    if tape.weights:
        load_sharded(model, tape.weights)


def enable_grad_checkpointing(model: nn.Module) -> None:
    if not hasattr(model, "set_grad_checkpointing"):
        raise ConfigError(f"grad_checkpoint: {type(model).__name__} has no set_grad_checkpointing()")
    model.set_grad_checkpointing(True)


def build_engine(
    model: nn.Module,
    dims: ParallelDims,
    plugin: str = "ddp",
    precision: str = "bf16",
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    eps: float = 1e-8,
    betas: tuple[float, float] = (0.9, 0.999),
    grad_checkpoint: bool = False,
    max_norm: float | None = None,
) -> Engine:
    """Move ``model`` to ``dims.device`` in fp32, wrap it for ``plugin``, and build AdamW over its trainable weights.

    A model from :func:`~opensora.acceleration.materialize.build_on_meta` is sharded first and then
    materialised shard by shard (and its weights, if any, read shard by shard): no rank holds it whole.

    ``max_norm`` is the clip threshold ``clip_and_step`` will be given: only colossalai needs it up front."""
    _check_choices(plugin, precision, dims)
    optim_args = dict(lr=lr, weight_decay=weight_decay, eps=eps, betas=betas)
    if plugin == "colossalai":
        from opensora.acceleration.colossal import build_colossal_engine

        return build_colossal_engine(model, dims, precision, grad_checkpoint, max_norm, **optim_args)
    if grad_checkpoint:
        enable_grad_checkpointing(model)
    if init_tape(model) is None:
        model = model.to(dims.device, torch.float32)
    model = _wrap(model, dims, plugin, precision)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], **optim_args)
    scaler = torch.amp.GradScaler(dims.device.type) if precision == "fp16" else None
    return Engine(model, optimizer, dims, plugin, precision, scaler)
