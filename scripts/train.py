"""Train a text-to-video diffusion model from a config.

One process (CPU or one GPU):
    python scripts/train.py configs/opensora-v1-2/train/tiny.py --data-path meta.csv --outputs outputs/tiny
One node, 8 GPUs:
    torchrun --standalone --nproc_per_node 8 scripts/train.py configs/opensora-v1-2/train/stage1.py \\
        --data-path data/meta.csv --outputs outputs/stage1
Several nodes (run on every node; NODE_RANK is 0..N-1 and MASTER_ADDR is node 0's address):
    torchrun --nnodes 4 --nproc_per_node 8 --node_rank $NODE_RANK --master_addr $MASTER_ADDR --master_port 29500 \\
        scripts/train.py configs/opensora-v1-2/train/stage1.py --data-path data/meta.csv --outputs outputs/stage1

Open-Sora 2.0 (an MMDiT model: configs/opensora-v2/train/*.py) trains with the 2.0 recipe, e.g.
    python scripts/train.py configs/opensora-v2/train/tiny.py --data-path FEATURE_DIR --outputs outputs/v2_tiny

--load DIR resumes a checkpoint folder (or the latest complete checkpoint inside an outputs folder)
exactly: weights, EMA, optimizer, lr schedule, data position and random state. --ckpt-path PATH only
initialises the model's weights. Pre-extracted features (tools/datasets/extract_features.py) train
with --use-features true --data-path FEATURE_DIR. Export the EMA weights for inference with
tools/export_ema.py CHECKPOINT_DIR OUTPUT_DIR.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from opensora.config import (
    Flag,
    apply_overrides,
    load_config,
    make_parser,
    parse_bool,
    parse_cfg_options,
    parse_cli,
    read_config,
    run_cli,
    standard_flags,
)
from opensora.training.base import TrainResult
from opensora.training.recipes import select_recipe

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
    recipe = select_recipe(apply_overrides(read_config(path), parse_cfg_options(cfg_options)))  # 1.x or 2.0
    result = recipe.train(load_config(path, recipe.schema, overrides, cfg_options))
    print(f"trained to step {result.step} (epoch {result.epoch}); last checkpoint: {result.checkpoint}")
    return result


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
