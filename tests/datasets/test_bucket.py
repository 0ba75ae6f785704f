"""Bucket configs, the assignment rule, its determinism, and the bucket report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from opensora.datasets import bucket as bucket_module
from opensora.datasets.aspect import ASPECT_RATIOS, get_closest_ratio
from opensora.datasets.bucket import (
    Bucket,
    BucketEntry,
    BucketId,
    bucket_table,
    check_nonempty,
    format_bucket_table,
)
from opensora.errors import ConfigError, OpenSoraError
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
CONFIG = {"240p": {1: (1.0, 8), 51: (1.0, 4), 102: (1.0, 2)}, "480p": {51: (1.0, 2)}}


def assign_one(bucket: Bucket, frames: float, height: float, width: float, **kwargs: int) -> BucketId | str:
    """The bucket of one sample, or its drop reason."""
    result = bucket.assign([frames], [height], [width], **kwargs)
    return result.ids()[0] or str(result.reason[0])


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


def test_buckets_sizes_and_batch_sizes() -> None:
    bucket = Bucket(CONFIG)
    ratios = len(ASPECT_RATIOS["240p"][1])
    assert len(bucket.buckets) == 4 * ratios
    assert bucket.buckets == sorted(bucket.buckets)
    assert list(bucket.config) == ["480p", "240p"]  # largest pixel count first
    assert list(bucket.config["240p"]) == [102, 51, 1]
    assert bucket.batch_size(BucketId("240p", 51, "0.56")) == 4
    assert bucket.image_size(BucketId("240p", 51, "0.56")) == (240, 426)
    assert bucket.image_size(BucketId("480p", 51, "1.00")) == (640, 640)
    with pytest.raises(KeyError, match="not a bucket"):
        bucket.batch_size(BucketId("480p", 1, "0.56"))


def test_config_forms_are_equivalent() -> None:
    released = Bucket({"240p": {1: (1.0, 8), 51: ((1.0, 0.5), 4)}})
    from_json = Bucket(json.loads(json.dumps({"240p": {"51": [[1, 0.5], 4], "1": [1, 8]}})))
    assert released.config == from_json.config
    assert released.buckets == from_json.buckets
    assert released.config_hash() == from_json.config_hash()
    assert released.config_hash() != Bucket({"240p": {1: (1.0, 8), 51: ((1.0, 0.4), 4)}}).config_hash()
    assert released.config_hash() != Bucket({"240p": {1: (1.0, 8), 51: ((1.0, 0.5), 4)}}, seed=1).config_hash()
    assert Bucket({"240p": {"2s": (1.0, 4)}}).config["240p"] == {51: BucketEntry(1.0, 1.0, 4)}


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"999p": {51: (1.0, 4)}}, r"unknown resolution '999p'"),
        ({"240p": {51: (1.5, 4)}}, r"bucket_config\['240p'\]\[51\]: keep_prob must be a number in \[0, 1\], got 1.5"),
        ({"240p": {51: ((1.0, -0.1), 4)}}, r"\[51\]: frame_keep_prob must be a number in \[0, 1\]"),
        ({"240p": {51: (1.0, 0)}}, r"\[51\]: batch size must be an integer >= 1, got 0"),
        ({"240p": {51: (1.0, 2.5)}}, r"\[51\]: batch size must be an integer"),
        ({"240p": {51: (1.0, True)}}, r"\[51\]: batch size must be an integer"),
        ({"240p": {51: (1.0, 4, 2)}}, r"\[51\]: expected \(keep_prob, batch_size\)"),
        ({"240p": {51: 1.0}}, r"\[51\]: expected \(keep_prob, batch_size\)"),
        ({"240p": {51: ((1.0, 0.5, 0.2), 4)}}, r"\[51\]: expected keep_prob or \(keep_prob, frame_keep_prob\)"),
        ({"240p": {51: ("high", 4)}}, r"\[51\]: keep_prob must be a number"),
        ({"240p": {1: ((1.0, 0.5), 4)}}, r"\[1\]: frame_keep_prob does not apply to the 1-frame"),
        ({"240p": {"abc": (1.0, 4)}}, r"\['abc'\]: unknown frame count 'abc'"),
        ({"240p": {51: (1.0, 4), "51": (1.0, 2)}}, r"frame count 51 appears twice"),
        ({"240p": {}}, r"bucket_config\['240p'\] must be a non-empty dict"),
        ({}, r"bucket_config must be a non-empty dict"),
        (None, r"bucket_config must be a non-empty dict"),
    ],
)
def test_config_validation(config: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        Bucket(config)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_seed_must_be_an_integer() -> None:
    with pytest.raises(ConfigError, match="seed"):
        Bucket(CONFIG, seed=0.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# The rule, with keep probabilities 0 and 1
# ---------------------------------------------------------------------------------------------


def test_resolution_is_the_largest_that_is_nearly_filled() -> None:
    bucket = Bucket(CONFIG)
    assert assign_one(bucket, 60, 480, 854) == BucketId("480p", 51, "0.56")
    assert assign_one(bucket, 60, 1080, 1920) == BucketId("480p", 51, "0.56")
    # 0.8 * 640 * 640.5 = 327936 = 427 * 768: on the boundary qualifies, one pixel column less does not
    assert assign_one(bucket, 60, 427, 768) == BucketId("480p", 51, "0.56")
    assert assign_one(bucket, 60, 427, 767) == BucketId("240p", 51, "0.56")
    assert assign_one(bucket, 60, 196, 418) == BucketId("240p", 51, "0.48")  # 81928 >= 0.8 * 102240
    assert assign_one(bucket, 60, 196, 417) == "too_small"


def test_frame_count_is_the_largest_that_fits() -> None:
    bucket = Bucket(CONFIG)
    assert assign_one(bucket, 300, 240, 426) == BucketId("240p", 102, "0.56")
    assert assign_one(bucket, 103, 240, 426) == BucketId("240p", 102, "0.56")
    assert assign_one(bucket, 102, 240, 426) == BucketId("240p", 51, "0.56")  # needs strictly more frames
    assert assign_one(bucket, 52, 240, 426) == BucketId("240p", 51, "0.56")
    assert assign_one(bucket, 51, 240, 426) == "too_short"
    assert assign_one(bucket, 205, 240, 426, frame_interval=2) == BucketId("240p", 102, "0.56")
    assert assign_one(bucket, 204, 240, 426, frame_interval=2) == BucketId("240p", 51, "0.56")
    assert assign_one(bucket, 103, 240, 426, frame_interval=2) == BucketId("240p", 51, "0.56")
    assert assign_one(bucket, 102, 240, 426, frame_interval=2) == "too_short"
    # too short for 480p's only frame count: falls to 240p, where 51 does not fit either
    assert assign_one(bucket, 40, 480, 854) == "too_short"


def test_images_use_the_one_frame_bucket() -> None:
    bucket = Bucket(CONFIG)
    assert assign_one(bucket, 1, 240, 426) == BucketId("240p", 1, "0.56")
    assert assign_one(bucket, 1, 720, 1280) == BucketId("240p", 1, "0.56")  # 480p has no image bucket
    assert assign_one(Bucket({"240p": {51: (1.0, 4)}}), 1, 240, 426) == "too_short"
    two_frames = Bucket({"240p": {1: (1.0, 4), 2: (1.0, 4)}})
    assert assign_one(two_frames, 3, 240, 426) == BucketId("240p", 2, "0.56")
    assert assign_one(two_frames, 2, 240, 426) == "too_short"  # videos never go to the image bucket


def test_ratio_is_the_closest_key() -> None:
    bucket = Bucket(CONFIG)
    assert assign_one(bucket, 60, 300, 300) == BucketId("240p", 51, "1.00")
    assert assign_one(bucket, 60, 1000, 300) == BucketId("240p", 51, "2.08")  # taller than any key
    assert assign_one(bucket, 60, 640, 480) == BucketId("240p", 51, "1.33")
    # H/W exactly between two keys (0.875 between 0.75 and 1.00; 0.55 between 0.54 and 0.56): the earlier key
    assert assign_one(bucket, 60, 280, 320) == BucketId("240p", 51, "0.75")
    assert assign_one(bucket, 60, 330, 600) == BucketId("240p", 51, "0.54")
    rng = np.random.default_rng(0)
    heights, widths = rng.integers(400, 2000, 200), rng.integers(400, 2000, 200)
    ids = bucket.assign(np.full(200, 60), heights, widths).ids()
    for bucket_id, h, w in zip(ids, heights, widths):
        assert bucket_id.ratio == get_closest_ratio(h, w, ASPECT_RATIOS[bucket_id.resolution][1])


def test_invalid_and_too_small_samples() -> None:
    bucket = Bucket(CONFIG)
    result = bucket.assign([60, 60, 0, 60, 60], [100, np.nan, 240, 240, -5], [100, 426, 426, 0, 426])
    assert result.ids() == [None] * 5
    assert result.reason.tolist() == ["too_small", "invalid", "invalid", "invalid", "invalid"]
    assert result.drop_counts() == {"invalid": 4, "too_small": 1}


def test_keep_prob_zero_falls_to_the_next_resolution() -> None:
    bucket = Bucket({"480p": {1: (0.0, 2), 51: (0.0, 2)}, "240p": {1: (1.0, 2), 51: (1.0, 2)}})
    assert assign_one(bucket, 60, 480, 854) == BucketId("240p", 51, "0.56")
    assert assign_one(bucket, 1, 480, 854) == BucketId("240p", 1, "0.56")
    never = Bucket({"480p": {51: (0.0, 2)}, "240p": {1: (0.0, 2), 51: (0.0, 2)}})
    assert assign_one(never, 60, 480, 854) == "dropped_by_prob"
    assert assign_one(never, 1, 480, 854) == "dropped_by_prob"


def test_frame_keep_prob_zero_moves_to_a_smaller_frame_count() -> None:
    bucket = Bucket({"240p": {51: (1.0, 2), 102: ((1.0, 0.0), 2)}})
    assert assign_one(bucket, 300, 240, 426) == BucketId("240p", 51, "0.56")
    never = Bucket({"480p": {51: ((1.0, 0.0), 2)}, "240p": {51: ((1.0, 0.0), 2), 102: ((1.0, 0.0), 2)}})
    assert assign_one(never, 300, 480, 854) == "dropped_by_prob"
    assert assign_one(never, 30, 480, 854) == "too_short"


def test_inputs_may_be_pandas_series() -> None:
    df = pd.DataFrame({"num_frames": [1, 60, 300], "height": [240, 480, 240], "width": [426, 854, 426]})
    result = Bucket(CONFIG).assign(df["num_frames"], df["height"], df["width"])
    assert result.bucket_index.dtype == np.int64
    assert [b.num_frames for b in result.ids()] == [1, 51, 102]
    assert result.counts().sum() == 3


def test_bad_inputs() -> None:
    bucket = Bucket(CONFIG)
    with pytest.raises(ValueError, match="differ in length"):
        bucket.assign([1, 2], [240], [426])
    with pytest.raises(ConfigError, match="frame_interval"):
        bucket.assign([60], [240], [426], frame_interval=0)
    with pytest.raises(OpenSoraError, match="'height' must be numeric"):
        bucket.assign([60], ["tall"], [426])
    with pytest.raises(ValueError, match="index"):
        bucket.assign([60], [240], [426], index=[-1])


# ---------------------------------------------------------------------------------------------
# Random draws: rates, determinism, independence from other rows
# ---------------------------------------------------------------------------------------------

HALF = {"480p": {51: (0.5, 2)}, "240p": {1: (0.3, 2), 51: (1.0, 2), 102: ((0.8, 0.5), 2)}}


def random_samples(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = np.where(rng.random(n) < 0.3, 1, rng.integers(2, 400, n))
    return frames, rng.integers(150, 1100, n), rng.integers(150, 1100, n)


def test_keep_rates_follow_the_probabilities() -> None:
    n = 20_000
    bucket = Bucket({"240p": {1: (0.3, 2), 51: ((0.6, 0.5), 2)}})
    result = bucket.assign(np.r_[np.ones(n), np.full(n, 60)], np.full(2 * n, 240), np.full(2 * n, 426))
    kept = result.bucket_index >= 0
    assert abs(kept[:n].mean() - 0.3) < 0.02
    assert abs(kept[n:].mean() - 0.3) < 0.02  # frame keep 0.5, then keep 0.6


def reference_assign(bucket: Bucket, frames: int, height: int, width: int, sample_id: int, epoch: int) -> str:
    """The release's per-sample loop, drawing the same uniforms as the vectorised code."""
    key = bucket_module._sample_keys(bucket.seed, epoch, np.array([sample_id], np.uint64))

    def passes(prob: float, *parts: object) -> bool:
        return bool(bucket_module._draw(np.array([True]), key, prob, parts)[0])

    for name, entries in bucket.config.items():
        if height * width < 0.8 * ASPECT_RATIOS[name][0]:
            continue
        if frames == 1:
            if 1 in entries and passes(entries[1].keep_prob, name, 1, "keep"):
                return f"{name}/1/{get_closest_ratio(height, width, ASPECT_RATIOS[name][1])}"
            continue
        fitting = [
            t for t, e in entries.items() if t != 1 and frames > t and passes(e.frame_keep_prob, name, t, "frame")
        ]
        if fitting and passes(entries[fitting[0]].keep_prob, name, fitting[0], "keep"):
            return f"{name}/{fitting[0]}/{get_closest_ratio(height, width, ASPECT_RATIOS[name][1])}"
    return "dropped"


def test_matches_a_per_sample_reference_loop() -> None:
    bucket = Bucket(HALF, seed=3)
    frames, heights, widths = random_samples(400)
    for epoch in (0, 1):
        ids = bucket.assign(frames, heights, widths, epoch=epoch).ids()
        expected = [reference_assign(bucket, *row, i, epoch) for i, row in enumerate(zip(frames, heights, widths))]
        assert [str(b) if b else "dropped" for b in ids] == expected


def test_decisions_depend_on_seed_epoch_and_sample_id_only() -> None:
    bucket = Bucket(HALF, seed=7)
    frames, heights, widths = random_samples(2000)
    full = bucket.assign(frames, heights, widths).ids()
    assert bucket.assign(frames, heights, widths).ids() == full
    assert Bucket(HALF, seed=7).assign(frames, heights, widths).ids() == full
    perm = np.random.default_rng(1).permutation(2000)[:700]  # a shuffled subset, ids kept
    subset = bucket.assign(frames[perm], heights[perm], widths[perm], index=perm).ids()
    assert subset == [full[i] for i in perm]
    assert bucket.assign(frames, heights, widths, epoch=1).ids() != full
    assert Bucket(HALF, seed=8).assign(frames, heights, widths).ids() != full


def test_same_assignment_in_another_process() -> None:
    code = (
        "import sys, numpy as np\n"
        "from opensora.datasets.bucket import Bucket\n"
        "from tests.datasets.test_bucket import HALF, random_samples\n"
        "print(Bucket(HALF, seed=5).assign(*random_samples(500), epoch=2).bucket_index.tolist())\n"
    )
    env_seed = {"PYTHONHASHSEED": "123"}  # a different str hash salt must not matter
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env_seed},
        check=True,
    )
    here = Bucket(HALF, seed=5).assign(*random_samples(500), epoch=2).bucket_index.tolist()
    assert json.loads(proc.stdout) == here


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def test_bucket_table_counts_full_batches() -> None:
    bucket = Bucket({"240p": {1: (1.0, 2), 51: (1.0, 4)}})
    result = bucket.assign([1, 1, 1, 60, 60, 60, 60, 60, 1], [240] * 8 + [320], [426] * 8 + [320])
    rows = {str(row["bucket"]): row for row in bucket_table(result, bucket, num_ranks=2)}
    assert len(rows) == len(bucket.buckets)
    assert (rows["240p/1/0.56"]["samples"], rows["240p/1/0.56"]["batches"]) == (3, 1)
    assert (rows["240p/51/0.56"]["samples"], rows["240p/51/0.56"]["batches"]) == (5, 1)
    assert rows["240p/51/0.56"]["batches_per_rank"] == 0.5
    assert rows["240p/1/1.00"]["samples"] == 1
    assert (rows["240p/51/0.56"]["height"], rows["240p/51/0.56"]["width"]) == (240, 426)
    text = format_bucket_table(list(rows.values()), result.drop_counts())
    assert "240p/51/0.56" in text and "3 of 34 buckets hold samples" in text
    assert "total: 9 samples, 2 full batches, 1 per rank (2 ranks)" in text
    check_nonempty(list(rows.values()))
    with pytest.raises(ConfigError, match="only 2 full batches for 3 ranks"):
        check_nonempty(bucket_table(result, bucket, num_ranks=3))


def test_check_nonempty_names_partly_filled_buckets() -> None:
    bucket = Bucket({"240p": {51: (1.0, 4)}, "480p": {51: (1.0, 8)}})
    result = bucket.assign([60, 60, 60, 10], [240, 240, 320, 240], [426, 426, 320, 426])
    with pytest.raises(ConfigError) as info:
        check_nonempty(bucket_table(result, bucket))
    message = str(info.value)
    assert message.startswith("no full batch in any bucket: 240p/51/0.56 has 2 < batch size 4")
    assert "240p/51/1.00 has 1 < batch size 4" in message and "\n" not in message
    with pytest.raises(ConfigError, match="no sample was assigned to any of 240p/51, 480p/51"):
        check_nonempty(bucket_table(bucket.assign([10], [240], [426]), bucket))


def load_report_tool() -> types.ModuleType:
    return load_script(ROOT / "tools/datasets/bucket_report.py", "bucket_report")


def write_inputs(tmp_path: Path, columns: dict[str, list]) -> tuple[Path, Path]:
    csv = tmp_path / "meta.csv"
    pd.DataFrame({"path": [f"v{i}.mp4" for i in range(len(columns["height"]))], **columns}).to_csv(csv, index=False)
    config = tmp_path / "train.py"
    config.write_text('bucket_config = {"240p": {1: (1.0, 2), 51: ((1.0, 1.0), 2)}}\nseed = 3\n')
    return csv, config


def test_report_tool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tool = load_report_tool()
    csv, config = write_inputs(tmp_path, {"num_frames": [1, 1, 60, 60, 5], "height": [240] * 5, "width": [426] * 5})
    assert tool.main([str(csv), "--config", str(config), "--num-ranks", "2"]) == 0
    out = capsys.readouterr().out
    assert "5 samples, frame interval 1, seed 3" in out
    assert "total: 4 samples, 2 full batches, 1 per rank (2 ranks)" in out
    assert "dropped: 1 samples (too_short: 1)" in out
    assert tool.main([str(csv), "--config", str(config), "--num-ranks", "3"]) == 1
    assert "only 2 full batches for 3 ranks" in capsys.readouterr().err
    assert tool.main([str(csv), "--config", str(config), "--frame-interval", "30", "--seed", "0"]) == 0
    assert "total: 2 samples, 1 full batches" in capsys.readouterr().out


def test_report_tool_needs_probed_columns(tmp_path: Path) -> None:
    tool = load_report_tool()
    csv, config = write_inputs(tmp_path, {"height": [240], "width": [426]})
    with pytest.raises(OpenSoraError, match="no num_frames column.*probe_metadata.py"):
        tool.main([str(csv), "--config", str(config)])
