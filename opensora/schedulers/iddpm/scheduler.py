"""IDDPM: the improved-DDPM scheduler of Open-Sora 1.0 and 1.1 (registered as "iddpm").

A 1000-step linear-beta diffusion whose model predicts the noise and a learned variance range,
trained with MSE plus the variational bound, and sampled ancestrally over a respaced subset of
steps with classifier-free guidance. Math only: the loops that call the model are
``opensora.inference.sampling.iddpm_sample`` and ``opensora.training.losses.iddpm_loss``.

Release differences kept behind switches:
- ``float32_schedule``: 1.1 stored the respaced betas as float32 and derived the whole schedule
  from them in float32 (True, default); 1.0 kept every array in float64 (False).
- ``cfg_channel``: guidance is applied to the first ``cfg_channel`` output channels only. 1.1's
  config sets 3 (of 4); 1.0 always guided channels [:3], so its configs should also set 3.
  None guides all C prediction channels.
"""

from __future__ import annotations

import math

import torch

from opensora.errors import ConfigError
from opensora.registry import SCHEDULERS
from opensora.schedulers.iddpm.diffusion import GaussianDiffusion, beta_schedule
from opensora.schedulers.iddpm.respace import respace_betas, space_timesteps


@SCHEDULERS.register("iddpm")
class IDDPM(GaussianDiffusion):
    """Respaced Gaussian diffusion with the release's options.

    ``num_sampling_steps`` (or the finer ``timestep_respacing``, see ``space_timesteps``) picks
    the steps kept for sampling; neither keeps all ``diffusion_steps`` (use this for training).
    ``use_kl`` trains on the variational bound alone; ``rescale_learned_sigmas`` scales the vb
    term by num_timesteps / 1000 (improved DDPM's "rescaled MSE").
    """

    def __init__(
        self,
        num_sampling_steps: int | None = None,
        timestep_respacing: str | list[int] | None = None,
        noise_schedule: str = "linear",
        use_kl: bool = False,
        sigma_small: bool = False,
        predict_xstart: bool = False,
        learn_sigma: bool = True,
        rescale_learned_sigmas: bool = False,
        diffusion_steps: int = 1000,
        cfg_scale: float = 4.0,
        cfg_channel: int | None = None,
        float32_schedule: bool = True,
    ) -> None:
        if num_sampling_steps is not None:
            if timestep_respacing is not None:
                raise ConfigError("iddpm: give num_sampling_steps or timestep_respacing, not both")
            if num_sampling_steps < 1:
                raise ConfigError(f"iddpm: num_sampling_steps must be at least 1, got {num_sampling_steps}")
            timestep_respacing = str(num_sampling_steps)
        if diffusion_steps < 1:
            raise ConfigError(f"iddpm: diffusion_steps must be at least 1, got {diffusion_steps}")
        if not (math.isfinite(cfg_scale) and cfg_scale >= 0):
            raise ConfigError(f"iddpm: cfg_scale must be a finite number >= 0, got {cfg_scale}")
        if cfg_channel is not None and cfg_channel < 1:
            raise ConfigError(f"iddpm: cfg_channel must be a positive channel count or None, got {cfg_channel}")
        base = beta_schedule(noise_schedule, diffusion_steps)
        betas, kept = respace_betas(base, space_timesteps(diffusion_steps, timestep_respacing))
        super().__init__(
            betas, learn_sigma=learn_sigma, sigma_small=sigma_small, predict_xstart=predict_xstart,
            dtype=torch.float32 if float32_schedule else torch.float64,
        )  # fmt: skip
        self.original_num_steps = diffusion_steps
        self.timestep_map = torch.tensor(kept, dtype=torch.long)
        self.use_kl = use_kl
        self.rescale_learned_sigmas = rescale_learned_sigmas
        self.cfg_scale = cfg_scale
        self.cfg_channel = cfg_channel

    # ---- timesteps -----------------------------------------------------------------------------
    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Respaced step indices [B] -> the original step numbers the model was trained on."""
        return self.timestep_map.to(t.device)[t.long()]

    def sampling_steps(self) -> list[int]:
        """Respaced step indices from the noisiest to 0."""
        return list(range(self.num_timesteps - 1, -1, -1))

    def sample_train_timesteps(
        self, batch_size: int, model_kwargs: dict | None = None, device=None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Uniform random training steps [B] (respaced indices; the original ones without respacing).

        ``model_kwargs`` is unused; the signature is RectifiedFlow's, so a trainer can call either.
        """
        return torch.randint(0, self.num_timesteps, (batch_size,), generator=generator).to(device)

    # ---- sampling ------------------------------------------------------------------------------
    def step(self, x: torch.Tensor, output: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x at step ``t`` [B] (respaced indices) -> x one step later, from the model ``output``."""
        return self.p_sample(output, x, t, noise)

    def frame_masks(self, cond_mask: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-frame decisions [B, T] at step ``t`` for a conditioning mask ``cond_mask`` [B, T].

        ``cond_mask`` holds 0 (keep the given frame), 1 (generate) or a fraction f (re-noise the
        given frame at step f * num_steps and regenerate it from there). As in 1.1 the fraction
        is scaled by the number of sampling steps (not 1000) and truncated. Returns
        (re-noise now, ``x_mask`` for the model: frame uses the real timestep, keep the frame).
        Release quirks kept: at the step a frame is re-noised the model still treats it as a
        timestep-0 frame, and a kept frame (0) is re-noised at step 0 and takes the last step.
        """
        mask_steps = (cond_mask * self.num_timesteps).to(torch.int)
        t = t.to(mask_steps.device)[:, None]
        return mask_steps == t, mask_steps > t, mask_steps < t

    # ---- training ------------------------------------------------------------------------------
    def loss_terms(
        self, output: torch.Tensor, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Elementwise loss terms; the training loss is the sum of their per-sample means."""
        if self.use_kl:
            return {"vb": self.vb_terms(output, x_start, x_t, t) * self.num_timesteps}
        terms = super().loss_terms(output, x_start, x_t, t, noise)
        if "vb" in terms and self.rescale_learned_sigmas:
            terms["vb"] = terms["vb"] * (self.num_timesteps / 1000.0)
        return terms
