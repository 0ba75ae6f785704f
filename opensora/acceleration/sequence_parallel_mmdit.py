"""Sequence parallelism for the Open-Sora 2.0 MMDiT, installed on the model from outside.

Every process of the sequence-parallel (SP) group receives the same batch. After embedding, each
stream is split on its own: process ``r`` keeps text tokens ``[r * Lt, (r + 1) * Lt)`` and image
tokens ``[r * Li, (r + 1) * Li)``, where ``Lt = ceil(N_txt / n)`` and ``Li = ceil(N_img / n)``;
each stream is padded at its end to ``n * Lt`` and ``n * Li`` tokens, so any token counts work
(a process may even hold only padding). The position ids are split alike, so the rope is encoded
for the local tokens only. A process therefore holds the local joint sequence
``[txt_local ; img_local]`` of ``Lt + Li`` tokens through the double blocks (two streams, two sets
of projections, as without SP) and the single blocks; only attention sees other processes' tokens,
and the image tokens are all-gathered after the final layer, so ``model(...)`` returns the full
output on every process.

Joint attention, two ways (``attention_mode`` of :func:`apply_mmdit_sequence_parallel`; ``"auto"`` takes
Ulysses whenever the heads divide):

* **Ulysses** (``num_heads % n == 0``): an all-to-all exchanges heads for tokens, so each process
  attends with ``num_heads / n`` heads over every token of every process, and a second all-to-all
  exchanges back. Communication per block: q, k, v and the output, each ``1/n`` of it per process.
* **Gather KV** (any ``n``, e.g. 24 heads on 5 processes): keys and values are all-gathered, and
  each process attends with all heads from its own queries to every key. Every process then holds
  the full K and V of a block (memory of one block's K/V, not of the activations), and the
  attention work is still split ``1/n`` per process.

In both, the gathered keys arrive in process order (process 0's ``[txt ; img]``, process 1's, ...);
they are put back in the model's order ``[txt ; img]`` and the padded keys are dropped by one
index, so attention runs without a mask (flash attention stays usable) over exactly the keys of one
process's run. Padded queries produce rows that are thrown away.

Gradients follow the rule of :mod:`opensora.acceleration.sequence_parallel`: the final gather's
backward keeps this process's image tokens times ``n``, the K/V gather's backward sums what every
process computed for this process's keys (a reduce-scatter), so the *mean* of a parameter's
gradient over the SP group is the single-process gradient.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed import ProcessGroup

from opensora.acceleration.sequence_parallel import SequenceParallel, _AllToAll, _GatherShards
from opensora.errors import ConfigError
from opensora.models.layers.attention import attention
from opensora.models.mmdit.mmdit import MMDiT

ATTENTION_MODES = ("auto", "ulysses", "gather_kv")


class _GatherSummed(_GatherShards):
    """The all-gather of :class:`_GatherShards` (into a new leading axis [n, *x.shape]) whose backward
    is a reduce-scatter.

    The gathered tensor (keys and values) feeds a different loss term on every process (its own
    queries), so this process's gradient is the sum of the slices every process computed for it.
    """

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        received = torch.empty_like(grad)
        dist.all_to_all_single(received, grad, group=ctx.group)  # received[i]: process i's share for us
        return received.sum(0), None


class JointShard:
    """The text and image tokens of one forward pass held by this process, and the joint attention."""

    def __init__(self, group: ProcessGroup, size: int, rank: int, n_txt: int, n_img: int, ulysses: bool) -> None:
        self.group, self.size, self.rank = group, size, rank
        self.n_txt, self.n_img = n_txt, n_img
        self.txt_local = -(-n_txt // size)
        self.img_local = -(-n_img // size)
        self.ulysses = ulysses
        self._order: torch.Tensor | None = None

    def _split(self, x: torch.Tensor, total: int, local: int) -> torch.Tensor:
        """[B, total, C] -> this process's [B, local, C] of the end-padded sequence; differentiable."""
        x = F.pad(x, (0, 0, 0, local * self.size - total))  # (B, local * n, C)
        return x.narrow(1, self.rank * local, local)

    def split_txt(self, x: torch.Tensor) -> torch.Tensor:
        """Text tokens (or their ids) [B, N_txt, C] -> [B, N_txt_local, C]."""
        return self._split(x, self.n_txt, self.txt_local)

    def split_img(self, x: torch.Tensor) -> torch.Tensor:
        """Image tokens (or their ids) [B, N_img, C] -> [B, N_img_local, C]."""
        return self._split(x, self.n_img, self.img_local)

    def gather_img(self, x: torch.Tensor) -> torch.Tensor:
        """This process's image tokens [B, N_img_local, C] -> the full [B, N_img, C], padding dropped."""
        B, _, C = x.shape
        parts = _GatherShards.apply(x, self.group)  # (n, B, N_img_local, C)
        return parts.movedim(0, 1).reshape(B, self.size * self.img_local, C)[:, : self.n_img]

    def order(self, device: torch.device) -> torch.Tensor:
        """Where token ``j`` of the model's sequence [txt ; img] sits among the gathered keys
        (process r's local [txt ; img] at ``r * (Lt + Li)``): [N_txt + N_img] indices, padding left out."""
        if self._order is None or self._order.device != device:
            lt, li = self.txt_local, self.img_local
            txt = torch.arange(self.n_txt, device=device)
            img = torch.arange(self.n_img, device=device)
            self._order = torch.cat((
                txt // max(lt, 1) * (lt + li) + txt % max(lt, 1),
                img // max(li, 1) * (lt + li) + lt + img % max(li, 1),
            ))  # fmt: skip
        return self._order

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str) -> torch.Tensor:
        """Joint attention over every process's tokens from local q, k, v [B, heads, Lt + Li, D]; same shape out."""
        order = self.order(q.device)
        if self.ulysses:
            qkv = _AllToAll.apply(torch.stack((q, k, v)), self.group, 2, 3)  # (3, B, heads/n, n*(Lt+Li), D)
            q, k, v = qkv.unbind(0)
            out = attention(q, k.index_select(2, order), v.index_select(2, order), backend=backend)
            return _AllToAll.apply(out, self.group, 2, 1)  # (B, heads, Lt + Li, D)
        kv = _GatherSummed.apply(torch.stack((k, v)), self.group)  # (n, 2, B, heads, Lt + Li, D)
        kv = kv.permute(1, 2, 3, 0, 4, 5).flatten(3, 4)  # (2, B, heads, n*(Lt+Li), D), process order
        k, v = kv.index_select(3, order).unbind(0)  # each (B, heads, N_txt + N_img, D), the model's order
        return attention(q, k, v, backend=backend)  # (B, heads, Lt + Li, D)


class MMDiTSequenceParallel(SequenceParallel):
    """What :func:`apply_mmdit_sequence_parallel` installs as ``model.sequence_parallel``."""

    def __init__(self, group: ProcessGroup, ulysses: bool) -> None:
        super().__init__(group)
        self.ulysses = ulysses

    def shard(self, n_txt: int, n_img: int) -> JointShard:
        return JointShard(self.group, self.size, self.rank, n_txt, n_img, self.ulysses)


def apply_mmdit_sequence_parallel(model: MMDiT, sp_group: ProcessGroup, attention_mode: str = "auto") -> None:
    """Make ``model`` split its text and image tokens across ``sp_group``; its outputs stay the same.

    ``attention_mode``: ``"ulysses"`` (needs num_heads divisible by the group size), ``"gather_kv"``
    (any size) or ``"auto"`` (Ulysses where the heads divide, else gather KV); see the module docstring.
    """
    if not isinstance(model, MMDiT):
        raise ConfigError(f"MMDiT sequence parallelism needs an MMDiT model, not {type(model).__name__}")
    if attention_mode not in ATTENTION_MODES:
        raise ConfigError(
            f"sequence-parallel attention_mode must be one of {list(ATTENTION_MODES)}, got {attention_mode!r}"
        )
    size = dist.get_world_size(sp_group)
    divisible = model.num_heads % size == 0
    if attention_mode == "ulysses" and not divisible:
        raise ConfigError(
            f"Ulysses attention over {size} processes needs num_heads divisible by {size}, got "
            f"{model.num_heads}; use attention_mode='gather_kv' (or 'auto')"
        )
    ulysses = attention_mode == "ulysses" or (attention_mode == "auto" and divisible)
    model.sequence_parallel = MMDiTSequenceParallel(sp_group, ulysses)
