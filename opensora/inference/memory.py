"""Peak memory: an estimate before sampling and a measurement per stage.

On CUDA the measurement is the allocator's peak (reset per stage); on the CPU it is the peak
resident set size, sampled by a background thread while the stage runs (the kernel's own
peak counter cannot be reset between stages).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

MIB = 2**20
_PAGE = 4096


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # not Linux: fall back to the lifetime peak
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class StageMemory:
    """Measured peak memory (MiB) of each named stage of a run."""

    device: torch.device
    peaks: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage, summed over calls

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            with self._measure(name):
                yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    @contextmanager
    def _measure(self, name: str) -> Iterator[None]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            yield
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak_box = [_rss_bytes()]
            done = threading.Event()

            def watch() -> None:
                while not done.wait(0.005):
                    peak_box[0] = max(peak_box[0], _rss_bytes())

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            try:
                yield
            finally:
                done.set()
                watcher.join()
            peak = max(peak_box[0], _rss_bytes())
        self.peaks[name] = max(self.peaks.get(name, 0.0), peak / MIB)

    def report(self) -> str:
        kind = "allocated" if self.device.type == "cuda" else "resident"
        return "measured peak memory (" + kind + "): " + ", ".join(f"{k} {v:,.0f} MiB" for k, v in self.peaks.items())


def module_bytes(module: nn.Module | None) -> int:
    if module is None:
        return 0
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def estimate_peak(
    pipeline, batch_size: int, latent_size: tuple[int, int, int], size, dtype_bytes: int
) -> dict[str, float]:
    """Rough peak memory (MiB) per stage for sampling ``batch_size`` videos of ``latent_size``.

    ``pipeline`` is a :class:`~opensora.inference.pipeline.VideoPipeline` and ``size`` its VideoSize.
    Weights are counted exactly; activations by a coefficient per token (transformer) or per pixel
    (VAE decoder) calibrated on measured runs (tools/benchmark). The model's tokens per sample and
    the rows of its guidance batch come from the pipeline's adapter. With ``offload`` each stage
    holds only its own weights on the device; otherwise all of them wait there (the text encoder
    always visits the device only while encoding). On the CPU the process baseline (the
    interpreter and libraries) is added, since the measurement is resident memory.
    """
    model, vae, device = pipeline.model, pipeline.vae, pipeline.device
    config = getattr(model, "config", {})
    hidden = config.get("hidden_size", 1152)
    heads = config.get("num_heads", 16)
    tokens, rows_per_sample = pipeline.adapter.tokens(model, latent_size)
    rows = rows_per_sample * batch_size
    # live activations of one block (qkv, MLP 4x, residuals) plus, on the CPU, one attention score map
    block = rows * tokens * hidden * dtype_bytes * 14
    frames = max(latent_size[0], 1)
    frame_tokens = -(-tokens // frames)
    scores = rows * frames * heads * frame_tokens**2 * 4 if device.type == "cpu" else 0
    pixels = min(size.height * size.width, 512 * 512)  # tiled decoding bounds the frame area held at once
    micro_batch = 4
    decode = batch_size * micro_batch * pixels * 4000
    base = _rss_bytes() if device.type == "cpu" else 0
    weights = {"text": module_bytes(pipeline.text_encoder), "model": module_bytes(model), "vae": module_bytes(vae)}
    if pipeline.first_frame is not None:
        weights["first frame"] = module_bytes(pipeline.first_frame.pipeline.model) + module_bytes(
            pipeline.first_frame.pipeline.vae
        )
    if device.type == "cpu":  # nothing moves: every module stays in the process's memory
        held = dict.fromkeys(weights, sum(weights.values()))
    else:
        parked = 0 if pipeline.offload else weights["model"] + weights["vae"] + weights.get("first frame", 0)
        held = {name: (weight if pipeline.offload else parked) for name, weight in weights.items()}
        held["text"] = parked + weights["text"]
    estimate = {
        "text": (base + held["text"]) / MIB,
        "sampling": (base + held["model"] + block + scores) / MIB,
        "decode": (base + held["vae"] + decode) / MIB if vae is not None else 0.0,
    }
    if "first frame" in weights:
        estimate["first frame"] = (base + held["first frame"] + block + scores) / MIB
    return estimate


def format_estimate(estimate: dict[str, float]) -> str:
    return "estimated peak memory: " + ", ".join(f"{k} {v:,.0f} MiB" for k, v in estimate.items() if v)
