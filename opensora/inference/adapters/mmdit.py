"""Open-Sora 2.0's MMDiT under the pipeline: T5 states plus a pooled CLIP vector, 2x2-packed latent
tokens, a cond tensor per conditioning mode (t2v, i2v_head/tail/loop, v2v_head/tail), and text
plus image guidance; or, for the guidance-distilled text-to-image Flux, one call per step."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from opensora.datasets.transforms import video_transform
from opensora.datasets.video_io import probe, read_clip
from opensora.errors import ConfigError
from opensora.inference.adapters.base import SamplingInputs
from opensora.inference.mmdit_sampling import (
    check_cond_type,
    distilled_denoise,
    image_ids,
    pack,
    reference_frame_ranges,
    sample_mmdit,
    text_ids,
    unpack,
)
from opensora.inference.prompts import PromptRequest
from opensora.inference.sizes import LoopSettings, VideoSize
from opensora.schedulers.shifted_flow import ShiftedFlow

MAX_FRAMES = 129  # the longest clips the 2.0 models were trained on


def causal_latent_frames(num_frames: int, temporal: int = 4) -> int:
    """Latent frames of a causal VAE (the first frame alone, then ``temporal`` frames per latent)."""
    return 1 if num_frames == 1 else (num_frames - 1) // temporal + 1


def check_num_frames(num_frames: int, causal: bool = True) -> None:
    """The frame counts the 2.0 models sample: 1 (an image) or 4k+1 up to 129; with a non-causal VAE
    (the DC-AE: 4 frames per latent, decoded videos cut to length) 4k as well, from 8: its single
    latent frame decodes to a single frame, so 4 frames cannot come out."""
    allowed = (1,) if causal else (0, 1)
    fits = num_frames == 1 or (num_frames % 4 in allowed and num_frames > 4)
    if not fits or num_frames > MAX_FRAMES:
        rule = "4k+1 (5, 9, ..., 129)" if causal else "4k or 4k+1 from 5 (5, 8, 9, ..., 128, 129)"
        raise ConfigError(f"num_frames {num_frames}: Open-Sora 2.0 samples 1 frame or {rule}, at most {MAX_FRAMES}")


def decorate_prompt(text: str, fps: float, motion_score: str | int | float | None) -> str:
    """The release's prompt suffixes: ``" {fps} FPS."`` after a final full stop, then the motion score."""
    text = text.strip()
    if not text.endswith("."):
        text += "."
    text = f"{text} {fps:g} FPS."
    if motion_score is not None:
        text = f"{text} {motion_score} motion score."
    return text


@dataclass
class MMDiTAdapter:
    """``model(img, img_ids, txt, txt_ids, timesteps, y_vec, cond=None, guidance=None)`` on packed tokens."""

    latent_channels: int = 16
    patch_size: int = 2
    cond_type: str = "t2v"
    motion_score: str | int | float | None = None  # appended to each prompt as "{m} motion score."
    negative_prompt: str = ""
    causal: bool = True  # a causal VAE: 4k+1 frames, one more conditioned latent frame in v2v
    distilled: bool = False  # the guidance-distilled text-to-image Flux (no negatives, guidance as an input)
    replace_first_only: bool = True  # the release puts i2v reference frames back into sample 0 only
    text_tokens: int = 512  # T5 tokens per prompt (memory estimate)

    @classmethod
    def for_model(cls, model: nn.Module, vae: nn.Module | None = None, **options) -> MMDiTAdapter:
        config = model.config
        patch = config.get("patch_size", 2)
        distilled = bool(config.get("guidance_embed")) and not config.get("cond_embed")
        causal = bool(getattr(vae, "causal", True)) if vae is not None else True
        options = {key: value for key, value in options.items() if value is not None}
        return cls(config["in_channels"] // patch**2, patch, causal=causal, distilled=distilled, **options)

    # ---- sizes and checks ---------------------------------------------------------------------
    def latent_size(self, vae: nn.Module | None, size: VideoSize) -> tuple[int, int, int]:
        if vae is None:  # latents are the result: those of the release's 4x8x8 causal VAE
            T, H, W = causal_latent_frames(size.num_frames), -(-size.height // 8), -(-size.width // 8)
        else:
            if not hasattr(vae, "get_latent_size"):
                raise ConfigError(f"the VAE {type(vae).__name__} has no get_latent_size((T, H, W))")
            T, H, W = vae.get_latent_size((size.num_frames, size.height, size.width))
        p = self.patch_size
        return T, -(-H // p) * p, -(-W // p) * p  # whole 2x2 patches; the decoded frames are cropped back

    def request_cond_type(self, request: PromptRequest) -> str:
        return request.cond_type or self.cond_type

    def check(self, requests: list[PromptRequest], size: VideoSize, loop: LoopSettings, latent_frames: int) -> None:
        check_num_frames(size.num_frames, self.causal)
        if loop.loops > 1:
            raise ConfigError("loop is a 1.x option; Open-Sora 2.0 extends a video with --cond_type v2v_tail")
        kinds = {self.request_cond_type(r) for r in requests}
        if len(kinds) > 1:
            raise ConfigError(f"one batch samples one cond_type, got {sorted(kinds)}: use --batch-size 1")
        for request in requests:
            where = f"prompt {request.text[:40]!r}"
            if request.mask_strategy:
                raise ConfigError(f"{where}: mask_strategy is for the 1.x models; Open-Sora 2.0 uses --cond_type")
            check_cond_type(self.request_cond_type(request))
            check_references_for(self.request_cond_type(request), request, where, size.num_frames)

    def reference_request(self, text: str, reference_path: str | None) -> PromptRequest:
        if not reference_path:
            return PromptRequest({0: text}, cond_type="t2v")
        return PromptRequest({0: text}, reference_paths=[reference_path], cond_type="i2v_head")

    def reference_clips(self, request: PromptRequest, size: VideoSize) -> list[torch.Tensor]:
        """The frames of the reference files this request's mode conditions on (first / last frame, or
        the first / last 32 (+1) frames), resized to cover the video and centre-cropped."""
        paths = request.reference_paths
        cond_type = self.request_cond_type(request)
        if not paths or cond_type == "t2v":
            return []
        ranges = reference_frame_ranges(cond_type, [probe(path).num_frames for path in paths], self.causal)
        clips = []
        for part in ranges:
            clip = read_clip(paths[part.file], num_frames=part.stop - part.start, start=part.start)
            clips.append(video_transform(clip.frames, (size.height, size.width), "resize_crop"))
        return clips

    # ---- text and noise -----------------------------------------------------------------------
    def encode_text(self, text_encoder: nn.Module, prompts: list[str], size: VideoSize) -> dict[str, torch.Tensor]:
        """``txt`` [R, L, C] and ``y_vec`` [R, C']: R = 3B rows (prompts; negatives; negatives), or B rows
        when distilled."""
        if self.distilled:
            texts = list(prompts)
        else:
            decorated = [decorate_prompt(p, size.fps, self.motion_score) for p in prompts]
            texts = decorated + [self.negative_prompt] * (2 * len(prompts))
        out = text_encoder.encode(texts)
        if "y_vec" not in out:
            raise ConfigError("the MMDiT needs a pooled text vector (y_vec) besides the T5 states: use a "
                              "text_encoders entry with t5 and clip encoders")  # fmt: skip
        return {"txt": out["y"][:, 0], "y_vec": out["y_vec"]}

    # ---- sampling -----------------------------------------------------------------------------
    def sample(self, model: nn.Module, scheduler: object, z: torch.Tensor, text: dict, inputs: SamplingInputs):
        if not isinstance(scheduler, ShiftedFlow):
            raise ConfigError(f"the MMDiT samples with scheduler type 'rflow_v2', not {type(scheduler).__name__}")
        if inputs.guidance_scale is not None:  # a request's own text guidance; the shared scheduler stays
            scheduler = copy.copy(scheduler)
            scheduler.guidance = inputs.guidance_scale
        txt, y_vec = text["txt"].to(z.device, z.dtype), text["y_vec"].to(z.device, z.dtype)
        if self.distilled:
            return self._sample_distilled(model, scheduler, z, txt, y_vec)
        cond_type = self.request_cond_type(inputs.requests[0])
        references = [refs or None for refs in inputs.references]
        return sample_mmdit(model, scheduler, z, txt, y_vec, cond_type, references, causal=self.causal,
                            patch_size=self.patch_size, replace_first_only=self.replace_first_only)  # fmt: skip

    def _sample_distilled(self, model, scheduler: ShiftedFlow, z, txt, y_vec) -> torch.Tensor:
        B, _, T, H, W = z.shape
        grid = (T, H // self.patch_size, W // self.patch_size)
        timesteps = scheduler.timesteps(tokens_per_frame=grid[1] * grid[2], latent_frames=T)
        x = distilled_denoise(model, pack(z, self.patch_size), image_ids(B, *grid, device=z.device, dtype=z.dtype),
                              txt, text_ids(B, txt.shape[1], device=z.device, dtype=z.dtype), y_vec, timesteps,
                              scheduler.guidance)  # fmt: skip
        return unpack(x, grid, self.patch_size)

    def tokens(self, model: nn.Module, latent_size: tuple[int, int, int]) -> tuple[int, int]:
        T, H, W = latent_size
        p = self.patch_size
        return T * -(-H // p) * -(-W // p) + self.text_tokens, 1 if self.distilled else 3


def check_references_for(cond_type: str, request: PromptRequest, where: str, num_frames: int) -> None:
    """A conditioned mode has its reference (a file, or t2i2v's drawn frame) and fits the sample."""
    if cond_type == "t2v":
        return
    if not (request.reference_paths or request.reference_images):
        raise ConfigError(f"{where}: cond_type {cond_type} needs a reference (--ref FILE, or a "
                          "'reference_path' in the prompt's JSON)")  # fmt: skip
    if cond_type.startswith("i2v") and num_frames == 1:
        raise ConfigError(f"{where}: cond_type {cond_type} makes a video from an image: num_frames must be > 1")
