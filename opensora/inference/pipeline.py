"""Text-to-video pipeline: encode the prompt, sample with guidance, decode.

The command line, the Gradio demo and evaluation all call this one object.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from opensora.inference.sampling import rflow_sample
from opensora.schedulers.rectified_flow import RectifiedFlow


def latent_size_v1_2(num_frames: int, height: int, width: int) -> tuple[int, int, int]:
    """Latent (T, H, W) of the 1.2 VAE: 8x spatial, each 17-frame chunk -> 5 frames (4x, causal)."""
    chunks, rest = divmod(num_frames, 17)
    return chunks * 5 + -(-rest // 4), -(-height // 8), -(-width // 8)


@dataclass
class VideoPipeline:
    """Holds the parts of a text-to-video model and turns prompts into latents or videos."""

    model: nn.Module
    scheduler: RectifiedFlow
    text_encoder: nn.Module
    vae: nn.Module | None = None
    in_channels: int = 4
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    def latent_size(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        if self.vae is not None and hasattr(self.vae, "get_latent_size"):
            return tuple(self.vae.get_latent_size((num_frames, height, width)))
        return latent_size_v1_2(num_frames, height, width)

    def initial_noise(self, batch_size: int, latent_size: tuple[int, int, int], seed: int) -> torch.Tensor:
        """Noise [B, C, T, H, W]; sample i is drawn from ``seed + i`` so it does not depend on batching."""
        samples = []
        for i in range(batch_size):
            generator = torch.Generator(device=self.device).manual_seed(seed + i)
            shape = (self.in_channels, *latent_size)
            samples.append(torch.randn(shape, generator=generator, device=self.device, dtype=self.dtype))
        return torch.stack(samples)

    @torch.no_grad()
    def __call__(
        self,
        prompts: list[str],
        num_frames: int,
        height: int,
        width: int,
        fps: int = 24,
        seed: int = 0,
        guidance_scale: float | None = None,
        progress: bool = True,
    ) -> torch.Tensor:
        """Latents [B, C, T', H', W'] (or videos [B, 3, T, H, W] in [-1, 1] when a VAE is set)."""
        B = len(prompts)
        text = self.text_encoder.encode(prompts)
        y = text["y"].to(self.device, self.dtype)
        y_null = self.model.y_embedder.null(B).to(self.device, self.dtype)
        sizes = dict(
            height=torch.full((B,), float(height), device=self.device),
            width=torch.full((B,), float(width), device=self.device),
            num_frames=torch.full((B,), float(num_frames), device=self.device),
            fps=torch.full((B,), float(fps), device=self.device),
            ar=torch.full((B,), height / width, device=self.device),
        )
        z = self.initial_noise(B, self.latent_size(num_frames, height, width), seed)
        latents = rflow_sample(
            self.model, self.scheduler, z, y, y_null, {"mask": text["mask"].to(self.device), **sizes},
            guidance_scale=guidance_scale, progress=progress,
        )  # fmt: skip
        if self.vae is None:
            return latents
        return self.vae.decode(latents.to(self.dtype), num_frames=num_frames)
