"""Spatial tiling: run an encoder/decoder on overlapping tiles and blend the seams.

Peak memory then depends on the tile size, not on the frame size. :func:`tiled_apply` (the 1.x
VAEs) blends overlaps with
ramps that ignore the outputs nearest a cut edge, so an operator whose receptive field fits in a
quarter of the overlap gives exactly its untiled result. A VAE's GroupNorm and attention see a
tile instead of the whole frame, so its tiled results differ slightly from an untiled pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TileSpec:
    """Tile size and overlap in input positions along H and W."""

    size: int
    overlap: int
    align: int = 1  # tile origins are multiples of this (8 in pixels, so tiles map to whole latents)

    def __post_init__(self) -> None:
        if not 0 <= self.overlap < self.size:
            raise ValueError(f"tile overlap {self.overlap} must be >= 0 and smaller than the tile size {self.size}")

    def starts(self, length: int) -> list[int]:
        """Tile origins covering ``length``; the last one is moved back to end near the border."""
        if length <= self.size:
            return [0]
        stride = self.size - self.overlap
        last = -(-(length - self.size) // self.align) * self.align  # may overhang by < align: clipped
        starts = [s for s in range(0, last, stride) if s < last]
        return starts + [last]


def _ramp(length: int, blend_in: int, blend_out: int, device) -> torch.Tensor:
    """Blend weights along one axis of a tile, given the overlap at each end (0 at an image border).

    Within an overlap, the quarter nearest the cut edge gets weight 0 (outputs there saw zero
    padding instead of their neighbours), then the weight rises linearly to 1.
    """
    pos = torch.arange(length, device=device, dtype=torch.float32)
    w = torch.ones(length, device=device)
    for overlap, dist in ((blend_in, pos), (blend_out, length - 1 - pos)):
        if overlap:
            margin = overlap // 4
            w = torch.minimum(w, ((dist - margin + 1) / (overlap - 2 * margin + 1)).clamp(0, 1))
    return w


def tiled_apply(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, spec: TileSpec, scale: float
) -> torch.Tensor:
    """Apply ``fn`` ([B, C, T, h, w] -> [B, C', T', h*scale, w*scale]) tile by tile over H and W of ``x``."""
    H, W = x.shape[-2:]
    out = weight = None
    rows, cols = spec.starts(H), spec.starts(W)
    for top in rows:
        for left in cols:
            tile = fn(x[..., top : top + spec.size, left : left + spec.size])
            if out is None:
                out = tile.new_zeros((*tile.shape[:-2], round(H * scale), round(W * scale)))
                weight = torch.zeros(out.shape[-2:], device=out.device)
            h, w = tile.shape[-2:]
            # ramp only on sides that another tile overlaps
            ramp = round(spec.overlap * scale)
            wy = _ramp(h, ramp if top > 0 else 0, ramp if top != rows[-1] else 0, out.device)
            wx = _ramp(w, ramp if left > 0 else 0, ramp if left != cols[-1] else 0, out.device)
            window = wy[:, None] * wx[None, :]
            y0, x0 = round(top * scale), round(left * scale)
            out[..., y0 : y0 + h, x0 : x0 + w] += tile * window.to(tile.dtype)
            weight[y0 : y0 + h, x0 : x0 + w] += window
    return out / weight.to(out.dtype)


# --------------------------------------------------------------------------- the 2.0 VAEs' rule


def cross_fade(prev: torch.Tensor, tile: torch.Tensor, extent: int, dim: int) -> None:
    """In place: the first ``extent`` entries of ``tile`` along ``dim`` fade in from the last ones of
    ``prev`` (weight of ``tile`` i / extent at its i-th entry), as the Open-Sora 2.0 VAEs blend tiles."""
    extent = min(prev.shape[dim], tile.shape[dim], extent)
    if extent == 0:
        return
    shape = [1] * tile.ndim
    shape[dim] = extent
    w = (torch.arange(extent, dtype=torch.float64) / extent).view(shape)
    head = tile.narrow(dim, 0, extent)
    tail = prev.narrow(dim, prev.shape[dim] - extent, extent)
    head.copy_(tail * (1 - w).to(tile) + head * w.to(tile))


def tile_spatially(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, stride: int, extent: int, keep: int
) -> torch.Tensor:
    """``fn`` on ``tile`` x ``tile`` windows of ``x`` every ``stride`` in raster order; each output fades
    into its upper and left neighbours over ``extent`` rows / columns (:func:`cross_fade`) and is cut
    to ``keep`` x ``keep`` (the Hunyuan VAE's and the Video DC-AE's spatial tiling)."""
    rows: list[list[torch.Tensor]] = []
    for top in range(0, x.shape[-2], stride):
        row: list[torch.Tensor] = []
        for left in range(0, x.shape[-1], stride):
            out = fn(x[..., top : top + tile, left : left + tile])
            if rows:
                cross_fade(rows[-1][len(row)], out, extent, dim=-2)
            if row:
                cross_fade(row[-1], out, extent, dim=-1)
            row.append(out)
        rows.append(row)
    return torch.cat([torch.cat([out[..., :keep, :keep] for out in row], dim=-1) for row in rows], dim=-2)
