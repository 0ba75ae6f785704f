"""Process groups for data and sequence parallelism, built once and passed explicitly.

Ranks are laid out sequence-parallel-major: the ``sp_size`` consecutive ranks ``[g*sp, (g+1)*sp)``
form one sequence-parallel group (they share a node when ``sp_size`` divides the GPUs per node, so
their all-to-alls stay on the fast links) and see the same samples; ranks with the same position
inside their SP group form one data-parallel group. ``dp_rank``/``dp_size`` are what a sampler
uses to split the data.

The same layout is one named :class:`~torch.distributed.device_mesh.DeviceMesh` of shape
``(dp_replicate, dp_shard, sp)``: ``dp_replicate`` > 1 is HSDP (whole model replicas, e.g. one per
node, each sharded over its ``dp_shard * sp`` ranks; gradients are reduce-scattered inside a replica
and all-reduced across replicas). FSDP shards over ``dp_shard`` and ``sp`` together: SP ranks hold
the same samples and their local gradients average to the true one, so they can share the shards.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed import ProcessGroup
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from opensora.errors import ConfigError

BACKENDS = ("gloo", "nccl")
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class ParallelDims:
    """Who this process is and which groups it belongs to; ``backend`` is "none" without a process group."""

    world_size: int
    rank: int
    local_rank: int
    sp_size: int
    device: torch.device
    backend: str
    dp_group: ProcessGroup | None = None  # None when world_size == 1
    sp_group: ProcessGroup | None = None  # None when sp_size == 1
    dp_replicate: int = 1  # HSDP replicas (1: plain FSDP over every rank)
    mesh: DeviceMesh | None = None  # dims ("dp_replicate", "dp_shard", "sp"); None without a process group
    # what FSDP2 shards over: 1-D ("fsdp",) of every rank, or 2-D ("dp_replicate", "fsdp") for HSDP
    fsdp_mesh: DeviceMesh | None = None

    @property
    def dp_size(self) -> int:
        return self.world_size // self.sp_size

    @property
    def dp_rank(self) -> int:
        return self.rank // self.sp_size

    @property
    def sp_rank(self) -> int:
        return self.rank % self.sp_size

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _check_sp_size(sp_size: int, world_size: int) -> None:
    if sp_size < 1 or world_size % sp_size != 0:
        raise ConfigError(f"sp_size={sp_size} must be a positive divisor of the world size {world_size}")


def _fsdp_mesh(mesh: DeviceMesh, dp_replicate: int) -> DeviceMesh:
    shard = mesh["dp_shard", "sp"]._flatten("fsdp")
    return shard if dp_replicate == 1 else mesh["dp_replicate", "fsdp"]


def _check_dp_replicate(dp_replicate: int, world_size: int, sp_size: int) -> None:
    dp_size = world_size // sp_size
    if dp_replicate < 1 or dp_size % dp_replicate != 0:
        raise ConfigError(
            f"dp_replicate={dp_replicate} must be a positive divisor of the data-parallel size {dp_size} "
            f"(world size {world_size} / sp_size {sp_size})"
        )


def build_mesh(world_size: int, sp_size: int, dp_replicate: int, device_type: str) -> DeviceMesh:
    """The named mesh ``(dp_replicate, dp_shard, sp)`` of the rank layout (collective: every rank calls it)."""
    shape = (dp_replicate, world_size // sp_size // dp_replicate, sp_size)
    return init_device_mesh(device_type, shape, mesh_dim_names=("dp_replicate", "dp_shard", "sp"))


def _pick_device(device: str | None, local_rank: int) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    picked = torch.device(device)
    if picked.type == "cuda":
        picked = torch.device("cuda", local_rank if picked.index is None else picked.index)
        torch.cuda.set_device(picked)
    return picked


def init_distributed(
    sp_size: int = 1, backend: str | None = None, device: str | None = None, dp_replicate: int = 1
) -> ParallelDims:
    """Join the job torchrun started (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT in the environment).

    Without that environment this is a single process and no process group is created.
    ``backend`` defaults to nccl on CUDA and gloo on CPU; ``device`` to ``cuda:LOCAL_RANK`` when CUDA exists.
    """
    if not all(key in os.environ for key in TORCHRUN_ENV):
        _check_sp_size(sp_size, 1)
        _check_dp_replicate(dp_replicate, 1, sp_size)
        return ParallelDims(1, 0, 0, sp_size, _pick_device(device, 0), "none")
    world_size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    local_rank = int(os.environ["LOCAL_RANK"])
    _check_sp_size(sp_size, world_size)
    _check_dp_replicate(dp_replicate, world_size, sp_size)
    picked = _pick_device(device, local_rank)
    backend = backend or ("nccl" if picked.type == "cuda" else "gloo")
    if backend not in BACKENDS:
        raise ConfigError(f"unknown distributed backend '{backend}' (known: {', '.join(BACKENDS)})")
    if backend == "nccl" and picked.type != "cuda":
        raise ConfigError(f"backend 'nccl' needs a CUDA device, not {picked}")
    if not dist.is_initialized():
        # binding NCCL to its device up front lets it create communicators eagerly
        device_id = picked if backend == "nccl" else None
        dist.init_process_group(backend, rank=rank, world_size=world_size, device_id=device_id)
    if world_size == 1:
        return ParallelDims(world_size, rank, local_rank, sp_size, picked, backend)
    mesh = build_mesh(world_size, sp_size, dp_replicate, picked.type)
    dp_group = mesh["dp_replicate", "dp_shard"]._flatten("dp").get_group()
    sp_group = mesh["sp"].get_group() if sp_size > 1 else None
    fsdp = _fsdp_mesh(mesh, dp_replicate)
    return ParallelDims(world_size, rank, local_rank, sp_size, picked, backend, dp_group, sp_group, dp_replicate,
                        mesh, fsdp)  # fmt: skip


def destroy_distributed(dims: ParallelDims) -> None:
    """Tear down the process groups ``init_distributed`` created (a no-op for a single process).

    Call it after the engine is released: a DDP/FSDP module that outlives its process group frees
    the group from Python later, which can deadlock with gloo's worker threads.
    """
    if dims.backend != "none" and dist.is_initialized():
        # every rank's last collective has completed before any rank frees its groups
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_mean(value: torch.Tensor, group: ProcessGroup | None) -> torch.Tensor:
    """Mean of a (detached) tensor over ``group`` (the whole world when None); a copy without a process group."""
    value = value.detach().clone()
    if not dist.is_initialized():
        return value
    dist.all_reduce(value, op=dist.ReduceOp.SUM, group=group)
    return value / dist.get_world_size(group)
