"""The diagonal Gaussian posterior of a VAE encoder."""

from __future__ import annotations

import torch


class DiagonalGaussian:
    """N(mean, exp(logvar)) per element, from encoder moments split on the channel axis."""

    def __init__(self, moments: torch.Tensor) -> None:
        self.mean, logvar = moments.chunk(2, dim=1)
        # the release clamps so that exp() stays finite in float32
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL divergence to N(0, 1), summed over all but the batch axis: [B]."""
        var = self.std.pow(2)
        return 0.5 * (self.mean.pow(2) + var - 1.0 - self.logvar).sum(dim=list(range(1, self.mean.ndim)))
