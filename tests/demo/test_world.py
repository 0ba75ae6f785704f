"""The demo world: held-out triples, deterministic generation, and analysis that reads clips back."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from opensora.datasets.video_io import probe, read_clip
from opensora.demo.analysis import read_video
from opensora.demo.world import COLOURS, MOTIONS, SHAPES, held_out_triples, random_scene, render
from opensora.inference.media import write_mp4
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]


def generator():
    return load_script(ROOT / "tools/demo_world/generate.py", "demo_generate")


def test_fifteen_held_out_triples_cover_every_attribute():
    held = held_out_triples()
    assert len(held) == 15 and len(set(held)) == 15
    assert {c for c, _, _ in held} == set(COLOURS) and {s for _, s, _ in held} == set(SHAPES)
    assert {m for _, _, m in held} == set(MOTIONS)
    assert ("red", "circle", "moving left") in held  # 0 + 0 + 0


def test_generation_is_deterministic_and_never_shows_held_out(tmp_path):
    tool = generator()
    args = ["--num-clips", "24", "--seed", "3", "--workers", "1"]
    first, second = tool.main(["--out", str(tmp_path / "a"), *args]), tool.main(["--out", str(tmp_path / "b"), *args])
    rows = list(csv.DictReader(first.open()))
    assert first.read_text() == second.read_text()
    assert all((tmp_path / "a" / r["path"]).read_bytes() == (tmp_path / "b" / r["path"]).read_bytes() for r in rows)
    held = set(held_out_triples())
    assert not any((r["colour"], r["shape"], r["motion"]) in held for r in rows)
    for row in rows:  # files play and have the recorded size
        info = probe(tmp_path / "a" / row["path"])
        assert (info.num_frames, info.height, info.width) == (int(row["num_frames"]), int(row["height"]),
                                                              int(row["width"]))  # fmt: skip
    assert any(r["path"].endswith(".png") for r in rows) and any(r["path"].endswith(".mp4") for r in rows)


@pytest.mark.parametrize("size", [(64, 64), (64, 96)])
def test_analysis_reads_every_triple_back_from_h264(tmp_path, size):
    rng = np.random.default_rng(0)
    triples = [(c, s, m) for c in COLOURS for s in SHAPES for m in MOTIONS]
    wrong = []
    for i, triple in enumerate(triples):
        scene = random_scene(rng, *size, num_frames=17, triple=triple, allow_held_out=True)
        path = tmp_path / f"{i}.mp4"
        write_mp4(path, render(scene), 12)
        reading = read_video(read_clip(path, 17).frames.numpy())
        if (reading.colour, reading.shape, reading.motion) != triple:
            wrong.append((triple, reading))
    assert not wrong, wrong[:3]
