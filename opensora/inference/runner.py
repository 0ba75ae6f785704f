"""Build a pipeline from an inference config, turn its prompts into requests, write the samples.

Under ``torchrun`` every process runs the same requests with the diffusion model's tokens split
across them (sequence parallelism); the first process writes the files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from opensora.acceleration.parallel import ParallelDims, destroy_distributed, init_distributed
from opensora.datasets.aspect import get_image_size, get_num_frames
from opensora.errors import ConfigError
from opensora.inference.config import InferenceConfig
from opensora.inference.media import save_sample
from opensora.inference.memory import StageMemory, estimate_peak, format_estimate
from opensora.inference.pipeline import LoopSettings, VideoPipeline, VideoSize
from opensora.inference.prompts import (
    PromptRequest,
    append_scores,
    check_camera_motion,
    parse_prompt,
    prompt_file_stem,
    read_prompt_file,
)
from opensora.models.checkpoint_io import parse_dtype
from opensora.registry import MODELS, SCHEDULERS, build_module


@dataclass(frozen=True)
class SampleJob:
    """One output file: prompt ``index`` (in the full prompt list), its ``k``-th sample."""

    index: int
    k: int
    request: PromptRequest
    stem: Path
    seed: int


def resolve_size(cfg: InferenceConfig) -> VideoSize:
    num_frames = get_num_frames(cfg.num_frames)
    if cfg.resolution is not None:
        height, width = get_image_size(cfg.resolution, cfg.aspect_ratio)
    else:
        height, width = cfg.image_size
        if height < 1 or width < 1:
            raise ConfigError(f"image_size must be two positive numbers (height width), got {height}x{width}")
    return VideoSize(num_frames, height, width, cfg.fps)


def build_pipeline(cfg: InferenceConfig, device: torch.device) -> VideoPipeline:
    dtype = parse_dtype(cfg.dtype)
    torch.manual_seed(cfg.seed)  # weights that are not loaded (tiny random configs) are reproducible too
    parked = torch.device("cpu") if cfg.offload else device
    text_encoder = build_module(cfg.text_encoder, MODELS).to("cpu")  # visits the device only to encode
    model = build_module(cfg.model, MODELS).to(parked, dtype).eval()
    vae = build_module(cfg.vae, MODELS)
    if vae is not None:
        vae = vae.to(parked, dtype).eval()
    scheduler = build_module(cfg.scheduler, SCHEDULERS)
    in_channels = model.config.get("in_channels", 4)
    return VideoPipeline(model, scheduler, text_encoder, vae, in_channels, device, dtype, offload=cfg.offload)


def read_requests(cfg: InferenceConfig) -> list[tuple[int, PromptRequest]]:
    """(index in the full list, request) for the prompts between start_index and end_index."""
    if cfg.prompt:
        lines = list(cfg.prompt)
    elif cfg.prompt_path:
        lines = read_prompt_file(cfg.prompt_path)
    else:
        raise ConfigError("no prompt: pass --prompt TEXT or --prompt-path FILE")
    check_camera_motion(cfg.camera_motion)
    references = _per_prompt(cfg.reference_path, len(lines), "reference_path")
    strategies = _per_prompt(cfg.mask_strategy, len(lines), "mask_strategy")
    start, end = cfg.start_index or 0, len(lines) if cfg.end_index is None else cfg.end_index
    requests = []
    for index in range(start, min(end, len(lines))):
        request = parse_prompt(lines[index], references[index], strategies[index])
        request = request.map_texts(lambda text: append_scores(text, cfg.aes, cfg.flow, cfg.camera_motion))
        requests.append((index, request))
    if not requests:
        raise ConfigError(f"no prompt between start_index {start} and end_index {end} ({len(lines)} prompts)")
    if cfg.llm_refine:
        requests = _refine(requests)
    return requests


def _per_prompt(values: list | None, count: int, key: str) -> list:
    if not values:
        return [None] * count
    if len(values) == 1:
        return list(values) * count
    if len(values) != count:
        raise ConfigError(f"{key} has {len(values)} entries for {count} prompts (give one, or one per prompt)")
    return [value if value not in ("", "None") else None for value in values]


def _refine(requests: list[tuple[int, PromptRequest]]) -> list[tuple[int, PromptRequest]]:
    from opensora.inference.refine import make_client, refine_prompts

    client = make_client()
    return [(index, request.map_texts(lambda text: refine_prompts([text], client)[0])) for index, request in requests]


def plan_jobs(cfg: InferenceConfig, requests: list[tuple[int, PromptRequest]]) -> list[SampleJob]:
    """The samples still to write; with prompt_as_path those whose file exists are skipped (resume)."""
    jobs = []
    for index, request in requests:
        for k in range(cfg.num_sample):
            stem = output_stem(cfg, index, request, k)
            if cfg.prompt_as_path and any(stem.with_name(stem.name + ext).exists() for ext in (".mp4", ".png")):
                continue
            jobs.append(SampleJob(index, k, request, stem, cfg.seed + index * cfg.num_sample + k))
    return jobs


def output_stem(cfg: InferenceConfig, index: int, request: PromptRequest, k: int) -> Path:
    if cfg.prompt_as_path:
        name = prompt_file_stem(request.text)
        name = f"{cfg.sample_name}_{name}" if cfg.sample_name else name
    else:
        name = f"{cfg.sample_name or 'sample'}_{index:04d}"
    if cfg.num_sample > 1:
        name = f"{name}-{k}"
    return Path(cfg.save_dir) / name


def run(cfg: InferenceConfig) -> list[Path]:
    """Sample every pending job in batches of ``cfg.batch_size``; returns the files written."""
    size = resolve_size(cfg)
    requests = read_requests(cfg)
    dims = _init_parallel(cfg)
    try:
        pipeline = build_pipeline(cfg, dims.device)
        if dims.sp_size > 1:
            from opensora.acceleration.sequence_parallel import apply_sequence_parallel

            apply_sequence_parallel(pipeline.model, dims.sp_group)
        return _sample_all(cfg, pipeline, size, plan_jobs(cfg, requests), dims)
    finally:
        destroy_distributed(dims)


def _init_parallel(cfg: InferenceConfig) -> ParallelDims:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return init_distributed(sp_size=world_size, device=cfg.device)


def _sample_all(
    cfg: InferenceConfig, pipeline: VideoPipeline, size: VideoSize, jobs: list[SampleJob], dims: ParallelDims
) -> list[Path]:
    say = print if dims.is_main and cfg.verbose >= 1 else (lambda *_args, **_kw: None)
    loop = LoopSettings(cfg.loop, cfg.condition_frame_length, cfg.condition_frame_edit, cfg.align)
    latent = pipeline.latent_size(size.num_frames, size.height, size.width)
    pipeline.check_latent_size(latent, size)
    batch = min(cfg.batch_size, max(len(jobs), 1))
    estimate = estimate_peak(pipeline.model, pipeline.vae, pipeline.text_encoder, batch, latent, size.height,
                             size.width, pipeline.dtype.itemsize, pipeline.device)  # fmt: skip
    say(f"{len(jobs)} sample(s) of {size.num_frames}x{size.height}x{size.width} (latent {tuple(latent)}) "
        f"on {pipeline.device}; {format_estimate(estimate)}")  # fmt: skip
    memory = StageMemory(pipeline.device)
    save_fps = cfg.save_fps or max(1, cfg.fps // cfg.frame_interval)
    written = []
    for start in range(0, len(jobs), cfg.batch_size):
        batch = jobs[start : start + cfg.batch_size]
        samples = pipeline.generate([job.request for job in batch], size, [job.seed for job in batch], loop,
                                    memory=memory, progress=dims.is_main and cfg.verbose >= 2)  # fmt: skip
        if not dims.is_main:
            continue
        for job, sample in zip(batch, samples, strict=True):
            path = _save(sample, job.stem, save_fps, pipeline.vae is None, cfg.reproducible_video)
            say(f"saved {path}  [{job.request.text[:60]}]")
            written.append(path)
    if jobs:
        say(memory.report())
    return written


def _save(sample: torch.Tensor, stem: Path, fps: float, is_latent: bool, reproducible: bool) -> Path:
    if not is_latent:
        return save_sample(sample, stem, fps, reproducible)
    from safetensors.torch import save_file

    # without a VAE the latents are the result (benchmarks, latent-space tools)
    stem.parent.mkdir(parents=True, exist_ok=True)
    path = stem.with_name(stem.name + ".safetensors")
    save_file({"latent": sample.float().cpu().contiguous()}, str(path))
    return path
