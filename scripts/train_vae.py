"""Train the Open-Sora 1.2 video VAE from a config (configs/vae/train/stage{1,2,3}.py).

One process (CPU or one GPU):
    python scripts/train_vae.py configs/vae/train/tiny.py --data-path meta.csv --outputs outputs/vae_tiny
One node, 8 GPUs:
    torchrun --standalone --nproc_per_node 8 scripts/train_vae.py configs/vae/train/stage1.py \\
        --data-path data/meta.csv --outputs outputs/vae_stage1

The data is a metadata CSV (path, text, ...). --load DIR resumes a checkpoint folder (or the latest
complete checkpoint inside an outputs folder) exactly: the VAE, the discriminator, their optimizers,
the lr schedule, the data position and the random state. --ckpt-path PATH initialises the VAE's
weights only (a checkpoint folder of the previous stage). Reconstruct videos with a trained VAE with
scripts/inference_vae.py.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from opensora.config import Flag, load_config, make_parser, parse_bool, parse_cli, run_cli, standard_flags
from opensora.training.base import TrainResult
from opensora.training.config import VAETrainConfig
from opensora.training.vae_trainer import train_vae

FLAGS = standard_flags(
    "--ckpt-path", "--load", "--data-path", "--outputs", "--seed", "--dtype", "--batch-size", "--lr", "--epochs",
    "--wandb",
) + [
    Flag("--plugin", "plugin", help="none, ddp, zero2 or zero3"),
    Flag("--max-steps", "max_steps", int, "stop after this many optimizer steps"),
    Flag("--start-from-scratch", "start_from_scratch", parse_bool, "with --load: keep weights, restart steps/data"),
    Flag("--deterministic", "deterministic", parse_bool, "deterministic kernels (bit-exact CPU runs)"),
]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> TrainResult:
    parser = make_parser(__doc__.strip().splitlines()[0], FLAGS)
    path, overrides, cfg_options = parse_cli(parser, argv)
    cfg = load_config(path, VAETrainConfig, overrides, cfg_options)
    result = train_vae(cfg)
    print(f"trained to step {result.step} (epoch {result.epoch}); last checkpoint: {result.checkpoint}")
    return result


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
