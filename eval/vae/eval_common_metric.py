"""Compare reconstructed (or generated) videos with the real ones: SSIM, PSNR, LPIPS, FloLPIPS.

python eval/vae/eval_common_metric.py --real_video_dir real/ --generated_video_dir recon/ \
    --metric ssim psnr lpips flolpips --num_frames 17 --resolution 256 --crop_size 256 --csv scores.csv

Videos pair up by file stem. Prints each metric's mean over all frames of all videos and writes
per-video means to --csv. PSNR of identical frames is inf (no cap). LPIPS and FloLPIPS read their
weights from --lpips_weights DIR or $OPENSORA_EVAL_WEIGHTS (file names: opensora/eval/weights.py)
and are skipped with one line when a file is missing; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from opensora.config import run_cli
from opensora.eval import (
    METRICS,
    FrameOptions,
    MetricOptions,
    build_metrics,
    evaluate,
    pair_videos,
    summarise,
    weights_dir,
    write_csv,
)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--real_video_dir", required=True, help="folder of real videos")
    parser.add_argument("--generated_video_dir", required=True, help="folder of generated videos, same file stems")
    parser.add_argument("--metric", nargs="+", default=list(METRICS), choices=METRICS, help="metrics to compute")
    parser.add_argument("--num_frames", type=int, help="compare at most this many frames, from the first")
    parser.add_argument("--sample_fps", type=float, help="keep every round(fps / sample_fps)-th frame first")
    parser.add_argument("--resolution", type=int, help="resize the short side to this many pixels")
    parser.add_argument("--crop_size", type=int, help="then take the centre square of this side")
    parser.add_argument("--batch_size", type=int, default=8, help="frames per metric call")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--csv", default="eval_common_metric.csv", help="per-video results (CSV)")
    parser.add_argument("--lpips_weights", help="folder of LPIPS/RAFT weight files (else $OPENSORA_EVAL_WEIGHTS)")
    parser.add_argument("--lpips_net", default="alex", choices=("alex", "vgg"), help="LPIPS trunk")
    parser.add_argument("--flow_model", default="raft_small", choices=("raft_small", "raft_large"), help="RAFT size")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    args = make_parser().parse_args(argv)
    frames = FrameOptions(args.num_frames, args.sample_fps, args.resolution, args.crop_size)
    options = MetricOptions(
        device=args.device,
        batch_size=args.batch_size,
        lpips_net=args.lpips_net,
        flow_model=args.flow_model,
        weights=weights_dir(args.lpips_weights),
    )
    pairing = pair_videos(args.real_video_dir, args.generated_video_dir)
    if pairing.unmatched_line():
        print(pairing.unmatched_line())
    metrics, skipped = build_metrics(args.metric, options)
    for line in skipped:
        print(line)
    if not metrics:
        return {}
    results = evaluate(pairing.pairs, metrics, frames, options)
    names = [metric.name for metric in metrics]
    summary = summarise(results, names)
    for name in names:
        counted = sum(result.values[name].numel() for result in results)
        print(f"{name}: {summary[name]:.6f} (mean over {counted} frames of {len(results)} videos)")
    if "psnr" in summary and summary["psnr"] == float("inf"):
        print("psnr: inf means some frames are identical (PSNR of identical frames is inf, not capped)")
    print(f"per-video values written to {write_csv(results, names, args.csv)}")
    return summary


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
