"""Sampling loops: call the model and let a scheduler integrate its predictions."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from opensora.schedulers.rectified_flow import RectifiedFlow

NoiseFn = Callable[[int, torch.Tensor], torch.Tensor]


def guided_velocity(
    model: Callable, z: torch.Tensor, t: torch.Tensor, y_cond_uncond: torch.Tensor, guidance_scale: float, **kwargs
) -> torch.Tensor:
    """Classifier-free guidance: run prompt and null caption in one doubled batch and extrapolate."""
    out = model(torch.cat([z, z]), torch.cat([t, t]), y=y_cond_uncond, **kwargs)
    pred = out[:, : z.shape[1]]  # drop the variance channels (pred_sigma)
    cond, uncond = pred.chunk(2, dim=0)
    return uncond + guidance_scale * (cond - uncond)


def rflow_sample(
    model: Callable,
    scheduler: RectifiedFlow,
    z: torch.Tensor,
    y: torch.Tensor,
    y_null: torch.Tensor,
    model_kwargs: dict,
    cond_mask: torch.Tensor | None = None,
    guidance_scale: float | None = None,
    noise_fn: NoiseFn | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Integrate the rectified-flow ODE from noise ``z`` [B, C, T, H, W] to a clean latent.

    ``y``/``y_null`` are [B, 1, L, C] prompt and null captions; ``model_kwargs`` carries the text
    ``mask`` [B, L] (reused for the null half) and ``height``/``width``/``num_frames``/``fps``.
    ``cond_mask`` [B, T]: 0 keeps the frame of ``z`` (a reference), 1 generates it, a fraction f
    lets the frame be re-noised and regenerated once the timestep falls to f * T (editing).
    ``noise_fn(step, x0)`` draws the re-noising noise (default: ``torch.randn_like``).
    """
    guidance_scale = scheduler.cfg_scale if guidance_scale is None else guidance_scale
    noise_fn = noise_fn or (lambda _step, x0: torch.randn_like(x0))
    kwargs = dict(model_kwargs)
    y_both = torch.cat([y, y_null], dim=0)
    timesteps = scheduler.sampling_timesteps(z.shape[0], model_kwargs, device=z.device)
    noised = None if cond_mask is None else cond_mask == 1
    for i, t in enumerate(tqdm(timesteps, desc="sampling", disable=not progress)):
        x0 = None
        if cond_mask is not None:
            x0 = z.clone()
            generate = cond_mask * scheduler.num_timesteps >= t[:, None]  # (B, T) frames being generated now
            start_now = generate & ~noised  # frames that join the generation at this step
            renoised = scheduler.add_noise(x0, noise_fn(i, x0), t)
            z = torch.where(start_now[:, None, :, None, None], renoised, x0)
            noised = generate
            kwargs["x_mask"] = generate.repeat(2, 1)
        velocity = guided_velocity(model, z, t, y_both, guidance_scale, **kwargs)
        z = scheduler.step(z, velocity, timesteps, i)
        if cond_mask is not None:
            z = torch.where(generate[:, None, :, None, None], z, x0)
    return z
