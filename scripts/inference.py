"""Sample videos from text prompts.

python scripts/inference.py configs/opensora-v1-2/inference/tiny.py --prompt "a red ball bouncing"
"""

from __future__ import annotations

from opensora.config import Flag, load_config, make_parser, parse_cli, run_cli, standard_flags
from opensora.inference.config import InferenceConfig
from opensora.inference.runner import run

FLAGS = standard_flags(
    "--ckpt-path", "--seed", "--dtype", "--flash-attn", "--layernorm-kernel", "--batch-size", "--outputs",
    "--prompt", "--prompt-path", "--num-frames", "--image-size", "--fps", "--num-sampling-steps",
) + [Flag("--cfg-scale", "cfg_scale", float, help="classifier-free guidance scale")]  # fmt: skip


def main() -> None:
    parser = make_parser(__doc__.strip().splitlines()[0], FLAGS)
    path, overrides, cfg_options = parse_cli(parser)
    cfg = load_config(path, InferenceConfig, overrides, cfg_options)
    for written in run(cfg):
        print(f"saved {written}")


if __name__ == "__main__":
    run_cli(main)
