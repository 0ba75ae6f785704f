"""What the diffusion transformers share, so that an architecture file holds only what differs.

:class:`DiffusionTransformer` adds to :class:`ModelMixin` the runtime switches (attention kernel,
gradient checkpointing), running blocks with optional checkpointing, the patch grid of a latent,
weight initialisation, and preset registration. It assumes nothing about the blocks or the
embedders; a subclass records its constructor arguments (:meth:`register_arguments`), sets
``patch_size`` and ``out_channels`` (used by :meth:`patch_grid` and :meth:`unpatchify`) and
builds its layers.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

from opensora.models.layers.attention import set_attention_backend
from opensora.models.layers.blocks import unpatchify
from opensora.models.layers.embed import PatchEmbed3D
from opensora.models.modeling import ModelMixin
from opensora.models.presets import register_presets
from opensora.registry import MODELS


def drop_path_rates(drop_path: float, depth: int) -> list[float]:
    """Stochastic-depth rate of each of ``depth`` blocks, rising linearly from 0 to ``drop_path``.

    Plain floats: constructors also run on the meta device, where tensors hold no values.
    """
    return [drop_path * i / max(depth - 1, 1) for i in range(depth)]


def linears(*modules: nn.Module) -> list[nn.Linear]:
    """The ``nn.Linear`` layers inside ``modules``, in order (e.g. to initialise them alike)."""
    return [m for module in modules for m in module.modules() if isinstance(m, nn.Linear)]


class DiffusionTransformer(ModelMixin):
    """Base class of the diffusion transformers; see the module docstring."""

    patch_size: tuple[int, int, int]
    out_channels: int
    grad_checkpointing: bool = False

    def register_arguments(self, arguments: Mapping[str, Any]) -> None:
        """:meth:`register_config` with every argument of the subclass's ``__init__``, taken from
        ``arguments`` (its ``locals()``); runtime switches (``RUNTIME_KEYS``) are left out as usual."""
        names = [name for name in inspect.signature(type(self).__init__).parameters if name != "self"]
        self.register_config(**{name: arguments[name] for name in names})

    # ---- runtime switches (not part of the saved config) ---------------------------------------
    def set_attention_backend(self, backend: str) -> None:
        """Choose the attention kernel of every block: "sdpa", "flash" or "math"."""
        set_attention_backend(self, backend)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute block activations in the backward pass instead of storing them (training only)."""
        self.grad_checkpointing = enabled

    # ---- running blocks ---------------------------------------------------------------------------
    def run_block(self, block: nn.Module, *args, **kwargs) -> torch.Tensor:
        """``block(*args, **kwargs)``, checkpointed when switched on, training and recording gradients."""
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False, **kwargs)
        return block(*args, **kwargs)

    def run_blocks(self, blocks: Iterable[nn.Module], x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """Thread ``x`` through ``blocks`` in turn, each called as ``block(x, *args, **kwargs)``."""
        for block in blocks:
            x = self.run_block(block, x, *args, **kwargs)
        return x

    # ---- patches ----------------------------------------------------------------------------------
    def patch_grid(self, x: torch.Tensor) -> tuple[int, int, int]:
        """Number of patches along T, H, W of a latent [..., T, H, W], after padding to the patch size."""
        return tuple(-(-size // p) for size, p in zip(x.shape[-3:], self.patch_size))

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """Tokens [B, T*H*W, patch_volume*out_channels] of a (T, H, W) grid -> [B, out_channels, T', H', W']."""
        return unpatchify(x, grid, self.patch_size, self.out_channels)

    # ---- initialisation (used when training from scratch) -------------------------------------------
    def init_weights(self, normal: Sequence[nn.Module] = (), zero: Iterable[nn.Module] = ()) -> None:
        """Xavier-uniform weights and zero biases for every linear layer and patch embedding, then
        N(0, 0.02) weights for the layers in ``normal`` and zero weights for those in ``zero``.

        ``normal`` is drawn in the order given, so a fixed seed gives fixed weights.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, PatchEmbed3D):  # a linear map of each flattened patch
                nn.init.xavier_uniform_(module.proj.weight.view(module.proj.out_channels, -1))
                nn.init.zeros_(module.proj.bias)
        for module in normal:
            nn.init.normal_(module.weight, std=0.02)
        for module in zero:
            nn.init.zeros_(module.weight)

    # ---- presets ----------------------------------------------------------------------------------
    @classmethod
    def register_presets(cls, presets: Mapping[str, Mapping] | None = None) -> None:
        """Register the class in ``MODELS`` under its own name and one factory per named preset."""
        register_presets(MODELS, cls, presets or {})
