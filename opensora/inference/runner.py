"""Build a pipeline from an inference config and write its samples."""

from __future__ import annotations

from pathlib import Path

import torch

from opensora.errors import ConfigError
from opensora.inference.config import InferenceConfig
from opensora.inference.pipeline import VideoPipeline
from opensora.models.checkpoint_io import parse_dtype
from opensora.registry import MODELS, SCHEDULERS, build_module


def build_pipeline(cfg: InferenceConfig) -> VideoPipeline:
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = parse_dtype(cfg.dtype)
    torch.manual_seed(cfg.seed)  # weights that are not loaded (tiny random configs) are reproducible too
    text_encoder = build_module(cfg.text_encoder, MODELS).to(device)
    model = build_module(cfg.model, MODELS).to(device, dtype).eval()
    vae = build_module(cfg.vae, MODELS)
    if vae is not None:
        vae = vae.to(device, dtype).eval()
    scheduler = build_module(cfg.scheduler, SCHEDULERS)
    in_channels = model.config.get("in_channels", 4)
    return VideoPipeline(model, scheduler, text_encoder, vae, in_channels, device, dtype)


def read_prompts(cfg: InferenceConfig) -> list[str]:
    if cfg.prompt:
        return list(cfg.prompt)
    if cfg.prompt_path:
        path = Path(cfg.prompt_path)
        if not path.is_file():
            raise ConfigError(f"prompt file '{path}' does not exist")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    raise ConfigError("no prompt: pass --prompt TEXT or --prompt-path FILE")


def run(cfg: InferenceConfig) -> list[Path]:
    """Sample every prompt in batches of ``cfg.batch_size``; returns the files written."""
    pipeline = build_pipeline(cfg)
    prompts = read_prompts(cfg)
    out_dir = Path(cfg.outputs)
    out_dir.mkdir(parents=True, exist_ok=True)
    height, width = cfg.image_size
    written = []
    for start in range(0, len(prompts), cfg.batch_size):
        batch = prompts[start : start + cfg.batch_size]
        samples = pipeline(batch, cfg.num_frames, height, width, fps=cfg.fps, seed=cfg.seed + start,
                           guidance_scale=cfg.cfg_scale)  # fmt: skip
        for offset, sample in enumerate(samples):
            stem = out_dir / f"sample_{start + offset:04d}"
            written.append(save_sample(sample, stem, is_latent=pipeline.vae is None))
    return written


def save_sample(sample: torch.Tensor, stem: Path, is_latent: bool) -> Path:
    from safetensors.torch import save_file

    # latents until a VAE is configured; videos are written by the video I/O of the data pipeline
    path = stem.with_suffix(".safetensors")
    save_file({"latent" if is_latent else "video": sample.float().cpu().contiguous()}, str(path))
    return path
