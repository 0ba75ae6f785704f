"""Benchmark the Open-Sora 2.0 MMDiT: forward and forward+backward time, tokens/s, peak memory.

python tools/benchmark/mmdit.py --preset MMDiT-v2 --latent 1,16,5,16,16 --dtype bf16
python tools/benchmark/mmdit.py --size hidden_size=256,num_heads=4,depth=2,depth_single_blocks=4,axes_dim=16:24:24
Also printed: parameter count and weight memory of the 11B release preset, built on the meta device.
"""

from __future__ import annotations

import argparse
import json
import resource
from collections.abc import Mapping

import torch
from timing import timed

from opensora.models.checkpoint_io import parse_dtype
from opensora.models.mmdit import MMDIT_PRESETS, MMDiT

DTYPES = ("fp32", "bf16", "fp16")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def parse_overrides(text: str) -> dict:
    """"hidden_size=256,axes_dim=16:24:24" -> overrides of the preset (":" separates list items)."""
    sizes = {}
    for item in filter(None, text.split(",")):
        key, value = item.split("=")
        sizes[key] = [int(v) for v in value.split(":")] if ":" in value else int(value)
    return sizes


def make_inputs(latent: list[int], text_tokens: int, cfg: Mapping, device, dtype) -> dict:
    """Packed 2x2 tokens of a latent [B, C, T, H, W] with their (t, h, w) ids, plus text and cond,
    for an MMDiT of config ``cfg`` (its constructor arguments, ``model.config``)."""
    B, C, T, H, W = latent
    p = cfg["patch_size"]
    h, w = H // p, W // p
    grid = torch.stack(torch.meshgrid(torch.arange(T), torch.arange(h), torch.arange(w), indexing="ij"), dim=-1)
    N = T * h * w
    return dict(
        img=torch.randn(B, N, C * p * p, device=device, dtype=dtype),
        img_ids=grid.reshape(1, N, 3).expand(B, -1, -1).float().to(device),
        txt=torch.randn(B, text_tokens, cfg["context_in_dim"], device=device, dtype=dtype),
        txt_ids=torch.zeros(B, text_tokens, 3, device=device),
        timesteps=torch.full((B,), 0.5, device=device, dtype=dtype),
        y_vec=torch.randn(B, cfg["vec_in_dim"], device=device, dtype=dtype),
        cond=torch.randn(B, N, cfg["in_channels"] + p * p, device=device, dtype=dtype),
        guidance=torch.full((B,), 4.0, device=device, dtype=dtype),
    )


def measure(fn, device: torch.device, iters: int) -> tuple[float, float]:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = timed(fn, device, iters)
    memory = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mib()
    return seconds, memory


def release_size() -> dict:
    with torch.device("meta"):
        model = MMDiT(**MMDIT_PRESETS["MMDiT-v2"])
    params = sum(p.numel() for p in model.parameters())
    return {"release_params": params, "release_weights_gib_bf16": round(params * 2 / 2**30, 2),
            "release_weights_gib_fp32": round(params * 4 / 2**30, 2)}  # fmt: skip


def run(args: argparse.Namespace) -> dict:
    device, dtype = torch.device(args.device), parse_dtype(args.dtype)
    config = {**MMDIT_PRESETS[args.preset], **parse_overrides(args.size)}
    model = MMDiT(**config).to(device, dtype)
    model.set_attention_backend(args.attention)
    latent = [int(v) for v in args.latent.split(",")]
    inputs = make_inputs(latent, args.text_tokens, model.config, device, dtype)
    tokens = inputs["img"].shape[0] * inputs["img"].shape[1]

    def forward():
        with torch.no_grad():
            model(**inputs)

    def forward_backward():
        model(**inputs).float().square().mean().backward()

    fwd, fwd_mem = measure(forward, device, args.iters)
    model.train().set_grad_checkpointing(args.grad_ckpt)
    fb, fb_mem = measure(forward_backward, device, args.iters)
    return {
        "preset": args.preset, "config": config, "params": sum(p.numel() for p in model.parameters()),
        "latent": latent, "image_tokens": tokens, "text_tokens": args.text_tokens, "device": str(device),
        "dtype": args.dtype, "attention": args.attention, "grad_ckpt": args.grad_ckpt,
        "forward_s": round(fwd, 4), "forward_tokens_per_s": round(tokens / fwd, 1),
        "forward_backward_s": round(fb, 4), "forward_backward_tokens_per_s": round(tokens / fb, 1),
        "peak_mem_forward_mib": round(fwd_mem, 1), "peak_mem_forward_backward_mib": round(fb_mem, 1),
        "memory_kind": "cuda max allocated" if device.type == "cuda" else "process peak RSS",
        **release_size(),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="MMDiT-v2", choices=sorted(MMDIT_PRESETS))
    parser.add_argument("--size", default="", help="overrides of the preset, e.g. hidden_size=256,depth=2")
    parser.add_argument("--latent", default="1,16,5,16,16", help="B,C,T,H,W of the (unpacked) latent")
    parser.add_argument("--text-tokens", type=int, default=512, help="T5 tokens (512 in the release)")
    parser.add_argument("--dtype", default="bf16", choices=DTYPES)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--attention", default="sdpa", choices=("sdpa", "flash", "math"))
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--grad-ckpt", action="store_true", help="activation checkpointing in forward+backward")
    args = parser.parse_args()
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
