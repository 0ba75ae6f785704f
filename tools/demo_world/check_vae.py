"""Check a demo VAE before training on its latents: do colour, shape and motion survive a round trip?

Renders fresh scenes of the demo world (every triple, held-out ones included), passes them through
the VAE (posterior means) and reads the attributes back from the reconstructions with the same
image analysis as the prompt-following evaluation. A diffusion model cannot follow a prompt better
than its VAE can reproduce the answer, so this is the ceiling of ``eval/demo/evaluate.py``.

    python tools/demo_world/check_vae.py outputs/demo_vae_2d/diffusers --kind spatial
    python tools/demo_world/check_vae.py assets/demo/vae
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from opensora.demo.analysis import read_video
from opensora.demo.evaluation import ATTRIBUTES
from opensora.demo.world import SHAPES, held_out_triples, random_scene, render, seen_triples
from opensora.inference.media import to_uint8_frames
from opensora.models.vae.pipeline import VideoAutoencoderPipeline
from opensora.models.vae.spatial import SpatialVAE


def load_vae(path: str, kind: str) -> torch.nn.Module:
    if kind == "spatial":
        return SpatialVAE(from_pretrained=path).eval()
    return VideoAutoencoderPipeline.from_pretrained(path).float().eval()


@torch.no_grad()
def round_trip(vae: torch.nn.Module, frames: np.ndarray) -> np.ndarray:
    """uint8 (T, H, W, 3) -> the VAE's reconstruction, uint8 of the same shape."""
    video = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    z = vae.encode(video, sample=False)
    return to_uint8_frames(vae.decode(z, num_frames=frames.shape[0])[0])


def check(vae: torch.nn.Module, size: tuple[int, int, int], seed: int) -> dict:
    rng = np.random.default_rng(seed)
    correct = dict.fromkeys(ATTRIBUTES, 0)
    shapes_kept = dict.fromkeys(SHAPES, 0)  # shape is the fragile one: small corners round off
    errors = []
    triples = [*held_out_triples(), *seen_triples()]
    for triple in triples:
        scene = random_scene(rng, size[1], size[2], size[0], triple=triple)
        frames = render(scene)
        recon = round_trip(vae, frames)
        errors.append(np.abs(recon.astype(np.float32) - frames).mean())
        reading = read_video(recon)
        for attribute, truth in zip(correct, triple, strict=True):
            correct[attribute] += getattr(reading, attribute) == truth
        shapes_kept[triple[1]] += reading.shape == triple[1]
    return {
        "clips": len(triples),
        "mean_abs_error_levels": round(float(np.mean(errors)), 2),
        **{f"{k}_read_back": round(v / len(triples), 3) for k, v in correct.items()},
        "clips_per_shape": len(triples) // len(SHAPES),
        "shape_kept_by_shape": shapes_kept,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="a VideoAutoencoderPipeline folder, or a diffusers AutoencoderKL folder")
    parser.add_argument("--kind", choices=["pipeline", "spatial"], default="pipeline")
    parser.add_argument("--size", default="17x64x64", help="TxHxW of the rendered clips")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.split("x"))
    print(json.dumps(check(load_vae(args.path, args.kind), size, args.seed)))


if __name__ == "__main__":
    main()
