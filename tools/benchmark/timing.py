"""The timing loop the model benchmarks share (they run as scripts, so this sits beside them)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def timed(fn: Callable[[], object], device: torch.device, iters: int) -> float:
    """Mean seconds of ``fn()`` over ``iters`` calls, waiting for queued CUDA work at both ends."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters
