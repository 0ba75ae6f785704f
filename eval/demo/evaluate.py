"""Prompt-following accuracy of the demo model: colour, shape and motion, seen vs held-out triples.

    python eval/demo/evaluate.py --config configs/demo/inference.py --seeds 0 1 2
Prints one line per group and attribute and writes every trial to a CSV (--csv).
"""

from __future__ import annotations

import argparse
import csv
import json

import torch

from opensora.config import load_config, run_cli
from opensora.demo.evaluation import ATTRIBUTES, accuracy, run_trials
from opensora.inference.config import InferenceConfig
from opensora.inference.runner import build_pipeline, resolve_size


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo/inference.py")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--held-out-only", action="store_true")
    parser.add_argument("--csv", help="write every trial here")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, InferenceConfig, cfg_options=args.cfg_options)
    pipeline = build_pipeline(cfg, torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")))
    trials = run_trials(pipeline, resolve_size(cfg), args.seeds, args.batch_size, not args.held_out_only)
    report = accuracy(trials)
    for group, scores in report.items():
        shown = ", ".join(f"{a} {scores[a]:.0%}" for a in ATTRIBUTES)
        print(f"{group} ({scores['n']} videos): {shown}")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([*ATTRIBUTES, "seed", "held_out", *(f"read_{a}" for a in ATTRIBUTES)])
            for t in trials:
                writer.writerow([*t.triple, t.seed, t.held_out, t.reading.colour, t.reading.shape, t.reading.motion])
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    run_cli(main)
