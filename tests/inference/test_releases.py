"""The 1.0 and 1.1 stacks (STDiT / STDiT2, per-frame VAE, IDDPM or DPM-Solver) through scripts/inference.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from opensora.config import run_cli
from opensora.datasets.video_io import probe
from tests.inference.test_cli import SCRIPT_MODULE

ROOT = Path(__file__).resolve().parents[2]
V10 = str(ROOT / "configs/opensora/inference/tiny.py")
V11 = str(ROOT / "configs/opensora-v1-1/inference/tiny.py")


def infer(config: str, *args: str) -> None:
    run_cli(lambda: SCRIPT_MODULE.main([config, "--num-sampling-steps", "3", "--verbose", "0", *args]))


def test_v1_0_samples_its_fixed_size(tmp_path):
    infer(V10, "--prompt", "a cat", "--save-dir", str(tmp_path))
    info = probe(tmp_path / "sample_0000.mp4")
    # one latent frame per video frame (no temporal compression); saved at fps // frame_interval
    assert (info.num_frames, info.height, info.width, info.fps) == (8, 64, 64, 8.0)


def test_v1_0_other_sizes_are_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        infer(V10, "--prompt", "a cat", "--image-size", "128", "128", "--save-dir", str(tmp_path))
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: this model samples latents of exactly [8, 8, 8]") and "\n" not in err


def test_v1_1_any_size_image_and_reference(tmp_path):
    infer(V11, "--prompt", "a cat", "--num-frames", "6", "--image-size", "48", "80", "--save-dir", str(tmp_path / "v"))
    info = probe(tmp_path / "v" / "sample_0000.mp4")
    assert (info.num_frames, info.height, info.width) == (6, 48, 80)
    infer(V11, "--prompt", "a cat", "--num-frames", "1", "--save-dir", str(tmp_path / "i"))
    image = tmp_path / "i" / "sample_0000.png"
    assert probe(image).is_image
    # 1.1 image-to-video: IDDPM keeps the conditioned latent frame
    infer(V11, "--prompt", "a cat", "--reference-path", str(image), "--mask-strategy", "0",
          "--save-dir", str(tmp_path / "i2v"))  # fmt: skip
    assert probe(tmp_path / "i2v" / "sample_0000.mp4").num_frames == 8


def test_v1_1_with_dpm_solver(tmp_path, capsys):
    solver = ("--cfg-options", "scheduler={'type': 'dpm-solver', 'num_sampling_steps': 3, 'cfg_scale': 4.0}")
    infer(V11, "--prompt", "a cat", "--save-dir", str(tmp_path), *solver)
    assert probe(tmp_path / "sample_0000.mp4").num_frames == 8
    with pytest.raises(SystemExit):
        infer(V11, "--prompt", "a cat", "--reference-path", str(tmp_path / "sample_0000.mp4"), "--mask-strategy", "0",
              "--save-dir", str(tmp_path / "b"), *solver)  # fmt: skip
    assert "dpm-solver sampler cannot condition on references" in capsys.readouterr().err
