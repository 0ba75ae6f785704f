"""Resolution and aspect-ratio tables of the Open-Sora 1.2 release, and lookups on them.

The tables live in ``aspect_ratios.json`` next to this file (package data) and are read once at
import into read-only mappings:

- ``ASPECT_RATIOS``: resolution name (``"240p"``, ``"512"``, ...) -> (pixel count, {ratio key: (H, W)}),
  where a ratio key is height / width as text: ``"0.56"`` is a landscape frame such as 240 x 426.
- ``ASPECT_RATIO_MAP``: a height:width name (``"9:16"``, landscape) -> its ratio key (``"0.56"``).
- ``NUM_FRAMES_MAP``: a duration name (``"2s"``, ``"1x"``) -> frame count.

Open-Sora 2.0 names its two resolutions by side length (``"256px"``, ``"768px"``: that many pixels
squared) and its aspect ratios width:height (``"16:9"`` is landscape, 192 x 336 at 256px), with sides
rounded to multiples of 16 (:func:`get_image_size_v2`). Its training buckets (``"256px"``,
``"768px"``, ``"1024px"``) have their own size tables (:func:`bucket_table_v2`); ``BUCKET_RESOLUTIONS``
holds them beside the 1.2 tables, keyed like them.
"""

from __future__ import annotations

import json
import math
import numbers
import types
from collections.abc import Mapping
from pathlib import Path

from opensora.errors import ConfigError

_TABLE_FILE = Path(__file__).with_name("aspect_ratios.json")

RatioTable = Mapping[str, tuple[int, int]]


def _load_tables(
    path: Path,
) -> tuple[Mapping[str, tuple[int, RatioTable]], Mapping[str, str], Mapping[str, int]]:
    """(ASPECT_RATIOS, ASPECT_RATIO_MAP, NUM_FRAMES_MAP) from the JSON file, all read-only."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    ratios = {}
    for name, entry in raw["aspect_ratios"].items():
        sizes = {key: (int(h), int(w)) for key, (h, w) in entry["sizes"].items()}
        ratios[name] = (int(entry["pixels"]), types.MappingProxyType(sizes))
    return (
        types.MappingProxyType(ratios),
        types.MappingProxyType(dict(raw["aspect_ratio_map"])),
        types.MappingProxyType({key: int(value) for key, value in raw["num_frames_map"].items()}),
    )


ASPECT_RATIOS, ASPECT_RATIO_MAP, NUM_FRAMES_MAP = _load_tables(_TABLE_FILE)


def check_resolution(resolution: str) -> RatioTable:
    """The {ratio key: (H, W)} table of ``resolution``; ConfigError listing the known names otherwise."""
    if resolution not in ASPECT_RATIOS:
        raise ConfigError(f"unknown resolution {resolution!r} (known: {', '.join(ASPECT_RATIOS)})")
    return ASPECT_RATIOS[resolution][1]


def get_closest_ratio(height: float, width: float, ratios: Mapping[str, tuple[int, int]]) -> str:
    """The key of ``ratios`` whose value (H/W) is nearest ``height / width``; ties go to the earlier key."""
    aspect = height / width
    return min(ratios, key=lambda key: abs(float(key) - aspect))


RESOLUTIONS_V2 = {"256px": 256 * 256, "768px": 768 * 768}  # name -> pixel count
ASPECT_RATIOS_V2 = ("16:9", "9:16", "1:1", "2.39:1")  # the release's width:height choices


def get_image_size_v2(resolution: str, ratio: str) -> tuple[int, int]:
    """(H, W) of a 2.0 resolution at a width:height ``ratio`` (any ``"W:H"``, the release's four first)."""
    if resolution not in RESOLUTIONS_V2:
        raise ConfigError(f"unknown Open-Sora 2.0 resolution {resolution!r} (known: {', '.join(RESOLUTIONS_V2)})")
    try:
        w_part, h_part = (float(part) for part in str(ratio).split(":"))
    except ValueError:
        w_part = h_part = float("nan")
    if not (math.isfinite(w_part) and math.isfinite(h_part) and w_part > 0 and h_part > 0):
        raise ConfigError(f"aspect ratio {ratio!r} for {resolution}: expected width:height such as "
                          f"{', '.join(ASPECT_RATIOS_V2)}")  # fmt: skip
    height = math.sqrt(RESOLUTIONS_V2[resolution] * h_part / w_part)
    width = height * w_part / h_part
    return max(16, round(height / 16) * 16), max(16, round(width / 16) * 16)


# ---- Open-Sora 2.0's training buckets ------------------------------------------------------------
BUCKET_RATIOS_V2 = ("2.39:1", "2:1", "16:9", "1.85:1", "9:16", "5:8", "3:2", "4:3", "1:1")  # width:height
BUCKET_PIXELS_V2 = {"256px": 256 * 256, "768px": 768 * 768, "1024px": 1024 * 1024}
BUCKET_MULTIPLE_V2 = 16  # sides in whole 2x2 patches of an 8x VAE's latent


def _training_size(pixels: int, w_part: float, h_part: float, multiple: int) -> tuple[int, int]:
    """(H, W) in multiples of ``multiple`` near ``pixels`` at W:H = ``w_part``:``h_part`` (the release's rule:
    round both sides down, then take the one-step change of a side that comes closest to ``pixels``)."""
    width = int(math.sqrt(pixels * w_part / h_part) // multiple) * multiple
    height = int(pixels / width // multiple) * multiple
    best, size = abs(height * width - pixels), (height, width)
    steps = ((-multiple, 0), (multiple, 0), (0, -multiple), (0, multiple))
    for dh, dw in steps:  # each from the rounded-down size; the first strictly closest wins
        if abs((height + dh) * (width + dw) - pixels) < best:
            best, size = abs((height + dh) * (width + dw) - pixels), (height + dh, width + dw)
    return size


def bucket_table_v2(pixels: int, multiple: int = BUCKET_MULTIPLE_V2) -> dict[str, tuple[int, int]]:
    """{H/W key ("0.56" for 16:9): (H, W)} of a 2.0 training resolution of ``pixels`` pixels.

    Every width:height of :data:`BUCKET_RATIOS_V2` and its transpose, a size that an earlier ratio
    already has left out with its transpose; a transpose replaces a ratio of the same name.
    """
    landscape: dict[str, tuple[int, int]] = {}
    portrait: dict[str, tuple[int, int]] = {}
    for name in BUCKET_RATIOS_V2:
        w_text, h_text = name.split(":")
        size = _training_size(pixels, float(w_text), float(h_text), multiple)
        if size in landscape.values():
            continue
        landscape[name] = size
        portrait[f"{h_text}:{w_text}"] = (size[1], size[0])
    named = {**landscape, **portrait}
    return {f"{float(h) / float(w):.2f}": named[key] for key in named for w, h in [key.split(":")]}


BUCKET_RESOLUTIONS: Mapping[str, tuple[int, RatioTable]] = types.MappingProxyType({
    **ASPECT_RATIOS,
    **{name: (pixels, types.MappingProxyType(bucket_table_v2(pixels))) for name, pixels in BUCKET_PIXELS_V2.items()},
})  # fmt: skip


def check_bucket_resolution(resolution: str) -> RatioTable:
    """The {ratio key: (H, W)} table of a bucket resolution (1.2's names or 2.0's ``256px`` ...)."""
    if resolution not in BUCKET_RESOLUTIONS:
        raise ConfigError(f"unknown resolution {resolution!r} (known: {', '.join(BUCKET_RESOLUTIONS)})")
    return BUCKET_RESOLUTIONS[resolution][1]


def get_image_size(resolution: str, ratio: str | float) -> tuple[int, int]:
    """(H, W) of ``resolution`` at ``ratio`` (2.0 names such as ``"256px"``: :func:`get_image_size_v2`).

    ``ratio`` is an H:W name (``"9:16"``), a ratio key of that resolution's table (``"0.56"``; ``"0.5"``
    matches ``"0.50"``) or a number H/W, which picks the closest ratio of the table.
    """
    if resolution in RESOLUTIONS_V2:
        return get_image_size_v2(resolution, str(ratio))
    table = check_resolution(resolution)
    if isinstance(ratio, numbers.Real) and not isinstance(ratio, bool):
        if not math.isfinite(ratio) or ratio <= 0:
            raise ConfigError(f"aspect ratio must be a positive number (H/W), got {ratio!r}")
        return table[get_closest_ratio(float(ratio), 1.0, table)]
    if not isinstance(ratio, str):
        raise ConfigError(f"aspect ratio must be a string such as '9:16' or a number H/W, got {ratio!r}")
    key = _ratio_key(ratio.strip(), table)
    if key is None:
        raise ConfigError(
            f"unknown aspect ratio {ratio!r} for {resolution} "
            f"(names: {', '.join(ASPECT_RATIO_MAP)}; keys: {', '.join(table)})"
        )
    return table[key]


def _ratio_key(ratio: str, table: RatioTable) -> str | None:
    """The key of ``table`` that the name or key ``ratio`` stands for, or None."""
    if ratio in table:
        return ratio
    if ratio in ASPECT_RATIO_MAP:
        ratio = ASPECT_RATIO_MAP[ratio]
    try:
        value = float(ratio)
    except ValueError:
        return None
    # The 240p-style tables write "0.50" where the 256-style tables write "0.5": compare as numbers.
    return next((key for key in table if float(key) == value), None)


def get_num_frames(value: str | int) -> int:
    """A frame count from an int, a digit string or a duration name of ``NUM_FRAMES_MAP`` (``"2s"`` -> 51)."""
    if isinstance(value, str):
        text = value.strip()
        if text in NUM_FRAMES_MAP:
            return NUM_FRAMES_MAP[text]
        if not text.isdigit():
            raise ConfigError(f"unknown frame count {value!r} (an integer or one of: {', '.join(NUM_FRAMES_MAP)})")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"frame count must be an integer or a name such as '2s', got {value!r}")
    if value < 1:
        raise ConfigError(f"frame count must be >= 1, got {value}")
    return int(value)
