"""The model-adapter protocol: what :class:`~opensora.inference.pipeline.VideoPipeline` asks of a model family.

The pipeline owns what every family shares: the stages and their memory, offloading, seeded
generators, the VAE, references read from files, long (looped) generation and saving. An adapter
owns what differs: the text a model reads, the shape of its noise, how references condition it and
how it is called under guidance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from opensora.inference.prompts import PromptRequest
from opensora.inference.sampling import NoiseFn
from opensora.inference.sizes import LoopSettings, VideoSize


@dataclass
class SamplingInputs:
    """Everything one call of :meth:`ModelAdapter.sample` needs besides the model, noise and text."""

    requests: list[PromptRequest]
    references: list[list[torch.Tensor]]  # per request, its reference latents [C, T_ref, H', W']
    size: VideoSize
    loop_index: int = 0
    loop: LoopSettings = LoopSettings()
    noise_fn: NoiseFn | None = None  # per-sample noise for draws after the start (see sampling.per_sample_noise)
    guidance_scale: float | None = None  # None: the scheduler's own
    progress: bool = True


class ModelAdapter(Protocol):
    """One family of diffusion models as the pipeline drives it."""

    latent_channels: int  # the pipeline draws the starting noise [B, latent_channels, T, H, W] (per_sample_randn)

    def latent_size(self, vae: nn.Module | None, size: VideoSize) -> tuple[int, int, int]:
        """(T, H, W) of the latent sampled for ``size`` (the VAE's, rounded to what the model takes)."""
        ...

    def check(self, requests: list[PromptRequest], size: VideoSize, loop: LoopSettings, latent_frames: int) -> None:
        """ConfigError for what this family cannot do with these requests (before any sampling)."""
        ...

    def reference_clips(self, request: PromptRequest, size: VideoSize) -> list[torch.Tensor]:
        """The pixels [3, T, H, W] in [-1, 1] of each reference of ``request``, to be VAE-encoded."""
        ...

    def reference_request(self, text: str, reference_path: str | None) -> PromptRequest:
        """A request that starts the video from the image at ``reference_path`` (the demo page's upload)."""
        ...

    def encode_text(self, text_encoder: nn.Module, prompts: list[str], size: VideoSize) -> dict[str, torch.Tensor]:
        """What the model reads of the prompts (and of its unconditional inputs)."""
        ...

    def sample(
        self, model: nn.Module, scheduler: object, z: torch.Tensor, text: dict, inputs: SamplingInputs
    ) -> torch.Tensor:
        """Clean latents [B, C, T, H, W] from noise ``z``."""
        ...

    def tokens(self, model: nn.Module, latent_size: tuple[int, int, int]) -> tuple[int, int]:
        """(tokens per sample, model calls' batch rows per sample) for the memory estimate."""
        ...


def per_sample_randn(
    generators: list[torch.Generator], shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """[B, *shape] noise, sample i drawn from ``generators[i]`` so it does not depend on batching."""
    return torch.stack([torch.randn(shape, generator=g, device=device, dtype=dtype) for g in generators])
