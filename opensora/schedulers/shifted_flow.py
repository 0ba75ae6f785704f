"""Shifted flow matching (Open-Sora 2.0): the sampling schedule and Euler step of the MMDiT.

The latent moves from noise at t = 1 to data at t = 0 along the model's velocity. The schedule
spends more of its steps near t = 1 the more tokens a video has: a uniform grid is warped by
t -> a t / (1 + (a - 1) t), with a growing linearly in the packed tokens per latent frame and
with the square root of the number of latent frames. This module is math only; the guided loop
that calls the model is ``opensora.inference.mmdit_sampling``.
"""

from __future__ import annotations

import math

import torch

from opensora.errors import ConfigError
from opensora.registry import SCHEDULERS

# the release's spatial shift: a line through (tokens per latent frame, alpha) = (256, 1), (4096, 3)
SHIFT_POINTS = ((256, 1.0), (4096, 3.0))


def shift_alpha(tokens_per_frame: int, latent_frames: int) -> float:
    """The warp strength for a video of ``latent_frames`` latent frames of ``tokens_per_frame`` tokens.

    Computed in Python floats (double precision), as the release does before touching the grid.
    """
    (x1, y1), (x2, y2) = SHIFT_POINTS
    slope = (y2 - y1) / (x2 - x1)
    spatial = slope * tokens_per_frame + (y1 - slope * x1)
    return spatial * math.sqrt(latent_frames)


def shifted_timesteps(
    num_steps: int, tokens_per_frame: int, latent_frames: int, shift: bool = True, alpha: float | None = None
) -> torch.Tensor:
    """``num_steps + 1`` float32 timesteps from 1 down to 0: the model runs at the first
    ``num_steps``, the last is where the final Euler step lands.

    With ``shift`` the uniform grid is warped by t -> a t / (1 + (a - 1) t), ``a`` from
    :func:`shift_alpha` unless ``alpha`` (the release's ``flow_shift``) is given. The arithmetic is
    the release's: a float32 grid, a Python-float alpha.
    """
    t = torch.linspace(1, 0, num_steps + 1)  # (num_steps + 1,) float32
    if not shift:
        return t
    return time_shift(shift_alpha(tokens_per_frame, latent_frames) if alpha is None else alpha, t)


def time_shift(alpha: float, t: torch.Tensor) -> torch.Tensor:
    """The warp t -> a t / (1 + (a - 1) t): 0 and 1 stay, everything between moves towards 1 when a > 1.

    Sampling warps its grid with it; training warps its drawn timesteps alike.
    """
    return alpha * t / (1 + (alpha - 1) * t)


def euler_step(x: torch.Tensor, v: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
    """Move ``x`` from time ``t`` to ``t_next`` along velocity ``v`` (t_next < t: towards data)."""
    return x + (t_next - t) * v


def _check_scale(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"rflow_v2: {name} must be a finite number >= 0, got {value!r}")


@SCHEDULERS.register("rflow_v2")
class ShiftedFlow:
    """The sampling settings of Open-Sora 2.0 and the schedule they give.

    ``guidance`` scales the text guidance, ``guidance_img`` the guidance on the reference
    (image/video) condition. ``text_osci`` / ``image_osci``: after the first 10 steps each scale
    applies at even steps only (1.0 at odd ones). ``scale_temporal_osci``: in the i2v modes the
    image scale ramps from 1 at the first latent frame to a per-step maximum that falls from
    ``guidance_img`` to 1 over the schedule. ``flow_shift`` fixes the warp strength instead of
    deriving it from the video size; ``shift=False`` keeps the uniform grid. ``cfg_scale`` (the
    ``--cfg-scale`` flag) is another name for ``guidance``.

    These defaults are the release's (``configs/diffusion/inference``) and the only ones.
    """

    def __init__(
        self,
        num_sampling_steps: int = 50,
        shift: bool = True,
        flow_shift: float | None = None,
        guidance: float = 7.5,
        guidance_img: float = 3.0,
        text_osci: bool = True,
        image_osci: bool = True,
        scale_temporal_osci: bool = True,
        cfg_scale: float | None = None,
    ) -> None:
        if isinstance(num_sampling_steps, bool) or not isinstance(num_sampling_steps, int) or num_sampling_steps < 1:
            raise ConfigError(f"rflow_v2: num_sampling_steps must be an integer >= 1, got {num_sampling_steps!r}")
        if flow_shift is not None and (
            isinstance(flow_shift, bool)
            or not isinstance(flow_shift, (int, float))
            or not (math.isfinite(flow_shift) and flow_shift > 0)
        ):
            raise ConfigError(f"rflow_v2: flow_shift must be a finite number > 0 (or None), got {flow_shift!r}")
        if cfg_scale is not None:  # the 1.x name (--cfg-scale) of the text guidance scale
            guidance = cfg_scale
        _check_scale("guidance", guidance)
        _check_scale("guidance_img", guidance_img)
        self.num_sampling_steps = num_sampling_steps
        self.shift = bool(shift)
        self.flow_shift = flow_shift
        self.guidance = guidance
        self.guidance_img = guidance_img
        self.text_osci = bool(text_osci)
        self.image_osci = bool(image_osci)
        self.scale_temporal_osci = bool(scale_temporal_osci)

    @property
    def cfg_scale(self) -> float:
        """The text guidance scale under the name the 1.x schedulers (and the demo page) use."""
        return self.guidance

    def timesteps(self, tokens_per_frame: int, latent_frames: int) -> torch.Tensor:
        """The ``num_sampling_steps + 1`` float32 timesteps for this video size (see :func:`shifted_timesteps`)."""
        return shifted_timesteps(
            self.num_sampling_steps, tokens_per_frame, latent_frames, shift=self.shift, alpha=self.flow_shift
        )

    @staticmethod
    def step(x: torch.Tensor, v: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
        """One Euler step (see :func:`euler_step`)."""
        return euler_step(x, v, t, t_next)
