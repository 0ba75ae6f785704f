"""Evaluation metrics: SSIM, PSNR, LPIPS and FloLPIPS between real and generated videos.

``eval/vae/eval_common_metric.py`` is the command line; the library is importable on its own:

    from opensora.eval import FrameOptions, MetricOptions, build_metrics, evaluate, pair_videos
"""

from opensora.eval.flolpips import FloLPIPS, RaftFlow, load_raft
from opensora.eval.lpips import LPIPS, load_lpips
from opensora.eval.pixel_metrics import psnr, ssim
from opensora.eval.runner import (
    METRICS,
    Metric,
    MetricOptions,
    VideoScores,
    build_metrics,
    evaluate,
    summarise,
    write_csv,
)
from opensora.eval.videos import FrameOptions, Pairing, VideoPair, load_pair, pair_videos
from opensora.eval.weights import ENV_VAR, MetricUnavailableError, weights_dir

__all__ = [
    "ENV_VAR",
    "LPIPS",
    "METRICS",
    "FloLPIPS",
    "FrameOptions",
    "Metric",
    "MetricOptions",
    "MetricUnavailableError",
    "Pairing",
    "RaftFlow",
    "VideoPair",
    "VideoScores",
    "build_metrics",
    "evaluate",
    "load_lpips",
    "load_pair",
    "load_raft",
    "pair_videos",
    "psnr",
    "ssim",
    "summarise",
    "weights_dir",
    "write_csv",
]
