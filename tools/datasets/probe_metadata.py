"""Fill in a metadata table's missing num_frames, height, width, fps, aspect_ratio and resolution.

Each file lacking one of them is probed with PyAV (images with Pillow), in parallel. A file that
cannot be read is reported on one line and its row left empty; the run goes on. The table is
written atomically, in place unless --output is given; its paths are written as they were read.

    python tools/datasets/probe_metadata.py data/meta.csv --workers 8
    python tools/datasets/probe_metadata.py data/meta.csv --output data/meta_info.parquet
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from opensora.config import run_cli
from opensora.datasets.metadata import fill_missing_info, missing_info, read_metadata, write_metadata


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("metadata", type=Path, help="metadata table (.csv or .parquet)")
    parser.add_argument("--output", type=Path, default=None, help="where to write (default: overwrite the input)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="probing processes")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Probe, write, and print a summary; returns the number of unreadable files."""
    args = parse_args(argv)
    df = read_metadata(args.metadata, resolve_paths=False)  # probe resolved paths, keep the written ones
    filled, failures = fill_missing_info(df, root=args.metadata.parent, workers=args.workers, progress=True)
    for message in failures:
        print(f"unreadable: {message}", file=sys.stderr)
    output = args.output or args.metadata
    write_metadata(filled, output)
    print(f"probed {int(missing_info(df).sum())} of {len(df)} rows, {len(failures)} unreadable; wrote {output}")
    return len(failures)


if __name__ == "__main__":
    run_cli(main)
