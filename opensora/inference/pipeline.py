"""Text(-and-reference)-to-video pipeline: encode prompts, sample with guidance, decode.

The command line, the Gradio demo and evaluation all call this one object. Stages run in order
and each holds on the device only what it needs (``offload`` parks the diffusion model and the
VAE on the CPU while the other works).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from opensora.errors import ConfigError
from opensora.inference.conditioning import MaskStrategy, apply_strategies, check_references, parse_mask_strategy
from opensora.inference.media import load_reference
from opensora.inference.memory import StageMemory
from opensora.inference.prompts import PromptRequest
from opensora.inference.sampling import NoiseFn, per_sample_noise, sample

IMAGE_FPS = 120  # the frame rate the 1.2 models were conditioned on for still images
DEFAULT_FPS = 24  # the frame rate a video is conditioned on (and saved at) unless one is asked for


def latent_size_v1_2(num_frames: int, height: int, width: int) -> tuple[int, int, int]:
    """Latent (T, H, W) of the 1.2 VAE: 8x spatial, each 17-frame chunk -> 5 frames (4x, causal)."""
    chunks, rest = divmod(num_frames, 17)
    return chunks * 5 + -(-rest // 4), -(-height // 8), -(-width // 8)


@dataclass(frozen=True)
class VideoSize:
    num_frames: int
    height: int
    width: int
    fps: float = DEFAULT_FPS

    @property
    def model_fps(self) -> float:
        return IMAGE_FPS if self.num_frames == 1 else self.fps


@dataclass(frozen=True)
class LoopSettings:
    """Long generation: ``loops`` segments, each conditioned on the previous one's last frames."""

    loops: int = 1
    condition_frame_length: int = 5  # latent frames shared by consecutive segments
    condition_frame_edit: float = 0.0  # edit ratio of those frames (0 keeps them exactly)
    align: int | None = None  # snap reference and target starts to multiples of this many latent frames


def check_fixed_latent_size(fixed: tuple[int, ...] | None, latent_size: tuple[int, int, int], size: VideoSize) -> None:
    """A model built for one latent size ``fixed`` (STDiT 1.0's ``input_size``) samples only that size."""
    if fixed is not None and tuple(latent_size) != tuple(fixed):
        raise ConfigError(
            f"this model samples latents of exactly {list(fixed)} (T, H, W); "
            f"{size.num_frames}x{size.height}x{size.width} gives {list(latent_size)}: "
            "set num_frames and image_size to match"
        )


def check_loop(loop: LoopSettings, latent_frames: int) -> None:
    """Loop settings that fit segments of ``latent_frames`` latent frames."""
    if loop.loops < 1:
        raise ConfigError(f"loop must be >= 1, got {loop.loops}")
    if loop.loops > 1 and not 1 <= loop.condition_frame_length < latent_frames:
        raise ConfigError(
            f"condition_frame_length {loop.condition_frame_length} must be between 1 and the "
            f"{latent_frames - 1} latent frames after the first of a {latent_frames}-latent-frame segment"
        )


@dataclass
class VideoPipeline:
    """Holds the parts of a text-to-video model and turns prompts into latents or videos."""

    model: nn.Module
    scheduler: object  # RectifiedFlow, IDDPM or DPMSolver: opensora.inference.sampling.sample picks the loop
    text_encoder: nn.Module
    vae: nn.Module | None = None
    in_channels: int = 4
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    offload: bool = False  # park the model and the VAE on the CPU while not in use

    # ---- sizes -------------------------------------------------------------------------------
    def latent_size(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        if self.vae is not None and hasattr(self.vae, "get_latent_size"):
            return tuple(self.vae.get_latent_size((num_frames, height, width)))
        return latent_size_v1_2(num_frames, height, width)

    def video_frames_for(self, latent_frames: int) -> int:
        """The fewest video frames that encode to ``latent_frames`` latent frames."""
        frames = 1
        while self.latent_size(frames, 8, 8)[0] < latent_frames:
            frames += 1
        return frames

    # ---- stages ------------------------------------------------------------------------------
    @contextmanager
    def _resident(self, module: nn.Module, always: bool = False) -> Iterator[None]:
        """Hold ``module`` on the device for the block: when offloading (``always``: in any case) it
        waits on the CPU otherwise."""
        if self.device.type == "cpu" or not (self.offload or always):
            yield
            return
        module.to(self.device)
        try:
            yield
        finally:
            module.to("cpu")
            torch.cuda.empty_cache()

    def encode_text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt embeddings [B, 1, L, C] and their mask [B, L] on the device."""
        with self._resident(self.text_encoder, always=True):  # a T5-XXL is not needed while sampling
            text = self.text_encoder.encode(prompts)
        return text["y"].to(self.device, self.dtype), text["mask"].to(self.device)

    def initial_noise(self, generators: list[torch.Generator], latent_size: tuple[int, int, int]) -> torch.Tensor:
        """Noise [B, C, T, H, W], sample i drawn from ``generators[i]`` so it does not depend on batching."""
        shape = (self.in_channels, *latent_size)
        return torch.stack([torch.randn(shape, generator=g, device=self.device, dtype=self.dtype) for g in generators])

    def sample_latents(
        self,
        y: torch.Tensor,
        mask: torch.Tensor,
        z: torch.Tensor,
        size: VideoSize,
        cond_mask: torch.Tensor | None = None,
        guidance_scale: float | None = None,
        progress: bool = True,
        noise_fn: NoiseFn | None = None,
    ) -> torch.Tensor:
        """Integrate from noise ``z`` [B, C, T', H', W'] (references placed per ``cond_mask``) to latents."""
        B = z.shape[0]
        sizes = {
            "height": torch.full((B,), float(size.height), device=self.device),
            "width": torch.full((B,), float(size.width), device=self.device),
            "num_frames": torch.full((B,), float(size.num_frames), device=self.device),
            "fps": torch.full((B,), float(size.model_fps), device=self.device),
            "ar": torch.full((B,), size.height / size.width, device=self.device),
        }
        y_null = self.model.y_embedder.null(B).to(self.device, self.dtype)
        with self._resident(self.model):
            return sample(self.model, self.scheduler, z, y, y_null, {"mask": mask, **sizes},
                          cond_mask=cond_mask, guidance_scale=guidance_scale, progress=progress,
                          noise_fn=noise_fn)  # fmt: skip

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """[3, T, H, W] in [-1, 1] -> latent [C, T', H', W'] (posterior mean: references are deterministic)."""
        self._need_vae("references")
        with self._resident(self.vae):
            return self.vae.encode(video[None].to(self.device, self.dtype), sample=False)[0]

    def decode(self, latents: torch.Tensor, num_frames: int, height: int, width: int) -> torch.Tensor:
        """Latents -> videos [B, 3, num_frames, height, width] in [-1, 1] (cropped to the size asked for)."""
        with self._resident(self.vae):
            video = self.vae.decode(latents.to(self.dtype), num_frames=num_frames)
        return video[..., :height, :width]

    def _need_vae(self, what: str) -> None:
        if self.vae is None:
            raise ConfigError(f"{what} need a VAE: add a 'vae' entry to the config")

    # ---- plain text-to-video -----------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        prompts: list[str],
        num_frames: int,
        height: int,
        width: int,
        fps: int = DEFAULT_FPS,
        seed: int = 0,
        guidance_scale: float | None = None,
        progress: bool = True,
    ) -> torch.Tensor:
        """Latents [B, C, T', H', W'] (or videos [B, 3, T, H, W] in [-1, 1] when a VAE is set)."""
        requests = [PromptRequest({0: text}) for text in prompts]
        seeds = [seed + i for i in range(len(prompts))]
        return self.generate(requests, VideoSize(num_frames, height, width, fps), seeds,
                             guidance_scale=guidance_scale, progress=progress)  # fmt: skip

    # ---- every mode --------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        requests: list[PromptRequest],
        size: VideoSize,
        seeds: list[int],
        loop: LoopSettings = LoopSettings(),
        guidance_scale: float | None = None,
        memory: StageMemory | None = None,
        progress: bool = True,
    ) -> torch.Tensor:
        """Videos [B, 3, T, H, W] for the requests (latents when no VAE is configured).

        Each request's references are encoded once and placed by its mask strategy; with
        ``loop.loops > 1`` every further segment starts from the last frames of the one before,
        so the result has ``loops * (T - k) + k`` frames, k the frames those latents decode to.
        """
        stage = memory.stage if memory is not None else (lambda _name: nullcontext())
        strategies = [parse_mask_strategy(r.mask_strategy) for r in requests]
        with stage("references") if any(r.reference_paths for r in requests) else nullcontext():
            references = self._encode_references(requests, strategies, size)
        generators = [torch.Generator(device=self.device).manual_seed(s) for s in seeds]
        latent_size = self.latent_size(size.num_frames, size.height, size.width)
        self.check_latent_size(latent_size, size)
        self._check_loop(loop, latent_size[0])
        overlap = self.video_frames_for(loop.condition_frame_length)
        videos = None
        for index in range(loop.loops):
            with stage("text"):
                y, mask = self.encode_text([r.text_for_loop(index) for r in requests])
            z = self.initial_noise(generators, latent_size)
            z, cond_mask = self._place_references(z, references, strategies, index, loop)
            # later draws (re-noised references, IDDPM steps) continue each sample's own stream: never
            # global state, nor the other samples of the batch, nor a repeat of the starting noise
            noise_fn = per_sample_noise(generators)
            with stage("sampling"):
                latents = self.sample_latents(y, mask, z, size, cond_mask, guidance_scale, progress, noise_fn)
            if self.vae is None:
                return latents
            with stage("decode"):
                segment = self.decode(latents, size.num_frames, size.height, size.width)
            videos = segment if videos is None else torch.cat([videos, segment[:, :, overlap:]], dim=2)
            if index + 1 < loop.loops:
                with stage("references"):
                    for refs, video in zip(references, videos, strict=True):
                        refs.append(self.encode_video(video[:, -overlap:]))
        return videos

    def check_latent_size(self, latent_size: tuple[int, int, int], size: VideoSize) -> None:
        check_fixed_latent_size(getattr(self.model, "input_size", None), latent_size, size)

    def _check_loop(self, loop: LoopSettings, latent_frames: int) -> None:
        check_loop(loop, latent_frames)
        if loop.loops > 1:
            self._need_vae("loops")

    def _encode_references(
        self, requests: list[PromptRequest], strategies: list[list[MaskStrategy]], size: VideoSize
    ) -> list[list[torch.Tensor]]:
        references = []
        for request, sample_strategies in zip(requests, strategies, strict=True):
            check_references(sample_strategies, len(request.reference_paths), f"prompt {request.text[:40]!r}")
            if request.reference_paths:
                self._need_vae("references")
            videos = [load_reference(path, size.height, size.width, max_frames=max(size.num_frames, 1))
                      for path in request.reference_paths]  # fmt: skip
            references.append([self.encode_video(video) for video in videos])
        return references

    def _place_references(
        self,
        z: torch.Tensor,
        references: list[list[torch.Tensor]],
        strategies: list[list[MaskStrategy]],
        index: int,
        loop: LoopSettings,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        samples, masks = [], []
        for z_i, refs, sample_strategies in zip(z, references, strategies, strict=True):
            if index > 0:  # the last reference is the previous segment's tail
                k = loop.condition_frame_length
                tail = MaskStrategy(index, len(refs) - 1, -k, 0, k, loop.condition_frame_edit)
                sample_strategies = [*sample_strategies, tail]
            z_i, mask_i = apply_strategies(z_i, refs, sample_strategies, index, loop.align)
            samples.append(z_i)
            masks.append(mask_i)
        cond_mask = torch.stack(masks)
        if bool((cond_mask == 1).all()):
            return z, None
        return torch.stack(samples), cond_mask
