"""DPM-Solver++ (multistep): a fast ODE sampler for noise-predicting diffusion models ("dpm-solver").

Open-Sora 1.0 offered it for the IDDPM-trained models. The discrete 1000-step schedule is read
as a continuous variance-preserving process: log alpha(t) interpolates linearly between the
steps, t in [1/N, 1]. The solver integrates the probability-flow ODE in log-SNR time
(lambda = log(alpha / sigma)) from t = 1 to t = 1/N, extrapolating the data prediction x_0
with the previous step's (second order). Math only: ``opensora.inference.sampling`` calls the
model.
"""

from __future__ import annotations

import math

import torch

from opensora.errors import ConfigError
from opensora.registry import SCHEDULERS
from opensora.schedulers.iddpm.diffusion import beta_schedule

SKIP_TYPES = ("time_uniform", "logSNR")


def _interpolate(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear f(x) through the points (xp, fp), xp increasing; the end segments extend outwards."""
    i = torch.searchsorted(xp, x.clamp(xp[0], xp[-1])).clamp(1, len(xp) - 1)
    x0, x1, f0, f1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    return f0 + (x - x0) * (f1 - f0) / (x1 - x0)


@SCHEDULERS.register("dpm-solver")
class DPMSolver:
    """Multistep DPM-Solver++ of order 1 (DDIM) or 2 with classifier-free guidance.

    ``lower_order_final`` drops to first order on the last step when there are fewer than 10
    steps, which keeps few-step sampling stable.
    """

    def __init__(
        self,
        num_sampling_steps: int = 20,
        cfg_scale: float = 4.0,
        order: int = 2,
        skip_type: str = "time_uniform",
        lower_order_final: bool = True,
        noise_schedule: str = "linear",
        diffusion_steps: int = 1000,
    ) -> None:
        if num_sampling_steps is None or num_sampling_steps < 1:
            raise ConfigError(f"dpm-solver: num_sampling_steps must be at least 1, got {num_sampling_steps}")
        if not (math.isfinite(cfg_scale) and cfg_scale >= 0):
            raise ConfigError(f"dpm-solver: cfg_scale must be a finite number >= 0, got {cfg_scale}")
        if diffusion_steps < 1:
            raise ConfigError(f"dpm-solver: diffusion_steps must be at least 1, got {diffusion_steps}")
        if order not in (1, 2):
            raise ConfigError(f"dpm-solver: order must be 1 or 2, got {order}")
        if skip_type not in SKIP_TYPES:
            raise ConfigError(f"dpm-solver: unknown skip_type '{skip_type}' (known: {', '.join(SKIP_TYPES)})")
        self.num_sampling_steps = num_sampling_steps
        self.cfg_scale = cfg_scale
        self.order = order
        self.skip_type = skip_type
        self.lower_order_final = lower_order_final
        self.total_steps = diffusion_steps
        betas = beta_schedule(noise_schedule, diffusion_steps)
        self._t_array = torch.linspace(0.0, 1.0, diffusion_steps + 1, dtype=torch.float64)[1:]  # step n at (n+1)/N
        self._log_alpha_array = 0.5 * torch.log1p(-betas).cumsum(dim=0)

    # ---- the continuous schedule -----------------------------------------------------------------
    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        """log alpha(t), alpha^2 being the signal fraction abar of the discrete schedule."""
        return _interpolate(t.double().cpu(), self._t_array, self._log_alpha_array).to(t.device)

    def marginal(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha(t), sigma(t)) with x_t = alpha x_0 + sigma noise; float64."""
        log_alpha = self.log_alpha(t)
        return log_alpha.exp(), (-torch.expm1(2 * log_alpha)).sqrt()

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """lambda(t) = log(alpha / sigma)."""
        log_alpha = self.log_alpha(t)
        return log_alpha - 0.5 * torch.log(-torch.expm1(2 * log_alpha))

    def _time_of_log_snr(self, lam: torch.Tensor) -> torch.Tensor:
        log_alpha = -0.5 * torch.logaddexp(torch.zeros_like(lam), -2.0 * lam)
        return _interpolate(log_alpha, self._log_alpha_array.flip(0), self._t_array.flip(0))

    def timesteps(self, device=None) -> torch.Tensor:
        """The ``num_sampling_steps + 1`` continuous times from 1 down to 1/N (float64)."""
        t_end, t_start = 1.0 / self.total_steps, 1.0
        if self.skip_type == "time_uniform":
            times = torch.linspace(t_start, t_end, self.num_sampling_steps + 1, dtype=torch.float64)
        else:  # uniform in log-SNR
            ends = self.log_snr(torch.tensor([t_start, t_end], dtype=torch.float64))
            times = self._time_of_log_snr(torch.linspace(ends[0], ends[1], self.num_sampling_steps + 1).double())
        return times.to(device)

    def model_time(self, t: torch.Tensor, batch_size: int) -> torch.Tensor:
        """The model's timestep input [B] for continuous time ``t``: the (fractional) discrete step."""
        return ((t - 1.0 / self.total_steps) * self.total_steps).float().expand(batch_size)

    # ---- solver ---------------------------------------------------------------------------------
    def predict_x0(self, x: torch.Tensor, noise_pred: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Data prediction from the model's noise prediction at time ``t``."""
        alpha, sigma = (v.float().to(x.device) for v in self.marginal(t))
        return (x - sigma * noise_pred) / alpha

    def step_order(self, step: int) -> int:
        """Order of the update to timesteps[step] (1-based): warm-up and, if enabled, a low-order finish."""
        order = min(self.order, step)
        if self.lower_order_final and self.num_sampling_steps < 10:
            order = min(order, self.num_sampling_steps + 1 - step)
        return order

    def step(
        self, x: torch.Tensor, history: list[tuple[torch.Tensor, torch.Tensor]], t_next: torch.Tensor, order: int
    ) -> torch.Tensor:
        """Advance ``x`` from the last time in ``history`` to ``t_next``.

        ``history`` holds (time, x_0 prediction) pairs, oldest first; ``order`` of them are used.
        """
        (t_prev, x0_prev) = history[-1]
        alpha_next, sigma_next = (v.float().to(x.device) for v in self.marginal(t_next))
        _, sigma_prev = (v.float().to(x.device) for v in self.marginal(t_prev))
        lam_prev, lam_next = self.log_snr(t_prev), self.log_snr(t_next)
        h = lam_next - lam_prev
        phi = torch.expm1(-h).float().to(x.device)
        x_next = (sigma_next / sigma_prev) * x - (alpha_next * phi) * x0_prev
        if order == 2:
            t_older, x0_older = history[-2]
            r = (lam_prev - self.log_snr(t_older)) / h
            slope = (x0_prev - x0_older) / r.float().to(x.device)  # first difference of x_0 in lambda, times h
            x_next = x_next - 0.5 * (alpha_next * phi) * slope
        return x_next
