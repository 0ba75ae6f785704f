"""The 2.0 training step's math: timesteps, noise and target, text dropout, conditioning modes and
their reference conditions (laid out as sampling lays them out), and the 2.0 caption suffix."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from opensora.datasets.dataset import VideoTextDataset, append_caption_scores
from opensora.errors import ConfigError
from opensora.inference.mmdit_sampling import COND_TYPES, inference_condition
from opensora.models.vae.hunyuan import AutoencoderKLCausal3D
from opensora.schedulers.shifted_flow import shift_alpha
from opensora.training.config import MMDIT_COND_TYPES
from opensora.training.mmdit_recipe import (
    draw_cond_types,
    drop_condition,
    feature_references,
    noised,
    pad_null_text,
    sample_timesteps,
    training_condition,
    usable_cond_types,
    velocity,
)
from opensora.training.mmdit_trainer import MMDiTTrainer
from tests.datasets.media import write_video
from tests.tiny import _TINY


def test_config_knows_the_sampler_cond_types() -> None:
    assert MMDIT_COND_TYPES == COND_TYPES


def test_timesteps_are_logit_normal_then_shifted_by_size_and_length() -> None:
    draw = lambda hw, frames: sample_timesteps(4096, hw, frames, generator=torch.Generator().manual_seed(0))  # noqa: E731
    # 32 x 32 latent = 256 tokens of 2x2 patches per frame: the shift's fixed point (alpha = 1) for an image
    plain = draw((32, 32), 1)
    assert torch.allclose(plain, torch.sigmoid(torch.randn(4096, generator=torch.Generator().manual_seed(0))))
    assert 0.45 < plain.mean() < 0.55 and 0 < plain.min() and plain.max() < 1
    # more tokens per frame and more frames: more of the training near noise (t = 1)
    assert draw((96, 170), 1).mean() > plain.mean() + 0.1
    long = draw((32, 32), 33)
    a = shift_alpha(256, 33)
    assert a == pytest.approx(33**0.5) and torch.allclose(long, a * plain / (1 + (a - 1) * plain))


def test_noised_latent_runs_from_data_to_noise_along_the_target() -> None:
    x0, x1 = torch.randn(3, 5, 8), torch.randn(3, 5, 8)
    sigma = 1e-5
    at = lambda value: noised(x0, x1, torch.full((3,), value), sigma)  # noqa: E731
    assert torch.allclose(at(0.0), x0 + sigma * x1) and torch.allclose(at(1.0), x1)
    t = torch.tensor([0.2, 0.5, 0.9])
    step = 1e-3
    slope = (noised(x0, x1, t + step, sigma) - noised(x0, x1, t, sigma)) / step
    assert torch.allclose(slope, velocity(x0, x1, sigma), atol=1e-3)


def test_text_dropout_swaps_whole_samples_for_the_empty_prompt() -> None:
    txt, null = torch.randn(64, 6, 4), torch.zeros(1, 6, 4)
    assert torch.equal(drop_condition(0.0, txt, null), txt)
    assert torch.equal(drop_condition(1.0, txt, null), null.expand_as(txt))
    mixed = drop_condition(0.5, txt, null, generator=torch.Generator().manual_seed(0))
    dropped = (mixed == 0).flatten(1).all(1)
    kept = (mixed == txt).flatten(1).all(1)
    assert bool((dropped | kept).all()) and 16 < int(dropped.sum()) < 48
    short = torch.arange(6.0).view(1, 3, 2)
    assert pad_null_text(short, 5)[0].tolist() == [[0, 1], [2, 3], [4, 5], [4, 5], [4, 5]]


def test_cond_types_follow_the_weights_and_skip_v2v_on_short_videos() -> None:
    mix = {"t2v": 1, "i2v_head": 5, "v2v_head": 2, "v2v_tail_easy": 2}
    # causal: v2v needs more than 32 // 4 + 1 = 9 latent frames, the easy ones more than 17
    assert set(usable_cond_types(mix, 9, causal=True)) == {"t2v", "i2v_head"}
    assert set(usable_cond_types(mix, 10, causal=True)) == {"t2v", "i2v_head", "v2v_head"}
    assert set(usable_cond_types(mix, 17, causal=False)) == set(mix)
    assert usable_cond_types({"v2v_head": 1}, 3, causal=True) == {"t2v": 1.0}  # nothing left: text only
    draws = draw_cond_types(mix, 7000, 3, causal=True, generator=torch.Generator().manual_seed(0))
    assert set(draws) == {"t2v", "i2v_head"} and 0.8 < draws.count("i2v_head") / 7000 < 0.87  # 5 / 6
    assert draw_cond_types(mix, 4, 1, causal=True) == ["t2v"] * 4  # images are not conditioned
    assert draw_cond_types(None, 2, 5, causal=True) == ["t2v"] * 2


@pytest.mark.parametrize(
    ("cond_type", "causal", "frames"),
    [("i2v_head", True, [0]), ("i2v_tail", True, [-1]), ("i2v_loop", True, [0, -1]), ("v2v_head", True, range(9)),
     ("v2v_tail", False, range(-8, 0)), ("t2v", True, [])],
)  # fmt: skip
def test_training_condition_is_the_sampling_layout(cond_type: str, causal: bool, frames) -> None:
    B, C, T, H, W = 2, 4, 12, 4, 6
    x0 = torch.randn(B, C, T, H, W)
    head, tail = torch.randn(B, C, 1, H, W), torch.randn(B, C, 1, H, W)
    refs = [feature_references(cond_type, x0[i], head[i], tail[i]) for i in range(B)]
    mask, masked = training_condition(x0, [cond_type] * B, refs, causal)
    expected = inference_condition(x0, cond_type, refs if cond_type != "t2v" else None, causal)
    assert torch.equal(mask, expected[0]) and torch.equal(masked, expected[1])
    # independently of the sampler: the mask marks exactly the conditioned frames, filled from the references
    on = sorted(f % T for f in frames)
    assert mask[:, 0, :, 0, 0].nonzero()[:, 1].unique().tolist() == on and bool((mask == mask[..., :1, :1]).all())
    if cond_type.startswith("i2v") and 0 in on:
        assert torch.equal(masked[:, :, 0], head[:, :, 0])
    if cond_type.startswith("i2v") and T - 1 in on:
        assert torch.equal(masked[:, :, -1], tail[:, :, 0])
    if cond_type.startswith("v2v"):
        assert torch.equal(masked[:, :, on], x0[:, :, on])
    off = [f for f in range(T) if f not in on]
    assert not masked[:, :, off].any()


def test_a_batch_mixes_modes_per_sample() -> None:
    x0, head, tail = torch.randn(3, 4, 5, 2, 2), torch.randn(3, 4, 1, 2, 2), torch.randn(3, 4, 1, 2, 2)
    kinds = ["t2v", "i2v_head", "i2v_tail"]
    refs = [feature_references(kind, x0[i], head[i], tail[i]) for i, kind in enumerate(kinds)]
    mask, _ = training_condition(x0, kinds, refs, causal=True)
    assert mask[:, 0, :, 0, 0].tolist() == [[0] * 5, [1, 0, 0, 0, 0], [0, 0, 0, 0, 1]]
    with pytest.raises(ValueError, match="ref_head"):
        feature_references("i2v_loop", x0[0], None, tail[0])


def test_video_references_encode_the_reference_frames_alone() -> None:
    torch.manual_seed(0)
    vae = AutoencoderKLCausal3D(**{k: v for k, v in _TINY["hunyuan_vae"].items() if k != "type"}).eval()
    video = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    fake = SimpleNamespace(cfg=SimpleNamespace(use_features=False, is_causal_vae=True, dtype="fp32"),
                           dims=SimpleNamespace(device=torch.device("cpu")), vae=vae)  # fmt: skip
    x0 = vae.encode(video, sample=False)
    with torch.no_grad():
        torch.manual_seed(1)
        tail = MMDiTTrainer.references(fake, "i2v_tail", 0, x0, {"video": video})
        torch.manual_seed(1)
        expected = vae.encode(video[:, :, -1:])[0]
    assert len(tail) == 1 and torch.equal(tail[0], expected)  # (C, 1, h, w): the last frame on its own
    assert MMDiTTrainer.references(fake, "t2v", 0, x0, {"video": video}) is None


def test_captions_end_with_fps_and_motion_score(tmp_path) -> None:
    assert append_caption_scores("a cat", 24, 3.5) == "a cat 24 FPS, 4 motion score."
    assert append_caption_scores("a cat", 23.976, None) == "a cat 23.976 FPS."
    assert append_caption_scores("a cat", 0, float("nan")) == "a cat"  # an image without a score
    frames = torch.zeros(4, 16, 16, 3, dtype=torch.uint8).numpy()
    write_video(tmp_path / "a.mp4", frames, fps=12)
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"path": ["a.mp4"], "text": ["a red ball"], "score_vmafmotion": [2.49]}).to_csv(meta, index=False)
    dataset = VideoTextDataset(meta, num_frames=4, image_size=(16, 16), caption_fps=True, caption_motion_score=True)
    assert dataset[0]["text"] == "a red ball 12 FPS, 2 motion score."
    assert VideoTextDataset(meta, num_frames=4, image_size=(16, 16))[0]["text"] == "a red ball"
    pd.DataFrame({"path": ["a.mp4"], "text": ["a red ball"]}).to_csv(meta, index=False)
    with pytest.raises(ConfigError, match="score_vmafmotion"):
        VideoTextDataset(meta, caption_motion_score=True)
