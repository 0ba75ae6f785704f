"""Benchmark sampling through the inference pipeline: seconds per step and peak memory per stage.

Weights are random (speed and memory do not depend on their values); text is encoded by the
offline hashing encoder shaped like the config's T5, so nothing is downloaded.

    python tools/benchmark/inference.py configs/opensora-v1-2/inference/tiny.py --size 17 128 128
    python tools/benchmark/inference.py configs/opensora-v1-2/inference/sample.py --size 17 128 128 \\
        --model STDiT3-XL/2 --steps 2 --dtype fp32
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from opensora.config import load_config
from opensora.inference.config import InferenceConfig
from opensora.inference.memory import StageMemory
from opensora.inference.pipeline import VideoSize
from opensora.inference.prompts import PromptRequest
from opensora.inference.runner import build_pipeline


def benchmark(cfg: InferenceConfig, size: VideoSize, steps: int, batch_size: int) -> dict:
    pipeline = build_pipeline(cfg, torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")))
    pipeline.scheduler.num_sampling_steps = steps
    requests = [PromptRequest({0: f"a benchmark prompt {i}"}) for i in range(batch_size)]
    memory = StageMemory(pipeline.device)
    with torch.no_grad():
        pipeline.generate(requests[:1], VideoSize(1, 64, 64), [0], progress=False)  # warm-up
        start = time.perf_counter()
        pipeline.generate(requests, size, list(range(batch_size)), memory=memory, progress=False)
        total = time.perf_counter() - start
    latent = pipeline.latent_size(size)
    return {
        "model": cfg.model["type"], "size": f"{size.num_frames}x{size.height}x{size.width}", "latent": list(latent),
        "batch": batch_size, "dtype": cfg.dtype, "device": str(pipeline.device), "steps": steps,
        "total_s": round(total, 2), "s_per_step": round(memory.seconds["sampling"] / steps, 3),
        "stage_s": {k: round(v, 2) for k, v in memory.seconds.items()},
        "peak_mib": {k: round(v) for k, v in memory.peaks.items()},
        "params_m": round(sum(p.numel() for p in pipeline.model.parameters()) / 1e6, 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--size", type=int, nargs=3, default=[17, 128, 128], metavar=("T", "H", "W"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--model", help="replace the model type, e.g. STDiT3-XL/2 (random weights)")
    parser.add_argument("--no-vae", action="store_true", help="time sampling only (latents out)")
    args = parser.parse_args()
    options = ["model.from_pretrained=None", "vae.from_pretrained=None", f"dtype={args.dtype}"]
    if args.model:
        options.append(f"model.type={args.model}")
    cfg = load_config(args.config, InferenceConfig, cfg_options=options)
    width = cfg.model.get("caption_channels", 4096)
    length = cfg.text_encoder.get("model_max_length", 300)
    cfg.text_encoder = {"type": "hash", "output_dim": width, "model_max_length": length}
    if args.no_vae:
        cfg.vae = None
    result = benchmark(cfg, VideoSize(*args.size), args.steps, args.batch_size)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
