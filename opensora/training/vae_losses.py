"""The video VAE's training losses: reconstruction (L1 + LPIPS), KL, and a hinge GAN with adaptive weight.

Reductions follow the release, so its loss weights (KL 1e-6, perceptual 0.1) mean what they meant
there: a reconstruction loss is summed over a frame's elements and averaged over frames, the KL is
summed over a sample's latent elements and averaged over samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from opensora.models.vae.distributions import DiagonalGaussian

DWEIGHT_EPS = 1e-4  # keeps the adaptive weight finite when the GAN gradient vanishes
DWEIGHT_MAX = 1e4


def reconstruction_loss(
    real: torch.Tensor,
    fake: torch.Tensor,
    perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    perceptual_weight: float = 0.0,
) -> torch.Tensor:
    """L1 between [B, C, T, H, W] tensors, summed per frame and averaged over the B*T frames.

    With ``perceptual`` (LPIPS on (N, 3, H, W) images in [0, 1] -> (N,)) and a positive weight, each
    frame's distance, times ``perceptual_weight``, is added to every element's L1 before the sum, as
    the release did; ``real`` and ``fake`` are then RGB in [-1, 1].
    """
    B, C, T, H, W = real.shape
    per_frame = (real.float() - fake.float()).abs().sum(dim=(1, 3, 4))  # (B, T); fp32: long half-precision sums drift
    if perceptual is not None and perceptual_weight > 0:
        frames = [v.transpose(1, 2).reshape(B * T, C, H, W) for v in (real, fake)]  # (B*T, 3, H, W)
        distance = perceptual((frames[0] + 1) / 2, (frames[1] + 1) / 2).reshape(B, T)
        per_frame = per_frame + perceptual_weight * distance.float() * (C * H * W)
    return per_frame.mean()


def kl_loss(posteriors: Sequence[DiagonalGaussian]) -> torch.Tensor:
    """KL of the posteriors (e.g. one per micro-clip) to N(0, 1), summed per sample, averaged over samples."""
    return torch.stack([posterior.kl().float() for posterior in posteriors]).sum(dim=0).mean()


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Push real logits above 1 and fake ones below -1 (nothing is gained beyond)."""
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator raises the discriminator's logits of its reconstructions."""
    return -fake_logits.mean()


def adaptive_generator_weight(
    rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor, factor: float = 1.0
) -> torch.Tensor:
    """``factor * ||d rec / d W|| / (||d gan / d W|| + 1e-4)``, clamped to [0, 1e4], W = ``last_layer``.

    Scales the GAN loss so its gradient at the decoder's output is as large as the reconstruction
    loss's there, whatever their magnitudes. Detached: it is a weight, not a term to optimise.
    """
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.float().norm() / (gan_grad.float().norm() + DWEIGHT_EPS)
    return weight.clamp(0.0, DWEIGHT_MAX).detach() * factor
