"""Build a pipeline from an inference config, turn its prompts into requests, write the samples.

Under ``torchrun`` every process runs the same requests with the diffusion model's tokens split
across them (sequence parallelism); the first process writes the files.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from opensora.acceleration.parallel import ParallelDims, destroy_distributed, init_distributed
from opensora.datasets.aspect import get_image_size, get_num_frames
from opensora.datasets.video_io import probe
from opensora.errors import ConfigError
from opensora.inference.adapters import adapter_for, family
from opensora.inference.adapters.mmdit import MMDiTAdapter, check_num_frames
from opensora.inference.adapters.stdit import check_fixed_latent_size
from opensora.inference.conditioning import check_references, parse_mask_strategy, resolve_start
from opensora.inference.config import DEFAULT_ASPECT_RATIO_V2, InferenceConfig
from opensora.inference.media import save_sample
from opensora.inference.memory import StageMemory, estimate_peak, format_estimate
from opensora.inference.mmdit_sampling import check_cond_type, reference_frame_ranges
from opensora.inference.pipeline import FirstFrameStage, VideoPipeline
from opensora.inference.prompts import (
    PromptRequest,
    append_scores,
    check_camera_motion,
    parse_prompt,
    prompt_file_stem,
    read_prompt_file,
)
from opensora.inference.sizes import LoopSettings, VideoSize, check_loop
from opensora.models.checkpoint_io import parse_dtype
from opensora.registry import MODELS, SCHEDULERS, build_module, check_module_config


@dataclass(frozen=True)
class SampleJob:
    """One output file: prompt ``index`` (in the full prompt list), its ``k``-th sample."""

    index: int
    k: int
    request: PromptRequest
    stem: Path
    seed: int


def resolve_size(cfg: InferenceConfig) -> VideoSize:
    height, width = cfg.pixel_size()
    return VideoSize(get_num_frames(cfg.num_frames), height, width, cfg.fps)


# ---------------------------------------------------------------------------------------------
# Checking a request before anything is built
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """A checked request: the size to sample and the prompts, (index in the full list, request)."""

    size: VideoSize
    requests: list[tuple[int, PromptRequest]]


def check_request(cfg: InferenceConfig) -> Plan:
    """Every check of the config and its prompts that needs no weights, in one place.

    Runs before any model is loaded, so a mistake costs seconds rather than the minutes a real text
    encoder takes: see :func:`check_config`, then each prompt's mask strategies and reference files.
    Prompts are refined (``llm_refine``) only once everything else has passed.
    """
    size, latent = check_config(cfg)
    requests = read_requests(cfg)
    if is_mmdit(cfg):
        _check_conditioning_v2(cfg, [request for _, request in requests], size, latent)
    else:
        for _, request in requests:
            _check_conditioning(cfg, request, latent)
    if cfg.llm_refine:
        requests = _refine(requests)
    return Plan(size, requests)


def check_config(cfg: InferenceConfig) -> tuple[VideoSize, tuple[int, int, int] | None]:
    """(size, latent size when known before loading) after the checks that need neither weights nor prompts.

    The size, the scheduler (steps, guidance scale), the keys of every module config, the device, and
    what depends on the latent size. What needs a loaded module is checked again once it is there.
    """
    size = resolve_size(cfg)
    build_module(cfg.scheduler, SCHEDULERS)  # math only: built in milliseconds, and its checks run
    for module_cfg in (cfg.model, cfg.vae, cfg.text_encoder):
        check_module_config(module_cfg, MODELS)
    _check_device(cfg.device)
    _check_family_keys(cfg)
    if cfg.t2i is not None:
        _check_first_frame_config(cfg)
    return size, _check_latent_geometry(cfg, size)


def is_mmdit(cfg: InferenceConfig) -> bool:
    return family(cfg.model["type"]) == "mmdit"


def _check_family_keys(cfg: InferenceConfig) -> None:
    """Keys of one model family given to the other are refused rather than ignored."""
    if is_mmdit(cfg):
        used = [key for key in ("mask_strategy", "aes", "flow", "camera_motion") if getattr(cfg, key)]
        if used:
            raise ConfigError(f"{', '.join(used)}: 1.x option(s); Open-Sora 2.0 models take cond_type, "
                              "motion_score and negative_prompt")  # fmt: skip
        if cfg.cond_type is not None:
            check_cond_type(cfg.cond_type)
        return
    used = [key for key in ("cond_type", "motion_score", "negative_prompt", "t2i") if getattr(cfg, key) is not None]
    if used:
        raise ConfigError(f"{', '.join(used)}: Open-Sora 2.0 option(s), but model '{cfg.model['type']}' is a 1.x "
                          "model (use mask_strategy, aes, flow)")  # fmt: skip


FIRST_FRAME_KEYS = ("model", "vae", "scheduler", "resolution")  # the keys of a config's t2i entry


def _check_first_frame_config(cfg: InferenceConfig) -> None:
    unknown = sorted(set(cfg.t2i) - set(FIRST_FRAME_KEYS))
    missing = [key for key in ("model", "vae") if key not in cfg.t2i]
    if unknown or missing:
        raise ConfigError(f"t2i: unknown key(s) {unknown} / missing {missing} (keys: {', '.join(FIRST_FRAME_KEYS)})")
    for key in ("model", "vae"):
        check_module_config(cfg.t2i[key], MODELS)
    build_module(cfg.t2i.get("scheduler", {"type": "rflow_v2"}), SCHEDULERS)
    _first_frame_size(cfg)
    if cfg.cond_type not in (None, "t2v", "i2v_head"):
        raise ConfigError(f"t2i draws the first frame (cond_type i2v_head); cond_type {cfg.cond_type} cannot be used")


def _first_frame_size(cfg: InferenceConfig) -> tuple[int, int] | None:
    resolution = cfg.t2i.get("resolution")
    if resolution is None:
        return None
    return get_image_size(resolution, cfg.aspect_ratio or DEFAULT_ASPECT_RATIO_V2)


def _check_conditioning_v2(
    cfg: InferenceConfig, requests: list[PromptRequest], size: VideoSize, latent: tuple[int, int, int] | None
) -> None:
    """The 2.0 checks of :class:`MMDiTAdapter` (frame count, cond type, references given), then each
    reference file is read and long enough for its mode."""
    vae = _architecture(cfg.vae) if cfg.vae is not None else None
    adapter = MMDiTAdapter(cond_type=cfg.cond_type or "t2v", causal=bool(getattr(vae, "causal", True)))
    if cfg.t2i is not None:  # the drawn image is each request's reference
        frame = torch.zeros(3, 1, size.height, size.width)
        requests = [request.with_first_frame(frame, "i2v_head") for request in requests]
    adapter.check(requests, size, loop_settings(cfg), latent[0] if latent else 1)
    for request in requests:
        if request.reference_paths and cfg.vae is None:
            raise ConfigError(f"prompt {request.text[:40]!r}: references need a VAE: add a 'vae' entry to the config")
        if request.reference_paths and adapter.request_cond_type(request) != "t2v":
            frames = [probe(path).num_frames for path in request.reference_paths]
            reference_frame_ranges(adapter.request_cond_type(request), frames, adapter.causal)


def _check_device(device: str | None) -> None:
    if device is None:
        return
    try:
        picked = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r} (expected cpu, cuda or cuda:N)") from None
    if picked.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available here")


def _check_conditioning(cfg: InferenceConfig, request: PromptRequest, latent: tuple[int, int, int] | None) -> None:
    """Each mask strategy parses, applies to a loop that runs and places frames inside the sample (when
    its ``latent`` size is known); each reference is readable and placed."""
    where = f"prompt {request.text[:40]!r}"
    strategies = parse_mask_strategy(request.mask_strategy)
    check_references(strategies, len(request.reference_paths), where)
    for strategy in strategies:
        if strategy.loop >= cfg.loop:
            raise ConfigError(f"{where}: a mask strategy is for loop {strategy.loop}, but only loops "
                              f"0..{cfg.loop - 1} run (set loop)")  # fmt: skip
        if latent is not None and not 0 <= resolve_start(strategy.target_start, latent[0]) < latent[0]:
            raise ConfigError(f"{where}: mask strategy target start {strategy.target_start} lies outside the "
                              f"sample's {latent[0]} latent frames")  # fmt: skip
    used = {strategy.ref_index for strategy in strategies}
    for index, path in enumerate(request.reference_paths):
        probe(path)  # a missing or undecodable file fails here, in one line naming it
        if index not in used:
            raise ConfigError(f"{where}: reference {index} ('{path}') is placed by no mask strategy "
                              "(e.g. --mask-strategy 0 puts reference 0 at the first frame)")  # fmt: skip
    if request.reference_paths and cfg.vae is None:
        raise ConfigError(f"{where}: references need a VAE: add a 'vae' entry to the config")


def _check_latent_geometry(cfg: InferenceConfig, size: VideoSize) -> tuple[int, int, int] | None:
    """The latent size (T, H, W) and what depends on it, from the architectures built on the meta device.

    None when a module's architecture comes with its weights (a checkpoint folder or hub id): the
    pipeline checks again once they are loaded.
    """
    model = _architecture(cfg.model)
    if model is None:
        return None
    vae = _architecture(cfg.vae) if cfg.vae is not None else None
    if vae is None and cfg.vae is not None:
        return None
    adapter = adapter_for(model, vae=vae)
    if is_mmdit(cfg):  # the frame rule first: a causal VAE would size any count
        check_num_frames(size.num_frames, adapter.causal)
    T, H, W = adapter.latent_size(vae, size)
    check_fixed_latent_size(getattr(model, "input_size", None), (T, H, W), size)
    latent_channels = getattr(vae, "out_channels", None)
    if latent_channels is not None and adapter.latent_channels != latent_channels:
        raise ConfigError(f"the VAE gives {latent_channels}-channel latents; the model takes "
                          f"{adapter.latent_channels}-channel latents (in_channels {model.config.get('in_channels')})")
    check_loop(loop_settings(cfg), T)
    return T, H, W


_WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")  # weights only, no config.json


def loop_settings(cfg: InferenceConfig) -> LoopSettings:
    return LoopSettings(cfg.loop, cfg.condition_frame_length, cfg.condition_frame_edit, cfg.align)


def _architecture(module_cfg: dict) -> torch.nn.Module | None:
    """``module_cfg`` built on the meta device without weights; None when its shape comes with the weights.

    A single weights file (the 1.0 checkpoints) leaves the architecture to the config; a module that can
    skip its weights (the per-frame VAE, ``load_weights``) reads its shape without them.
    """
    kwargs = dict(module_cfg)
    runtime = {}
    source = kwargs.get("from_pretrained")
    if source and str(source).endswith(_WEIGHT_FILE_SUFFIXES):
        del kwargs["from_pretrained"]
    elif source:
        if "load_weights" not in inspect.signature(MODELS.get(kwargs["type"])).parameters:
            return None
        runtime = {"load_weights": False}
    with torch.device("meta"):
        return build_module(kwargs, MODELS, **runtime)


# ---------------------------------------------------------------------------------------------
# Building and sampling
# ---------------------------------------------------------------------------------------------


def build_pipeline(cfg: InferenceConfig, device: torch.device) -> VideoPipeline:
    dtype = parse_dtype(cfg.dtype)
    parked = torch.device("cpu") if cfg.offload else device
    text_encoder = _seeded_build(cfg.text_encoder, cfg.seed).to("cpu")  # visits the device only to encode
    model = _seeded_build(cfg.model, cfg.seed + 1).to(parked, dtype).eval()
    vae = _seeded_build(cfg.vae, cfg.seed + 2)
    if vae is not None:
        vae = vae.to(parked, dtype).eval()
    scheduler = build_module(cfg.scheduler, SCHEDULERS)
    tokens = getattr(text_encoder, "model_max_length", None)
    adapter = adapter_for(model, vae=vae, cond_type=cfg.cond_type, motion_score=cfg.motion_score,
                          negative_prompt=cfg.negative_prompt, text_tokens=tokens)  # fmt: skip
    first_frame = _build_first_frame(cfg, text_encoder, device, dtype) if cfg.t2i is not None else None
    return VideoPipeline(model, scheduler, text_encoder, vae, adapter, device, dtype, offload=cfg.offload,
                         first_frame=first_frame)  # fmt: skip


def _seeded_build(module_cfg: dict | None, seed: int):
    """``module_cfg`` built on the CPU; weights no checkpoint sets (tiny random configs) come from ``seed``,
    one per module (so loading one module's weights leaves the others' draws as they were), drawn from a
    forked generator so that the caller's random state is what it was."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return build_module(module_cfg, MODELS)


def _build_first_frame(cfg: InferenceConfig, text_encoder: torch.nn.Module, device, dtype) -> FirstFrameStage:
    """The text-to-image pipeline of t2i2v: its own model, image autoencoder and schedule; the same text encoders."""
    parked = torch.device("cpu") if cfg.offload else device
    model = _seeded_build(cfg.t2i["model"], cfg.seed + 3).to(parked, dtype).eval()
    vae = _seeded_build(cfg.t2i["vae"], cfg.seed + 4).to(parked, dtype).eval()
    scheduler = build_module(cfg.t2i.get("scheduler", {"type": "rflow_v2", "guidance": 4.0}), SCHEDULERS)
    pipeline = VideoPipeline(model, scheduler, text_encoder, vae, adapter_for(model, vae=vae), device, dtype,
                             offload=cfg.offload)  # fmt: skip
    return FirstFrameStage(pipeline, _first_frame_size(cfg))


def read_requests(cfg: InferenceConfig) -> list[tuple[int, PromptRequest]]:
    """(index in the full list, request) for the prompts between start_index and end_index, before
    any refinement (``check_request`` refines them once every check has passed)."""
    source = cfg.prompt_source()
    lines = source if isinstance(source, list) else read_prompt_file(source)
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
    plan = check_request(cfg)
    dims = _init_parallel(cfg)
    try:
        pipeline = build_pipeline(cfg, dims.device)
        if dims.sp_size > 1:
            from opensora.acceleration.sequence_parallel import apply_sequence_parallel

            apply_sequence_parallel(pipeline.model, dims.sp_group)
        return _sample_all(cfg, pipeline, plan.size, plan_jobs(cfg, plan.requests), dims)
    finally:
        destroy_distributed(dims)


def _init_parallel(cfg: InferenceConfig) -> ParallelDims:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return init_distributed(sp_size=world_size, device=cfg.device)


def _sample_all(
    cfg: InferenceConfig, pipeline: VideoPipeline, size: VideoSize, jobs: list[SampleJob], dims: ParallelDims
) -> list[Path]:
    say = print if dims.is_main and cfg.verbose >= 1 else (lambda *_args, **_kw: None)
    loop = loop_settings(cfg)
    latent = pipeline.latent_size(size)
    pipeline.check_latent_size(latent, size)
    batch = min(cfg.batch_size, max(len(jobs), 1))
    estimate = estimate_peak(pipeline, batch, latent, size, pipeline.dtype.itemsize)
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
