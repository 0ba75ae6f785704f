"""Benchmark STDiT3: forward and forward+backward time, tokens/s, peak memory; checkpoint load memory.

python tools/benchmark/stdit3.py --preset STDiT3-XL/2 --latent 1,4,5,16,16 --dtype fp32
python tools/benchmark/stdit3.py --preset STDiT3-XL/2 --load-memory   # peak RSS of from_pretrained
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from timing import timed

from opensora.models.checkpoint_io import parse_dtype
from opensora.models.stdit.stdit3 import STDIT3_PRESETS, STDiT3

DTYPES = ("fp32", "bf16", "fp16")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def make_inputs(latent: list[int], model: STDiT3, device: torch.device, dtype: torch.dtype) -> dict:
    B, C, T, H, W = latent
    L = model.config["model_max_length"]
    return dict(
        x=torch.randn(B, C, T, H, W, device=device, dtype=dtype),
        timestep=torch.full((B,), 500.0, device=device),
        y=torch.randn(B, 1, L, model.config["caption_channels"], device=device, dtype=dtype),
        mask=torch.ones(B, L, dtype=torch.long, device=device),
        fps=torch.full((B,), 24.0, device=device),
        height=torch.full((B,), H * 8.0, device=device),
        width=torch.full((B,), W * 8.0, device=device),
    )


def run_speed(args: argparse.Namespace) -> dict:
    device, dtype = torch.device(args.device), parse_dtype(args.dtype)
    model = STDiT3(**STDIT3_PRESETS[args.preset], enable_flash_attn=args.flash_attn).to(device, dtype)
    latent = [int(v) for v in args.latent.split(",")]
    inputs = make_inputs(latent, model, device, dtype)
    T, H, W = model.patch_grid(inputs["x"])
    tokens = latent[0] * T * H * W

    def forward():
        with torch.no_grad():
            model(**inputs)

    def forward_backward():
        model(**inputs).float().square().mean().backward()

    model.eval()
    forward()  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    fwd = timed(forward, device, args.iters)
    fwd_mem = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mib()
    model.train()
    model.set_grad_checkpointing(args.grad_ckpt)
    forward_backward()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    fb = timed(forward_backward, device, args.iters)
    fb_mem = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mib()
    return {
        "preset": args.preset, "latent": latent, "tokens": tokens, "device": str(device), "dtype": args.dtype,
        "forward_s": round(fwd, 4), "forward_tokens_per_s": round(tokens / fwd, 1),
        "forward_backward_s": round(fb, 4), "forward_backward_tokens_per_s": round(tokens / fb, 1),
        "peak_mem_forward_mib": round(fwd_mem, 1), "peak_mem_forward_backward_mib": round(fb_mem, 1),
        "memory_kind": "cuda max allocated" if device.type == "cuda" else "process peak RSS",
    }  # fmt: skip


LOAD_CHILD = """
import json, resource, sys, time
import torch
from opensora.models.stdit.stdit3 import STDIT3_PRESETS, STDiT3
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
model = STDiT3.from_pretrained(sys.argv[1], **STDIT3_PRESETS[sys.argv[2]])
elapsed = time.perf_counter() - start
params = sum(p.numel() for p in model.parameters())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
# weights are memory-mapped; reading every one of them faults the whole file into the process
checksum = sum(float(p.double().sum()) for p in model.parameters())
touched = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"load_s": round(elapsed, 2), "params": params, "rss_before_mib": round(before, 1),
                  "peak_rss_after_load_mib": round(peak, 1), "peak_rss_after_reading_all_mib": round(touched, 1),
                  "weights_mib": round(params * 4 / 2**20, 1)}))
"""


def run_load_memory(args: argparse.Namespace) -> dict:
    """Save random weights once, then measure a fresh process loading them."""
    with tempfile.TemporaryDirectory(dir=args.tmp_dir) as tmp:
        path = Path(tmp) / "model.safetensors"
        with torch.device("meta"):
            model = STDiT3(**STDIT3_PRESETS[args.preset])
        model.to_empty(device="cpu")
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        del model
        child = subprocess.run(
            [sys.executable, "-c", LOAD_CHILD, str(path), args.preset], capture_output=True, text=True, check=True
        )
        return {"preset": args.preset, "file_mib": round(path.stat().st_size / 2**20, 1), **json.loads(child.stdout)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="STDiT3-XL/2", choices=sorted(STDIT3_PRESETS))
    parser.add_argument("--latent", default="1,4,5,16,16", help="B,C,T,H,W of the latent")
    parser.add_argument("--dtype", default="fp32", choices=DTYPES)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--flash-attn", action="store_true", help="use flash-attn when installed (CUDA, half)")
    parser.add_argument("--grad-ckpt", action="store_true", help="activation checkpointing in forward+backward")
    parser.add_argument("--load-memory", action="store_true", help="measure peak RSS of loading from safetensors")
    parser.add_argument("--tmp-dir", default=None, help="where to write the temporary checkpoint")
    args = parser.parse_args()
    result = run_load_memory(args) if args.load_memory else run_speed(args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
