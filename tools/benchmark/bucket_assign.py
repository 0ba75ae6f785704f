"""Time ``Bucket.assign`` on random metadata: a mix of images and videos at 144p to 1080p.

    python tools/benchmark/bucket_assign.py --rows 1000000

Prints one JSON line with the rows, the seconds per assignment (best of ``--repeats``) and how many
samples were kept.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from opensora.datasets.bucket import Bucket

# A release-style multi-resolution config: many frame counts, frame keep-probabilities, images.
CONFIG = {
    "144p": {1: (1.0, 400), 51: (1.0, 48), 102: ((1.0, 0.33), 24), 204: ((1.0, 0.1), 12), 408: ((1.0, 0.1), 6)},
    "256": {1: (0.4, 300), 51: (0.5, 20), 102: ((0.5, 0.33), 10), 204: ((0.5, 0.1), 5), 408: ((0.5, 0.1), 2)},
    "240p": {1: (0.3, 300), 51: (0.4, 20), 102: ((0.4, 0.33), 10), 204: ((0.4, 0.1), 5), 408: ((0.4, 0.1), 2)},
    "360p": {1: (0.2, 140), 51: (0.15, 8), 102: ((0.15, 0.33), 4), 204: ((0.15, 0.1), 2), 408: ((0.15, 0.1), 1)},
    "512": {1: (0.1, 140)},
    "480p": {1: (0.1, 90), 51: (0.2, 4)},
    "720p": {1: (0.05, 36), 51: (0.1, 2)},
    "1024": {1: (0.05, 36)},
    "1080p": {1: (0.1, 5)},
}
SHORT_SIDES = np.array([144, 240, 360, 480, 720, 1080])
ASPECTS = np.array([16 / 9, 4 / 3, 1.0, 21 / 9, 2.0])


def random_metadata(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(num_frames, height, width): 20% images, videos of 2 to 900 frames, landscape and portrait."""
    rng = np.random.default_rng(seed)
    short = rng.choice(SHORT_SIDES, rows)
    long = np.round(short * rng.choice(ASPECTS, rows)).astype(np.int64)
    portrait = rng.random(rows) < 0.3
    height, width = np.where(portrait, long, short), np.where(portrait, short, long)
    num_frames = np.where(rng.random(rows) < 0.2, 1, rng.integers(2, 900, rows))
    return num_frames, height, width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frame-interval", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    num_frames, height, width = random_metadata(args.rows, args.seed)
    bucket = Bucket(CONFIG, seed=args.seed)
    times = []
    for epoch in range(args.repeats):
        start = time.perf_counter()
        assignment = bucket.assign(num_frames, height, width, frame_interval=args.frame_interval, epoch=epoch)
        times.append(time.perf_counter() - start)
    result = {
        "rows": args.rows,
        "buckets": len(bucket.buckets),
        "seconds": round(min(times), 3),
        "rows_per_second": round(args.rows / min(times)),
        "kept": int((assignment.bucket_index >= 0).sum()),
        "dropped": assignment.drop_counts(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
