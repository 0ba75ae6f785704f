"""Metadata tables: reading CSV/Parquet, path resolution, atomic writes, and probing missing sizes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from opensora.datasets.metadata import (
    IMAGE_EXTENSIONS,
    fill_missing_info,
    is_image,
    missing_info,
    read_metadata,
    write_metadata,
)
from opensora.errors import OpenSoraError
from tests.datasets.media import index_frames, write_image, write_video
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools/datasets/probe_metadata.py"


def one_line_error(call) -> str:
    with pytest.raises(OpenSoraError) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


def test_is_image():
    assert IMAGE_EXTENSIONS == (".jpg", ".jpeg", ".png", ".webp", ".bmp")
    assert is_image("a/b.JPG") and is_image(Path("x.webp")) and is_image("c.jpeg")
    assert not is_image("clip.mp4") and not is_image("png") and not is_image("a.png.mkv")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_read_resolves_paths_against_the_table_folder(tmp_path, suffix):
    df = pd.DataFrame(
        {
            "path": ["videos/a.mp4", "../elsewhere/b.png", "/abs/c.mp4"],
            "text": ["a cat", "a dog", "a car"],
            "num_frames": [51, 1, 102],
            "aes": [5.5, 6.0, 4.25],
        }
    )
    table = tmp_path / "data" / f"meta{suffix}"
    write_metadata(df, table)
    read = read_metadata(table)
    expected = [str(tmp_path / "data/videos/a.mp4"), str(tmp_path / "elsewhere/b.png"), "/abs/c.mp4"]
    assert read["path"].tolist() == expected
    assert read["text"].tolist() == df["text"].tolist() and read["num_frames"].tolist() == [51, 1, 102]
    assert read["aes"].tolist() == [5.5, 6.0, 4.25]
    assert read_metadata(table, resolve_paths=False)["path"].tolist() == df["path"].tolist()


def test_read_errors_are_one_line(tmp_path):
    assert "does not exist" in one_line_error(lambda: read_metadata(tmp_path / "nope.csv"))
    assert ".csv or .parquet" in one_line_error(lambda: read_metadata(tmp_path / "meta.json"))
    no_path = tmp_path / "no_path.csv"
    no_path.write_text("text,num_frames\nhello,3\n")
    assert "no 'path' column" in one_line_error(lambda: read_metadata(no_path))
    blank = tmp_path / "blank.csv"
    blank.write_text("path,text\na.mp4,x\n,y\n")
    assert "empty path" in one_line_error(lambda: read_metadata(blank))
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    assert "cannot read metadata" in one_line_error(lambda: read_metadata(broken))


def test_write_is_atomic_and_replaces(tmp_path):
    table = tmp_path / "meta.csv"
    write_metadata(pd.DataFrame({"path": ["a.mp4"]}), table)
    write_metadata(pd.DataFrame({"path": ["b.mp4", "c.mp4"]}), table)
    assert read_metadata(table, resolve_paths=False)["path"].tolist() == ["b.mp4", "c.mp4"]

    class Unwritable:  # a failing write leaves the old file and no temporary behind
        columns = ["path"]

        def to_csv(self, *args, **kwargs):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_metadata(Unwritable(), table)
    assert sorted(os.listdir(tmp_path)) == ["meta.csv"]
    assert len(read_metadata(table)) == 2


def make_dataset(folder: Path) -> pd.DataFrame:
    """Three readable files, one garbage file and one missing file, with some info already known."""
    (folder / "videos").mkdir(parents=True)
    write_video(folder / "videos/a.mp4", index_frames(12, 32, 64), 24)
    write_video(folder / "videos/b.mkv", index_frames(9, 48, 32, bits=4), 25, rotation=90)
    write_image(folder / "c.png", np.zeros((20, 30, 3), np.uint8))
    (folder / "videos/bad.mp4").write_bytes(b"\x00garbage" * 50)
    return pd.DataFrame(
        {
            "path": ["videos/a.mp4", "videos/b.mkv", "c.png", "videos/bad.mp4", "videos/gone.mp4"],
            "text": ["a", "b", "c", "d", "e"],
            "fps": [np.nan, 30.0, np.nan, np.nan, np.nan],  # a known value is kept, not re-probed
        }
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_fill_missing_info(tmp_path, workers):
    df = make_dataset(tmp_path)
    assert missing_info(df).tolist() == [True] * 5
    filled, failures = fill_missing_info(df, root=tmp_path, workers=workers)
    assert len(failures) == 2 and "bad.mp4" in failures[0] and "gone.mp4" in failures[1]
    assert all("\n" not in message for message in failures)
    good = filled.iloc[:3]
    assert good["num_frames"].tolist() == [12, 9, 1]
    assert good["height"].tolist() == [32, 32, 20] and good["width"].tolist() == [64, 48, 30]  # b is rotated
    assert good["fps"].tolist() == [24.0, 30.0, 0.0]
    assert good["aspect_ratio"].tolist() == pytest.approx([0.5, 32 / 48, 20 / 30])
    assert good["resolution"].tolist() == [2048, 1536, 600]
    assert filled.iloc[3:][["num_frames", "height", "width", "aspect_ratio"]].isna().all().all()
    assert filled["path"].tolist() == df["path"].tolist() and filled["text"].tolist() == df["text"].tolist()
    assert missing_info(filled).tolist() == [False, False, False, True, True]


def test_fill_gives_integer_columns_when_complete(tmp_path):
    write_video(tmp_path / "a.mp4", index_frames(5, 32, 64), 24)
    filled, failures = fill_missing_info(pd.DataFrame({"path": [str(tmp_path / "a.mp4")]}))
    assert not failures
    for column in ("num_frames", "height", "width", "resolution"):
        assert filled[column].dtype == np.int64


def load_tool():
    return load_script(TOOL, "probe_metadata")


def test_probe_tool_fills_a_csv_in_place(tmp_path, capsys):
    make_dataset(tmp_path).to_csv(tmp_path / "meta.csv", index=False)
    assert load_tool().main([str(tmp_path / "meta.csv"), "--workers", "1"]) == 2
    captured = capsys.readouterr()
    unreadable = [line for line in captured.err.splitlines() if line.startswith("unreadable:")]
    assert len(unreadable) == 2 and "bad.mp4" in unreadable[0] and "gone.mp4" in unreadable[1]
    assert "probed 5 of 5 rows, 2 unreadable" in captured.out
    out = read_metadata(tmp_path / "meta.csv", resolve_paths=False)
    assert out["path"].tolist()[0] == "videos/a.mp4"  # paths written as they were
    assert out["num_frames"].tolist()[:3] == [12, 9, 1] and out["num_frames"].isna().tolist()[3:] == [True, True]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "meta.csv", "videos"]


def test_probe_tool_writes_elsewhere_and_fails_in_one_line(tmp_path):
    write_video(tmp_path / "a.mp4", index_frames(6, 32, 64), 24)
    pd.DataFrame({"path": ["a.mp4"], "text": ["x"]}).to_csv(tmp_path / "meta.csv", index=False)
    output = tmp_path / "out" / "meta.parquet"
    assert load_tool().main([str(tmp_path / "meta.csv"), "--output", str(output), "--workers", "2"]) == 0
    assert read_metadata(output)["num_frames"].tolist() == [6]
    assert "num_frames" not in pd.read_csv(tmp_path / "meta.csv").columns  # the input is untouched
    # as a command: a bad input is one line on stderr and exit status 2 (this path imports no torch)
    missing = subprocess.run([sys.executable, str(TOOL), str(tmp_path / "none.csv")], capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        f"error: metadata file '{tmp_path / 'none.csv'}' does not exist"
    ]
