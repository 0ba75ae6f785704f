"""Write the demo world: captioned MP4 clips and PNG stills of coloured shapes, plus a metadata CSV.

    python tools/demo_world/generate.py --out data/demo --num-clips 3000 --seed 0

Deterministic by seed (each sample draws from its own generator). Training clips never show a
held-out (colour, shape, motion) triple (opensora.demo.world.is_held_out). The CSV has the
dataset columns (path, text, num_frames, height, width, fps), the scene's attributes and a motion
score (score_vmafmotion, for Open-Sora 2.0's captions; empty for stills).
"""

from __future__ import annotations

import argparse
import csv
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from opensora.demo.world import motion_score, random_scene, render, training_caption
from opensora.inference.media import write_mp4

FIELDS = ["path", "text", "num_frames", "height", "width", "fps", "colour", "shape", "motion", "background",
          "score_vmafmotion"]  # fmt: skip


def make_sample(args: tuple[int, int, Path, list[tuple[int, int]], list[int], float, int]) -> dict:
    index, seed, out, sizes, lengths, image_ratio, fps = args
    rng = np.random.default_rng([seed, index])
    height, width = sizes[int(rng.integers(len(sizes)))]
    is_image = rng.random() < image_ratio
    num_frames = 1 if is_image else lengths[int(rng.integers(len(lengths)))]
    scene = random_scene(rng, height, width, num_frames)
    frames = render(scene)
    name = f"{index:06d}.png" if is_image else f"{index:06d}.mp4"
    if is_image:
        Image.fromarray(frames[0]).save(out / name)
    else:
        write_mp4(out / name, frames, fps)
    text = training_caption(scene.colour, scene.shape, scene.motion, scene.background, rng)
    score = "" if is_image else round(motion_score(frames), 3)
    return dict(path=name, text=text, num_frames=num_frames, height=height, width=width, fps=0 if is_image else fps,
                colour=scene.colour, shape=scene.shape, motion=scene.motion, background=scene.background,
                score_vmafmotion=score)  # fmt: skip


def parse_size(text: str) -> tuple[int, int]:
    height, _, width = text.partition("x")
    return int(height), int(width)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (clips and meta.csv)")
    parser.add_argument("--num-clips", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[(64, 64), (64, 96), (96, 64)], help="HxW")
    parser.add_argument("--frames", nargs="+", type=int, default=[17, 34])
    parser.add_argument("--image-ratio", type=float, default=0.1, help="fraction of samples that are stills")
    parser.add_argument("--fps", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(i, args.seed, out, args.sizes, args.frames, args.image_ratio, args.fps) for i in range(args.num_clips)]
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            rows = list(pool.map(make_sample, jobs, chunksize=32))
    else:
        rows = [make_sample(job) for job in jobs]
    meta = out / "meta.csv"
    with meta.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} samples and {meta}")
    return meta


if __name__ == "__main__":
    main()
