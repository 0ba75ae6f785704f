"""Training objectives that call the model."""

from __future__ import annotations

from collections.abc import Callable

import torch

from opensora.schedulers.iddpm import IDDPM
from opensora.schedulers.rectified_flow import RectifiedFlow


def masked_mean(x: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over all axes but the batch; with ``frame_mask`` [B, T], over the masked frames only."""
    if frame_mask is None:
        return x.mean(dim=list(range(1, x.ndim)))
    B, C, T = x.shape[:3]
    per_frame = x.transpose(1, 2).reshape(B, T, -1)  # (B, T, C*H*W)
    total = (per_frame * frame_mask[:, :, None]).sum(dim=(1, 2))
    return total / (frame_mask.sum(dim=1) * per_frame.shape[-1])


def rflow_loss(
    model: Callable,
    scheduler: RectifiedFlow,
    x_start: torch.Tensor,
    model_kwargs: dict,
    noise: torch.Tensor | None = None,
    frame_mask: torch.Tensor | None = None,
    t: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample rectified-flow loss [B]: MSE between predicted and true velocity.

    ``frame_mask`` [B, T] (True = frame is trained, False = conditioning frame kept clean at t=0)
    is also what the model should receive as ``x_mask``. When ``t`` is given it is used as is,
    without the timestep transform.
    """
    if t is None:
        t = scheduler.sample_train_timesteps(x_start.shape[0], model_kwargs, device=x_start.device)
    noise = torch.randn_like(x_start) if noise is None else noise
    x_t = scheduler.add_noise(x_start, noise, t)
    if frame_mask is not None:
        x_clean = scheduler.add_noise(x_start, noise, torch.zeros_like(t))
        x_t = torch.where(frame_mask[:, None, :, None, None], x_t, x_clean)
    pred = model(x_t, t, **model_kwargs)[:, : x_start.shape[1]]  # drop variance channels
    err = (pred - scheduler.velocity_target(x_start, noise)).pow(2)
    if weights is not None:
        err = weights.view(-1, *([1] * (err.ndim - 1))) * err
    return masked_mean(err, frame_mask)


def iddpm_loss_terms(
    model: Callable,
    scheduler: IDDPM,
    x_start: torch.Tensor,
    model_kwargs: dict,
    noise: torch.Tensor | None = None,
    frame_mask: torch.Tensor | None = None,
    t: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-sample IDDPM losses [B]: "loss" = "mse" (noise prediction) + "vb" (variational bound).

    ``t`` [B] holds (respaced) step indices, uniform at random when None. ``frame_mask`` [B, T]
    (True = frame is trained, False = conditioning frame kept clean at t=0) is also what the
    model should receive as ``x_mask``; both terms average over the trained frames only.
    """
    if t is None:
        t = scheduler.sample_train_timesteps(x_start.shape[0], model_kwargs, device=x_start.device)
    noise = torch.randn_like(x_start) if noise is None else noise
    x_t = scheduler.q_sample(x_start, t, noise)
    if frame_mask is not None:
        x_clean = scheduler.q_sample(x_start, torch.zeros_like(t), noise)
        x_t = torch.where(frame_mask[:, None, :, None, None], x_t, x_clean)
    output = model(x_t, scheduler.model_timesteps(t), **model_kwargs)
    elementwise = scheduler.loss_terms(output, x_start, x_t, t, noise)
    terms = {name: masked_mean(value, frame_mask) for name, value in elementwise.items()}
    terms["loss"] = sum(terms.values())
    return terms


def iddpm_loss(model: Callable, scheduler: IDDPM, x_start: torch.Tensor, model_kwargs: dict, **kwargs) -> torch.Tensor:
    """Per-sample IDDPM training loss [B]; keyword arguments as :func:`iddpm_loss_terms`."""
    return iddpm_loss_terms(model, scheduler, x_start, model_kwargs, **kwargs)["loss"]


def diffusion_loss(
    model: Callable, scheduler: RectifiedFlow | IDDPM, x_start: torch.Tensor, model_kwargs: dict, **kwargs
) -> torch.Tensor:
    """Per-sample training loss [B] of whichever scheduler trains the model (1.2: rflow, 1.0/1.1: iddpm)."""
    if isinstance(scheduler, IDDPM):
        return iddpm_loss(model, scheduler, x_start, model_kwargs, **kwargs)
    if isinstance(scheduler, RectifiedFlow):
        return rflow_loss(model, scheduler, x_start, model_kwargs, **kwargs)
    raise TypeError(f"no training loss for scheduler {type(scheduler).__name__}")
