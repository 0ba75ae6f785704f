"""Encode a dataset once into feature shards: VAE latents and text embeddings, for FeatureDataset.

    python tools/datasets/extract_features.py configs/opensora-v1-2/train/stage1.py \\
        --data-path data/meta.csv --output data/features --shard-size 512

The config may be a training config: only the keys listed in ExtractConfig are read (dataset,
bucket_config, vae, text_encoder, seed, dtype, ...) and the rest are ignored. With a bucket_config
every sample is encoded at the frame count and size of its bucket in epoch 0's assignment;
otherwise at the dataset's fixed size. Latents are posterior means. Unreadable files are skipped
and counted. Shards are written atomically and the index last, so an interrupted run leaves no
usable folder behind.

Open-Sora 2.0 (a T5 + CLIP ``text_encoders`` config): each sample also stores its pooled CLIP
vector ``y_vec``, and with an i2v ``condition_config`` its first and last frames encoded alone
(``ref_head``, ``ref_tail``), which the i2v conditions are built from. The folder keeps the empty
prompt's embeddings (``null.*`` extras) for caption dropout.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader

from opensora import config as cfglib
from opensora.config import Flag, parse_bool, standard_flags
from opensora.datasets.bucket import Bucket
from opensora.datasets.dataloader import collate
from opensora.datasets.features import write_feature_shards
from opensora.errors import ConfigError, OpenSoraError
from opensora.models.checkpoint_io import parse_dtype
from opensora.registry import DATASETS, MODELS, build_module

META_KEYS = ("text", "path", "index", "num_frames", "height", "width", "fps", "ar")
TEXT_KEYS = ("y", "mask", "y_vec")  # T5 states and mask; 2.0's pooled CLIP vector


@dataclasses.dataclass
class ExtractConfig:
    dataset: dict
    vae: dict
    text_encoder: dict
    output: str | None = None
    bucket_config: dict | None = None
    batch_size: int = 1
    num_workers: int = 0
    shard_size: int = 256
    overwrite: bool = False
    seed: int = 42
    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"
    device: str | None = None
    condition_config: dict | None = None  # a 2.0 training mix: i2v modes make it store ref_head / ref_tail


FLAGS = standard_flags("--data-path", "--seed", "--dtype", "--batch-size") + [
    Flag("--output", "output", help="feature folder to write"),
    Flag("--shard-size", "shard_size", int, "samples per shard"),
    Flag("--num-workers", "num_workers", int, "data loading processes"),
    Flag("--overwrite", "overwrite", parse_bool, "replace an existing feature folder"),
]


def load_config(argv: Sequence[str] | None) -> ExtractConfig:
    parser = cfglib.make_parser(__doc__.strip().splitlines()[0], FLAGS)
    path, overrides, cfg_options = cfglib.parse_cli(parser, argv)
    cfg = cfglib.apply_overrides(cfglib.read_config(path), overrides)
    cfg = cfglib.apply_overrides(cfg, cfglib.parse_cfg_options(cfg_options))
    known = {field.name for field in dataclasses.fields(ExtractConfig)}
    config = cfglib.validate({key: value for key, value in cfg.items() if key in known}, ExtractConfig)
    if not config.output:
        raise ConfigError("no output folder: pass --output DIR")
    return config


def plan_batches(dataset: Any, cfg: ExtractConfig) -> tuple[list[list[Any]], int]:
    """Every sample once, in batches that stack; and how many samples no bucket takes."""
    if cfg.bucket_config is None:
        indices = list(range(len(dataset)))
        return [indices[i : i + cfg.batch_size] for i in range(0, len(indices), cfg.batch_size)], 0
    meta = dataset.metadata
    missing = [column for column in ("num_frames", "height", "width") if column not in meta]
    if missing:
        raise OpenSoraError(f"bucketed extraction needs metadata columns {', '.join(missing)} (probe the videos first)")
    bucket = Bucket(cfg.bucket_config, seed=cfg.seed)
    interval = getattr(dataset, "frame_interval", 1)
    assignment = bucket.assign(meta["num_frames"], meta["height"], meta["width"], interval, epoch=0)
    kept = np.flatnonzero(assignment.bucket_index >= 0)
    order = kept[np.argsort(assignment.bucket_index[kept], kind="stable")]  # grouped by bucket, in row order
    groups = np.split(order, np.flatnonzero(np.diff(assignment.bucket_index[order])) + 1) if len(order) else []
    batches = []
    for members in groups:
        bucket_id = assignment.buckets[assignment.bucket_index[members[0]]]
        size = bucket.batch_size(bucket_id)
        pairs = [(index, bucket_id) for index in members.tolist()]
        batches += [pairs[i : i + size] for i in range(0, len(pairs), size)]
    return batches, len(meta) - len(kept)


@torch.no_grad()
def encode(batches: Iterable[dict[str, Any] | None], vae: Any, text_encoder: Any, device: torch.device,
           dtype: torch.dtype, references: bool = False) -> Iterator[dict[str, Any]]:  # fmt: skip
    """One feature sample per readable input sample: latent x, text states y, mask (and y_vec, with
    ``references`` ref_head / ref_tail), and its fields."""
    for batch in batches:
        if batch is None:  # every sample of the batch was unreadable
            continue
        x = batch["video"].to(device, dtype)  # (B, 3, T, H, W)
        latents = {"x": vae.encode(x, sample=False)}  # (B, C, T', H/8, W/8)
        if references:  # each frame alone, so the rest of the clip cannot leak into the condition
            latents["ref_head"] = vae.encode(x[:, :, :1], sample=False)  # (B, C, 1, H/8, W/8)
            latents["ref_tail"] = vae.encode(x[:, :, -1:], sample=False)
        text = text_encoder.encode(list(batch["text"]))  # y: (B, 1, L, C), mask: (B, L), 2.0: y_vec (B, C')
        tensors = {**latents, **{key: text[key] for key in TEXT_KEYS if key in text}}
        for i in range(x.shape[0]):
            fields = {key: _pick(batch[key], i) for key in META_KEYS if key in batch}
            yield {**{key: value[i] for key, value in tensors.items()}, **fields}


def null_text(text_encoder: Any) -> dict[str, torch.Tensor]:
    """The empty prompt's embeddings, ``null.y`` [1, 1, L, C] (and ``null.mask``, ``null.y_vec``)."""
    text = text_encoder.encode([""])
    return {f"null.{key}": text[key] for key in TEXT_KEYS if key in text}


def needs_references(condition_config: dict | None) -> bool:
    return any(name.startswith("i2v") and weight for name, weight in (condition_config or {}).items())


def _pick(value: Any, i: int) -> Any:
    return value[i].item() if isinstance(value, torch.Tensor) else value[i]


def extract(cfg: ExtractConfig) -> tuple[Path, int, int]:
    """Write the features; returns (index path, samples written, samples skipped)."""
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(cfg.seed)  # weights that are not loaded (tiny test configs) are reproducible too
    dataset = build_module(cfg.dataset, DATASETS, replace_bad=False, seed=cfg.seed)
    vae = build_module(cfg.vae, MODELS).to(device, parse_dtype(cfg.dtype)).eval()
    text_encoder = build_module(cfg.text_encoder, MODELS).to(device)
    batches, unassigned = plan_batches(dataset, cfg)
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=cfg.num_workers)
    written = 0

    def counted(samples: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        nonlocal written
        for sample in samples:
            written += 1
            yield sample

    references = needs_references(cfg.condition_config)
    samples = counted(encode(loader, vae, text_encoder, device, parse_dtype(cfg.dtype), references))
    index = write_feature_shards(samples, cfg.output, cfg.shard_size, overwrite=cfg.overwrite,
                                 extras=null_text(text_encoder))  # fmt: skip
    planned = sum(len(batch) for batch in batches)
    return index, written, planned - written + unassigned


def main(argv: Sequence[str] | None = None) -> Path:
    cfg = load_config(argv)
    index, written, skipped = extract(cfg)
    print(f"wrote {written} samples to {index.parent} ({skipped} skipped: unreadable or in no bucket)")
    return index


if __name__ == "__main__":
    cfglib.run_cli(lambda: main(sys.argv[1:]))
