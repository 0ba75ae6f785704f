"""Dataset metadata tables: reading, atomic writing, and filling in video sizes by probing files.

A metadata file is a CSV or Parquet table with one row per video or image. Only ``path`` is
required; the release's tables also carry ``text``, ``num_frames``, ``height``, ``width``, ``fps``,
``aspect_ratio`` (height / width), ``resolution`` (height * width), ``aes``, ``flow`` and others,
which are kept as they are. Relative paths are relative to the metadata file's folder, so a
dataset folder can be moved as a whole.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from opensora.errors import OpenSoraError

if TYPE_CHECKING:
    from opensora.datasets.video_io import VideoInfo

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
SUFFIXES = (".csv", ".parquet")
PROBED_COLUMNS = ("num_frames", "height", "width", "fps")
INT_COLUMNS = ("num_frames", "height", "width", "resolution")


def is_image(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names an image (by extension, any case) rather than a video."""
    return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


def read_metadata(path: str | os.PathLike[str], resolve_paths: bool = True) -> pd.DataFrame:
    """The table at ``path`` (.csv or .parquet), with ``path`` entries made absolute by default.

    A missing file, an unknown suffix, an unparsable table, a missing ``path`` column or an empty
    path raises a one-line OpenSoraError.
    """
    path = Path(path)
    suffix = _checked_suffix(path)
    if not path.is_file():
        raise OpenSoraError(f"metadata file '{path}' does not exist")
    try:
        df = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # pandas and pyarrow raise many types for a malformed file
        raise OpenSoraError(f"cannot read metadata '{path}': {_one_line(exc)}") from exc
    if "path" not in df.columns:
        raise OpenSoraError(f"metadata '{path}' has no 'path' column (columns: {', '.join(map(str, df.columns))})")
    empty = df["path"].isna() | (df["path"].astype(str).str.strip() == "")
    if empty.any():
        rows = ", ".join(str(i) for i in np.flatnonzero(empty.to_numpy())[:5])
        raise OpenSoraError(f"metadata '{path}': {int(empty.sum())} rows have an empty path (rows {rows})")
    if resolve_paths:
        df["path"] = resolve(df["path"], path.parent)
    return df


def resolve(paths: Iterable[str], root: str | os.PathLike[str]) -> list[str]:
    """Each path made absolute against ``root`` (itself made absolute); absolute paths are kept."""
    root = os.path.abspath(root)
    return [os.path.normpath(os.path.join(root, os.path.expanduser(str(p)))) for p in paths]


def write_metadata(df: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write ``df`` to ``path`` (.csv or .parquet) via a temporary file and a rename.

    Readers never see a half-written table, and a failed write leaves any old file untouched.
    """
    path = Path(path)
    suffix = _checked_suffix(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def fill_missing_info(
    df: pd.DataFrame,
    root: str | os.PathLike[str] | None = None,
    workers: int = 1,
    progress: bool = False,
) -> tuple[pd.DataFrame, list[str]]:
    """A copy of ``df`` whose missing ``num_frames/height/width/fps`` cells are filled by probing.

    Only rows missing one of those are probed (``workers`` processes when more than one); values
    already present are kept. ``aspect_ratio`` and ``resolution`` are then derived from height and
    width where missing. Relative paths resolve against ``root`` (default: the working directory).
    Returns the table and one message per file that could not be probed; those rows stay empty.
    """
    # imported here, not at the top, because video_io imports this module; before the pool
    # starts, so forked workers inherit it (and torch) instead of each importing it again
    import opensora.datasets.video_io  # noqa: F401

    out = df.copy()
    for column in (*PROBED_COLUMNS, "aspect_ratio", "resolution"):
        if column not in out.columns:
            out[column] = np.nan
        out[column] = pd.to_numeric(out[column], errors="coerce").astype("float64")  # junk counts as missing
    todo = np.flatnonzero(missing_info(out))
    files = resolve(out["path"].iloc[todo], root if root is not None else os.getcwd())
    failures = []
    for row, (info, error) in zip(todo, _probe_all(files, workers, progress)):
        if info is None:
            failures.append(error)
            continue
        for column in PROBED_COLUMNS:
            if pd.isna(out.iat[row, out.columns.get_loc(column)]):
                out.iat[row, out.columns.get_loc(column)] = float(getattr(info, column))
    out["aspect_ratio"] = out["aspect_ratio"].fillna(out["height"] / out["width"])
    out["resolution"] = out["resolution"].fillna(out["height"] * out["width"])
    for column in INT_COLUMNS:
        if not out[column].isna().any():
            out[column] = out[column].round().astype("int64")
    return out, failures


def missing_info(df: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the rows lacking one of ``num_frames/height/width/fps`` (or the column)."""
    missing = np.zeros(len(df), dtype=bool)
    for column in PROBED_COLUMNS:
        missing |= df[column].isna().to_numpy() if column in df.columns else True
    return missing


def _probe_all(files: list[str], workers: int, progress: bool) -> Iterator[tuple[VideoInfo | None, str]]:
    from tqdm import tqdm

    bar = tqdm(total=len(files), desc="probing", unit="file", disable=not progress)
    if workers <= 1 or len(files) <= 1:
        yield from _with_bar(map(_probe_one, files), bar)
        return
    chunksize = max(1, min(64, len(files) // (workers * 8)))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from _with_bar(pool.map(_probe_one, files, chunksize=chunksize), bar)


def _with_bar(results: Iterable[tuple[VideoInfo | None, str]], bar) -> Iterator[tuple[VideoInfo | None, str]]:
    with bar:
        for result in results:
            bar.update()
            yield result


def _probe_one(path: str) -> tuple[VideoInfo | None, str]:
    """(info, "") or (None, one-line reason); module level so a process pool can pickle it."""
    from opensora.datasets.video_io import VideoReadError, probe

    try:
        return probe(path), ""
    except VideoReadError as exc:
        return None, str(exc)


def _checked_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise OpenSoraError(f"metadata file '{path}' must end in .csv or .parquet")
    return suffix


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
