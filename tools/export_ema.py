"""Export a training checkpoint's EMA weights as a from_pretrained folder (config.json + model.safetensors).

    python tools/export_ema.py outputs/stage1/epoch3-global_step12000 exported/stage1
    python scripts/inference.py configs/opensora-v1-2/inference/tiny.py --ckpt-path exported/stage1 --prompt "..."

CHECKPOINT may also be an outputs folder: its latest complete checkpoint is exported. --raw exports the
training weights instead of their EMA.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from opensora.config import run_cli
from opensora.training.export import export_ema


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("checkpoint", help="checkpoint folder (epoch*-global_step*) or an outputs folder")
    parser.add_argument("output", help="folder to write")
    parser.add_argument("--raw", action="store_true", help="export the training weights, not the EMA")
    args = parser.parse_args(argv)
    written = export_ema(args.checkpoint, args.output, use_ema=not args.raw)
    print(f"wrote {written}")
    return written


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
