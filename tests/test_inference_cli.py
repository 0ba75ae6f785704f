"""The inference entry point: a run writes samples; bad input stops with one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs/opensora-v1-2/inference/tiny.py")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts/inference.py"), TINY, *args], capture_output=True, text=True, cwd=ROOT
    )


def test_tiny_inference_writes_latents(tmp_path):
    result = _run("--prompt", "a red ball", "a blue cube", "--batch-size", "2", "--outputs", str(tmp_path),
                  "--num-sampling-steps", "3", "--flash-attn", "False")  # fmt: skip
    assert result.returncode == 0, result.stderr
    files = sorted(tmp_path.glob("*.safetensors"))
    assert len(files) == 2
    latent = load_file(str(files[0]))["latent"]
    assert latent.shape == (4, 5, 16, 16) and latent.isfinite().all()
    again = _run("--prompt", "a red ball", "--outputs", str(tmp_path / "again"), "--num-sampling-steps", "3")
    assert again.returncode == 0
    # the same prompt and seed give the same sample, batched or alone
    assert torch.allclose(load_file(str(tmp_path / "again" / "sample_0000.safetensors"))["latent"], latent, atol=1e-5)


def test_bad_input_gives_one_line_and_nonzero_exit(tmp_path):
    cases = [
        (("--prompt", "x", "--cfg-options", "model.depht=3"), "depht"),
        (("--prompt", "x", "--cfg-options", "nonsense=1"), "nonsense"),
        (("--prompt", "x", "--seed", "abc"), "seed"),
        (("--prompt", "x", "--ckpt-path", str(tmp_path / "missing.pt")), "missing.pt"),
        (("--outputs", str(tmp_path)), "prompt"),
    ]
    for args, word in cases:
        result = _run(*args)
        assert result.returncode != 0, args
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines and word in lines[-1], (args, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
