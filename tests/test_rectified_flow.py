"""Rectified flow: noising, timestep sampling and transform, Euler steps, conditioning masks."""

from __future__ import annotations

import pytest
import torch

from opensora.inference.sampling import rflow_sample
from opensora.registry import SCHEDULERS, build_module
from opensora.schedulers.rectified_flow import RectifiedFlow, timestep_transform
from opensora.training.losses import masked_mean, rflow_loss

SIZES = dict(height=torch.tensor([512.0, 512.0]), width=torch.tensor([512.0, 512.0]))


def test_add_noise_interpolates_between_data_and_noise():
    flow = RectifiedFlow()
    x0, noise = torch.ones(2, 4, 3, 2, 2), torch.zeros(2, 4, 3, 2, 2)
    out = flow.add_noise(x0, noise, torch.tensor([0.0, 250.0]))
    assert torch.equal(out[0], x0[0]) and torch.allclose(out[1], torch.full_like(x0[1], 0.75))


def test_timestep_transform_shifts_towards_noise_for_bigger_videos():
    t = torch.tensor([500.0, 500.0])
    image = timestep_transform(t, num_frames=torch.tensor([1.0, 1.0]), **SIZES)
    assert torch.allclose(image, t)  # 512x512 image: ratio 1, no shift
    video = timestep_transform(t, num_frames=torch.tensor([51.0, 51.0]), **SIZES)  # 15 latent frames
    ratio = 15**0.5
    assert torch.allclose(video, torch.full((2,), ratio * 0.5 / (1 + (ratio - 1) * 0.5) * 1000))


@pytest.mark.parametrize("method", ["uniform", "logit-normal"])
def test_training_timesteps_stay_in_range(method):
    flow = build_module({"type": "rflow", "sample_method": method}, SCHEDULERS)
    t = flow.sample_train_timesteps(4096, {}, generator=torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() <= 1000
    if method == "logit-normal":  # concentrated in the middle
        assert ((t > 250) & (t < 750)).float().mean() > 0.6
    discrete = RectifiedFlow(use_discrete_timesteps=True).sample_train_timesteps(64, {})
    assert discrete.dtype == torch.int64


def test_unknown_sample_method_is_rejected():
    with pytest.raises(ValueError, match="sample_method"):
        RectifiedFlow(sample_method="cosine")


def test_euler_steps_follow_a_constant_velocity_exactly():
    """With the true velocity of a straight path, the sampler lands exactly on the data."""
    flow = RectifiedFlow(num_sampling_steps=7, cfg_scale=1.0, use_timestep_transform=True)
    x0 = torch.randn(2, 4, 3, 4, 4)
    noise = torch.randn_like(x0)

    def oracle(x, t, **_):
        return torch.cat([x0, x0]) - torch.cat([noise, noise])

    kwargs = dict(SIZES, num_frames=torch.tensor([17.0, 17.0]), mask=None)
    y = torch.zeros(2, 1, 4, 8)
    out = rflow_sample(oracle, flow, noise, y, y, kwargs, progress=False)
    assert torch.allclose(out, x0, atol=1e-5)


def test_conditioned_frames_are_kept_and_others_generated():
    flow = RectifiedFlow(num_sampling_steps=4, cfg_scale=1.0)
    z = torch.randn(1, 4, 3, 4, 4)
    seen = []

    def model(x, t, x_mask=None, **_):
        seen.append(x_mask[:1].clone())
        return torch.ones(x.shape[0], 8, *x.shape[2:])

    cond_mask = torch.tensor([[0.0, 1.0, 0.5]])  # keep, generate, edit from half way
    kwargs = dict(SIZES, num_frames=torch.tensor([9.0]), mask=None)
    y = torch.zeros(1, 1, 4, 8)
    out = rflow_sample(model, flow, z, y, y, kwargs, cond_mask=cond_mask, progress=False)
    assert torch.equal(out[:, :, 0], z[:, :, 0])
    assert not torch.allclose(out[:, :, 1], z[:, :, 1])
    assert [m[0].tolist() for m in seen] == [[False, True, False], [False, True, False], [False, True, True],
                                             [False, True, True]]  # fmt: skip


def test_masked_loss_ignores_conditioning_frames():
    err = torch.zeros(1, 2, 3, 2, 2)
    err[:, :, 0] = 100.0  # only the conditioning frame is wrong
    mask = torch.tensor([[False, True, True]])
    assert masked_mean(err, mask).item() == 0.0
    assert masked_mean(err).item() > 0


def test_rflow_loss_is_zero_for_the_true_velocity():
    flow = RectifiedFlow()
    x0 = torch.randn(2, 4, 2, 4, 4)
    noise = torch.randn_like(x0)

    def perfect(x, t, **_):
        return torch.cat([x0 - noise, torch.zeros_like(x0)], dim=1)

    loss = rflow_loss(perfect, flow, x0, {}, noise=noise, t=torch.tensor([100.0, 900.0]))
    assert loss.shape == (2,) and torch.allclose(loss, torch.zeros(2))
