"""Gaussian diffusion (DDPM with a learned variance, "improved DDPM"): the maths only.

``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise`` over ``len(betas)`` discrete steps. The
model predicts the noise (or x_0) and, with a learned range, an interpolation between the two
natural variances of the reverse step. Nothing here calls a model: functions take its output.

Schedule arrays are float64 by default (``dtype``); coefficients are picked per timestep and
cast to float32 before they touch a latent.
"""

from __future__ import annotations

import math

import torch

from opensora.errors import ConfigError

BETA_SCHEDULES = ("linear", "squaredcos_cap_v2")


def beta_schedule(name: str, num_timesteps: int) -> torch.Tensor:
    """The named noise schedule as float64 betas [num_timesteps]."""
    if name == "linear":
        scale = 1000 / num_timesteps  # the DDPM range 1e-4..0.02, stretched for other step counts
        return torch.linspace(scale * 0.0001, scale * 0.02, num_timesteps, dtype=torch.float64)
    if name == "squaredcos_cap_v2":

        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [
            min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), 0.999)
            for i in range(num_timesteps)
        ]
        return torch.tensor(betas, dtype=torch.float64)
    raise ConfigError(f"unknown noise_schedule '{name}' (known: {', '.join(BETA_SCHEDULES)})")


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """Log-probability of ``x`` in [-1, 1] under a Gaussian discretised to 256 bins, elementwise."""
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = _approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    # the outermost bins take the whole tail
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


class GaussianDiffusion:
    """Forward process, posterior and reverse step of a discrete Gaussian diffusion.

    ``learn_sigma``: the model outputs 2*C channels, the second half in [-1, 1] interpolating
    (in log space) between the posterior variance and beta ("learned range"). Otherwise the
    variance is fixed: beta (``sigma_small`` False) or the posterior variance.
    ``predict_xstart``: the first C channels predict x_0 instead of the noise.
    ``dtype``: precision of the schedule arrays (float64, or float32 to reproduce Open-Sora 1.1).
    """

    def __init__(
        self,
        betas: torch.Tensor,
        learn_sigma: bool = True,
        sigma_small: bool = False,
        predict_xstart: bool = False,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        betas = torch.as_tensor(betas).to(device="cpu", dtype=dtype)
        if betas.ndim != 1 or not ((betas > 0) & (betas <= 1)).all():
            raise ConfigError("diffusion betas must be a 1-D sequence in (0, 1]")
        self.learn_sigma = learn_sigma
        self.sigma_small = sigma_small
        self.predict_xstart = predict_xstart
        self.betas = betas
        self.num_timesteps = len(betas)

        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        alphas_cumprod_prev = torch.cat([betas.new_ones(1), alphas_cumprod[:-1]])
        self.alphas_cumprod = alphas_cumprod
        self.sqrt_alphas_cumprod = alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - alphas_cumprod).sqrt()
        self.sqrt_recip_alphas_cumprod = (1.0 / alphas_cumprod).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / alphas_cumprod - 1).sqrt()
        self.posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        # the posterior variance is 0 at t = 0: its log is clipped to the value at t = 1
        clipped = torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        self.posterior_log_variance_clipped = clipped.log()
        self.posterior_mean_coef1 = betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - alphas_cumprod_prev) * (1.0 - betas).sqrt() / (1.0 - alphas_cumprod)
        self.log_betas = betas.log()
        # "fixed large" variance: beta, with the posterior variance at t = 0 so its log stays finite
        self.large_log_variance = torch.cat([self.posterior_variance[1:2], betas[1:]]).log()

    @staticmethod
    def extract(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``values[t]`` as float32 on ``like``'s device, shaped [B, 1, 1, ...] to broadcast."""
        picked = values[t.long().cpu()].float().to(like.device)
        return picked.view(-1, *([1] * (like.ndim - 1)))

    # ---- forward process -----------------------------------------------------------------------
    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Noise ``x_start`` to step ``t`` [B]."""
        return (
            self.extract(self.sqrt_alphas_cumprod, t, x_start) * x_start
            + self.extract(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise
        )

    def q_posterior(
        self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = (
            self.extract(self.posterior_mean_coef1, t, x_t) * x_start
            + self.extract(self.posterior_mean_coef2, t, x_t) * x_t
        )
        return mean, self.extract(self.posterior_log_variance_clipped, t, x_t)

    # ---- reverse process -----------------------------------------------------------------------
    def _log_variance(self, var_values: torch.Tensor | None, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.learn_sigma:
            min_log = self.extract(self.posterior_log_variance_clipped, t, x)
            max_log = self.extract(self.log_betas, t, x)
            frac = (var_values + 1) / 2  # the model's [-1, 1] mapped onto [min, max] in log space
            return frac * max_log + (1 - frac) * min_log
        if self.sigma_small:
            return self.extract(self.posterior_log_variance_clipped, t, x).expand_as(x)
        return self.extract(self.large_log_variance, t, x).expand_as(x)

    def p_mean_variance(
        self, output: torch.Tensor, x: torch.Tensor, t: torch.Tensor, clip_denoised: bool = False
    ) -> dict[str, torch.Tensor]:
        """Mean, log-variance and predicted x_0 of p(x_{t-1} | x_t) from the model ``output``."""
        C = x.shape[1]
        expected = 2 * C if self.learn_sigma else C
        if output.shape[1] != expected:
            # the model's pred_sigma and the scheduler's learn_sigma disagree: a config mistake
            raise ConfigError(f"diffusion: the model output has {output.shape[1]} channels, expected {expected} "
                              f"(learn_sigma={self.learn_sigma}: set the model's pred_sigma to match)")  # fmt: skip
        pred, var_values = (output[:, :C], output[:, C:]) if self.learn_sigma else (output, None)
        log_variance = self._log_variance(var_values, t, x)
        if self.predict_xstart:
            pred_xstart = pred
        else:
            pred_xstart = (
                self.extract(self.sqrt_recip_alphas_cumprod, t, x) * x
                - self.extract(self.sqrt_recipm1_alphas_cumprod, t, x) * pred
            )
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _ = self.q_posterior(pred_xstart, x, t)
        return {"mean": mean, "log_variance": log_variance, "pred_xstart": pred_xstart}

    def p_sample(self, output: torch.Tensor, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """One ancestral step x_t -> x_{t-1}; no noise is added at t = 0."""
        out = self.p_mean_variance(output, x, t)
        nonzero = (t != 0).float().view(-1, *([1] * (x.ndim - 1))).to(x.device)
        return out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise

    # ---- training ------------------------------------------------------------------------------
    def vb_terms(self, output: torch.Tensor, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Variational-bound term per element, in bits: KL(q || p) for t > 0, the decoder NLL at t = 0."""
        true_mean, true_log_variance = self.q_posterior(x_start, x_t, t)
        out = self.p_mean_variance(output, x_t, t)
        kl = normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"]) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x_start, out["mean"], 0.5 * out["log_variance"]) / math.log(2.0)
        first = (t == 0).view(-1, *([1] * (x_t.ndim - 1))).to(x_t.device)
        return torch.where(first, nll, kl)

    def loss_terms(
        self, output: torch.Tensor, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Elementwise "mse" of the prediction and, with a learned variance, the "vb" term.

        The vb term sees the mean prediction detached, so it trains the variance channels only.
        """
        C = x_start.shape[1]
        pred = output[:, :C]
        target = x_start if self.predict_xstart else noise
        terms = {"mse": (target - pred) ** 2}
        if self.learn_sigma:
            frozen = torch.cat([pred.detach(), output[:, C:]], dim=1)
            terms["vb"] = self.vb_terms(frozen, x_start, x_t, t)
        return terms
