"""Resolution/aspect-ratio tables and the lookups on them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from opensora.datasets.aspect import (
    ASPECT_RATIO_MAP,
    ASPECT_RATIOS,
    NUM_FRAMES_MAP,
    get_closest_ratio,
    get_image_size,
    get_num_frames,
)
from opensora.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_DIR = Path(os.environ.get("OPENSORA_REFERENCE_DIR", ROOT.parent / "shared" / "reference"))


def _reference_tables() -> dict[str, dict]:
    path = REFERENCE_DIR / "aspect_ratios.json"
    if not path.is_file():
        pytest.skip(f"reference tables not found at {path} (set OPENSORA_REFERENCE_DIR)")
    raw = json.loads(path.read_text())
    # the reference names its tables with a description after the name, e.g. "ASPECT_RATIOS (...)"
    return {key.split()[0]: value for key, value in raw.items()}


def test_tables_equal_reference() -> None:
    ref = _reference_tables()
    assert dict(ASPECT_RATIO_MAP) == ref["ASPECT_RATIO_MAP"]
    assert dict(NUM_FRAMES_MAP) == ref["NUM_FRAMES_MAP"]
    assert list(ASPECT_RATIOS) == list(ref["ASPECT_RATIOS"])
    for name, (pixels, sizes) in ref["ASPECT_RATIOS"].items():
        assert ASPECT_RATIOS[name][0] == pixels, name
        assert list(ASPECT_RATIOS[name][1]) == list(sizes), name
        assert {key: list(hw) for key, hw in ASPECT_RATIOS[name][1].items()} == sizes, name


def test_tables_are_read_only() -> None:
    with pytest.raises(TypeError):
        ASPECT_RATIOS["999p"] = (1, {})  # type: ignore[index]
    with pytest.raises(TypeError):
        ASPECT_RATIOS["240p"][1]["0.56"] = (1, 1)  # type: ignore[index]


def test_known_resolutions_and_sizes() -> None:
    assert {"144p", "240p", "360p", "480p", "720p", "1080p", "2k", "4k", "256", "512", "1024", "2048", "2880"} <= set(
        ASPECT_RATIOS
    )
    assert ASPECT_RATIOS["720p"][0] == 1280 * 720
    assert get_image_size("720p", "9:16") == (720, 1280)
    assert get_image_size("240p", "16:9") == (426, 240)
    assert get_image_size("480p", "1:1") == (640, 640)
    assert get_image_size("240p", "0.56") == (240, 426)


def test_image_size_ratio_forms() -> None:
    assert get_image_size("256", "0.50") == get_image_size("256", "0.5") == (176, 352)
    assert get_image_size("240p", "1:2") == get_image_size("240p", "0.5") == (226, 452)
    assert get_image_size("720p", 9 / 16) == (720, 1280)  # a number picks the closest ratio
    assert get_image_size("256", 1.02) == (256, 256)


@pytest.mark.parametrize(
    ("resolution", "ratio", "match"),
    [
        ("999p", "9:16", "unknown resolution '999p' .*240p"),
        ("240p", "5:4", "unknown aspect ratio '5:4' for 240p"),
        ("512", "9:16", "unknown aspect ratio '9:16' for 512"),  # its table has 0.57, not 0.56
        ("240p", -1.0, "positive number"),
        ("240p", None, "must be a string"),
    ],
)
def test_image_size_errors(resolution: str, ratio: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        get_image_size(resolution, ratio)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_num_frames() -> None:
    assert get_num_frames("2s") == 51
    assert get_num_frames("4s") == 102
    assert get_num_frames("1x") == 51
    assert get_num_frames("16x") == 816
    assert get_num_frames(17) == 17
    assert get_num_frames("51") == 51


@pytest.mark.parametrize(("value", "match"), [("3m", "unknown frame count '3m'.*2s"), (0, ">= 1"), (True, "integer")])
def test_num_frames_errors(value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        get_num_frames(value)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_closest_ratio() -> None:
    table = ASPECT_RATIOS["240p"][1]
    assert get_closest_ratio(720, 1280, table) == "0.56"
    assert get_closest_ratio(1080, 1080, table) == "1.00"
    assert get_closest_ratio(1920, 1080, table) == "1.78"
    assert get_closest_ratio(100, 1000, table) == "0.38"  # beyond the table: the extreme key
    # exactly between two keys the earlier one wins
    assert get_closest_ratio(1.0, 1.0, {"0.5": (1, 2), "1.5": (3, 2)}) == "0.5"
