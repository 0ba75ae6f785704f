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
    model: nn.Module,
    vae: nn.Module | None,
    text_encoder: nn.Module,
    batch_size: int,
    latent_size: tuple[int, int, int],
    height: int,
    width: int,
    dtype_bytes: int,
    device: torch.device,
) -> dict[str, float]:
    """Rough peak memory (MiB) per stage for sampling ``batch_size`` videos of ``latent_size``.

    Weights are counted exactly; activations by a coefficient per token (transformer) or per
    pixel (VAE decoder) calibrated on measured runs (tools/benchmark). On the CPU the process
    baseline (the interpreter and libraries) is added, since the measurement is resident memory.
    """
    config = getattr(model, "config", {})
    hidden = config.get("hidden_size", 1152)
    patch = config.get("patch_size", (1, 2, 2))
    T, h, w = latent_size
    tokens = -(-T // patch[0]) * -(-h // patch[1]) * -(-w // patch[2])
    frame_tokens = -(-h // patch[1]) * -(-w // patch[2])
    heads = config.get("num_heads", 16)
    rows = 2 * batch_size  # the guidance batch holds prompt and null caption
    # live activations of one block (qkv, MLP 4x, residuals) plus one spatial attention score map
    block = rows * tokens * hidden * dtype_bytes * 14
    scores = rows * T * heads * frame_tokens**2 * 4 if device.type == "cpu" else 0
    pixels = min(height * width, 512 * 512)  # tiled decoding bounds the frame area held at once
    micro_batch = 4
    decode = batch_size * micro_batch * pixels * 4000
    base = _rss_bytes() if device.type == "cpu" else 0
    resident = module_bytes(model) + module_bytes(vae) + module_bytes(text_encoder)
    return {
        "text": (base + resident) / MIB,
        "sampling": (base + resident + block + scores) / MIB,
        "decode": (base + resident + decode) / MIB if vae is not None else 0.0,
    }


def format_estimate(estimate: dict[str, float]) -> str:
    return "estimated peak memory: " + ", ".join(f"{k} {v:,.0f} MiB" for k, v in estimate.items() if v)
