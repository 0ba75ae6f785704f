"""How a metadata table fills the buckets of a training config: samples and full batches per bucket.

    python tools/datasets/bucket_report.py data/meta.csv --config configs/opensora-v1-2/train/stage1.py
    python tools/datasets/bucket_report.py data/meta.csv --config train.py --num-ranks 8 --frame-interval 3

The config's ``bucket_config`` is read as training reads it; ``--frame-interval`` and ``--seed``
default to the config's ``dataset.frame_interval`` and ``seed`` (else 1 and 0). The table needs
``num_frames``, ``height`` and ``width`` columns (``tools/datasets/probe_metadata.py`` adds them).
Exits with status 1 when no rank would get a full batch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from opensora.config import read_config, run_cli
from opensora.datasets.bucket import Bucket, bucket_table, check_nonempty, format_bucket_table
from opensora.datasets.metadata import read_metadata
from opensora.errors import ConfigError, OpenSoraError

REQUIRED_COLUMNS = ("num_frames", "height", "width")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metadata", help="metadata table (.csv or .parquet)")
    parser.add_argument("--config", required=True, help="config file with a bucket_config (e.g. a training config)")
    parser.add_argument("--frame-interval", type=int, default=None, help="frames skipped between sampled frames")
    parser.add_argument("--seed", type=int, default=None, help="seed of the bucket keep-probability draws")
    parser.add_argument("--epoch", type=int, default=0, help="epoch whose assignment to show")
    parser.add_argument("--num-ranks", type=int, default=1, help="data-parallel ranks sharing the batches")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = read_config(args.config)
    if cfg.get("bucket_config") is None:
        raise ConfigError(f"config '{args.config}' has no bucket_config")
    dataset_cfg = cfg.get("dataset") or {}
    frame_interval = args.frame_interval if args.frame_interval is not None else dataset_cfg.get("frame_interval", 1)
    seed = args.seed if args.seed is not None else cfg.get("seed", 0)
    bucket = Bucket(cfg["bucket_config"], seed=seed)

    df = read_metadata(args.metadata)
    missing = [column for column in REQUIRED_COLUMNS if column not in df.columns]
    if missing:
        raise OpenSoraError(
            f"metadata '{args.metadata}' has no {', '.join(missing)} column(s); "
            "run tools/datasets/probe_metadata.py on it first"
        )
    assignment = bucket.assign(
        df["num_frames"], df["height"], df["width"], frame_interval=frame_interval, epoch=args.epoch
    )
    table = bucket_table(assignment, bucket, num_ranks=args.num_ranks)
    print(f"{args.metadata}: {len(df)} samples, frame interval {frame_interval}, seed {seed}, epoch {args.epoch}")
    print(format_bucket_table(table, assignment.drop_counts()))
    try:
        check_nonempty(table)
    except ConfigError as exc:
        print(f"warning: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
