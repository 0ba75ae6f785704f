"""Timestep respacing: sample with a subset of a diffusion's steps.

Keeping steps k_0 < k_1 < ... of the original schedule and setting
``beta'_i = 1 - abar_{k_i} / abar_{k_(i-1)}`` gives a shorter diffusion with the same noise
levels at the kept steps; the model is still called with the original step numbers.
"""

from __future__ import annotations

import torch

from opensora.errors import ConfigError


def _ddim_stride(num_timesteps: int, desired: int) -> set[int]:
    for stride in range(1, num_timesteps):
        if len(range(0, num_timesteps, stride)) == desired:
            return set(range(0, num_timesteps, stride))
    raise ConfigError(f"timestep_respacing 'ddim{desired}': no integer stride gives {desired} of {num_timesteps} steps")


def space_timesteps(num_timesteps: int, section_counts: str | int | list[int] | None) -> set[int]:
    """The original steps to keep.

    ``section_counts``: None or "" keeps all; "ddimN" keeps every k-th step for the stride k
    that gives N steps; otherwise counts per equal section of the schedule ("10,15,20" or
    [10, 15, 20]; one number for a single section), spread evenly inside each section.
    """
    if section_counts is None or section_counts == "":
        return set(range(num_timesteps))
    if isinstance(section_counts, str):
        ddim = section_counts.startswith("ddim")
        parts = section_counts.removeprefix("ddim").split(",")
        if not all(part.strip().isdigit() for part in parts) or (ddim and len(parts) != 1):
            raise ConfigError(f"timestep_respacing {section_counts!r}: expected 'ddimN', a count such as '100' "
                              "or counts per section such as '10,15,20'")  # fmt: skip
        if ddim:
            return _ddim_stride(num_timesteps, int(parts[0]))
        section_counts = [int(part) for part in parts]
    elif isinstance(section_counts, int):
        section_counts = [section_counts]
    size_per, extra = divmod(num_timesteps, len(section_counts))
    start, kept = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if not 1 <= count <= size:
            raise ConfigError(f"timestep_respacing: cannot take {count} steps from a section of {size}")
        stride = (size - 1) / (count - 1) if count > 1 else 1
        # accumulated like the releases, and Python's round() (half to even): the same steps are kept
        position = 0.0
        for _ in range(count):
            kept.append(start + round(position))
            position += stride
        start += size
    return set(kept)


def respace_betas(betas: torch.Tensor, use_timesteps: set[int]) -> tuple[torch.Tensor, list[int]]:
    """Betas [len(use_timesteps)] of the respaced diffusion (float64) and the kept original steps."""
    kept = sorted(use_timesteps)
    alphas_cumprod = torch.cumprod(1.0 - betas.double(), dim=0)[kept]
    previous = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    return 1.0 - alphas_cumprod / previous, kept
