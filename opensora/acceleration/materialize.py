"""Build a model on the meta device now, give it real weights later, one tensor at a time.

:func:`build_on_meta` runs a model's constructor on the meta device (no memory, no compute) while
recording, as a tape, every operation that produced or changed a tensor there: the factory that
created each parameter, the initialisers that wrote it (``nn.init.*``, ``reset_parameters``, a
model's own ``initialize_weights``, views included) and whatever computed the buffers. The engine
then shards the still-empty model, moves it to its device with ``to_empty`` and fills it:

* a **parameter** is replayed on the CPU from its own slice of the tape, with the random generator
  seeded by ``(seed, name)``, and only this rank's shard of the result is kept, so a rank never
  holds more than one full parameter; the values depend on neither the world size nor the layout,
  so 1, 2 or 4 ranks start from the same weights;
* a **buffer** is replayed from the rest of the tape (buffers are small and never sharded);
* a **checkpoint** (:func:`load_sharded`) is read tensor by tensor, safetensors files by the rows of
  this rank's shard only.

Initialisers that skip meta tensors themselves (``nn.init.trunc_normal_``) leave nothing on the
tape; such a parameter is refused by name instead of being left uninitialised.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from opensora.errors import CheckpointError, ConfigError

TAPE_ATTRIBUTE = "_deferred_init"  # where build_on_meta leaves the tape on the model


def _storage(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage()._cdata


@dataclass
class _Op:
    func: Any
    args: tuple
    kwargs: dict
    outputs: list[torch.Tensor]  # the meta outputs; kept alive so that storage ids stay unique
    reads: set[int]  # storages of meta inputs
    writes: set[int]  # storages written: outputs and mutated inputs


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[_Op] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.is_meta]
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor) and t.is_meta]
        if outputs or inputs:
            mutated = {_storage(inputs[0])} if func._schema.is_mutable and inputs else set()
            writes = {_storage(t) for t in outputs} | mutated
            self.ops.append(_Op(func, args, kwargs, outputs, {_storage(t) for t in inputs}, writes))
        return out


@dataclass
class InitTape:
    """The recorded construction of a meta model: replays any parameter or every buffer on the CPU."""

    ops: list[_Op]
    parameters: dict[str, torch.Tensor]  # name -> its meta tensor at build time (geometry and storage)
    buffers: dict[str, torch.Tensor]
    seed: int = 0
    weights: list[Path] = field(default_factory=list)  # files to load after initialising (from_pretrained)
    _param_storages: set[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._param_storages = {_storage(t) for t in self.parameters.values()}

    def parameter(self, name: str) -> torch.Tensor:
        """The full initial value of parameter ``name`` (CPU), the same for every caller."""
        target = self.parameters[name]
        storage = _storage(target)
        ops = self._producers(storage)
        foreign = (set().union(*(op.reads for op in ops)) & self._param_storages) - {storage} if ops else set()
        if not ops or foreign:
            why = "its initialiser skips meta tensors" if not ops else "its initialisation reads other parameters"
            raise ConfigError(f"parameter '{name}' cannot be initialised shard by shard: {why}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + zlib.crc32(name.encode()))
            env = _replay(ops, {})
        return _view(env, target).clone()

    def _producers(self, storage: int) -> list[_Op]:
        """The ops that wrote ``storage`` and, transitively, those that wrote what they read (in order)."""
        needed, chosen = {storage}, []
        for op in reversed(self.ops):
            if op.writes & needed:
                chosen.append(op)
                needed |= op.reads
        return chosen[::-1]

    def buffer_values(self) -> dict[str, torch.Tensor]:
        """Every buffer's initial value (CPU), from the ops that touch no parameter."""
        ops = [op for op in self.ops if not (op.writes | op.reads) & self._param_storages]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            env = _replay(ops, {}, skip_unknown=True)
        values = {}
        for name, target in self.buffers.items():
            if _storage(target) not in env:
                raise ConfigError(f"buffer '{name}' cannot be rebuilt: it is computed from parameters")
            values[name] = _view(env, target).clone()
        return values


def _view(env: dict[int, torch.Tensor], meta: torch.Tensor) -> torch.Tensor:
    return env[_storage(meta)].as_strided(meta.shape, meta.stride(), meta.storage_offset())


def _replay(ops: list[_Op], env: dict[int, torch.Tensor], skip_unknown: bool = False) -> dict[int, torch.Tensor]:
    """Run ``ops`` on the CPU; ``env`` maps a meta storage to the real tensor holding it from offset 0."""
    for op in ops:
        if not op.reads <= env.keys():
            if skip_unknown:
                continue
            raise ConfigError(f"cannot replay {op.func}: it reads a tensor that was not recorded")

        def real(x):
            if isinstance(x, torch.Tensor) and x.is_meta:
                return _view(env, x)
            if isinstance(x, torch.device) and x.type == "meta":
                return torch.device("cpu")
            return x

        out = op.func(*tree_map(real, op.args), **tree_map(real, op.kwargs))
        real_outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        for meta, value in zip(op.outputs, real_outputs):
            if _storage(meta) not in env:  # a new tensor (views and in-place results share one)
                base = value.as_strided((value.untyped_storage().nbytes() // value.element_size(),), (1,), 0)
                env[_storage(meta)] = base
    return env


def build_on_meta(build: Callable[[], nn.Module], seed: int = 0, weights: list[Path] | None = None) -> nn.Module:
    """``build()`` on the meta device; the model carries its :class:`InitTape` for :func:`materialize`
    (and ``weights``, the files the engine loads into it once it is materialised)."""
    with torch.device("meta"), _Recorder() as recorder:
        model = build()
    parameters, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    tape = InitTape(recorder.ops, parameters, buffers, seed, list(weights or []))
    object.__setattr__(model, TAPE_ATTRIBUTE, tape)  # not a submodule, not state: a plain attribute
    return model


def init_tape(model: nn.Module) -> InitTape | None:
    return getattr(model, TAPE_ATTRIBUTE, None)


def local_part(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This rank's part of ``full`` where ``like`` is a (maybe sharded) parameter of the same global shape."""
    if isinstance(like, DTensor):
        # every rank holds the same full value, so each cuts its own shard without communication
        return distribute_tensor(full.to(like.device), like.device_mesh, like.placements, src_data_rank=None).to_local()
    return full


@torch.no_grad()
def materialize(model: nn.Module, device: torch.device, tape: InitTape) -> None:
    """Allocate ``model``'s (sharded) tensors on ``device`` and fill them from ``tape``, one parameter at a time."""
    model.to_empty(device=device)
    for name, param in model.named_parameters():
        _local(param).copy_(local_part(tape.parameter(name), param))
    buffers = tape.buffer_values()
    for name, buffer in model.named_buffers():
        buffer.copy_(buffers[name])
    object.__setattr__(model, TAPE_ATTRIBUTE, None)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


# ---- loading weights shard by shard -------------------------------------------------------------
def _slices(path: Path, names: set[str]) -> Iterator[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
    """(name, read(like)) for the tensors of one file; read gives ``like``'s local part only."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(path, framework="pt") as handle:
            for name in names & set(handle.keys()):
                yield name, lambda like, name=name: _read_rows(handle.get_slice(name), like)
        return
    from opensora.models.checkpoint_io import load_state_dict_file

    for name, tensor in load_state_dict_file(path).items():
        if name in names:
            yield name, lambda like, tensor=tensor: local_part(tensor, like)


def _read_rows(stored, like: torch.Tensor) -> torch.Tensor:
    """The rows of a safetensors slice that ``like``'s local shard covers (FSDP shards dim 0 only)."""
    if not isinstance(like, DTensor) or like.dim() == 0:
        return stored[:]
    rows = like.shape[0]
    start, stop = _row_range(like, rows)
    return stored[start:stop] if stop > start else stored[0:0]


def _row_range(like: DTensor, rows: int) -> tuple[int, int]:
    from torch.distributed.tensor.placement_types import Shard

    start, stop = 0, rows
    for mesh_dim, placement in enumerate(like.placements):
        if isinstance(placement, Shard):
            if placement.dim != 0:
                raise CheckpointError("sharded loading reads row shards only (FSDP's Shard(0))")
            size, rank = like.device_mesh.size(mesh_dim), like.device_mesh.get_local_rank(mesh_dim)
            chunk = -(-(stop - start) // size)  # torch.chunk's split, as DTensor's
            start, stop = start + min(rank * chunk, stop - start), start + min((rank + 1) * chunk, stop - start)
    return start, stop


@torch.no_grad()
def load_sharded(model: nn.Module, files: list[Path], strict: bool = True) -> list[str]:
    """Fill ``model``'s (sharded, materialised) tensors from weight files, reading each rank's rows only.

    Returns the names the files did not hold (an error when ``strict``).
    """
    targets = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    left = set(targets)
    for path in files:
        for name, read in _slices(Path(path), left):
            like = targets[name]
            value = read(like)
            local = _local(like)
            if value.shape != local.shape:
                raise CheckpointError(f"'{path}': '{name}' gives a shard of {list(value.shape)}, "
                                      f"the model's is {list(local.shape)}")  # fmt: skip
            local.copy_(value)
            left.discard(name)
    if strict and left:
        raise CheckpointError(f"weights lack {len(left)} tensors of the model, e.g. {sorted(left)[0]}")
    return sorted(left)
