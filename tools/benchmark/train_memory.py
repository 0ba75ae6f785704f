"""Peak memory per rank of MMDiT training under 1, 2 and 4 gloo processes on the CPU, with save and resume times.

    python tools/benchmark/train_memory.py                       # mid size, zero2, 1/2/4 ranks
    python tools/benchmark/train_memory.py --plugin zero3 --ranks 1 2
    python tools/benchmark/train_memory.py --size tiny --no-checkpoint

Each world size is a fresh set of spawned processes with the torchrun variables set (MASTER_ADDR,
MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK), so ``init_distributed`` joins them as it would under
torchrun. Each rank builds the model, hands it to ``build_engine`` and trains ``--steps`` steps
in fp32; then the engine's model and optimizer state dicts are saved through the training
CheckpointManager and loaded back. Only the model constructor, ``build_engine`` and Engine
methods are called, so the numbers follow whatever the engine does.

Memory is the peak RSS (``ru_maxrss``): absolute, and above the RSS after imports (the interpreter,
torch and opensora). It is a high-water mark, so the training peak is read before the checkpoint
and the checkpoint peak after it. The input is small by design, so that weights, gradients and
optimizer state, which sharding divides, dominate the activations, which it does not.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmdit_training import SIZES, OneLineParser, parse_latent, resolve_size, synthetic_batch, train_step
from torch.distributed.tensor import DTensor

from opensora.acceleration.engine import Engine, build_engine
from opensora.acceleration.parallel import ParallelDims, destroy_distributed, init_distributed
from opensora.config import run_cli
from opensora.errors import ConfigError
from opensora.models.mmdit import MMDiT
from opensora.training.checkpoint import CheckpointManager

COLUMNS = ("ranks", "params/rank", "RSS after imports MiB", "peak RSS train MiB", "train peak - imports MiB",
           "step s", "save s", "resume s", "peak RSS w/ ckpt MiB")  # fmt: skip


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def local_params(model: torch.nn.Module) -> int:
    """Parameters this rank holds (its shard of each DTensor)."""
    return sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in model.parameters())


def slowest(seconds: float) -> float:
    value = torch.tensor(seconds, dtype=torch.float64)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return float(value)


def timed_step(engine: Engine, batch: tuple) -> float:
    start = time.perf_counter()
    train_step(engine, *batch)
    return slowest(time.perf_counter() - start)


def save_and_resume(engine: Engine, dims: ParallelDims, folder: str) -> tuple[float, float]:
    """Seconds to save the engine's states as a checkpoint, and to load them back (slowest rank)."""
    manager = CheckpointManager(folder, is_main=dims.is_main)
    start = time.perf_counter()
    path = manager.save(1, {"model": engine.model_state_dict(), "optimizer": engine.optimizer_state_dict()})
    save_s = slowest(time.perf_counter() - start)
    start = time.perf_counter()
    # rank 0 reads; the engine hands the states to the other ranks
    states = CheckpointManager.load(path) if dims.is_main else {}
    engine.load_model_state_dict(states.pop("model", {}))
    engine.load_optimizer_state_dict(states.pop("optimizer", {}))
    return save_s, slowest(time.perf_counter() - start)


def measure(args: argparse.Namespace, dims: ParallelDims, after_imports: float, folder: str) -> dict:
    size = resolve_size(args.size, args.set)
    torch.manual_seed(0)
    model = MMDiT(**size.model)
    config = dict(model.config)
    engine = build_engine(model, dims, args.plugin, "fp32")
    del model  # the engine holds what it needs
    batch = synthetic_batch(config, 1, parse_latent(args.latent), args.text_tokens, dims.device)
    step_s = [timed_step(engine, batch) for _ in range(args.steps)][-1]  # the first allocates AdamW's state
    result = dict(rank=dims.rank, params=local_params(engine.model), after_imports=after_imports,
                  peak_train=peak_rss_mib(), step_s=step_s, save_s=None, resume_s=None, peak_ckpt=None)  # fmt: skip
    if args.checkpoint:
        result["save_s"], result["resume_s"] = save_and_resume(engine, dims, folder)
        result["peak_ckpt"] = peak_rss_mib()
    return result


def rank_main(rank: int, args: argparse.Namespace, world_size: int, port: int, folder: str, results) -> None:
    """One rank of one world size (spawned); puts its measurements on ``results``."""
    after_imports = peak_rss_mib()  # this module's imports ran when the process started
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(args.threads or max(1, len(os.sched_getaffinity(0)) // world_size))
    dims = init_distributed(device="cpu")
    try:
        result = measure(args, dims, after_imports, folder)
    finally:
        destroy_distributed(dims)  # the engine is gone with measure's frame
    results.put(result)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_world(args: argparse.Namespace, world_size: int, folder: str) -> list[dict]:
    """Spawn ``world_size`` ranks and return their results in rank order; a rank's failure stops all."""
    results = mp.get_context("spawn").SimpleQueue()
    context = mp.start_processes(rank_main, args=(args, world_size, free_port(), folder, results),
                                 nprocs=world_size, join=False, start_method="spawn")  # fmt: skip
    deadline = time.monotonic() + args.timeout
    while not context.join(timeout=1):  # raises when a rank fails, after ending the others
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise TimeoutError(f"{world_size} ranks gave no result in {args.timeout} s")
    return sorted((results.get() for _ in range(world_size)), key=lambda r: r["rank"])


def row(ranks: list[dict]) -> list[str]:
    def each(key: str, fmt: str = "{:.0f}") -> str:
        return "/".join(fmt.format(r[key]) for r in ranks)

    first = ranks[0]
    times = [f"{first[k]:.2f}" if first[k] is not None else "-" for k in ("step_s", "save_s", "resume_s")]
    gained = "/".join(f"{r['peak_train'] - r['after_imports']:.0f}" for r in ranks)
    ckpt = each("peak_ckpt") if first["peak_ckpt"] is not None else "-"
    params = "/".join(f"{r['params'] / 1e6:.3f}M" for r in ranks)
    return [str(len(ranks)), params, each("after_imports"), each("peak_train"), gained, *times, ckpt]


def table(rows: list[list[str]]) -> str:
    widths = [max(len(cells[i]) for cells in [list(COLUMNS), *rows]) for i in range(len(COLUMNS))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in [list(COLUMNS), *rows]]
    return "\n".join([lines[0], "-+-".join("-" * w for w in widths), *lines[1:]])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sizes = "; ".join(f"{name}: {make().about}" for name, make in SIZES.items())
    parser.add_argument("--size", default="mid", help=f"model size ({sizes})")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override an MMDiT argument")
    parser.add_argument("--plugin", default="zero2", help="engine plugin: zero2, zero3 or ddp")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4], help="world sizes to run")
    parser.add_argument("--latent", default="16,2,8,8", help="C,T,H,W of the unpacked latent (one sample per rank)")
    parser.add_argument("--text-tokens", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2, help="training steps; the last is timed")
    parser.add_argument("--no-checkpoint", dest="checkpoint", action="store_false", help="skip save and resume")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per rank (0: the cores / ranks)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per world size")
    args = parser.parse_args(argv)
    if args.plugin not in ("zero2", "zero3", "ddp"):
        raise ConfigError(f"--plugin {args.plugin}: expected zero2, zero3 or ddp")
    if min(args.ranks) < 1 or args.steps < 1 or args.threads < 0 or args.text_tokens < 0:
        raise ConfigError("--ranks and --steps must be positive, --threads and --text-tokens not negative")
    resolve_size(args.size, args.set)  # a bad size or --set fails here, not in every rank
    parse_latent(args.latent)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"MMDiT '{args.size}', plugin {args.plugin}, fp32, gloo on CPU; values per rank are rank0/rank1/...")
    rows = []
    for world_size in args.ranks:
        folder = tempfile.mkdtemp(prefix="train_memory_")
        try:
            rows.append(row(run_world(args, world_size, str(Path(folder) / "checkpoints"))))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        print(f"done: {world_size} rank(s)", flush=True)
    print(table(rows), flush=True)


if __name__ == "__main__":
    run_cli(main)
