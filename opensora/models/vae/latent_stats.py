"""Latent statistics of any VAE of this package, and the normalisation constants they give.

A diffusion model wants unit-scale latents, so every VAE normalises its raw latent on encode (and
undoes it on decode) with constants measured once on data: 1.2's per-channel ``shift``/``scale``,
the Hunyuan VAE's and the Flux autoencoder's ``scale_factor * (z - shift_factor)``, the DC-AE's
``z / scaling_factor``, the SD VAE's ``z * scaling_factor``. :func:`unnormalised` switches a VAE's
normalisation off, :class:`LatentStats` accumulates the raw latents' moments and
:func:`normalisation_config` turns them into the config keys of that VAE kind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from opensora.models.vae.dc_ae import VideoDCAE
from opensora.models.vae.flux_ae import FluxAutoencoder
from opensora.models.vae.hunyuan import AutoencoderKLCausal3D
from opensora.models.vae.pipeline import VideoAutoencoderPipeline
from opensora.models.vae.spatial import SpatialVAE


@dataclass
class LatentStats:
    """Running per-channel moments of latents [B, C, ...] (float64 sums: millions of elements)."""

    channels: int
    count: int = 0  # values per channel
    samples: int = 0  # videos (batch entries) seen
    sums: torch.Tensor = field(init=False)
    squares: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.sums = torch.zeros(self.channels, dtype=torch.float64)
        self.squares = torch.zeros(self.channels, dtype=torch.float64)

    def update(self, z: torch.Tensor) -> None:
        if z.shape[1] != self.channels:
            raise ValueError(f"latents of {z.shape[1]} channels for statistics of {self.channels}")
        values = z.detach().transpose(0, 1).reshape(self.channels, -1).double().cpu()
        self.count += values.shape[1]
        self.samples += z.shape[0]
        self.sums += values.sum(dim=1)
        self.squares += values.square().sum(dim=1)

    def _check(self) -> None:
        if self.count < 2:
            raise ValueError("no latents were seen: statistics need at least two values per channel")

    @property
    def mean(self) -> torch.Tensor:
        """Per-channel means [C]."""
        self._check()
        return self.sums / self.count

    @property
    def std(self) -> torch.Tensor:
        """Per-channel standard deviations [C] (unbiased)."""
        self._check()
        variance = (self.squares - self.count * self.mean.square()) / (self.count - 1)
        return variance.clamp_min(0).sqrt()

    @property
    def overall_mean(self) -> float:
        """The mean over every channel's values."""
        self._check()
        return float(self.sums.sum() / (self.count * self.channels))

    @property
    def overall_std(self) -> float:
        """The standard deviation over every channel's values (unbiased)."""
        n = self.count * self.channels
        variance = (float(self.squares.sum()) - n * self.overall_mean**2) / (n - 1)
        return max(variance, 0.0) ** 0.5


@dataclass(frozen=True)
class _Rule:
    neutral: dict[str, float | None]  # attribute -> the value that switches normalisation off
    config: Callable[[LatentStats], dict]


def _rounded(value: float) -> float:
    return round(value, 6)


# scale_factor * (z - shift_factor), as the Hunyuan VAE and the Flux autoencoder normalise
_SHIFT_THEN_SCALE = _Rule(
    {"shift_factor": 0.0, "scale_factor": 1.0},
    lambda s: {"shift_factor": _rounded(s.overall_mean), "scale_factor": _rounded(1 / s.overall_std)},
)
_RULES: dict[type, _Rule] = {
    VideoAutoencoderPipeline: _Rule(
        {"shift": 0.0, "scale": 1.0},
        lambda s: {"shift": [_rounded(v) for v in s.mean.tolist()], "scale": [_rounded(v) for v in s.std.tolist()]},
    ),
    AutoencoderKLCausal3D: _SHIFT_THEN_SCALE,
    FluxAutoencoder: _SHIFT_THEN_SCALE,
    # the DC-AE has no shift: its latents are divided by scaling_factor only
    VideoDCAE: _Rule({"scaling_factor": None}, lambda s: {"scaling_factor": _rounded(s.overall_std)}),
    SpatialVAE: _Rule({"scaling_factor": 1.0}, lambda s: {"scaling_factor": _rounded(1 / s.overall_std)}),
}


def _rule(vae: nn.Module) -> _Rule:
    for kind, rule in _RULES.items():
        if isinstance(vae, kind):
            return rule
    names = ", ".join(kind.__name__ for kind in _RULES)
    raise TypeError(f"no latent normalisation is known for {type(vae).__name__} (known: {names})")


@contextmanager
def unnormalised(vae: nn.Module) -> Iterator[nn.Module]:
    """``vae`` with its latent normalisation switched off (encode gives raw latents), restored after."""
    rule = _rule(vae)
    saved = {}
    for name, neutral in rule.neutral.items():
        value = getattr(vae, name)
        if isinstance(value, torch.Tensor):
            saved[name] = value.clone()
            value.fill_(neutral)
        else:
            saved[name] = value
            setattr(vae, name, neutral)
    try:
        yield vae
    finally:
        for name, value in saved.items():
            if isinstance(value, torch.Tensor):
                getattr(vae, name).copy_(value)
            else:
                setattr(vae, name, value)


def normalisation_config(vae: nn.Module, stats: LatentStats) -> dict:
    """The config keys that make ``vae``'s encoded latents zero-mean and unit-scale on the data of ``stats``
    (scalar constants pool the channels, as the released ones do; 1.2's are per channel)."""
    return _rule(vae).config(stats)


@torch.no_grad()
def measure(vae: nn.Module, videos: Iterator[torch.Tensor], max_samples: int | None = None) -> LatentStats:
    """Moments of ``vae``'s raw latents (posterior means) of ``videos`` [B, 3, T, H, W] in [-1, 1],
    up to ``max_samples`` videos; the videos are moved to the VAE's device and dtype."""
    param = next(vae.parameters())
    stats = LatentStats(vae.out_channels)
    with unnormalised(vae):
        for video in videos:
            if max_samples is not None:
                video = video[: max_samples - stats.samples]
            if video.shape[0] == 0:
                break
            stats.update(vae.encode(video.to(param.device, param.dtype), sample=False).float())
    return stats
