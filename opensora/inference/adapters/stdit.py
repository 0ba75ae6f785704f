"""STDiT 1.0, 1.1 and 1.2 under the pipeline: one caption (and its learned null caption), size
conditioning, references placed per latent frame by mask strategies."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from opensora.errors import ConfigError
from opensora.inference.adapters.base import SamplingInputs
from opensora.inference.conditioning import MaskStrategy, apply_strategies, check_references, parse_mask_strategy
from opensora.inference.media import load_reference
from opensora.inference.prompts import PromptRequest
from opensora.inference.sampling import sample
from opensora.inference.sizes import LoopSettings, VideoSize


def latent_size_v1_2(num_frames: int, height: int, width: int) -> tuple[int, int, int]:
    """Latent (T, H, W) of the 1.2 VAE: 8x spatial, each 17-frame chunk -> 5 frames (4x, causal)."""
    chunks, rest = divmod(num_frames, 17)
    return chunks * 5 + -(-rest // 4), -(-height // 8), -(-width // 8)


def vae_latent_size(vae: nn.Module, size: VideoSize) -> tuple[int, int, int]:
    if not hasattr(vae, "get_latent_size"):
        raise ConfigError(f"the VAE {type(vae).__name__} has no get_latent_size((T, H, W)): the pipeline "
                          "cannot size its latents")  # fmt: skip
    return tuple(vae.get_latent_size((size.num_frames, size.height, size.width)))


def check_fixed_latent_size(fixed: tuple[int, ...] | None, latent_size: tuple[int, int, int], size: VideoSize) -> None:
    """A model built for one latent size ``fixed`` (STDiT 1.0's ``input_size``) samples only that size."""
    if fixed is not None and tuple(latent_size) != tuple(fixed):
        raise ConfigError(
            f"this model samples latents of exactly {list(fixed)} (T, H, W); "
            f"{size.num_frames}x{size.height}x{size.width} gives {list(latent_size)}: "
            "set num_frames and image_size to match"
        )


@dataclass
class STDiTAdapter:
    """The 1.x models: ``model(x, timestep, y=..., mask=..., x_mask=..., height/width/num_frames/ar/fps)``."""

    latent_channels: int = 4
    fixed_latent_size: tuple[int, int, int] | None = None  # STDiT 1.0 samples its input_size only

    def latent_size(self, vae: nn.Module | None, size: VideoSize) -> tuple[int, int, int]:
        # without a VAE (latents are the result) the latents are those the 1.2 VAE would make
        if vae is None:
            return latent_size_v1_2(size.num_frames, size.height, size.width)
        return vae_latent_size(vae, size)

    def check(self, requests: list[PromptRequest], size: VideoSize, loop: LoopSettings, latent_frames: int) -> None:
        for request in requests:
            if request.cond_type is not None:
                raise ConfigError(f"cond_type '{request.cond_type}' is for Open-Sora 2.0 models; the 1.x models "
                                  "place references with mask_strategy")  # fmt: skip
            check_references(parse_mask_strategy(request.mask_strategy), len(request.reference_paths),
                             f"prompt {request.text[:40]!r}")  # fmt: skip

    def check_latent_size(self, latent_size: tuple[int, int, int], size: VideoSize) -> None:
        check_fixed_latent_size(self.fixed_latent_size, latent_size, size)

    def reference_clips(self, request: PromptRequest, size: VideoSize) -> list[torch.Tensor]:
        return [load_reference(path, size.height, size.width, max_frames=max(size.num_frames, 1))
                for path in request.reference_paths]  # fmt: skip

    def reference_request(self, text: str, reference_path: str | None) -> PromptRequest:
        references = [reference_path] if reference_path else []
        return PromptRequest({0: text}, reference_paths=references, mask_strategy="0" if references else None)

    def encode_text(self, text_encoder: nn.Module, prompts: list[str], size: VideoSize) -> dict[str, torch.Tensor]:
        return text_encoder.encode(prompts)  # {"y": [B, 1, L, C], "mask": [B, L]}

    def sample(self, model: nn.Module, scheduler: object, z: torch.Tensor, text: dict, inputs: SamplingInputs):
        z, cond_mask = self.place_references(z, inputs)
        y, mask = text["y"].to(z.device, z.dtype), text["mask"].to(z.device)
        B, size = z.shape[0], inputs.size
        sizes = {
            "height": torch.full((B,), float(size.height), device=z.device),
            "width": torch.full((B,), float(size.width), device=z.device),
            "num_frames": torch.full((B,), float(size.num_frames), device=z.device),
            "fps": torch.full((B,), float(size.model_fps), device=z.device),
            "ar": torch.full((B,), size.height / size.width, device=z.device),
        }
        y_null = model.y_embedder.null(B).to(z.device, z.dtype)
        return sample(model, scheduler, z, y, y_null, {"mask": mask, **sizes}, cond_mask=cond_mask,
                      guidance_scale=inputs.guidance_scale, progress=inputs.progress,
                      noise_fn=inputs.noise_fn)  # fmt: skip

    def place_references(self, z: torch.Tensor, inputs: SamplingInputs) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``z`` with each request's references placed by its mask strategies, and the [B, T] mask
        (None when every frame is generated)."""
        samples, masks = [], []
        index, loop = inputs.loop_index, inputs.loop
        for z_i, refs, request in zip(z, inputs.references, inputs.requests, strict=True):
            strategies = parse_mask_strategy(request.mask_strategy)
            if index > 0:  # the last reference is the previous segment's tail
                k = loop.condition_frame_length
                strategies = [*strategies, MaskStrategy(index, len(refs) - 1, -k, 0, k, loop.condition_frame_edit)]
            z_i, mask_i = apply_strategies(z_i, refs, strategies, index, loop.align)
            samples.append(z_i)
            masks.append(mask_i)
        cond_mask = torch.stack(masks)
        if bool((cond_mask == 1).all()):
            return z, None
        return torch.stack(samples), cond_mask

    def tokens(self, model: nn.Module, latent_size: tuple[int, int, int]) -> tuple[int, int]:
        patch = model.config.get("patch_size", (1, 2, 2))
        tokens = 1
        for n, p in zip(latent_size, patch, strict=True):
            tokens *= -(-n // p)
        return tokens, 2  # the guidance batch holds prompt and null caption
