"""Turn the demo's training checkpoints into the from_pretrained folders shipped in assets/demo.

    python tools/demo_world/finalize.py spatial outputs/demo_vae_2d --out outputs/demo_vae_2d/diffusers
    python tools/demo_world/finalize.py vae outputs/demo_vae --data data/demo/meta.csv --out assets/demo/vae
    python tools/demo_world/finalize.py dit outputs/demo --out assets/demo/stdit3

``spatial`` writes the per-frame VAE of step 1 in diffusers' format (what ``spatial_vae_weights`` of
the second step reads). ``vae`` and ``dit`` export the EMA weights in float16 (the repository holds
them; models compute in the dtype the inference config asks for). For the VAE, the latent shift
and scale are set to the per-channel mean
and standard deviation over ``--clips`` training clips, so the diffusion model sees unit-scale
latents, as the release's constants do for its VAE.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

import torch

from opensora.datasets.transforms import video_transform
from opensora.datasets.video_io import read_clip
from opensora.models.vae.pipeline import VideoAutoencoderPipeline
from opensora.registry import MODELS, build_module
from opensora.training.export import export_ema


@torch.no_grad()
def latent_statistics(vae: VideoAutoencoderPipeline, meta: Path, clips: int, frames: int) -> tuple[list, list]:
    """Per-channel mean and std of the unnormalised latents of the first ``clips`` videos of ``meta``."""
    vae.scale.fill_(1.0)
    vae.shift.fill_(0.0)
    rows = [row for row in csv.DictReader(meta.open()) if int(row["num_frames"]) >= frames][:clips]
    latents = []
    for row in rows:
        clip = read_clip(meta.parent / row["path"], frames).frames
        video = video_transform(clip, (int(row["height"]), int(row["width"])))[None]  # (1, 3, T, H, W)
        latents.append(vae.encode(video, sample=False).transpose(0, 1).flatten(1))  # (C, N)
    z = torch.cat(latents, dim=1)
    return z.mean(dim=1).tolist(), z.std(dim=1).tolist()


def finalize_vae(checkpoint: str, meta: Path, out: Path, clips: int) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        exported = export_ema(checkpoint, Path(tmp) / "vae")
        vae = VideoAutoencoderPipeline.from_pretrained(exported).float().eval()
    mean, std = latent_statistics(vae, meta, clips, frames=vae.micro_frame_size or 17)
    config = {**vae.config, "shift": [round(v, 4) for v in mean], "scale": [round(v, 4) for v in std]}
    final = build_module({"type": "VideoAutoencoderPipeline", **config}, MODELS)
    weights = {k: v for k, v in vae.state_dict().items() if k not in ("scale", "shift")}
    final.load_state_dict(weights, strict=False)
    print(f"latent shift {config['shift']} scale {config['scale']}")
    return final.half().save_pretrained(out)


def finalize_spatial(checkpoint: str, out: Path) -> Path:
    from opensora.training.checkpoint import CheckpointManager

    found = CheckpointManager.find(checkpoint)
    states = CheckpointManager.load(found, ["model", "ema"])
    # the per-frame VAE keeps no config of its own: its architecture is the run's model entry
    model_cfg = json.loads((found.parent / "train_config.json").read_text())["model"]
    vae = build_module(model_cfg, MODELS)
    vae.load_state_dict({**states["model"], **(states.get("ema") or {})})
    vae.module.save_pretrained(out)
    return out


def finalize_dit(checkpoint: str, out: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        exported = export_ema(checkpoint, Path(tmp) / "dit")
        from opensora.models.stdit.stdit3 import STDiT3

        model = STDiT3.from_pretrained(exported)
    return model.half().save_pretrained(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["spatial", "vae", "dit"])
    parser.add_argument("checkpoint", help="a checkpoint folder or an outputs folder (its latest checkpoint)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", type=Path, help="the demo world's meta.csv (vae: latent statistics)")
    parser.add_argument("--clips", type=int, default=200)
    args = parser.parse_args(argv)
    if args.kind == "vae":
        if args.data is None:
            parser.error("vae needs --data META_CSV")
        written = finalize_vae(args.checkpoint, args.data, Path(args.out), args.clips)
    elif args.kind == "spatial":
        written = finalize_spatial(args.checkpoint, Path(args.out))
    else:
        written = finalize_dit(args.checkpoint, Path(args.out))
    print(f"wrote {written}")


if __name__ == "__main__":
    main()
