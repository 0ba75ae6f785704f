"""Model FLOP utilisation of MMDiT training steps (forward, backward, AdamW) through the engine.

    python tools/benchmark/train_mfu.py --size tiny                      # seconds on a CPU
    python tools/benchmark/train_mfu.py --size wide --grad-checkpoint    # one GPU
    torchrun --nproc-per-node 8 tools/benchmark/train_mfu.py --size release --plugin zero3

MFU = model FLOPs per step / step time / (devices * peak), where model FLOPs per step are
3 x the forward FLOPs of every sample of every rank (opensora/models/mmdit/flops.py states the
count); activation checkpointing's recomputation is reported as hardware FLOPs, not in MFU. The
peak defaults to 989 TFLOP/s, an H100 SXM's dense bf16 rate; on a CPU the MFU line only shows
that the arithmetic runs. bf16 by default on a GPU (autocast or FSDP2 mixed precision), fp32 on a
CPU. Step time is the median of the timed steps (of the slowest rank).
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.distributed as dist
from mmdit_training import SIZES, OneLineParser, image_tokens, parse_latent, resolve_size, synthetic_batch, train_step
from timing import timed

from opensora.acceleration.engine import build_engine
from opensora.acceleration.parallel import ParallelDims, destroy_distributed, init_distributed
from opensora.config import run_cli
from opensora.errors import ConfigError
from opensora.models.mmdit import MMDiT
from opensora.models.mmdit.flops import mmdit_train_flops

H100_BF16_DENSE_TFLOPS = 989.0


def slowest(seconds: float, device: torch.device) -> float:
    """The largest of every rank's ``seconds`` (a step is as fast as its slowest rank)."""
    if not dist.is_initialized():
        return seconds
    value = torch.tensor(seconds, dtype=torch.float64, device=device)  # NCCL reduces only CUDA tensors
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return float(value)


def measure(args: argparse.Namespace, dims: ParallelDims) -> dict:
    """Build the model and engine, run the steps; what the report needs."""
    size = resolve_size(args.size, args.set)
    latent = parse_latent(args.latent) if args.latent else size.latent
    text_tokens = size.text_tokens if args.text_tokens is None else args.text_tokens
    torch.manual_seed(0)
    model = MMDiT(**size.model)
    params = sum(p.numel() for p in model.parameters())
    config = dict(model.config)
    engine = build_engine(model, dims, args.plugin, args.precision, grad_checkpoint=args.grad_checkpoint)
    inputs, target = synthetic_batch(config, args.batch_size, latent, text_tokens, dims.device)
    for _ in range(args.warmup):
        train_step(engine, inputs, target)
    times = [timed(lambda: train_step(engine, inputs, target), dims.device, 1) for _ in range(args.steps)]
    n_img = image_tokens(latent, config["patch_size"])
    flops = mmdit_train_flops(config, n_img, text_tokens, args.grad_checkpoint)
    return dict(params=params, config=config, latent=latent, n_img=n_img, n_txt=text_tokens, flops=flops,
                step_s=slowest(statistics.median(times), dims.device))  # fmt: skip


def report(args: argparse.Namespace, dims: ParallelDims, result: dict) -> list[str]:
    cfg, flops, step = result["config"], result["flops"], result["step_s"]
    devices, samples = dims.world_size, args.batch_size * dims.dp_size
    model_flops, hardware_flops = samples * flops.model, samples * flops.hardware
    achieved = model_flops / step / devices / 1e12  # TFLOP/s per device
    mfu = model_flops / step / (devices * args.peak_tflops * 1e12)
    ckpt = "on" if args.grad_checkpoint else "off"
    return [
        f"model: {args.size} (hidden {cfg['hidden_size']}, {cfg['depth']} double + {cfg['depth_single_blocks']} "
        f"single blocks), {result['params'] / 1e6:.1f}M parameters; {args.precision} on {dims.device.type}, "
        f"{devices} device(s), plugin {args.plugin}, grad checkpoint {ckpt}",
        f"tokens per sample: {result['n_img']} image (latent {','.join(map(str, result['latent']))}) + "
        f"{result['n_txt']} text; {args.batch_size} sample(s) per rank, {samples} per step",
        f"step: {step:.4f} s (median of {args.steps} after {args.warmup} warm-up); "
        f"{samples * result['n_img'] / step:.1f} image tokens/s",
        f"FLOPs per step: model {model_flops:.4g} (3 x forward), hardware {hardware_flops:.4g}"
        + (" (+ recomputed block forwards)" if args.grad_checkpoint else ""),
        f"achieved: {achieved:.4g} model TFLOP/s per device, {hardware_flops / step / devices / 1e12:.4g} hardware",
        f"MFU = model FLOPs per step / step time / (devices x peak) = {model_flops:.4g} / {step:.4f} s / "
        f"({devices} x {args.peak_tflops:g} TFLOP/s) = {100 * mfu:.4g}%",
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sizes = "; ".join(f"{name}: {make().about}" for name, make in SIZES.items())
    parser.add_argument("--size", default="tiny", help=f"model size ({sizes})")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override an MMDiT argument")
    parser.add_argument("--latent", default="", help="C,T,H,W of the unpacked latent (default: the size's)")
    parser.add_argument("--text-tokens", type=int, default=None, help="T5 tokens (default: the size's)")
    parser.add_argument("--batch-size", type=int, default=1, help="samples per data-parallel rank")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--precision", default=None, help="fp32, bf16 or fp16 (default: bf16 on a GPU, fp32 on a CPU)")
    parser.add_argument("--plugin", default=None, help="engine plugin (default: none for one process, else zero2)")
    parser.add_argument("--grad-checkpoint", action="store_true", help="activation checkpointing per block")
    parser.add_argument("--peak-tflops", type=float, default=H100_BF16_DENSE_TFLOPS, help="peak per device")
    args = parser.parse_args(argv)
    for name in ("batch_size", "steps", "peak_tflops"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.warmup < 0:
        raise ConfigError(f"--warmup must be >= 0, got {args.warmup}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    dims = init_distributed()
    args.precision = args.precision or ("bf16" if dims.device.type == "cuda" else "fp32")
    args.plugin = args.plugin or ("none" if dims.world_size == 1 else "zero2")
    try:
        result = measure(args, dims)
    finally:
        destroy_distributed(dims)
    if dims.is_main:
        print("\n".join(report(args, dims, result)), flush=True)


if __name__ == "__main__":
    run_cli(main)
