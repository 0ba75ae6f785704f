"""Scoring pairs of videos frame by frame with the reconstruction metrics, and reporting the results.

Every metric maps a pair of clips (T, 3, H, W) in [0, 1] to one value per frame; FloLPIPS, which
needs the frame before, gives T-1 (none for a one-frame clip). A video's value is the mean over its
frames; the summary is the mean over every frame of every video. PSNR of identical frames is
``inf``, so a mean that includes one is ``inf`` too.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from opensora.errors import OpenSoraError
from opensora.eval.flolpips import FloLPIPS, load_raft
from opensora.eval.lpips import LPIPS, load_lpips
from opensora.eval.pixel_metrics import psnr, ssim
from opensora.eval.videos import FrameOptions, VideoPair, load_pair
from opensora.eval.weights import MetricUnavailableError

METRICS = ("ssim", "psnr", "lpips", "flolpips")


@dataclass(frozen=True)
class MetricOptions:
    """Where and how the metric networks run, and where their weights are."""

    device: str = "cpu"
    batch_size: int = 8
    lpips_net: str = "alex"
    flow_model: str = "raft_small"
    weights: Path | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise OpenSoraError(f"--batch_size must be >= 1, got {self.batch_size}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise OpenSoraError(f"--device {self.device}: CUDA is not available here")


@dataclass(frozen=True)
class Metric:
    """A metric over image batches: ``score(real, generated)`` (N, 3, H, W) x2 -> (N,).

    With ``uses_previous`` it is ``score(real_prev, real, generated_prev, generated)`` instead.
    """

    name: str
    score: Callable[..., torch.Tensor]
    uses_previous: bool = False

    @torch.no_grad()
    def per_frame(self, real: torch.Tensor, generated: torch.Tensor, options: MetricOptions) -> torch.Tensor:
        """Values for the clips (T, 3, H, W), computed ``batch_size`` frames at a time on the device."""
        first = 1 if self.uses_previous else 0
        values = []
        for start in range(first, real.shape[0], options.batch_size):
            stop = min(start + options.batch_size, real.shape[0])
            args = [real[start:stop], generated[start:stop]]
            if self.uses_previous:
                args = [real[start - 1 : stop - 1], args[0], generated[start - 1 : stop - 1], args[1]]
            values.append(self.score(*(arg.to(options.device) for arg in args)).float().cpu())
        return torch.cat(values) if values else torch.empty(0)


@dataclass
class VideoScores:
    """One pair's per-frame values for each metric."""

    name: str
    num_frames: int
    values: dict[str, torch.Tensor] = field(default_factory=dict)

    def mean(self, metric: str) -> float:
        frames = self.values[metric]
        return float(frames.double().mean()) if frames.numel() else math.nan


def build_metrics(names: Sequence[str], options: MetricOptions) -> tuple[list[Metric], list[str]]:
    """The metrics that can run here, and one line for each that cannot (missing weights or package)."""
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise OpenSoraError(f"unknown metric {', '.join(unknown)} (known: {', '.join(METRICS)})")
    metrics, skipped = [], []
    lpips: LPIPS | None = None
    for name in dict.fromkeys(names):  # in order, once each
        try:
            if name in ("lpips", "flolpips") and lpips is None:
                lpips = load_lpips(options.lpips_net, options.weights, options.device)
            metrics.append(_metric(name, lpips, options))
        except MetricUnavailableError as exc:
            skipped.append(f"{name}: skipped, {exc}")
    return metrics, skipped


def _metric(name: str, lpips: LPIPS | None, options: MetricOptions) -> Metric:
    if name == "ssim":
        return Metric(name, ssim)
    if name == "psnr":
        return Metric(name, psnr)
    if name == "lpips":
        return Metric(name, lpips)
    flow = load_raft(options.flow_model, options.weights, options.device)
    return Metric(name, FloLPIPS(lpips, flow), uses_previous=True)


def evaluate(
    pairs: Iterable[VideoPair], metrics: Sequence[Metric], frames: FrameOptions, options: MetricOptions
) -> list[VideoScores]:
    """Load each pair (see :func:`opensora.eval.videos.load_pair`) and score it with every metric."""
    results = []
    for pair in pairs:
        real, generated = load_pair(pair, frames)
        scores = VideoScores(pair.name, real.shape[0])
        for metric in metrics:
            scores.values[metric.name] = metric.per_frame(real, generated, options)
        results.append(scores)
    return results


def summarise(results: Sequence[VideoScores], metric_names: Sequence[str]) -> dict[str, float]:
    """Each metric's mean over every frame of every video (NaN when no frame has a value)."""
    summary = {}
    for name in metric_names:
        frames = torch.cat([result.values[name] for result in results]).double()
        summary[name] = float(frames.mean()) if frames.numel() else math.nan
    return summary


def write_csv(results: Sequence[VideoScores], metric_names: Sequence[str], path: str | os.PathLike[str]) -> Path:
    """One row per video: name, frame count and each metric's mean over the video's frames."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "num_frames", *metric_names])
        for result in results:
            writer.writerow([result.name, result.num_frames, *(result.mean(name) for name in metric_names)])
    return path
