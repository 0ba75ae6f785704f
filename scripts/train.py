"""Train a text-to-video diffusion model from a config.

One process (CPU or one GPU):
    python scripts/train.py configs/opensora-v1-2/train/tiny.py --data-path meta.csv --outputs outputs/tiny
One node, 8 GPUs:
    torchrun --standalone --nproc_per_node 8 scripts/train.py configs/opensora-v1-2/train/stage1.py \\
        --data-path data/meta.csv --outputs outputs/stage1
Several nodes (run on every node; NODE_RANK is 0..N-1 and MASTER_ADDR is node 0's address):
    torchrun --nnodes 4 --nproc_per_node 8 --node_rank $NODE_RANK --master_addr $MASTER_ADDR --master_port 29500 \\
        scripts/train.py configs/opensora-v1-2/train/stage1.py --data-path data/meta.csv --outputs outputs/stage1

--load DIR resumes a checkpoint folder (or the latest complete checkpoint inside an outputs folder)
exactly: weights, EMA, optimizer, lr schedule, data position and random state. --ckpt-path PATH only
initialises the model's weights. Pre-extracted features (tools/datasets/extract_features.py) train
with --use-features true --data-path FEATURE_DIR. Export the EMA weights for inference with
tools/export_ema.py CHECKPOINT_DIR OUTPUT_DIR.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from opensora.config import Flag, load_config, make_parser, parse_bool, parse_cli, run_cli, standard_flags
from opensora.training.config import TrainConfig
from opensora.training.trainer import TrainResult, train

FLAGS = standard_flags(
    "--ckpt-path", "--load", "--data-path", "--outputs", "--seed", "--dtype", "--batch-size", "--lr", "--epochs",
    "--wandb", "--flash-attn", "--layernorm-kernel",
) + [
    Flag("--plugin", "plugin", help="none, ddp, zero2, zero3 or colossalai"),
    Flag("--sp-size", "sp_size", int, "sequence-parallel group size"),
    Flag("--max-steps", "max_steps", int, "stop after this many optimizer steps"),
    Flag("--use-features", "use_features", parse_bool, "--data-path is a folder of pre-extracted features"),
    Flag("--start-from-scratch", "start_from_scratch", parse_bool, "with --load: keep weights, restart steps/data"),
    Flag("--deterministic", "deterministic", parse_bool, "deterministic kernels (bit-exact CPU runs)"),
]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> TrainResult:
    parser = make_parser(__doc__.strip().splitlines()[0], FLAGS)
    path, overrides, cfg_options = parse_cli(parser, argv)
    cfg = load_config(path, TrainConfig, overrides, cfg_options)
    result = train(cfg)
    print(f"trained to step {result.step} (epoch {result.epoch}); last checkpoint: {result.checkpoint}")
    return result


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
