"""Reconstruct videos with a video VAE: the originals, the VAE's and (1.2) the per-frame VAE's versions.

For every clip the dataset reads from a metadata CSV files of the same frame count and fps are
written, under one name: ``<save_dir>_ori/`` the clip as the VAE sees it (resized and cropped),
``<save_dir>_rec/`` decode(encode(x)), and for the 1.2 pipeline ``<save_dir>_spatial/`` its
per-frame VAE alone (spatial decode(encode(x))). The 2.0 VAEs (Hunyuan, Video DC-AE) code the video
in one network and have no spatial folder. eval/vae/eval_common_metric.py pairs the folders by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import DataLoader

from opensora.datasets import collate
from opensora.errors import ConfigError
from opensora.eval.pixel_metrics import psnr
from opensora.inference.media import save_sample
from opensora.models.checkpoint_io import parse_dtype
from opensora.models.vae.dc_ae import VideoDCAE
from opensora.models.vae.hunyuan import AutoencoderKLCausal3D
from opensora.models.vae.pipeline import VideoAutoencoderPipeline
from opensora.registry import DATASETS, MODELS, build_module

FOLDERS = ("ori", "rec", "spatial")
VIDEO_VAES = (VideoAutoencoderPipeline, AutoencoderKLCausal3D, VideoDCAE)


def _default_dataset() -> dict:
    return {"type": "VideoTextDataset", "num_frames": 17, "image_size": (256, 256), "transform_name": "resize_crop"}


@dataclass
class VAEInferenceConfig:
    model: dict  # a video VAE (VIDEO_VAES); --ckpt-path sets model.from_pretrained
    dataset: dict = field(default_factory=_default_dataset)  # --data-path sets dataset.data_path
    save_dir: str = "samples/vae"
    batch_size: int = 1
    num_workers: int = 4
    dtype: Literal["fp32", "fp16", "bf16"] = "bf16"
    device: str | None = None  # default: cuda when available, else cpu
    seed: int = 42
    sample: bool = False  # encode posterior samples (seeded) instead of their means


@dataclass
class ReconstructionReport:
    folders: dict[str, Path]  # {"ori" | "rec" [| "spatial"]: folder}
    written: int  # clips written to each folder
    skipped: int  # unreadable clips (or too short for the frame count)
    psnr: dict[str, float]  # mean PSNR in dB against the originals, of "rec" [and "spatial"]


def output_folders(save_dir: str | Path, kinds: tuple[str, ...] = FOLDERS) -> dict[str, Path]:
    """``{"ori": DIR_ori, "rec": DIR_rec, "spatial": DIR_spatial}`` (of ``kinds``) for ``save_dir`` DIR."""
    base = Path(save_dir)
    return {kind: base.with_name(f"{base.name}_{kind}") for kind in kinds}


@torch.no_grad()
def reconstruct(
    vae: torch.nn.Module, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, ...]:
    """Reconstructions of ``x`` [B, 3, T, H, W] in [-1, 1], clamped to that range: the VAE's, then
    (the 1.2 pipeline) its per-frame VAE's alone."""
    z = vae.encode(x, sample=sample, generator=generator)  # (B, C, T', h, w)
    rec = vae.decode(z, num_frames=x.shape[2]).clamp(-1, 1)
    if not isinstance(vae, VideoAutoencoderPipeline):
        return (rec,)
    spatial = vae.spatial_vae.decode(vae.spatial_vae.encode(x, sample=sample, generator=generator))
    return rec, spatial.clamp(-1, 1)


def run_reconstruction(cfg: VAEInferenceConfig) -> ReconstructionReport:
    """Reconstruct every readable clip of ``cfg.dataset`` and write the three folders."""
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = parse_dtype(cfg.dtype)
    loader = build_loader(cfg)
    vae = build_module(cfg.model, MODELS)
    if not isinstance(vae, VIDEO_VAES):
        names = ", ".join(kind.__name__ for kind in VIDEO_VAES)
        raise ConfigError(f"inference_vae needs a video VAE ({names}), got {type(vae).__name__}")
    vae = vae.to(device, dtype).eval()
    kinds = FOLDERS if isinstance(vae, VideoAutoencoderPipeline) else FOLDERS[:2]
    folders = output_folders(cfg.save_dir, kinds)
    generator = torch.Generator(device).manual_seed(cfg.seed)
    written, scores = 0, {kind: [] for kind in kinds[1:]}
    for batch in loader:
        if batch is None:  # every clip of the batch was unreadable
            continue
        x = batch["video"].to(device, dtype)  # (B, 3, T, H, W) in [-1, 1]
        outputs = dict(zip(kinds, (x, *reconstruct(vae, x, cfg.sample, generator)), strict=True))
        for kind in kinds[1:]:
            scores[kind] += frame_psnr(x, outputs[kind]).tolist()
        for i in range(x.shape[0]):
            name = f"{int(batch['index'][i]):05d}_{Path(batch['path'][i]).stem}"
            for kind, video in outputs.items():
                save_sample(video[i], folders[kind] / name, float(batch["fps"][i]))
        written += x.shape[0]
    skipped = len(loader.dataset) - written
    mean_psnr = {kind: _finite_mean(values) for kind, values in scores.items()}
    return ReconstructionReport(folders, written, skipped, mean_psnr)


def build_loader(cfg: VAEInferenceConfig) -> DataLoader:
    """The clips in metadata order; an unreadable or too short clip is dropped, not replaced."""
    path = cfg.dataset.get("data_path")
    if not path:
        raise ConfigError("no data: pass --data-path FILE (a metadata CSV; sets dataset.data_path)")
    if not Path(path).exists():
        raise ConfigError(f"data '{path}' does not exist (set it with --data-path)")
    dataset = build_module({"replace_bad": False, **cfg.dataset}, DATASETS, seed=cfg.seed)
    return DataLoader(
        dataset, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers, collate_fn=collate
    )


def frame_psnr(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each frame of each clip, [B, 3, T, H, W] in [-1, 1] twice -> (B,) means over frames."""
    B, C, T, H, W = real.shape
    frames = [((v.float() + 1) / 2).transpose(1, 2).reshape(B * T, C, H, W) for v in (real, fake)]  # (B*T, 3, H, W)
    return psnr(*frames).reshape(B, T).mean(dim=1)


def _finite_mean(values: list[float]) -> float:
    finite = [value for value in values if math.isfinite(value)]
    return sum(finite) / len(finite) if finite else float("nan")
