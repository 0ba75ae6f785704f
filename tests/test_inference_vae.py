"""scripts/inference_vae.py: originals, pipeline and spatial-only reconstructions as playable videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from opensora.config import run_cli
from opensora.datasets import probe, read_clip
from opensora.registry import MODELS, build_module
from tests.datasets.media import write_video
from tests.scripts import load_script
from tests.tiny import TINY_VAE, randomise_weights
from tests.training.helpers import ROOT, write_clips

SCRIPT = ROOT / "scripts" / "inference_vae.py"
TINY = ROOT / "configs" / "vae" / "inference" / "tiny.py"


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_writes_the_three_folders_as_videos_of_the_clips_length_and_fps(tmp_path: Path) -> None:
    csv = write_clips(tmp_path / "data", videos=2, images=0, frames=12)
    write_video(tmp_path / "data" / "short.mp4", np.zeros((5, 32, 32, 3), np.uint8), fps=24)  # < 9 frames
    write_video(tmp_path / "data" / "slow.mp4", np.full((10, 32, 32, 3), 90, np.uint8), fps=12)
    meta = pd.read_csv(csv)
    rows = [("short.mp4", "too short", 5, 32, 32), ("slow.mp4", "grey", 10, 32, 32)]
    pd.concat([meta, pd.DataFrame(rows, columns=meta.columns)]).to_csv(csv, index=False)
    vae = randomise_weights(build_module(TINY_VAE, MODELS), seed=3)
    vae.save_pretrained(tmp_path / "vae")

    argv = [str(TINY), "--ckpt-path", str(tmp_path / "vae"), "--data-path", str(csv),
            "--save-dir", str(tmp_path / "out" / "recon"), "--batch-size", "2"]  # fmt: skip
    report = load_script(SCRIPT, "inference_vae_script").main(argv)

    assert (report.written, report.skipped) == (3, 1)
    folders = [tmp_path / "out" / f"recon_{kind}" for kind in ("ori", "rec", "spatial")]
    assert list(report.folders.values()) == folders
    names = ["00000_clip0.mp4", "00001_clip1.mp4", "00003_slow.mp4"]
    assert all(sorted(p.name for p in folder.iterdir()) == names for folder in folders)
    for name, fps in zip(names, (24, 24, 12)):
        clips = []
        for folder in folders:
            info = probe(folder / name)  # decodable, 9 frames at the source's rate
            assert (info.num_frames, info.height, info.width, info.fps) == (9, 32, 32, fps), (folder, name)
            clips.append(read_clip(folder / name, 9).frames.float())
        ori, rec, spatial = clips
        assert not torch.equal(rec, spatial)  # two different paths through the VAE
        assert (rec - ori).abs().mean() > 5  # a random VAE does not reproduce its input
    source = read_clip(tmp_path / "data" / "clip0.mp4", 9).frames.float()
    first = read_clip(folders[0] / names[0], 9).frames.float()
    assert (first - source).abs().mean() < 4  # the originals are the clips themselves (same size, 9 frames)
    assert np.isfinite(report.psnr["rec"]) and np.isfinite(report.psnr["spatial"])


def test_missing_data_exits_in_one_line(tmp_path: Path, capsys) -> None:
    argv = [str(TINY), "--data-path", str(tmp_path / "missing.csv"), "--save-dir", str(tmp_path / "out")]
    script = load_script(SCRIPT, "inference_vae_script")
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: script.main(argv))
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: data '{tmp_path / 'missing.csv'}' does not exist (set it with --data-path)"
    ]
