"""Improved DDPM (Open-Sora 1.0/1.1): Gaussian diffusion maths, timestep respacing, the "iddpm" scheduler."""

from opensora.schedulers.iddpm.diffusion import GaussianDiffusion, beta_schedule
from opensora.schedulers.iddpm.respace import respace_betas, space_timesteps
from opensora.schedulers.iddpm.scheduler import IDDPM

__all__ = ["IDDPM", "GaussianDiffusion", "beta_schedule", "respace_betas", "space_timesteps"]
