"""Time STDiT3 training steps under each engine plugin: step time, samples/s, peak memory per rank.

Synthetic latents [B, 4, 5, 16, 16] and random caption embeddings, rectified-flow loss, AdamW.
Run with no arguments for the sweep (tiny and mid models; plugins none/ddp/zero2/zero3; 1 and 2
processes, each case a fresh torchrun job so peak memory is its own); prints one JSON line per case.

    python tools/benchmark/train_step.py
    python tools/benchmark/train_step.py --models mid --plugins zero2 zero3 --nprocs 2
    torchrun --nproc-per-node 2 tools/benchmark/train_step.py --case --model mid --plugin zero2

Memory is the process peak RSS on CPU (it includes the interpreter and torch, ~360 MiB, and the
full model each rank builds before sharding) and ``torch.cuda.max_memory_allocated`` on CUDA; beside
it, the weights and optimizer state a rank holds after the steps. Step time is the median over
``--iters`` steps of the slowest rank.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from opensora.acceleration.engine import Engine, build_engine
from opensora.acceleration.parallel import ParallelDims, destroy_distributed, init_distributed
from opensora.models.stdit.stdit3 import STDiT3
from opensora.schedulers.rectified_flow import RectifiedFlow
from opensora.training.losses import rflow_loss

SIZES = {
    "tiny": dict(depth=2, hidden_size=64, num_heads=4, caption_channels=32, model_max_length=8),
    "mid": dict(depth=8, hidden_size=384, num_heads=6, caption_channels=512, model_max_length=32),
}
PLUGINS = ("none", "ddp", "zero2", "zero3")


def synthetic_batch(model: STDiT3, batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    L, C = model.config["model_max_length"], model.config["caption_channels"]
    return dict(
        x=torch.randn(batch_size, 4, 5, 16, 16, device=device),
        y=torch.randn(batch_size, 1, L, C, device=device),
        mask=torch.ones(batch_size, L, dtype=torch.long, device=device),
    )


def train_step(engine: Engine, scheduler: RectifiedFlow, batch: dict[str, torch.Tensor]) -> None:
    with engine.autocast():
        loss = rflow_loss(engine.model, scheduler, batch["x"], dict(y=batch["y"], mask=batch["mask"])).mean()
    engine.backward(loss)
    engine.clip_and_step(1.0)


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def local_mib(tensors) -> float:
    """Bytes this rank holds for ``tensors`` (its shard of a DTensor)."""
    local = [t.to_local() if isinstance(t, DTensor) else t for t in tensors]
    return sum(t.numel() * t.element_size() for t in local) / 2**20


def state_mib(engine: Engine) -> float:
    """Weights plus optimizer state held by this rank: what ZeRO shards, unlike peak RSS, which
    also counts the full model every rank builds before sharding and memory malloc keeps."""
    states = [v for state in engine.optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    return local_mib(engine.model.parameters()) + local_mib(states)


def time_steps(args: argparse.Namespace, dims: ParallelDims) -> tuple[int, float, list[float]]:
    """Parameter count, held state (MiB) and the seconds of ``--iters`` timed steps after ``--warmup`` ones."""
    torch.manual_seed(0)
    model = STDiT3(**SIZES[args.model])
    params = sum(p.numel() for p in model.parameters())
    engine = build_engine(model, dims, args.plugin, args.precision, grad_checkpoint=args.grad_ckpt)
    batch, scheduler = synthetic_batch(model, args.batch_size, dims.device), RectifiedFlow()
    for _ in range(args.warmup):
        train_step(engine, scheduler, batch)
    if dims.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dims.device)
    times = []
    for _ in range(args.iters):
        if dims.device.type == "cuda":
            torch.cuda.synchronize(dims.device)
        start = time.perf_counter()
        train_step(engine, scheduler, batch)
        if dims.device.type == "cuda":
            torch.cuda.synchronize(dims.device)
        times.append(time.perf_counter() - start)
    return params, state_mib(engine), times


def run_case(args: argparse.Namespace) -> dict | None:
    """One (model, plugin) case in this torchrun job; returns the result on rank 0."""
    dims = init_distributed()
    torch.set_num_threads(args.threads)
    # the engine is gone when time_steps returns: a DDP reducer that outlives the process group
    # tears the group down from Python and can deadlock with gloo's worker threads
    params, held, times = time_steps(args, dims)
    step_s, memory = statistics.median(times), [(peak_memory_mib(dims.device), held)]
    if dist.is_initialized():
        slowest = torch.tensor(step_s)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        step_s, memory = float(slowest), [None] * dims.world_size
        dist.all_gather_object(memory, (peak_memory_mib(dims.device), held))
    destroy_distributed(dims)
    if not dims.is_main:
        return None
    global_batch = args.batch_size * dims.dp_size
    return {
        "model": args.model, "params_m": round(params / 1e6, 2), "plugin": args.plugin, "nproc": dims.world_size,
        "precision": args.precision, "device": dims.device.type, "threads_per_rank": args.threads,
        "global_batch": global_batch, "step_s": round(step_s, 4), "samples_per_s": round(global_batch / step_s, 2),
        "peak_mem_mib_per_rank": [round(peak, 1) for peak, _ in memory],
        "weights_and_optimizer_mib_per_rank": [round(held, 1) for _, held in memory],
        "memory_kind": "cuda max allocated" if dims.device.type == "cuda" else "peak RSS",
    }  # fmt: skip


def launch(command: list[str], timeout: float, case: dict) -> str:
    """Run one case; its JSON line, or one describing the failure."""
    # its own session, so that a hung case is ended with its workers and nothing else
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with subprocess.Popen(command, start_new_session=True, **pipes) as job:
        try:
            stdout, stderr = job.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            stdout, stderr = job.communicate()
            return json.dumps({**case, "error": f"no result in {timeout} s", "stderr": stderr[-1000:]})
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if job.returncode != 0 or not lines:
        return json.dumps({**case, "error": f"exit code {job.returncode}", "stderr": stderr[-2000:]})
    return lines[-1]


def sweep(args: argparse.Namespace) -> None:
    """Launch every case as its own torchrun job and print its JSON line."""
    for model in args.models:
        for nproc in args.nprocs:
            for plugin in args.plugins:
                if plugin == "none" and nproc > 1:
                    continue  # one process only: nothing would keep the replicas in step
                case = ["--case", "--model", model, "--plugin", plugin, "--precision", args.precision]
                case += ["--batch-size", str(args.batch_size), "--iters", str(args.iters), "--warmup", str(args.warmup)]
                case += ["--threads", str(args.threads)] + (["--grad-ckpt"] if args.grad_ckpt else [])
                launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
                print(launch(launcher + [__file__, *case], args.timeout, dict(model=model, plugin=plugin, nproc=nproc)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", action="store_true", help="run one case in this (torchrun) job")
    parser.add_argument("--model", default="tiny", choices=sorted(SIZES))
    parser.add_argument("--plugin", default="ddp", choices=PLUGINS)
    parser.add_argument("--models", nargs="+", default=list(SIZES), choices=sorted(SIZES))
    parser.add_argument("--plugins", nargs="+", default=list(PLUGINS), choices=PLUGINS)
    parser.add_argument("--nprocs", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--precision", default="bf16" if torch.cuda.is_available() else "fp32")
    parser.add_argument("--batch-size", type=int, default=2, help="samples per data-parallel rank")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--grad-ckpt", action="store_true", help="activation checkpointing per block")
    # one thread per rank by default: 1- and 2-process CPU runs then compare like for like, and
    # small ops do not lose time to thread spin-waits on a shared machine
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per rank")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per case in a sweep")
    args = parser.parse_args()
    if not args.case:
        sweep(args)
        return
    result = run_case(args)
    if result is not None:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
