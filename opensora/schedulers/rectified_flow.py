"""Rectified flow (Open-Sora 1.2): straight paths between data and noise.

``x_t = (1 - t/T) * x_0 + (t/T) * noise`` for t in [0, T]; the model predicts the velocity
``x_0 - noise``. This module is math only: the timestep schedule, noising, the loss target
and the Euler step. Calling the model is the job of ``opensora.inference.sampling`` and
``opensora.training.losses``.
"""

from __future__ import annotations

import math

import torch

from opensora.errors import ConfigError
from opensora.registry import SCHEDULERS

SAMPLE_METHODS = ("uniform", "logit-normal")


def latent_frames_for_shift(num_frames: torch.Tensor) -> torch.Tensor:
    """The latent frame count [B] the timestep shift is computed from, decided per sample.

    The released 1.2 models were trained with ``num_frames // 17 * 5`` (a 17-frame chunk of the
    1.2 VAE makes 5 latent frames) and 1 for an image; that rule is kept wherever it is defined.
    Below 17 frames it gives 0 (a 0/0 first timestep), so 2..16 frames count the latent frames
    the 1.2 VAE really makes of them, ceil(n / 4): the count is never below 1.
    """
    num_frames = num_frames.float()
    release = torch.div(num_frames, 17, rounding_mode="floor") * 5
    short = torch.ceil(num_frames / 4).clamp(min=1)
    return torch.where(num_frames <= 1, torch.ones_like(num_frames), torch.where(release > 0, release, short))


def timestep_transform(
    t: torch.Tensor,
    height: torch.Tensor,
    width: torch.Tensor,
    num_frames: torch.Tensor,
    num_timesteps: int = 1000,
    base_resolution: int = 512 * 512,
    scale: float = 1.0,
) -> torch.Tensor:
    """Shift timesteps towards noise for larger and longer videos.

    With r = sqrt(pixels / 512^2) * sqrt(latent frames) * scale, t' = r t / (1 + (r - 1) t)
    (t on the 0..1 scale), the latent frames of each sample given by :func:`latent_frames_for_shift`.
    """
    t = t / num_timesteps
    ratio_space = (height * width / base_resolution).sqrt()
    ratio = ratio_space * latent_frames_for_shift(num_frames).sqrt() * scale
    return ratio * t / (1 + (ratio - 1) * t) * num_timesteps


@SCHEDULERS.register("rflow")
class RectifiedFlow:
    """Training timesteps, noising and the Euler sampling schedule of rectified flow."""

    def __init__(
        self,
        num_timesteps: int = 1000,
        num_sampling_steps: int = 10,
        cfg_scale: float = 4.0,
        use_discrete_timesteps: bool = False,
        sample_method: str = "uniform",
        loc: float = 0.0,
        scale: float = 1.0,
        use_timestep_transform: bool = False,
        transform_scale: float = 1.0,
    ) -> None:
        """These defaults are the scheduler's only ones: a config's ``dict(type="rflow")`` gets them.

        They are the release's: uniform training timesteps and no resolution-dependent shift; the
        1.2 configs switch on ``use_timestep_transform`` (and ``sample_method="logit-normal"`` to train).
        """
        if sample_method not in SAMPLE_METHODS:
            raise ConfigError(f"rflow: unknown sample_method '{sample_method}' (known: {', '.join(SAMPLE_METHODS)})")
        if num_sampling_steps < 1:
            raise ConfigError(f"rflow: num_sampling_steps must be at least 1, got {num_sampling_steps}")
        if num_timesteps < 1:
            raise ConfigError(f"rflow: num_timesteps must be at least 1, got {num_timesteps}")
        if not (math.isfinite(cfg_scale) and cfg_scale >= 0):
            raise ConfigError(f"rflow: cfg_scale must be a finite number >= 0, got {cfg_scale}")
        if not (scale > 0 and transform_scale > 0):
            raise ConfigError(f"rflow: scale and transform_scale must be > 0, got {scale} and {transform_scale}")
        self.num_timesteps = num_timesteps
        self.num_sampling_steps = num_sampling_steps
        self.cfg_scale = cfg_scale
        self.use_discrete_timesteps = use_discrete_timesteps
        self.sample_method = sample_method
        self.loc = loc
        self.scale = scale
        self.use_timestep_transform = use_timestep_transform
        self.transform_scale = transform_scale

    # ---- training -----------------------------------------------------------------------------
    def transform(self, t: torch.Tensor, model_kwargs: dict) -> torch.Tensor:
        return timestep_transform(
            t,
            model_kwargs["height"],
            model_kwargs["width"],
            model_kwargs["num_frames"],
            num_timesteps=self.num_timesteps,
            scale=self.transform_scale,
        )

    def sample_train_timesteps(
        self, batch_size: int, model_kwargs: dict, device=None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Random training timesteps [B] on the 0..num_timesteps scale."""
        if self.use_discrete_timesteps:
            t = torch.randint(0, self.num_timesteps, (batch_size,), device=device, generator=generator)
        elif self.sample_method == "uniform":
            t = torch.rand((batch_size,), device=device, generator=generator) * self.num_timesteps
        else:  # logit-normal: sigmoid of a Gaussian concentrates training on the middle of the path
            normal = torch.randn((batch_size,), device=device, generator=generator) * self.scale + self.loc
            t = torch.sigmoid(normal) * self.num_timesteps
        if self.use_timestep_transform:
            t = self.transform(t, model_kwargs)
        return t

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = (1 - t/T) x0 + (t/T) noise, with ``t`` [B] broadcast over the other axes."""
        keep = 1 - t.float() / self.num_timesteps
        keep = keep.view(-1, *([1] * (x0.ndim - 1)))
        return keep * x0 + (1 - keep) * noise

    @staticmethod
    def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x0 - noise

    # ---- sampling -----------------------------------------------------------------------------
    def sampling_timesteps(self, batch_size: int, model_kwargs: dict | None = None, device=None) -> list[torch.Tensor]:
        """The Euler schedule: ``num_sampling_steps`` timesteps [B] from T down towards 0."""
        steps = [(1.0 - i / self.num_sampling_steps) * self.num_timesteps for i in range(self.num_sampling_steps)]
        if self.use_discrete_timesteps:
            steps = [int(round(s)) for s in steps]
        timesteps = [torch.tensor([s] * batch_size, device=device) for s in steps]
        if self.use_timestep_transform:
            timesteps = [self.transform(t, model_kwargs) for t in timesteps]
        return timesteps

    def step(self, z: torch.Tensor, velocity: torch.Tensor, timesteps: list[torch.Tensor], i: int) -> torch.Tensor:
        """One Euler step from ``timesteps[i]`` to the next one (or to 0 after the last)."""
        t_next = timesteps[i + 1] if i + 1 < len(timesteps) else torch.zeros_like(timesteps[i])
        dt = (timesteps[i] - t_next) / self.num_timesteps
        return z + velocity * dt.view(-1, *([1] * (z.ndim - 1)))
