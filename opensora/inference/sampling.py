"""Sampling loops: call the model and let a scheduler integrate its predictions."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from opensora.errors import ConfigError
from opensora.schedulers.dpm_solver import DPMSolver
from opensora.schedulers.iddpm import IDDPM
from opensora.schedulers.rectified_flow import RectifiedFlow

NoiseFn = Callable[[int, torch.Tensor], torch.Tensor]


def guided_prediction(
    model: Callable,
    z: torch.Tensor,
    t: torch.Tensor,
    y_cond_uncond: torch.Tensor,
    guidance_scale: float,
    guided_channels: int | None = None,
    **kwargs,
) -> torch.Tensor:
    """Classifier-free guidance: run prompt and null caption in one doubled batch and extrapolate.

    Returns every output channel [B, C_out, ...]: the first ``guided_channels`` (default: the
    C channels of ``z``) are guided, the rest (e.g. learned variance) come from the prompt half.
    """
    out = model(torch.cat([z, z]), torch.cat([t, t]), y=y_cond_uncond, **kwargs)
    cond, uncond = out.chunk(2, dim=0)
    k = z.shape[1] if guided_channels is None else guided_channels
    guided = uncond[:, :k] + guidance_scale * (cond[:, :k] - uncond[:, :k])
    return torch.cat([guided, cond[:, k:]], dim=1)


def guided_velocity(
    model: Callable, z: torch.Tensor, t: torch.Tensor, y_cond_uncond: torch.Tensor, guidance_scale: float, **kwargs
) -> torch.Tensor:
    """The guided prediction without the variance channels (pred_sigma): [B, C, ...]."""
    return guided_prediction(model, z, t, y_cond_uncond, guidance_scale, **kwargs)[:, : z.shape[1]]


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


def doubled_batch_noise(_step: int, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise shaped like ``like`` [B, ...], drawn for a doubled [2B, ...] batch.

    The 1.0/1.1 samplers drew their noise on the prompt + null-caption batch and only the prompt
    half mattered; drawing the same way keeps a seeded run equal to theirs.
    """
    return torch.randn((2 * like.shape[0], *like.shape[1:]), device=like.device, dtype=like.dtype)[: like.shape[0]]


def iddpm_sample(
    model: Callable,
    scheduler: IDDPM,
    z: torch.Tensor,
    y: torch.Tensor,
    y_null: torch.Tensor,
    model_kwargs: dict,
    cond_mask: torch.Tensor | None = None,
    guidance_scale: float | None = None,
    noise_fn: NoiseFn | None = None,
    renoise_fn: NoiseFn | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Ancestral IDDPM sampling from noise ``z`` [B, C, T, H, W] to a clean latent.

    ``y``/``y_null`` are [B, 1, L, C] prompt and null captions; ``model_kwargs`` carries the text
    ``mask`` [B, L] (reused for the null half) and whatever else the model takes (STDiT2:
    ``height``/``width``/``num_frames``/``ar``/``fps`` [B]). The model gets the original-scale
    step numbers. Guidance covers the first ``scheduler.cfg_channel`` channels.
    ``cond_mask`` [B, T] (1.1): 0 keeps the frame of ``z``, 1 generates it, a fraction f re-noises
    and regenerates it from step f * num_steps (see ``IDDPM.frame_masks``).
    ``noise_fn(step, x)`` draws each step's sampling noise and ``renoise_fn(step, x)`` the noise
    re-noising conditioned frames (called first); both default to ``doubled_batch_noise``.
    """
    guidance_scale = scheduler.cfg_scale if guidance_scale is None else guidance_scale
    noise_fn = noise_fn or doubled_batch_noise
    renoise_fn = renoise_fn or doubled_batch_noise
    kwargs = dict(model_kwargs)
    y_both = torch.cat([y, y_null], dim=0)
    for i, step in enumerate(tqdm(scheduler.sampling_steps(), desc="sampling", disable=not progress)):
        t = torch.full((z.shape[0],), step, dtype=torch.long, device=z.device)
        if cond_mask is not None:
            renoise, x_mask, keep = (m[:, None, :, None, None] for m in scheduler.frame_masks(cond_mask, t))
            x0 = z
            z = torch.where(renoise, scheduler.q_sample(x0, t, renoise_fn(i, x0)), x0)
            kwargs["x_mask"] = x_mask.flatten(1).repeat(2, 1)  # (2B, T)
        out = guided_prediction(
            model, z, scheduler.model_timesteps(t), y_both, guidance_scale, scheduler.cfg_channel, **kwargs
        )
        z = scheduler.step(z, out, t, noise_fn(i, z))
        if cond_mask is not None:
            z = torch.where(keep, x0, z)
    return z


def dpm_solver_sample(
    model: Callable,
    scheduler: DPMSolver,
    z: torch.Tensor,
    y: torch.Tensor,
    y_null: torch.Tensor,
    model_kwargs: dict,
    guidance_scale: float | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Solve the probability-flow ODE from noise ``z`` [B, C, T, H, W] with DPM-Solver++.

    Arguments as :func:`iddpm_sample` (no frame conditioning). The model's first C output
    channels are its noise prediction; guidance applies to all of them. One model call (on the
    doubled batch) per step; the model gets fractional step numbers on the 0..N-1 scale.
    """
    guidance_scale = scheduler.cfg_scale if guidance_scale is None else guidance_scale
    y_both = torch.cat([y, y_null], dim=0)
    times = scheduler.timesteps(z.device)
    history: list[tuple[torch.Tensor, torch.Tensor]] = []  # (time, x_0 prediction), oldest first
    for i in tqdm(range(len(times) - 1), desc="sampling", disable=not progress):
        t = scheduler.model_time(times[i], z.shape[0])
        noise_pred = guided_prediction(model, z, t, y_both, guidance_scale, **model_kwargs)[:, : z.shape[1]]
        history = [*history[-1:], (times[i], scheduler.predict_x0(z, noise_pred, times[i]))]
        z = scheduler.step(z, history, times[i + 1], scheduler.step_order(i + 1))
    return z


def sample(
    model: Callable,
    scheduler: RectifiedFlow | IDDPM | DPMSolver,
    z: torch.Tensor,
    y: torch.Tensor,
    y_null: torch.Tensor,
    model_kwargs: dict,
    cond_mask: torch.Tensor | None = None,
    guidance_scale: float | None = None,
    progress: bool = True,
    noise_fn: NoiseFn | None = None,
) -> torch.Tensor:
    """Run the sampling loop that belongs to ``scheduler`` (rectified flow, IDDPM or DPM-Solver).

    ``noise_fn(step, like)`` draws the noise a loop needs after its start (re-noised reference
    frames; IDDPM's ancestral steps); by default the loops draw from torch's global generator.
    """
    common = dict(guidance_scale=guidance_scale, progress=progress)
    if isinstance(scheduler, RectifiedFlow):
        return rflow_sample(model, scheduler, z, y, y_null, model_kwargs, cond_mask=cond_mask, noise_fn=noise_fn,
                            **common)  # fmt: skip
    if isinstance(scheduler, IDDPM):
        return iddpm_sample(model, scheduler, z, y, y_null, model_kwargs, cond_mask=cond_mask, noise_fn=noise_fn,
                            renoise_fn=noise_fn, **common)  # fmt: skip
    if isinstance(scheduler, DPMSolver):
        if cond_mask is not None:
            raise ConfigError("the dpm-solver sampler cannot condition on references; use iddpm or rflow")
        return dpm_solver_sample(model, scheduler, z, y, y_null, model_kwargs, **common)
    raise TypeError(f"no sampling loop for scheduler {type(scheduler).__name__}")


def per_sample_noise(generators: list[torch.Generator]) -> NoiseFn:
    """A ``noise_fn`` drawing sample i of a [B, ...] batch from ``generators[i]``: a sample's noise
    then depends on its own seed only, not on global random state nor on what it is batched with."""

    def draw(_step: int, like: torch.Tensor) -> torch.Tensor:
        if like.shape[0] != len(generators):
            raise ValueError(f"noise for a batch of {like.shape[0]} from {len(generators)} generators")
        return torch.stack(
            [torch.randn(like.shape[1:], generator=g, device=like.device, dtype=like.dtype) for g in generators]
        )

    return draw
