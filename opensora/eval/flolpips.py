"""FloLPIPS (Danier, Zhang and Bull, 2022): LPIPS pooled with weights from motion errors.

Plain LPIPS averages each layer's distance map uniformly over space. FloLPIPS instead weights it
by where the generated video moves differently from the real one: for frame t >= 1 it estimates
the optical flow from frame t-1 to frame t in each video, takes the per-pixel length of the
difference of the two flows, resizes that map to each LPIPS layer (area averaging) and normalises
it to sum 1, and pools the layer's distance map with it. Where the flows agree everywhere the
weights are uniform and the value is plain LPIPS. A video of T frames gives T-1 values.

The flow network is any module ``(first, second) -> flow``, images (N, 3, H, W) in [0, 1], flow
(N, 2, H, W) in pixels; :func:`load_raft` wraps torchvision's RAFT with local weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from opensora.errors import OpenSoraError
from opensora.eval.lpips import LPIPS
from opensora.eval.weights import MetricUnavailableError, find_weights, load_state_dict

FlowNet = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# keeps the weights finite where both flows agree exactly: uniform weights, i.e. plain LPIPS
WEIGHT_EPS = 1e-6
RAFT_FILES = {"raft_small": "raft_small_C_T_V2-01064c6d.pth", "raft_large": "raft_large_C_T_SKHT_V2-ff5fadd5.pth"}
# RAFT works at 1/8 resolution and its 4-level correlation pyramid halves that 3 more times
RAFT_MULTIPLE, RAFT_MIN_SIDE = 8, 128


class FloLPIPS(nn.Module):
    """LPIPS whose spatial pooling is weighted by the flow discrepancy between the two videos."""

    def __init__(self, lpips: LPIPS, flow: FlowNet) -> None:
        super().__init__()
        self.lpips = lpips
        self.flow = flow

    def forward(
        self, real_prev: torch.Tensor, real: torch.Tensor, generated_prev: torch.Tensor, generated: torch.Tensor
    ) -> torch.Tensor:
        """FloLPIPS of frames ``real``/``generated`` given the frames before them; (N, 3, H, W) x4 -> (N,)."""
        discrepancy = flow_discrepancy(self.flow(real_prev, real), self.flow(generated_prev, generated))
        total = torch.zeros(real.shape[0], device=real.device)
        for layer in self.lpips.layer_maps(real, generated):
            weights = F.adaptive_avg_pool2d(discrepancy, layer.shape[-2:]) + WEIGHT_EPS  # (N, 1, h, w)
            weights = weights / weights.sum(dim=(1, 2, 3), keepdim=True)
            total = total + (layer * weights).sum(dim=(1, 2, 3))
        return total


def flow_discrepancy(real_flow: torch.Tensor, generated_flow: torch.Tensor) -> torch.Tensor:
    """Per-pixel length of the difference of two flows: (N, 2, H, W) x2 -> (N, 1, H, W)."""
    return (real_flow - generated_flow).pow(2).sum(dim=1, keepdim=True).sqrt()


class RaftFlow(nn.Module):
    """torchvision RAFT as a :data:`FlowNet`: pads frames to RAFT's sizes and maps [0, 1] to [-1, 1]."""

    def __init__(self, raft: nn.Module, num_flow_updates: int = 12) -> None:
        super().__init__()
        self.raft = raft.eval().requires_grad_(False)
        self.num_flow_updates = num_flow_updates

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        height, width = first.shape[-2:]
        padded_h = max(RAFT_MIN_SIDE, math.ceil(height / RAFT_MULTIPLE) * RAFT_MULTIPLE)
        padded_w = max(RAFT_MIN_SIDE, math.ceil(width / RAFT_MULTIPLE) * RAFT_MULTIPLE)
        pad = (0, padded_w - width, 0, padded_h - height)  # right and bottom, so flow[.., :H, :W] lines up
        first, second = (F.pad(image * 2 - 1, pad, mode="replicate") for image in (first, second))
        flows = self.raft(first, second, num_flow_updates=self.num_flow_updates)  # one per update, last is best
        return flows[-1][..., :height, :width]


def load_raft(name: str, weights: Path | None, device: torch.device | str = "cpu") -> RaftFlow:
    """torchvision's ``raft_small``/``raft_large`` with weights from ``weights`` (never downloaded)."""
    if name not in RAFT_FILES:
        raise MetricUnavailableError(f"unknown flow model '{name}' (known: {', '.join(RAFT_FILES)})")
    path = find_weights(weights, RAFT_FILES[name], f"torchvision {name} weights, the FloLPIPS flow network")
    builder = _torchvision_raft(name)
    raft = builder(weights=None, progress=False)
    try:
        raft.load_state_dict(load_state_dict(path))
    except RuntimeError as exc:  # another model's file
        raise OpenSoraError(f"'{path}' does not fit {name}: {' '.join(str(exc).split())[:300]}") from exc
    return RaftFlow(raft).to(device)


def _torchvision_raft(name: str) -> Callable[..., nn.Module]:
    try:
        from torchvision.models import optical_flow
    except Exception as exc:  # not installed (ImportError) or built for another torch (RuntimeError at import)
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise MetricUnavailableError(f"needs torchvision for RAFT, which cannot be imported ({reason})") from exc
    return getattr(optical_flow, name)
