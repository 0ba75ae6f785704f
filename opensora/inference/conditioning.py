"""Mask strategies: which latent frames of a sample are taken from references.

A strategy is ``loop,ref_index,ref_start,target_start,length,edit_ratio`` (later fields may be
left out: defaults ``0,0,0,0,1,0``); several are joined by ``;``. At loop ``loop`` the
``length`` latent frames of reference ``ref_index`` from ``ref_start`` replace the frames of the
sample from ``target_start``; negative starts count from the end. ``edit_ratio`` 0 keeps those
frames fixed, a ratio r in (0, 1] lets the sampler regenerate them once the timestep falls to
r of the schedule (editing). Positions count latent frames, as the release's do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from opensora.errors import ConfigError

_DEFAULTS = ("0", "0", "0", "0", "1", "0")
FORMAT = "loop,ref_index,ref_start,target_start,length,edit_ratio[;...]"


@dataclass(frozen=True)
class MaskStrategy:
    loop: int
    ref_index: int
    ref_start: int
    target_start: int
    length: int
    edit_ratio: float


def parse_mask_strategy(text: str | None) -> list[MaskStrategy]:
    """The strategies of ``text``; a malformed one raises a ConfigError naming it and the format."""
    if text is None or not text.strip():
        return []
    strategies = []
    for part in text.split(";"):
        fields = [value.strip() for value in part.split(",")]
        if not 1 <= len(fields) <= 6 or not all(fields):
            raise ConfigError(f"malformed mask strategy {part!r} in {text!r} (expected {FORMAT})")
        fields += _DEFAULTS[len(fields) :]
        try:
            strategy = MaskStrategy(*(int(value) for value in fields[:5]), float(fields[5]))
        except ValueError:
            raise ConfigError(f"malformed mask strategy {part!r} in {text!r}: the first five fields are "
                              f"integers, the last a number (expected {FORMAT})") from None  # fmt: skip
        if strategy.loop < 0 or strategy.ref_index < 0 or strategy.length < 1:
            raise ConfigError(f"mask strategy {part!r}: loop and ref_index must be >= 0 and length >= 1")
        if not 0.0 <= strategy.edit_ratio <= 1.0:
            raise ConfigError(f"mask strategy {part!r}: edit_ratio must be in [0, 1], got {strategy.edit_ratio}")
        strategies.append(strategy)
    return strategies


def check_references(strategies: list[MaskStrategy], num_references: int, where: str) -> None:
    for strategy in strategies:
        if strategy.ref_index >= num_references:
            raise ConfigError(f"{where}: mask strategy uses reference {strategy.ref_index} but "
                              f"{num_references} reference(s) are given")  # fmt: skip


def _snap(position: int, align: int, length: int) -> int:
    """``position`` moved to the nearest multiple of ``align`` inside ``length`` (halves round down)."""
    lower = position // align * align
    upper = lower + align
    if position - lower > align / 2 and upper < length:
        return upper
    return lower


def resolve_start(start: int, frames: int) -> int:
    """A strategy's start as an index into ``frames`` latent frames: negative starts count from the end."""
    return start + frames if start < 0 else start


def apply_strategies(
    z: torch.Tensor,
    references: list[torch.Tensor],
    strategies: list[MaskStrategy],
    loop: int,
    align: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Place references into one sample's latent ``z`` [C, T, H, W].

    ``references`` are latents [C, T_ref, H, W]. Returns the new latent and its conditioning mask
    [T]: 1 = generate, 0 = keep, r in (0, 1) = regenerate from that fraction of the schedule.
    """
    z = z.clone()
    mask = torch.ones(z.shape[1], dtype=torch.float32, device=z.device)
    for strategy in strategies:
        if strategy.loop != loop:
            continue
        ref = references[strategy.ref_index]
        ref_start, target_start = (
            resolve_start(strategy.ref_start, ref.shape[1]),
            resolve_start(strategy.target_start, z.shape[1]),
        )
        if align:
            ref_start, target_start = _snap(ref_start, align, ref.shape[1]), _snap(target_start, align, z.shape[1])
        if not (0 <= ref_start < ref.shape[1] and 0 <= target_start < z.shape[1]):
            raise ConfigError(f"mask strategy {strategy}: reference start {ref_start} or target start "
                              f"{target_start} lies outside the reference ({ref.shape[1]} latent frames) or the "
                              f"sample ({z.shape[1]} latent frames)")  # fmt: skip
        length = min(strategy.length, z.shape[1] - target_start, ref.shape[1] - ref_start)
        z[:, target_start : target_start + length] = ref[:, ref_start : ref_start + length]
        mask[target_start : target_start + length] = strategy.edit_ratio
    return z, mask
