"""Measure a VAE's latent statistics on data and print the normalisation constants they give.

    python tools/datasets/latent_stats.py configs/vae/train/video_dc_ae.py --data-path data/meta.csv \\
        --vae-path outputs/video_dc_ae/epoch0-global_step100000 --num-samples 512 --output dcae_stats.json
    python tools/datasets/latent_stats.py configs/opensora-v2/inference/256px.py \\
        --cfg-options "dataset=dict(type='VideoTextDataset', num_frames=33, image_size=(256, 256))" \\
        --data-path data/meta.csv

Any VAE of the package: the config's ``vae`` (inference and diffusion training configs) or, without
one, its ``model`` (VAE training configs). Videos come from the config's ``dataset``. The VAE's own
normalisation is switched off while the raw latents (posterior means) are measured; the printed
``config`` holds the keys to set on that VAE (1.2: per-channel shift/scale; Hunyuan and Flux:
shift_factor/scale_factor; DC-AE: scaling_factor; SD VAE: scaling_factor). Unreadable files are
skipped and counted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader

from opensora import config as cfglib
from opensora.config import Flag, standard_flags
from opensora.datasets.dataloader import collate
from opensora.errors import ConfigError
from opensora.models.checkpoint_io import parse_dtype
from opensora.models.vae.latent_stats import measure, normalisation_config
from opensora.registry import DATASETS, MODELS, build_module


@dataclasses.dataclass
class StatsConfig:
    dataset: dict
    vae: dict
    num_samples: int = 256
    batch_size: int = 1
    num_workers: int = 0
    seed: int = 42
    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"
    device: str | None = None
    output: str | None = None


FLAGS = standard_flags("--data-path", "--seed", "--dtype", "--batch-size") + [
    Flag("--vae-path", "vae.from_pretrained", help="VAE weights (a checkpoint folder or file)"),
    Flag("--num-samples", "num_samples", int, "videos to measure"),
    Flag("--num-workers", "num_workers", int, "data loading processes"),
    Flag("--output", "output", help="also write the statistics to this JSON file"),
]


def load_config(argv: Sequence[str] | None) -> StatsConfig:
    parser = cfglib.make_parser(__doc__.strip().splitlines()[0], FLAGS)
    path, overrides, cfg_options = cfglib.parse_cli(parser, argv)
    cfg = cfglib.read_config(path)
    if "vae" not in cfg and "model" in cfg:  # a VAE training config: the model is the VAE
        cfg["vae"] = cfg.pop("model")
    cfg = cfglib.apply_overrides(cfg, overrides)
    cfg = cfglib.apply_overrides(cfg, cfglib.parse_cfg_options(cfg_options))
    for key in ("vae", "dataset"):
        if not cfg.get(key):
            raise ConfigError(f"{path} has no '{key}': give one with --cfg-options {key}=dict(...)")
    known = {field.name for field in dataclasses.fields(StatsConfig)}
    config = cfglib.validate({key: value for key, value in cfg.items() if key in known}, StatsConfig)
    if config.num_samples < 1:
        raise ConfigError(f"--num-samples must be at least 1, got {config.num_samples}")
    return config


def videos(loader: DataLoader) -> Iterator[torch.Tensor]:
    for batch in loader:
        if batch is not None:  # None: every file of the batch was unreadable
            yield batch["video"]


def latent_statistics(cfg: StatsConfig) -> dict[str, Any]:
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(cfg.seed)  # weights that are not loaded (tiny test configs) are reproducible too
    dataset = build_module(cfg.dataset, DATASETS, replace_bad=False, seed=cfg.seed)
    vae = build_module(cfg.vae, MODELS).to(device, parse_dtype(cfg.dtype)).eval()
    loader = DataLoader(dataset, batch_size=cfg.batch_size, collate_fn=collate, num_workers=cfg.num_workers)
    stats = measure(vae, videos(loader), cfg.num_samples)
    return {
        "vae": cfg.vae["type"],
        "videos": stats.samples,
        "skipped": min(cfg.num_samples, len(dataset)) - stats.samples,  # unreadable files
        "latent_values_per_channel": stats.count,
        "mean": [round(v, 6) for v in stats.mean.tolist()],
        "std": [round(v, 6) for v in stats.std.tolist()],
        "overall_mean": round(stats.overall_mean, 6),
        "overall_std": round(stats.overall_std, 6),
        "config": normalisation_config(vae, stats),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    cfg = load_config(argv)
    result = latent_statistics(cfg)
    text = json.dumps(result)
    if cfg.output:
        output = Path(cfg.output)
        partial = output.with_name(output.name + ".partial")
        partial.write_text(text + "\n")
        os.replace(partial, output)
    print(text)
    return result


if __name__ == "__main__":
    cfglib.run_cli(lambda: main(sys.argv[1:]))
