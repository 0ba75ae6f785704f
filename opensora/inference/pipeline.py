"""Text(-and-reference)-to-video pipeline for every model: encode prompts, sample, decode.

The command line, the Gradio demo and evaluation all call this one object. What differs between
model families (the text they read, their noise, how references condition them, how they are
called under guidance) is the job of a model adapter (:mod:`opensora.inference.adapters`); the
pipeline runs the stages in order and each holds on the device only what it needs (``offload``
parks the diffusion model and the VAE on the CPU while the other works).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from opensora.errors import ConfigError
from opensora.inference.adapters import ModelAdapter, SamplingInputs, STDiTAdapter
from opensora.inference.adapters.base import per_sample_randn
from opensora.inference.memory import StageMemory
from opensora.inference.prompts import PromptRequest
from opensora.inference.sampling import per_sample_noise
from opensora.inference.sizes import DEFAULT_FPS, LoopSettings, VideoSize, check_loop

__all__ = ["FirstFrameStage", "LoopSettings", "VideoPipeline", "VideoSize"]


@dataclass
class VideoPipeline:
    """Holds the parts of a text-to-video model and turns prompts into latents or videos."""

    model: nn.Module
    scheduler: object  # its adapter knows the loops it can drive (rflow, IDDPM, DPM-Solver; rflow_v2)
    text_encoder: nn.Module
    vae: nn.Module | None = None
    adapter: ModelAdapter = field(default_factory=STDiTAdapter)
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    offload: bool = False  # park the model and the VAE on the CPU while not in use
    first_frame: FirstFrameStage | None = None  # text-to-image-to-video: a text-to-image model draws frame 0

    # ---- sizes -------------------------------------------------------------------------------
    def latent_size(self, size: VideoSize) -> tuple[int, int, int]:
        return self.adapter.latent_size(self.vae, size)

    def video_frames_for(self, latent_frames: int) -> int:
        """The fewest video frames that encode to ``latent_frames`` latent frames."""
        frames = 1
        while self.latent_size(VideoSize(frames, 8, 8))[0] < latent_frames:
            frames += 1
        return frames

    def check_latent_size(self, latent_size: tuple[int, int, int], size: VideoSize) -> None:
        check = getattr(self.adapter, "check_latent_size", None)
        if check is not None:
            check(latent_size, size)

    # ---- stages ------------------------------------------------------------------------------
    @contextmanager
    def _resident(self, module: nn.Module | None, always: bool = False) -> Iterator[None]:
        """Hold ``module`` on the device for the block: when offloading (``always``: in any case) it
        waits on the CPU otherwise."""
        if module is None or self.device.type == "cpu" or not (self.offload or always):
            yield
            return
        module.to(self.device)
        try:
            yield
        finally:
            module.to("cpu")
            torch.cuda.empty_cache()

    def encode_text(self, prompts: list[str], size: VideoSize) -> dict[str, torch.Tensor]:
        """What the model reads of ``prompts``, on the device (see the adapter's ``encode_text``)."""
        with self._resident(self.text_encoder, always=True):  # a T5-XXL is not needed while sampling
            text = self.adapter.encode_text(self.text_encoder, prompts, size)
        return {key: value.to(self.device) for key, value in text.items()}

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """[3, T, H, W] in [-1, 1] -> latent [C, T', H', W'] (posterior mean: references are deterministic)."""
        self._need_vae("references")
        with self._resident(self.vae):
            return self.vae.encode(video[None].to(self.device, self.dtype), sample=False)[0]

    def decode(self, latents: torch.Tensor, num_frames: int, height: int, width: int) -> torch.Tensor:
        """Latents -> videos [B, 3, num_frames, height, width] in [-1, 1] (cropped to the size asked for)."""
        with self._resident(self.vae):
            video = self.vae.decode(latents.to(self.dtype), num_frames=num_frames)
        return video[:, :, :num_frames, :height, :width]

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
        loop: LoopSettings | None = None,
        guidance_scale: float | None = None,
        memory: StageMemory | None = None,
        progress: bool = True,
    ) -> torch.Tensor:
        """Videos [B, 3, T, H, W] for the requests (latents when no VAE is configured).

        Each request's references are encoded once and condition the sample as its adapter says;
        with ``loop.loops > 1`` every further segment starts from the last frames of the one before,
        so the result has ``loops * (T - k) + k`` frames, k the frames those latents decode to.
        """
        loop = loop or LoopSettings()
        stage = memory.stage if memory is not None else (lambda _name: nullcontext())
        latent_size = self.latent_size(size)
        self.check_latent_size(latent_size, size)
        self._check_loop(loop, latent_size[0])
        if self.first_frame is not None:
            requests = self.first_frame.draw(requests, size, seeds, stage, progress)
        self.adapter.check(requests, size, loop, latent_size[0])
        with stage("references") if any(r.reference_paths or r.reference_images for r in requests) else nullcontext():
            references = self._encode_references(requests, size)
        generators = [torch.Generator(device=self.device).manual_seed(s) for s in seeds]
        overlap = self.video_frames_for(loop.condition_frame_length) if loop.loops > 1 else 0
        videos = None
        for index in range(loop.loops):
            with stage("text"):
                text = self.encode_text([r.text_for_loop(index) for r in requests], size)
            z = per_sample_randn(generators, (self.adapter.latent_channels, *latent_size), self.device, self.dtype)
            # later draws (re-noised references, IDDPM steps) continue each sample's own stream: never
            # global state, nor the other samples of the batch, nor a repeat of the starting noise
            inputs = SamplingInputs(requests, references, size, index, loop, per_sample_noise(generators),
                                    guidance_scale, progress)  # fmt: skip
            with stage("sampling"), self._resident(self.model):
                latents = self.adapter.sample(self.model, self.scheduler, z, text, inputs)
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

    def _check_loop(self, loop: LoopSettings, latent_frames: int) -> None:
        check_loop(loop, latent_frames)
        if loop.loops > 1:
            self._need_vae("loops")

    def _encode_references(self, requests: list[PromptRequest], size: VideoSize) -> list[list[torch.Tensor]]:
        references = []
        for request in requests:
            if request.reference_paths or request.reference_images:
                self._need_vae("references")
            clips = [*request.reference_images, *self.adapter.reference_clips(request, size)]
            references.append([self.encode_video(clip) for clip in clips])
        return references


@dataclass
class FirstFrameStage:
    """Text-to-image-to-video: ``pipeline`` (a text-to-image model and its image autoencoder) draws
    each request's first frame at ``image_size`` (H, W; None: the video's), which then conditions
    the video as the reference of ``cond_type`` (Open-Sora 2.0's t2i2v mode)."""

    pipeline: VideoPipeline
    image_size: tuple[int, int] | None = None
    cond_type: str = "i2v_head"

    def draw(self, requests: list[PromptRequest], size: VideoSize, seeds: list[int], stage, progress: bool):
        from opensora.datasets.transforms import resize_crop

        height, width = self.image_size or (size.height, size.width)
        image_requests = [PromptRequest({0: r.text}) for r in requests]
        with stage("first frame"):
            images = self.pipeline.generate(image_requests, VideoSize(1, height, width, size.fps), seeds,
                                            progress=progress)  # fmt: skip
        drawn = []
        for request, image in zip(requests, images, strict=True):
            frame = resize_crop(image.float().transpose(0, 1), size.height, size.width)  # (1, 3, H, W)
            drawn.append(request.with_first_frame(frame.transpose(0, 1).clamp(-1, 1), self.cond_type))
        return drawn
