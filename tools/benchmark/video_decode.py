"""Benchmark clip decoding: random windows read from a generated H.264 file, per worker process.

Writes a ``--frames``-frame H.264 video at ``--size`` to a temporary folder, then each of
``--workers`` processes reads random ``--clip-frames``-frame windows with ``read_clip`` for
``--seconds``. Prints one JSON line per worker count: clips per second per worker and in total,
and the mean number of frames decoded per clip. ``--naive`` adds the same reads decoded from the
first frame without seeking, for comparison.

    python tools/benchmark/video_decode.py
    python tools/benchmark/video_decode.py --workers 1 2 4 --gop 250 --naive
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from opensora.datasets.video_io import read_clip


def write_test_video(path: Path, num_frames: int, height: int, width: int, fps: int, gop: int) -> None:
    """Moving gradients plus a little noise: smooth like real footage, never static."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps), options={"preset": "medium", "crf": "23"})
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        stream.codec_context.gop_size = gop
        for t in range(num_frames):
            red = 128 + 100 * np.sin((cols + 3 * t) / 23)
            green = 128 + 100 * np.cos((rows - 2 * t) / 17)
            blue = 128 + 60 * np.sin((rows + cols + t) / 31)
            image = np.stack([red, green, blue], axis=-1) + rng.normal(0, 4, (height, width, 1))
            frame = av.VideoFrame.from_ndarray(image.clip(0, 255).astype(np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def naive_read(path: Path, start: int, num_frames: int) -> int:
    """Decode from the first frame up to the window's end, keeping the window; returns frames decoded."""
    kept = []
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index >= start:
                kept.append(frame.to_ndarray(format="rgb24"))
            if len(kept) == num_frames:
                return index + 1
    raise RuntimeError("video shorter than the window")


def worker(args: tuple[str, int, int, float, int, bool]) -> dict[str, float]:
    """Read random windows for ``seconds``; clips read and mean frames decoded per clip."""
    path, total, clip_frames, seconds, seed, naive = args
    rng = np.random.default_rng(seed)
    clips = decoded = 0
    deadline = time.perf_counter() + seconds
    begin = time.perf_counter()
    while time.perf_counter() < deadline:
        if naive:
            decoded += naive_read(Path(path), int(rng.integers(0, total - clip_frames + 1)), clip_frames)
        else:
            decoded += read_clip(path, clip_frames, rng=rng).decoded_frames
        clips += 1
    elapsed = time.perf_counter() - begin
    return {"clips": clips, "seconds": elapsed, "decoded_per_clip": decoded / max(clips, 1)}


def run(path: Path, args: argparse.Namespace, workers: int, naive: bool) -> dict[str, object]:
    jobs = [(str(path), args.frames, args.clip_frames, args.seconds, seed, naive) for seed in range(workers)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        results = pool.map(worker, jobs)
    per_worker = [r["clips"] / r["seconds"] for r in results]
    return {
        "method": "naive" if naive else "read_clip",
        "workers": workers,
        "clips_per_s_per_worker": round(float(np.mean(per_worker)), 2),
        "clips_per_s_total": round(float(np.sum(per_worker)), 2),
        "frames_per_s_total": round(float(np.sum(per_worker)) * args.clip_frames, 1),
        "decoded_per_clip": round(float(np.mean([r["decoded_per_clip"] for r in results])), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300, help="length of the generated video")
    parser.add_argument("--clip-frames", type=int, default=51, help="frames per clip")
    parser.add_argument("--size", default="426x240", help="WxH of the generated video")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--gop", type=int, default=60, help="keyframe interval of the generated video")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker process counts to try")
    parser.add_argument("--seconds", type=float, default=5.0, help="reading time per worker")
    parser.add_argument("--naive", action="store_true", help="also time decoding from the first frame")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.mp4"
        write_test_video(path, args.frames, height, width, args.fps, args.gop)
        setup = {"size": args.size, "frames": args.frames, "clip_frames": args.clip_frames, "gop": args.gop}
        print(json.dumps({**setup, "file_kib": path.stat().st_size // 1024}), flush=True)
        for workers in args.workers:
            for naive in (False, True) if args.naive else (False,):
                print(json.dumps(run(path, args, workers, naive)), flush=True)


if __name__ == "__main__":
    main()
