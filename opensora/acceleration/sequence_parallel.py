"""Ulysses sequence parallelism for STDiT3, installed on the model from outside.

Every process of the sequence-parallel (SP) group receives the same batch. After patch and
position embedding each process keeps ``S_local = ceil(S / n)`` of the ``S`` spatial positions of
every frame (the last process's share is padded). Temporal attention, cross-attention, MLPs and
the final layer then work on local tokens only. Spatial attention needs every position of a
frame, so it exchanges heads for positions with an all-to-all (each process attends with
``num_heads / n`` heads over the whole frame, padded keys masked out) and exchanges back. The
final tokens are all-gathered, so ``model(...)`` returns the full output on every process.

Gradient rule. Each process computes the same loss from the same full output, and the backward
of the gather hands each process only the gradient of its own positions. A parameter's gradient
on one process therefore covers only the uses of that parameter by its own tokens (embedders
and ``t_block`` included: the split before the blocks sends zeros to the positions held
elsewhere), and the single-process gradient is the *sum* over the SP group. The gather's
backward multiplies by ``n``, so that the *mean* over the group is the single-process gradient
instead. Hence: average gradients over all ``dp_size * sp_size`` processes, as DDP or FSDP over
the whole world do, never over the data-parallel group alone (the SP group's copies would then
drift apart). Random draws made inside the model (caption dropout, drop path) and the noise and
timesteps of the loss must agree within an SP group: seed by data-parallel rank.

:func:`apply_sequence_parallel` also takes the Open-Sora 2.0 MMDiT, whose joint text+image
attention is split by :mod:`opensora.acceleration.sequence_parallel_mmdit` (any group size).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed import ProcessGroup

from opensora.errors import ConfigError
from opensora.models.layers.attention import attention
from opensora.models.mmdit.mmdit import MMDiT
from opensora.models.stdit.stdit3 import STDiT3


def _all_to_all(x: torch.Tensor, group: ProcessGroup, scatter_dim: int, gather_dim: int) -> torch.Tensor:
    """Send chunk ``i`` of ``scatter_dim`` to process ``i``; concatenate what arrives along ``gather_dim``."""
    n = dist.get_world_size(group)
    chunks = x.unflatten(scatter_dim, (n, -1)).movedim(scatter_dim, 0).contiguous()  # (n, ...)
    received = torch.empty_like(chunks)
    dist.all_to_all_single(received, chunks, group=group)  # received[i] came from process i
    return received.movedim(0, gather_dim).flatten(gather_dim, gather_dim + 1)


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group: ProcessGroup, scatter_dim: int, gather_dim: int) -> torch.Tensor:
        ctx.group, ctx.dims = group, (scatter_dim, gather_dim)
        return _all_to_all(x, group, scatter_dim, gather_dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        scatter_dim, gather_dim = ctx.dims
        return _all_to_all(grad, ctx.group, gather_dim, scatter_dim), None, None, None


class _GatherShards(torch.autograd.Function):
    """All-gather ``x`` into a new leading axis [n, *x.shape].

    Every process holds the same loss of the gathered tensor, so the incoming gradient is already
    complete: backward keeps this process's slice (no reduction), times ``n`` (module docstring).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: ProcessGroup) -> torch.Tensor:
        ctx.group = group
        n = dist.get_world_size(group)
        out = x.new_empty((n, *x.shape))
        dist.all_gather(list(out.unbind(0)), x.contiguous(), group=group)  # each out[i] is a contiguous view
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        n = dist.get_world_size(ctx.group)
        return grad[dist.get_rank(ctx.group)] * n, None


@dataclass(frozen=True)
class SpatialShard:
    """The positions of one forward pass held by this process: ``[rank * local, (rank + 1) * local)``."""

    group: ProcessGroup
    size: int
    rank: int
    T: int
    S: int

    @property
    def local(self) -> int:
        return -(-self.S // self.size)

    @property
    def padded(self) -> int:
        return self.local * self.size

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens [B, T*S, C] -> this process's [B, T*S_local, C]; differentiable (zeros elsewhere)."""
        B, _, C = x.shape
        x = F.pad(x.view(B, self.T, self.S, C), (0, 0, 0, self.padded - self.S))  # (B, T, S_pad, C)
        x = x.narrow(2, self.rank * self.local, self.local)  # (B, T, S_local, C)
        return x.reshape(B, self.T * self.local, C)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """This process's [B, T*S_local, C] -> the full [B, T*S, C], padding dropped."""
        B, _, C = x.shape
        parts = _GatherShards.apply(x.view(B, self.T, self.local, C), self.group)  # (n, B, T, S_local, C)
        x = parts.permute(1, 2, 0, 3, 4).reshape(B, self.T, self.padded, C)[:, :, : self.S]
        return x.reshape(B, self.T * self.S, C)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str) -> torch.Tensor:
        """Attention over all S positions from local q/k/v [B*T, heads, S_local, D]; same shape out."""
        qkv = _AllToAll.apply(torch.stack((q, k, v)), self.group, 2, 3)  # (3, B*T, heads/n, S_pad, D)
        mask = None
        if self.padded != self.S:
            mask = (torch.arange(self.padded, device=q.device) < self.S)[None, None, None]  # (1, 1, 1, S_pad)
        out = attention(*qkv.unbind(0), mask=mask, backend=backend)  # (B*T, heads/n, S_pad, D)
        return _AllToAll.apply(out, self.group, 2, 1)  # (B*T, heads, S_local, D)


class SequenceParallel:
    """What :func:`apply_sequence_parallel` installs as ``model.sequence_parallel``."""

    def __init__(self, group: ProcessGroup) -> None:
        self.group = group
        self.size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)

    def shard(self, T: int, S: int) -> SpatialShard:
        return SpatialShard(self.group, self.size, self.rank, T, S)

    def __deepcopy__(self, memo: dict) -> SequenceParallel:
        # a copy of the model (EMA) talks to the same processes; a process group cannot be copied
        return self


def apply_sequence_parallel(model: nn.Module, sp_group: ProcessGroup) -> None:
    """Make ``model`` split its tokens across ``sp_group``; its outputs stay the same.

    STDiT3 splits its spatial tokens (num_heads divisible by the group size); MMDiT its text and
    image tokens (:func:`~opensora.acceleration.sequence_parallel_mmdit.apply_mmdit_sequence_parallel`).
    Call before wrapping the model for data parallelism; see the module docstring for how the
    gradients must then be reduced.
    """
    if isinstance(model, MMDiT):
        from opensora.acceleration.sequence_parallel_mmdit import apply_mmdit_sequence_parallel  # imports this module

        apply_mmdit_sequence_parallel(model, sp_group)
        return
    if not isinstance(model, STDiT3):
        raise ConfigError(f"sequence parallelism supports STDiT3 and MMDiT models, not {type(model).__name__}")
    size = dist.get_world_size(sp_group)
    for block in model.spatial_blocks:
        if block.attn.num_heads % size != 0:
            raise ConfigError(
                f"sequence parallelism over {size} processes needs num_heads divisible by {size}, "
                f"got {block.attn.num_heads}"
            )
    model.sequence_parallel = SequenceParallel(sp_group)
