"""Every frame count samples finite latents: the 1.2 timestep shift counts latent frames per
sample and never from 0 (``num_frames // 17 * 5`` is 0 for 2..16 frames, a 0/0 first step)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from opensora.config import load_config
from opensora.inference.config import InferenceConfig
from opensora.inference.pipeline import VideoSize
from opensora.inference.prompts import PromptRequest
from opensora.inference.runner import build_pipeline
from opensora.schedulers.rectified_flow import RectifiedFlow, latent_frames_for_shift, timestep_transform

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs/opensora-v1-2/inference/tiny.py")
FRAME_COUNTS = [1, 2, 9, 16, 17, 18, 34, 51]


def test_release_rule_kept_where_defined_and_never_zero():
    counts = latent_frames_for_shift(torch.tensor([float(n) for n in FRAME_COUNTS]))
    # 1 is an image; 17 -> 5 and its multiples as released (18 -> 5 too); 2..16 -> ceil(n / 4)
    assert counts.tolist() == [1, 1, 3, 4, 5, 5, 10, 15]


@pytest.mark.parametrize("num_frames", FRAME_COUNTS)
def test_sampling_timesteps_are_finite_and_decreasing(num_frames):
    flow = RectifiedFlow(num_sampling_steps=10, use_timestep_transform=True)
    sizes = {"height": torch.tensor([128.0]), "width": torch.tensor([128.0]),
             "num_frames": torch.tensor([float(num_frames)])}  # fmt: skip
    steps = torch.stack(flow.sampling_timesteps(1, sizes)).squeeze(1)
    assert torch.isfinite(steps).all()
    assert torch.isclose(steps[0], torch.tensor(1000.0)) and (steps[1:] < steps[:-1]).all() and steps[-1] > 0


def test_image_or_video_is_decided_per_sample():
    t = torch.tensor([700.0, 700.0, 700.0])
    sizes = dict(height=torch.full((3,), 512.0), width=torch.full((3,), 512.0))
    mixed = timestep_transform(t, num_frames=torch.tensor([17.0, 1.0, 51.0]), **sizes)
    for i, n in enumerate((17.0, 1.0, 51.0)):
        alone = timestep_transform(t[:1], num_frames=torch.tensor([n]), **{k: v[:1] for k, v in sizes.items()})
        assert torch.equal(mixed[i : i + 1], alone)
    assert mixed[1] == 700.0  # a 512x512 image is not shifted, whatever else is in the batch
    assert mixed[0] > 700.0 and mixed[2] > mixed[0]


@pytest.fixture(scope="module")
def tiny_pipeline():
    cfg = load_config(TINY, InferenceConfig, {"scheduler.num_sampling_steps": 3})
    pipeline = build_pipeline(cfg, torch.device("cpu"))
    pipeline.vae = None  # latents are what is checked; decoding only costs time
    return pipeline


@pytest.mark.parametrize("num_frames", FRAME_COUNTS)
def test_tiny_v1_2_samples_finite_latents(tiny_pipeline, num_frames):
    torch.set_num_threads(1)
    size = VideoSize(num_frames, 32, 32)
    latents = tiny_pipeline.generate([PromptRequest({0: "a red ball"})], size, seeds=[0], progress=False)
    assert latents.shape[2] == tiny_pipeline.latent_size(size)[0]
    assert torch.isfinite(latents).all()
